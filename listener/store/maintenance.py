"""Checking a store and upgrading its schema, outside the daemon.

Layer: storage (files, SQLite), no logging. Used by ``overread store check``
and ``overread store migrate`` (docs/operations.md, "Backup, restore, upgrade").

``check`` only reads: it may run beside a daemon (a WAL reader never blocks the
writer; the WAL grows until the check's read transaction ends). ``migrate``
rewrites the schema, so it holds the state directory's lock and is refused
while a daemon runs; a daemon started on an older schema migrates by itself.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from listener.errors import StoreError, database_error
from listener.store.backup import connect_existing, integrity_problems
from listener.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    migrate,
    newer_schema_text,
    pending_migrations,
    schema_version,
)
from listener.store.sqlite import DB_FILENAME
from listener.store.statedir import state_dir_locked

__all__ = ["CheckResult", "MigrateResult", "check_store", "migrate_store", "stored_version"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What ``overread store check`` found.

    Attributes:
        path: the database file checked.
        schema_version: the file's version (``PRAGMA user_version``).
        code_version: the version this program writes.
        problems: integrity and foreign-key problems, and a schema this program
            cannot open; empty when the store is sound.
        pending: migrations the next start (or ``overread store migrate``) runs.
        message_count: stored messages (None when they could not be counted).
        report_count: stored reports.
        outbox_counts: outbox rows by state.
        quick: ``quick_check`` ran instead of ``integrity_check``.
    """

    path: Path
    schema_version: int
    code_version: int
    problems: tuple[str, ...]
    pending: tuple[Migration, ...]
    message_count: int | None
    report_count: int | None
    outbox_counts: tuple[tuple[str, int], ...]
    quick: bool

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (pending migrations are not a problem)."""
        return not self.problems


@dataclass(frozen=True, slots=True)
class MigrateResult:
    """What ``overread store migrate`` did: the versions and the steps run (maybe none)."""

    path: Path
    before: int
    after: int
    steps: tuple[Migration, ...]


def check_store(state_dir: Path, *, quick: bool = False) -> CheckResult:
    """Check the store of ``state_dir`` without changing it.

    Runs ``PRAGMA integrity_check`` (``quick_check`` when ``quick``: no index
    cross-checks, much faster) and, unless ``quick``, ``PRAGMA
    foreign_key_check``; compares the schema version with this program's;
    counts messages, reports and outbox rows.

    Raises:
        StoreError: there is no store in ``state_dir`` or it cannot be opened.
    """
    db = state_dir / DB_FILENAME
    if not db.is_file():
        raise StoreError(f"no store in {state_dir} ({db} does not exist)")
    conn = connect_existing(db, read_only=False)
    try:
        conn.execute("PRAGMA query_only = ON")
        return _check(conn, db, quick)
    finally:
        conn.close()


def _check(conn: sqlite3.Connection, db: Path, quick: bool) -> CheckResult:
    problems: list[str] = []
    try:
        conn.execute("BEGIN")  # one snapshot for every check and count
        version = schema_version(conn)
        problems += integrity_problems(conn, quick=quick)
        if not quick:
            for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
                problems.append(f"{table} row {rowid}: no {parent} row it refers to")
    except sqlite3.Error as exc:
        return CheckResult(
            db,
            0,
            SCHEMA_VERSION,
            (f"{db}: cannot be read as a SQLite database ({database_error(exc)})",),
            (),
            None,
            None,
            (),
            quick,
        )
    pending: tuple[Migration, ...] = ()
    if version == 0:
        problems.append(f"{db}: not an overread store (no schema version)")
    elif version > SCHEMA_VERSION:
        problems.append(f"{db}: {newer_schema_text(version, SCHEMA_VERSION)}")
    else:
        pending = tuple(pending_migrations(version))
    messages = reports = None
    outbox: tuple[tuple[str, int], ...] = ()
    if 0 < version <= SCHEMA_VERSION:
        try:
            messages = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
            reports = int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])
            outbox = tuple(
                (str(state), int(n))
                for state, n in conn.execute("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state")
            )
        except sqlite3.Error as exc:
            problems.append(f"{db}: the tables cannot be counted ({database_error(exc)})")
    conn.execute("COMMIT")
    return CheckResult(db, version, SCHEMA_VERSION, tuple(problems), pending, messages, reports, outbox, quick)


def stored_version(state_dir: Path) -> int | None:
    """Return the schema version of the store in ``state_dir`` (None when there is none).

    Raises:
        StoreError: the file cannot be opened or read.
    """
    db = state_dir / DB_FILENAME
    if not db.is_file():
        return None
    conn = connect_existing(db, read_only=False)
    try:
        return schema_version(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"{db}: cannot be read ({database_error(exc)})") from None
    finally:
        conn.close()


def migrate_store(state_dir: Path) -> MigrateResult:
    """Run the pending migrations of the store in ``state_dir``, all in one transaction.

    Holds the state directory's lock: refused while a daemon runs (it may be
    an older program that must not write into a newer schema).

    Raises:
        StoreError: no store, a daemon holds the state directory, the schema is
            newer than this program's or not ours, or a step failed (then
            nothing changed); the text names the file.
    """
    db = state_dir / DB_FILENAME
    if not db.is_file():
        raise StoreError(f"no store in {state_dir} ({db} does not exist)")
    with state_dir_locked(state_dir, "migration"):
        conn = connect_existing(db, read_only=False)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            before = migrate(conn)
        except StoreError as exc:
            raise StoreError(f"{db}: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{db}: migration failed, nothing changed ({database_error(exc)})") from None
        finally:
            conn.close()
    return MigrateResult(db, before, len(MIGRATIONS), tuple(pending_migrations(before)))
