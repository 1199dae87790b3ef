"""The database file: mode 0600 (with -wal and -shm), pragmas, schema versions."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.store import SQLiteStore, open_store
from listener.store import schema as store_schema
from listener.store import sqlite as store_sqlite

from .records import record


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_including_wal_and_shm(tmp_path: Path) -> None:
    """overread.db, -wal and -shm are 0600 even under a permissive umask; the directory 0700."""
    old = os.umask(0o000)
    try:
        state = tmp_path / "var"
        store = open_store(state)
        try:
            store.save(record())
            db = state / "overread.db"
            wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
            assert wal.exists() and shm.exists(), "WAL mode should keep -wal/-shm while open"
            assert _mode(db) == 0o600
            assert _mode(wal) == 0o600
            assert _mode(shm) == 0o600
            assert _mode(state) == 0o700
        finally:
            store.close()
    finally:
        os.umask(old)


def test_existing_loose_file_is_tightened(tmp_path: Path) -> None:
    """A database file left 0644 by another tool is made 0600 when the store opens it."""
    db = tmp_path / "overread.db"
    SQLiteStore(db).close()
    os.chmod(db, 0o644)
    store = SQLiteStore(db)
    try:
        assert _mode(db) == 0o600
    finally:
        store.close()


def test_pragmas_default_and_configurable(tmp_path: Path) -> None:
    """The writer runs WAL with synchronous=FULL by default, NORMAL when asked; busy_timeout set."""

    def pragmas(store: SQLiteStore) -> tuple[str, int, int, int]:
        def read(conn: sqlite3.Connection) -> tuple[str, int, int, int]:
            return (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA busy_timeout").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
            )

        return store.writer.execute(read).result()

    full = SQLiteStore(tmp_path / "a.db")
    normal = SQLiteStore(tmp_path / "b.db", synchronous="NORMAL", busy_timeout_ms=1234)
    try:
        assert pragmas(full) == ("wal", 2, store_sqlite.DEFAULT_BUSY_TIMEOUT_MS, 1)
        assert pragmas(normal) == ("wal", 1, 1234, 1)
    finally:
        full.close()
        normal.close()
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "c.db", synchronous="OFF")  # type: ignore[arg-type]


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    """A new file gets PRAGMA user_version = SCHEMA_VERSION."""
    db = tmp_path / "overread.db"
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_schema.SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer program is not opened (no silent downgrade)."""
    db = tmp_path / "overread.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {store_schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(db)


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    """A SQLite file with tables but no version is someone else's: refuse it, change nothing."""
    db = tmp_path / "overread.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not an overread store"):
        SQLiteStore(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_migration_upgrades_existing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later schema step runs once on an existing file, in order, keeping the stored data."""
    db = tmp_path / "overread.db"
    store = SQLiteStore(db)
    store.save(record("C1"))
    store.close()

    def v2(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE messages ADD COLUMN note TEXT NOT NULL DEFAULT 'v2'")

    step = store_schema.Migration(store_schema.SCHEMA_VERSION + 1, "a note column", v2)
    monkeypatch.setattr(store_schema, "MIGRATIONS", [*store_schema.MIGRATIONS, step])
    store = SQLiteStore(db)
    try:
        assert [m.control_id for m in store.messages()] == ["C1"]
        note = store.writer.execute(lambda conn: conn.execute("SELECT note FROM messages").fetchone()[0]).result()
        assert note == "v2"
        version = store.writer.execute(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0]).result()
        assert version == len(store_schema.MIGRATIONS) == store_schema.SCHEMA_VERSION + 1
        assert store.migrations_run == (step,)
    finally:
        store.close()


def test_unwritable_state_dir_gives_store_error(tmp_path: Path) -> None:
    """A state directory that cannot be created gives a StoreError, not an OSError."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StoreError):
        SQLiteStore.in_state_dir(blocker / "var")
