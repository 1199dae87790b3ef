"""``overread store copy``: move a whole store between SQLite and PostgreSQL, ids kept.

Layer: storage, no logging. The steps (docs/store.md, "Moving a store"):

1. Open both ends with their in-use locks (the state directory's lock for
   SQLite, the in-use advisory lock EXCLUSIVE for PostgreSQL): a store a
   daemon has open is refused, and no daemon can open either while the copy runs.
2. The source must be at this program's schema version; the target is
   created or migrated to it, and must hold no rows.
3. The tables and columns are the source's live schema (introspected); the
   target's must be the same. Tables are copied parents first (foreign keys),
   in batches, from one snapshot of the source into ONE transaction on the
   target: a copy that fails at any point leaves the target empty.
4. Each table's id sequence is carried (never lower than the highest id), so
   an id is never handed out twice, as after a purge in the source.
5. Before the COMMIT, every table is read back from the target and its row
   count and checksum compared with the source's; a difference rolls back.
6. Then a PostgreSQL target's tables are ANALYZEd (the planner's statistics,
   committed with the rows).

The checksum (:func:`row_digest`) is computed the same way on both sides:
each row's values in a canonical form (times as SQLite's fixed-width UTC text,
whichever backend held them), hashed, and the hashes added modulo 2**64, so
the order rows come back in does not matter and a row lost, added or changed
changes the sum.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from listener.errors import StoreError
from listener.store import operations as ops
from listener.store.copy_sides import PostgresSide, Side, SQLiteSide, sqlite_path
from listener.store.pgurl import PSYCOPG_MISSING, display_url, is_postgresql_url, url_has_password
from listener.store.schema import SCHEMA_VERSION, newer_schema_text
from listener.store.writer import store_error

__all__ = ["COPY_BATCH", "CopyResult", "StoreSpec", "TableCopy", "copy_store", "parse_store_spec", "row_digest"]

#: Rows per read and per write: memory stays bounded by one batch of the largest rows.
COPY_BATCH = 1000
#: Tables whose target rows are replaced rather than counted as "not empty": the health
#: probe's one row is a timestamp the daemon rewrites (docs/hardening.md), not data.
REPLACED_TABLES = frozenset({"health_probe"})
_MOD = 1 << 64


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """One end as the command line names it: ``sqlite:PATH`` or ``postgresql://...``.

    Attributes:
        sqlite: the database file (SQLite), or None.
        url: the PostgreSQL URL (no password), or "".
        password_file: the file holding the PostgreSQL password, or None.
    """

    sqlite: Path | None = None
    url: str = ""
    password_file: Path | None = None

    @property
    def where(self) -> str:
        """What to print: the file, or the URL without a password."""
        return f"sqlite:{self.sqlite}" if self.sqlite is not None else display_url(self.url)


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One table copied: its rows and checksum (the same on both sides)."""

    name: str
    rows: int
    checksum: str


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What a copy did."""

    source: str
    target: str
    schema_version: int
    tables: tuple[TableCopy, ...]
    seconds: float

    @property
    def rows(self) -> int:
        """Rows copied, every table together."""
        return sum(t.rows for t in self.tables)


def parse_store_spec(text: str, option: str, password_file: Path | None = None) -> StoreSpec:
    """Read ``--from``/``--to``: ``sqlite:PATH`` (a state directory or a database file) or a PostgreSQL URL.

    Raises:
        StoreError: neither form, or a URL that carries a password (not printed).
    """
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:")
        if not path:
            raise StoreError(f"{option} sqlite: needs a path (sqlite:STATE_DIR or sqlite:FILE.db)")
        if password_file is not None:
            raise StoreError(f"{option}-password-file is for a PostgreSQL store, not {text}")
        return StoreSpec(sqlite=sqlite_path(Path(path)))
    if is_postgresql_url(text):
        if url_has_password(text):
            raise StoreError(
                f"{option}: the URL carries a password; give it in {option}-password-file or PGPASSWORD instead"
            )
        return StoreSpec(url=text, password_file=password_file)
    raise StoreError(f"{option} must be sqlite:PATH or postgresql://USER@HOST/DBNAME, not {text.split(':')[0]}:...")


def _open(spec: StoreSpec, *, create: bool) -> Side:
    if spec.sqlite is not None:
        return SQLiteSide(spec.sqlite, create=create)
    try:
        import psycopg  # noqa: F401 - only to say what is missing
    except ImportError:
        raise StoreError(PSYCOPG_MISSING) from None
    password = None
    if spec.password_file is not None:
        try:
            password = spec.password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise StoreError(f"password file {spec.password_file} cannot be read") from None
    return PostgresSide(spec.url, password, create=create)


def _canonical(value: Any, is_time: bool) -> bytes:
    """A value as the checksum reads it: type tag, then bytes; times as SQLite's UTC text."""
    if value is None:
        return b"n"
    if isinstance(value, datetime):
        return b"s" + ops.ts(value).encode()
    if isinstance(value, str):
        if is_time and not value:
            return b"n"  # SQLite's "" in a NOT NULL time column: PostgreSQL's NULL
        if is_time:
            try:
                return b"s" + ops.ts(ops.dt(value)).encode()
            except ValueError:
                pass  # not a time text: hashed as it is, so the sides differ and the copy rolls back
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"b" + bytes(value)
    if isinstance(value, bool):
        return b"i" + str(int(value)).encode()
    if isinstance(value, int):
        return b"i" + str(value).encode()
    return b"r" + repr(value).encode()


def row_digest(row: Sequence[Any], times: Sequence[bool]) -> int:
    """One row's 64-bit hash over its canonical values (length-prefixed, so no two rows run together)."""
    h = hashlib.blake2b(digest_size=8)
    for value, is_time in zip(row, times, strict=True):
        part = _canonical(value, is_time)
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return int.from_bytes(h.digest(), "little")


def _order(source: Side, tables: Sequence[str]) -> list[str]:
    """Parents before children (foreign keys), otherwise by name."""
    pending = {t: source.parents(t) & set(tables) - {t} for t in tables}
    ordered: list[str] = []
    while pending:
        ready = sorted(t for t, parents in pending.items() if not parents - set(ordered))
        if not ready:
            raise StoreError(f"the tables {', '.join(sorted(pending))} refer to each other: no order to copy them in")
        ordered += ready
        for t in ready:
            del pending[t]
    return ordered


def _check_source(side: Side) -> None:
    version = side.version()
    if version == 0:
        raise StoreError(f"no store in {side.where}")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{side.where}: {newer_schema_text(version, SCHEMA_VERSION)}")
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{side.where} is at schema v{version}, this program's is v{SCHEMA_VERSION}:"
            " run `overread store migrate` on it first (docs/store.md)"
        )


def _check_shapes(source: dict[str, tuple[str, ...]], target: dict[str, tuple[str, ...]], where: str) -> None:
    for table, columns in source.items():
        if table not in target:
            raise StoreError(f"{where} has no table {table}: the two schemas differ")
        if set(columns) != set(target[table]):
            diff = sorted(set(columns) ^ set(target[table]))
            raise StoreError(f"{where}: table {table} differs in columns {', '.join(diff)}")
    extra = sorted(set(target) - set(source))
    if extra:
        raise StoreError(f"{where} has tables the source does not: {', '.join(extra)}")


def _check_empty(side: Side, tables: Sequence[str]) -> None:
    held = [(t, n) for t in tables if t not in REPLACED_TABLES and (n := side.count(t))]
    if held:
        what = ", ".join(f"{t} {n}" for t, n in held)
        raise StoreError(f"{side.where} is not empty ({what} rows): copy only into an empty store")


def _time_flags(source: Side, target: Side, table: str, columns: Sequence[str]) -> list[bool]:
    times = source.time_columns(table) | target.time_columns(table)
    return [c in times for c in columns]


def _sum(side: Side, table: str, columns: Sequence[str], times: Sequence[bool], batch: int) -> tuple[int, int]:
    count = total = 0
    for chunk in side.rows(table, columns, batch):
        count += len(chunk)
        for row in chunk:
            total = (total + row_digest(row, times)) % _MOD
    return count, total


def copy_store(source_spec: StoreSpec, target_spec: StoreSpec, *, batch: int = COPY_BATCH) -> CopyResult:
    """Copy every row of ``source_spec`` into ``target_spec`` (created or migrated, and empty).

    Raises:
        StoreError: either store in use, the source not at this program's
            schema, the target not empty, the schemas differing, or a read,
            write or verification failing (then the target holds nothing new).
    """
    if batch < 1:
        raise StoreError("--batch must be at least 1")
    if source_spec.where == target_spec.where or (
        source_spec.sqlite is not None
        and target_spec.sqlite is not None
        and source_spec.sqlite.resolve() == target_spec.sqlite.resolve()
    ):
        raise StoreError(f"the source and the target are the same store ({source_spec.where})")
    started = time.monotonic()
    try:
        source = _open(source_spec, create=False)
        try:
            _check_source(source)
            target = _open(target_spec, create=True)
            try:
                tables = _copy(source, target, batch)
            finally:
                target.close()
        finally:
            source.close()
    except _driver_errors() as exc:
        # Reading either schema, or a connection lost before the copy's transaction began.
        raise store_error("copying the store", exc) from None
    return CopyResult(
        source_spec.where, target_spec.where, SCHEMA_VERSION, tables, round(time.monotonic() - started, 3)
    )


def _driver_errors() -> tuple[type[Exception], ...]:
    """The errors a driver raises during a copy (psycopg's only when it is installed), and a
    time text that does not parse (ValueError, whose text quotes the value: never shown)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error, OSError, ValueError)
    return (sqlite3.Error, psycopg.Error, OSError, ValueError)


def _copy(source: Side, target: Side, batch: int) -> tuple[TableCopy, ...]:
    shapes = source.tables()
    _check_shapes(shapes, target.tables(), target.where)
    order = _order(source, list(shapes))
    _check_empty(target, order)
    done: list[TableCopy] = []
    source.begin_read()
    target.begin_write()
    table = ""
    try:
        for table in order:
            if table in REPLACED_TABLES:
                target.clear(table)
            columns = shapes[table]
            times = _time_flags(source, target, table, columns)
            count = total = 0
            for chunk in source.rows(table, columns, batch):
                target.write(table, columns, chunk)
                count += len(chunk)
                for row in chunk:
                    total = (total + row_digest(row, times)) % _MOD
            target.set_id_floor(table, source.id_floor(table))
            done.append(TableCopy(table, count, f"{total:016x}"))
        for table_copy in done:
            columns = shapes[table_copy.name]
            times = _time_flags(source, target, table_copy.name, columns)
            count, total = _sum(target, table_copy.name, columns, times, batch)
            if count != table_copy.rows or f"{total:016x}" != table_copy.checksum:
                raise StoreError(
                    f"verification failed for table {table_copy.name}: {table_copy.rows} rows copied,"
                    f" {count} read back, checksums {table_copy.checksum} and {total:016x}; nothing was kept"
                )
        table = ""
        target.analyze([t.name for t in done])
        target.commit()
    except StoreError:
        target.rollback()
        raise
    except _driver_errors() as exc:
        # A driver's text can quote stored values: the operation and the error's class only.
        target.rollback()
        raise store_error(f"copying {f'table {table}' if table else 'the store'}", exc) from None
    except BaseException:
        target.rollback()
        raise
    finally:
        source.rollback()
    return tuple(done)
