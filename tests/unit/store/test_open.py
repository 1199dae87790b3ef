"""open_store(): the one place the daemon and every command get their store from."""

from __future__ import annotations

import re
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.store import BACKENDS, SQLiteStore, Store, open_store

from .memory import MemoryStore
from .records import record


@dataclass(frozen=True)
class _Settings:
    state_dir: Path
    synchronous: str = "FULL"


def _synchronous(store: Store) -> int:
    assert isinstance(store, SQLiteStore)

    def read(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    return store.writer.execute(read).result()


def test_open_store_takes_the_configured_state_dir_and_synchronous_mode(tmp_path: Path) -> None:
    """SQLite: the configuration's state_dir and synchronous (the daemon passes its Config); a bare directory means FULL."""
    store = open_store(_Settings(tmp_path / "state", synchronous="NORMAL"))
    try:
        assert (tmp_path / "state" / "overread.db").is_file() and _synchronous(store) == 1
    finally:
        store.close()
    plain = open_store(tmp_path / "state", create=False)
    try:
        assert _synchronous(plain) == 2
    finally:
        plain.close()


def test_open_store_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    """No store without create, an unknown synchronous mode, an unknown backend."""
    with pytest.raises(StoreError, match="no store in"):
        open_store(_Settings(tmp_path / "none"), create=False)
    with pytest.raises(ValueError, match="synchronous"):
        open_store(_Settings(tmp_path / "s", synchronous="OFF"))
    with pytest.raises(ValueError, match="unknown store backend"):
        open_store(_Settings(tmp_path / "s"), backend="nosuch")


def test_a_backend_is_one_entry_in_the_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every caller gets the backend the table names: here the in-memory double."""
    monkeypatch.setitem(BACKENDS, "memory", lambda where, create: MemoryStore())
    store = open_store(_Settings(tmp_path), backend="memory")
    try:
        assert store.save(record("C1")).message_pk == 1
        assert [m.control_id for m in store.messages()] == ["C1"]
    finally:
        store.close()


@dataclass(frozen=True)
class _PgSettings:
    state_dir: Path
    store_url: str = "postgresql://overread@db.example.org/overread"
    store_password_file: Path | None = None
    synchronous: str = "FULL"


def test_a_postgresql_store_without_its_driver_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The package is installed from its checkout, not an index: the hint is `pip install '.[postgresql]'`."""
    monkeypatch.setitem(sys.modules, "listener.store.postgresql", None)  # as if psycopg were not installed
    with pytest.raises(StoreError, match=re.escape("pip install '.[postgresql]' (docs/store.md)")):
        open_store(_PgSettings(tmp_path), create=False)
