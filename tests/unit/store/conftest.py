"""Fixtures for the store tests.

``store`` is the contract fixture: every test that takes it runs against each
implementation of the :class:`~listener.store.base.Store` protocol, the SQLite
backend, the PostgreSQL backend (on the test server of ``tests/postgres.py``,
one fresh schema per store; marked ``postgresql``, so deselected with one
summary line when no server was started) and the in-memory double of
``memory.py``. A test about SQLite itself (its file, schema, writer
connection, crash safety) takes ``sqlite_store`` or builds a
:class:`~listener.store.SQLiteStore`, and says so in its name or docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from listener.store import SQLiteStore, Store
from tests.postgres import fresh_schema, server_dsn

from .memory import MemoryStore

#: The Store implementations the contract tests run against.
IMPLEMENTATIONS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql), "memory")


@pytest.fixture(name="db_path")
def fixture_db_path(tmp_path: Path) -> Path:
    """Where the test's database file lives."""
    return tmp_path / "state" / "overread.db"


@pytest.fixture(name="sqlite_store")
def fixture_sqlite_store(db_path: Path) -> Iterator[SQLiteStore]:
    """A fresh SQLite store (synchronous=FULL, the production default), closed afterwards."""
    store = SQLiteStore.in_state_dir(db_path.parent)
    yield store
    store.close()


@pytest.fixture(name="new_store", params=IMPLEMENTATIONS)
def fixture_new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Builds fresh, empty stores of one implementation (each in its own place), all closed afterwards."""
    opened: list[Store] = []
    with ExitStack() as schemas:

        def build() -> Store:
            store: Store
            if request.param == "sqlite":
                store = SQLiteStore.in_state_dir(tmp_path / f"state{len(opened)}")
            elif request.param == "postgresql":
                from listener.store.postgresql import PostgresStore

                dsn = server_dsn()
                assert dsn is not None, "postgresql tests run only with a test server (tests/conftest.py)"
                store = PostgresStore(schemas.enter_context(fresh_schema(dsn)))
            else:
                store = MemoryStore()
            opened.append(store)
            return store

        yield build
        for store in opened:
            store.close()


@pytest.fixture(name="store")
def fixture_store(new_store: Callable[[], Store]) -> Store:
    """A fresh store of each implementation."""
    return new_store()


@pytest.fixture(name="pg_dsn")
def fixture_pg_dsn() -> Iterator[str]:
    """A DSN of a fresh, empty schema on the test server, dropped afterwards (a test about
    PostgreSQL itself: its schema steps, its SQL)."""
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        yield dsn
