"""The two ends of ``overread store copy``: a SQLite file or a PostgreSQL schema.

Layer: storage (files, sockets), no logging. :mod:`listener.store.copy` drives
a copy through the :class:`Side` interface; each backend's side says what
tables and columns its live schema holds (by introspection, never a list kept
by hand, so a column a later migration adds travels without edits here),
reads rows in batches, writes them, and keeps the "is anyone using this
store?" lock for as long as the copy runs (docs/store.md, "Moving a store").

Times are the one type the backends store differently (SQLite: fixed-width
UTC text; PostgreSQL: ``timestamptz``): a side converts what it writes into
its own form (:meth:`Side.write`), and :func:`listener.store.copy.row_digest`
reads both forms as the same value.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, LiteralString, Protocol

from listener.errors import StoreError, database_error
from listener.store import operations as ops
from listener.store.backup import connect_existing
from listener.store.compact import SQLITE_PACKED_JSON, pack_json, unpack_json
from listener.store.schema import schema_version
from listener.store.sqlite import DB_FILENAME, SQLiteStore
from listener.store.statedir import state_dir_locked

__all__ = ["PostgresSide", "Side", "SQLiteSide", "SKIPPED_TABLES", "sqlite_path"]

#: Tables no copy carries: each backend's own bookkeeping (the schema version
#: is set by migrating the target; ``sqlite_sequence`` is kept by SQLite).
SKIPPED_TABLES = frozenset({"overread_schema", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})


class Side(Protocol):
    """One end of a copy. Opened with its in-use lock held; :meth:`close` releases it."""

    #: What to print for this store (a path, or a URL without its password).
    where: str

    def version(self) -> int:
        """The stored schema version (0: none)."""
        ...

    def tables(self) -> dict[str, tuple[str, ...]]:
        """Every copied table and its columns in the live schema, in declaration order."""
        ...

    def parents(self, table: str) -> set[str]:
        """The tables ``table``'s foreign keys refer to."""
        ...

    def time_columns(self, table: str) -> frozenset[str]:
        """The columns of ``table`` holding times as the backend's time type (none for SQLite's text)."""
        ...

    def count(self, table: str) -> int:
        """The table's row count."""
        ...

    def rows(self, table: str, columns: Sequence[str], batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows (those columns), ``batch`` at a time, inside the current transaction."""
        ...

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows (values in either backend's form; times converted to this one's)."""
        ...

    def clear(self, table: str) -> None:
        """Delete every row of the table (inside the write transaction)."""
        ...

    def id_floor(self, table: str) -> int:
        """The highest id the table ever handed out (its sequence), 0 when it has none or never used it."""
        ...

    def set_id_floor(self, table: str, floor: int) -> None:
        """Make the table's next new id greater than both ``floor`` and every id it holds."""
        ...

    def begin_read(self) -> None:
        """Start one consistent snapshot for reading every table."""
        ...

    def begin_write(self) -> None:
        """Start the one transaction the whole copy writes in."""
        ...

    def analyze(self, tables: Sequence[str]) -> None:
        """Gather the planner's statistics of the copied tables, inside the write transaction."""
        ...

    def commit(self) -> None:
        """Commit the transaction."""
        ...

    def rollback(self) -> None:
        """Roll the transaction back (nothing written stays)."""
        ...

    def close(self) -> None:
        """Close the connection and release the in-use lock."""
        ...


def sqlite_path(path: Path) -> Path:
    """The database file that ``sqlite:PATH`` names: PATH itself, or PATH/overread.db for a state directory.

    A PATH that does not exist yet is a file when it ends in ``.db``, else a state directory.
    """
    if path.is_dir():
        return path / DB_FILENAME
    if path.exists() or path.suffix == ".db":
        return path
    return path / DB_FILENAME


class SQLiteSide:
    """A SQLite store file; the lock is its state directory's (the daemon's, listener/statelock.py).

    Args:
        path: the database file (see :func:`sqlite_path`).
        create: create the file and its schema if missing (a target), and
            migrate an older one; False: the file must exist (a source).

    Raises:
        StoreError: a daemon holds the state directory, or the file is missing,
            not an overread store, or cannot be opened.
    """

    def __init__(self, path: Path, *, create: bool) -> None:
        self.path = path
        self.where = f"sqlite:{path}"
        self._lock = contextlib.ExitStack()
        if not create and not path.is_file():
            raise StoreError(f"no store at {path} (no such file)")
        self._lock.enter_context(state_dir_locked(path.parent, "copy"))
        try:
            if create:
                # Created (mode 0600, WAL) and migrated as the daemon would; closed at once.
                SQLiteStore(path).close()
            self._conn = connect_existing(path, read_only=False)
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            self._lock.close()
            raise
        self._blank_cols: dict[str, frozenset[str]] = {}

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: reading the schema failed ({database_error(exc)})") from None

    def version(self) -> int:
        """``PRAGMA user_version``."""
        return schema_version(self._conn)

    def tables(self) -> dict[str, tuple[str, ...]]:
        """Tables from ``sqlite_master``, columns from ``PRAGMA table_info``."""
        names = [r[0] for r in self._q("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {
            name: tuple(r[1] for r in self._q(f'PRAGMA table_info("{name}")'))
            for name in names
            if name not in SKIPPED_TABLES and not name.startswith("sqlite_")
        }

    def parents(self, table: str) -> set[str]:
        """From ``PRAGMA foreign_key_list``."""
        return {str(r[2]) for r in self._q(f'PRAGMA foreign_key_list("{table}")')}

    def time_columns(self, table: str) -> frozenset[str]:
        """None: SQLite keeps times as text (docs/store.md)."""
        return frozenset()

    def count(self, table: str) -> int:
        """``count(*)``."""
        return int(self._q(f'SELECT count(*) FROM "{table}"')[0][0])

    def rows(self, table: str, columns: Sequence[str], batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """In first-column order (the id: SQLite's rowid, no sort), ``fetchmany`` at a time.

        JSON that SQLite alone keeps compressed (:data:`SQLITE_PACKED_JSON`)
        comes out as its text, as PostgreSQL holds it: both ends copy and
        checksum the same values (docs/store.md, "Compact storage").
        """
        cursor = self._conn.execute(f'SELECT {_column_list(columns)} FROM "{table}" ORDER BY 1')
        packed = _packed(table, columns)
        while chunk := cursor.fetchmany(batch):
            if packed:
                chunk = [
                    tuple(unpack_json(v) if p and v is not None else v for v, p in zip(row, packed, strict=True))
                    for row in chunk
                ]
            yield chunk

    def _empty_text_columns(self, table: str) -> frozenset[str]:
        """NOT NULL columns whose default is '': where SQLite keeps "no time yet" as "" (PostgreSQL: NULL)."""
        if table not in self._blank_cols:
            self._blank_cols[table] = frozenset(
                str(r[1]) for r in self._q(f'PRAGMA table_info("{table}")') if r[3] and r[4] == "''"
            )
        return self._blank_cols[table]

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``executemany`` INSERT; a datetime (from PostgreSQL) becomes SQLite's time text, and a NULL
        into a NOT NULL column whose default is '' becomes ''."""
        marks = ", ".join("?" for _ in columns)
        empty = self._empty_text_columns(table)
        blank = [c in empty for c in columns]
        packed = _packed(table, columns) or [False] * len(columns)
        converted = [
            tuple(
                ops.ts(v)
                if isinstance(v, datetime)
                else ("" if v is None and b else (pack_json(v) if p and isinstance(v, str) else v))
                for v, b, p in zip(row, blank, packed, strict=True)
            )
            for row in rows
        ]
        self._conn.executemany(f'INSERT INTO "{table}" ({_column_list(columns)}) VALUES ({marks})', converted)

    def clear(self, table: str) -> None:
        """DELETE every row."""
        self._conn.execute(f'DELETE FROM "{table}"')

    def id_floor(self, table: str) -> int:
        """``sqlite_sequence`` (AUTOINCREMENT's high-water mark), when the table has one."""
        found = self._q("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        return int(found[0][0]) if found else 0

    def set_id_floor(self, table: str, floor: int) -> None:
        """Raise ``sqlite_sequence`` to ``floor`` for an AUTOINCREMENT table (inserting ids already raised it to their maximum)."""
        if not self._q("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"):
            return
        if not any(
            "AUTOINCREMENT" in (r[0] or "").upper()
            for r in self._q("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        ):
            return
        self._conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (floor, table))
        self._conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? WHERE NOT EXISTS"
            " (SELECT 1 FROM sqlite_sequence WHERE name = ?)",
            (table, floor, table),
        )

    def begin_read(self) -> None:
        """BEGIN, then a first read: the snapshot starts there."""
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def begin_write(self) -> None:
        """BEGIN IMMEDIATE: the write lock from the start."""
        self._conn.execute("BEGIN IMMEDIATE")

    def analyze(self, tables: Sequence[str]) -> None:
        """Nothing: the SQLite store keeps no planner statistics (its plans follow its indexes)."""

    def commit(self) -> None:
        """COMMIT."""
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        """ROLLBACK, when a transaction is open."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the file, then release the state directory's lock."""
        try:
            self._conn.close()
        finally:
            self._lock.close()


def _packed(table: str, columns: Sequence[str]) -> list[bool]:
    """Per column: does SQLite keep it as :func:`pack_json` values? (Empty when none is.)"""
    names = SQLITE_PACKED_JSON.get(table, frozenset())
    flags = [c in names for c in columns]
    return flags if any(flags) else []


def _column_list(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


class PostgresSide:
    """A PostgreSQL store (the schema ``search_path`` names); its lock is the in-use advisory lock.

    Every open :class:`~listener.store.postgresql.PostgresStore` (a daemon,
    an operator's command) holds that lock SHARED on its writer session; the
    copy takes it EXCLUSIVE without waiting, so it refuses a store in use and,
    while it copies, no daemon can open the store (docs/store.md).

    Args:
        url: the store's URL (no password in it).
        password: from a password file, or None (libpq's ``PGPASSWORD`` and ``~/.pgpass`` still apply).
        create: create the schema if there is none (a target), and migrate an older one.

    Raises:
        StoreError: the server cannot be reached, or the store is in use.
    """

    def __init__(self, url: str, password: str | None, *, create: bool) -> None:
        import psycopg

        from listener.store.pg_schema import IN_USE_LOCK, migrate
        from listener.store.pgurl import display_url
        from listener.store.postgresql import connect_session
        from listener.store.writer import store_error

        self._psycopg = psycopg
        self.where = display_url(url)
        self._conn = connect_session(url, password, writer=True)
        try:
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (IN_USE_LOCK,)
            ).fetchone()
            if row is None or row[0] is None:
                raise StoreError(f"{self.where}: no schema to use (the search_path names none that exists)")
            if not row[0]:
                raise StoreError(
                    f"{self.where} is in use: a daemon (overread serve) or another overread command has it open"
                    " (it holds the store's in-use advisory lock); stop it before the copy"
                )
            if create:
                migrate(self._conn)
        except psycopg.Error as exc:
            self._conn.close()
            raise store_error(f"{self.where}: opening for the copy", exc) from None
        except BaseException:
            self._conn.close()
            raise
        self._time_cols: dict[str, frozenset[str]] = {}

    def _q(self, sql: LiteralString, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def version(self) -> int:
        """``overread_schema.version`` (pg_schema.schema_version)."""
        from listener.store.pg_schema import schema_version as pg_version

        return pg_version(self._conn)

    def tables(self) -> dict[str, tuple[str, ...]]:
        """Base tables and their columns in ``current_schema()``, from ``information_schema``."""
        found: dict[str, list[str]] = {}
        for table, column in self._q(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
            " ORDER BY c.table_name, c.ordinal_position"
        ):
            if table not in SKIPPED_TABLES:
                found.setdefault(str(table), []).append(str(column))
        return {name: tuple(cols) for name, cols in found.items()}

    def parents(self, table: str) -> set[str]:
        """From ``pg_constraint`` (foreign keys)."""
        return {
            str(r[0])
            for r in self._q(
                "SELECT confrelid::regclass::text FROM pg_constraint"
                " WHERE contype = 'f' AND conrelid = to_regclass(%s)",
                (table,),
            )
        }

    def time_columns(self, table: str) -> frozenset[str]:
        """The ``timestamptz`` (and ``timestamp``) columns."""
        if table not in self._time_cols:
            self._time_cols[table] = frozenset(
                str(r[0])
                for r in self._q(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s AND data_type LIKE 'timestamp%%'",
                    (table,),
                )
            )
        return self._time_cols[table]

    def count(self, table: str) -> int:
        """``count(*)``."""
        row = self._conn.execute(self._sql("SELECT count(*) FROM {}", table)).fetchone()
        return int(row[0]) if row else 0

    def _sql(self, template: str, table: str, columns: Sequence[str] = ()) -> Any:
        from psycopg import sql

        parts: list[Any] = [sql.Identifier(table)]
        if columns:
            parts.insert(0, sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        return sql.SQL(template).format(*parts)

    def rows(self, table: str, columns: Sequence[str], batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """A server-side cursor in primary-key order (the first column), ``batch`` rows a fetch."""
        with self._conn.cursor(name=f"copy_{table}") as cursor:
            cursor.itersize = batch
            cursor.execute(self._sql("SELECT {} FROM {} ORDER BY 1", table, columns))
            while chunk := cursor.fetchmany(batch):
                yield chunk

    def write(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``COPY ... FROM STDIN``; SQLite's time texts become datetimes in the time columns."""
        times = self.time_columns(table)
        at = [i for i, c in enumerate(columns) if c in times]
        with self._conn.cursor() as cursor, cursor.copy(self._sql("COPY {1} ({0}) FROM STDIN", table, columns)) as copy:
            for row in rows:
                if at:
                    values = list(row)
                    for i in at:
                        if isinstance(values[i], str):
                            # SQLite's "" in a NOT NULL time column is PostgreSQL's NULL (no time yet).
                            values[i] = ops.dt(values[i]) if values[i] else None
                    copy.write_row(values)
                else:
                    copy.write_row(row)

    def _sequence(self, table: str) -> tuple[str, str] | None:
        """The table's identity column and its sequence, or None."""
        for (column,) in self._q(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND is_identity = 'YES'",
            (table,),
        ):
            row = self._conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()
            if row is not None and row[0]:
                return str(column), str(row[0])
        return None

    def clear(self, table: str) -> None:
        """DELETE every row."""
        self._conn.execute(self._sql("DELETE FROM {}", table))

    def id_floor(self, table: str) -> int:
        """The identity sequence's last value (0 when never used)."""
        found = self._sequence(table)
        if found is None:
            return 0
        row = self._conn.execute("SELECT pg_sequence_last_value(%s::regclass)", (found[1],)).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def set_id_floor(self, table: str, floor: int) -> None:
        """``setval`` the identity sequence to the larger of ``floor`` and the table's highest id."""
        found = self._sequence(table)
        if found is None:
            return
        from psycopg import sql

        query = sql.SQL("SELECT greatest(%s, (SELECT max({}) FROM {}))").format(
            sql.Identifier(found[0]), sql.Identifier(table)
        )
        row = self._conn.execute(query, (floor,)).fetchone()
        top = int(row[0]) if row is not None and row[0] is not None else 0
        if top > 0:
            self._conn.execute("SELECT setval(%s, %s, true)", (found[1], top))
        else:
            self._conn.execute("SELECT setval(%s, 1, false)", (found[1],))

    def begin_read(self) -> None:
        """One REPEATABLE READ, READ ONLY snapshot."""
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def begin_write(self) -> None:
        """BEGIN."""
        self._conn.execute("BEGIN")

    def analyze(self, tables: Sequence[str]) -> None:
        """ANALYZE each table: the statistics the planner prices the console's reads with
        (docs/store.md, "The overread page on PostgreSQL"). Inside the copy's transaction, so
        it samples the copied rows and its statistics commit with them."""
        for table in tables:
            self._conn.execute(self._sql("ANALYZE {}", table))

    def commit(self) -> None:
        """COMMIT (durable: the session runs with synchronous_commit on)."""
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        """ROLLBACK, when a transaction is open and the connection still works."""
        from psycopg.pq import TransactionStatus

        if (
            not self._conn.closed
            and not self._conn.broken
            and self._conn.info.transaction_status != (TransactionStatus.IDLE)
        ):
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the session: the server drops its advisory lock with it."""
        self._conn.close()
