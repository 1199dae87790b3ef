"""The SQLite :class:`~listener.store.base.ReportReader`: searches over stored reports.

Layer: storage (a file, blocking reads; call it from a thread, never the
reactor). :class:`~listener.store.sqlite.SQLiteStore` builds one and gives it
out as ``store.reports``. Opens its own read-only connection to the store's
SQLite file, so it neither shares nor changes the store's own reader; in WAL
mode a reader never waits for the writer.

The rows give back the JSON the server stored; this module never interprets it
beyond the ``json_extract`` filters.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from listener.errors import StoreError, database_error
from listener.store.base import StoredReport, TaskPool
from listener.store.compact import join_route, register_functions, unpack_json
from listener.store.rows import ReportSearchSql, task_pools

__all__ = ["ReportQueries", "StoredReport"]

_BUSY_TIMEOUT_S = 5.0


#: The searches' statements (listener/store/rows.py), in SQLite's words: ``overread_json``
#: unpacks a compact report_json (docs/store.md, "Compact storage").
_SQL = ReportSearchSql(
    mark="?",
    field=lambda json, key: f"json_extract({json}, '$.{key}')",
    report=lambda alias: f"overread_json({alias}.report_json)",
    corrections="coalesce(json_array_length(r.route_json, '$.corrections'), 0)",
)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def _stored(row: Sequence[Any]) -> StoredReport:
    """A StoredReport from the first columns of a row of :data:`~listener.store.rows.REPORT_COLUMNS`."""
    return StoredReport(
        report_pk=int(row[0]),
        received=_time(row[1]),
        transport=str(row[2]),
        accession=str(row[3]),
        report_json=unpack_json(row[4]),
        findings_json=unpack_json(row[5]),
        route_json=join_route(row[6], row[7]),
    )


class ReportQueries:
    """Searches by routing pool, report id and accession, newest first.

    Args:
        path: the store's database file (``<state_dir>/overread.db``).

    Raises:
        StoreError: the file cannot be opened.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        # Opened lazily: the store creates and migrates the file first.
        if self._conn is None:
            try:
                conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=_BUSY_TIMEOUT_S,
                    check_same_thread=False,
                )
                register_functions(conn)
                conn.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise StoreError(f"the store cannot be opened for reading ({database_error(exc)})") from None
            self._conn = conn
        return self._conn

    def _select(self, sql: str, params: Sequence[Any]) -> list[Any]:
        failed = ""
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                failed = database_error(exc)
        raise StoreError(f"the store cannot be read ({failed})")

    def _rows(self, search: tuple[str, list[object]], limit: int) -> list[StoredReport]:
        sql, params = search
        return [_stored(row) for row in self._select(sql, (*params, limit))]

    def routed(self, *, pool: str | None, limit: int) -> list[StoredReport]:
        """Reports with a route (optionally to one pool). Scans reports newest first."""
        return self._rows(_SQL.routed(pool), limit)

    def with_findings(
        self, *, fhir_id: str | None = None, accession: str | None = None, limit: int
    ) -> list[StoredReport]:
        """Reports that have findings: one by its FHIR id (from Location), or all of an accession."""
        return self._rows(_SQL.with_findings(fhir_id, accession), limit)

    def message_of(self, fhir_id: str) -> int | None:
        """The message_pk of the HTTP message whose report has this FHIR id (from Location), or None."""
        sql, params = _SQL.message_of(fhir_id)
        rows = self._select(sql, (*params, 1))
        return int(rows[0][0]) if rows else None

    # ------------------------------------------------ Task worklist (signals)

    def tasks(self, *, status: str | None, pool: str | None, limit: int) -> list[tuple[StoredReport, datetime | None]]:
        """Routed reports that stand for a Task, newest first, each with when its Task was completed
        (None while open; the rules: :meth:`~listener.store.rows.ReportSearchSql.tasks`)."""
        sql, params = _SQL.tasks(status, pool)
        return [(_stored(row), _time(row[8]) if row[8] else None) for row in self._select(sql, (*params, limit))]

    def open_task_pools(self, *, limit: int) -> list[TaskPool]:
        """The newest ``limit`` open Tasks counted by pool (see ReportReader.open_task_pools)."""
        sql, params = _SQL.open_task_pools()
        return task_pools(self._select(sql, (*params, limit)), _time)

    def close(self) -> None:
        """Close the read connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
