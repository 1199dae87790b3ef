"""Fixtures for the store tests: a fresh SQLite store in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.store import SQLiteStore


@pytest.fixture(name="db_path")
def fixture_db_path(tmp_path: Path) -> Path:
    """Where the test's database file lives."""
    return tmp_path / "state" / "overread.db"


@pytest.fixture(name="store")
def fixture_store(db_path: Path) -> Iterator[SQLiteStore]:
    """A fresh store (synchronous=FULL, the production default), closed afterwards."""
    store = SQLiteStore.in_state_dir(db_path.parent)
    yield store
    store.close()
