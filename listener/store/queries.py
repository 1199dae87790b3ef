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

from listener.errors import StoreError
from listener.store.base import StoredReport, TaskPool
from listener.store.compact import join_route, register_functions, unpack_json
from listener.store.rows import task_filter

__all__ = ["ReportQueries", "StoredReport"]

_BUSY_TIMEOUT_S = 5.0


_COLUMNS = "r.id, m.received, m.transport, r.accession, r.report_json, r.findings_json, r.route_json, r.explanation"
_FROM = "FROM reports r JOIN messages m ON m.id = r.message_id WHERE m.state = 'processed'"


def _stage(alias: str) -> str:
    """SQL for how far a stored report stands: 0 preliminary (or other), 1 final, 2 corrected/amended."""
    status = f"json_extract(overread_json({alias}.report_json), '$.status')"
    return f"(CASE {status} WHEN 'final' THEN 1 WHEN 'corrected' THEN 2 WHEN 'amended' THEN 2 ELSE 0 END)"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def _stored(row: Sequence[Any]) -> StoredReport:
    """A StoredReport from the first columns of a row of :data:`_COLUMNS`."""
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
                raise StoreError(f"the store cannot be opened for reading ({type(exc).__name__})") from None
            self._conn = conn
        return self._conn

    def _select(self, sql: str, params: Sequence[Any]) -> list[Any]:
        failed = ""
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                failed = type(exc).__name__
        raise StoreError(f"the store cannot be read ({failed})")

    def _rows(self, where: str, params: Sequence[Any], limit: int) -> list[StoredReport]:
        sql = f"SELECT {_COLUMNS} {_FROM} {where} ORDER BY r.id DESC LIMIT ?"
        return [_stored(row) for row in self._select(sql, (*params, limit))]

    def routed(self, *, pool: str | None, limit: int) -> list[StoredReport]:
        """Reports with a route (optionally to one pool). Scans reports newest first."""
        where = "AND r.route_json != 'null'"
        params: list[Any] = []
        if pool is not None:
            where += " AND json_extract(r.route_json, '$.pool') = ?"
            params.append(pool)
        return self._rows(where, params, limit)

    def with_findings(
        self, *, fhir_id: str | None = None, accession: str | None = None, limit: int
    ) -> list[StoredReport]:
        """Reports that have findings: one by its FHIR id (from Location), or all of an accession."""
        where = "AND r.findings_json != '[]'"
        params: list[Any] = []
        if fhir_id is not None:
            where += " AND m.transport = 'http' AND json_extract(overread_json(r.report_json), '$.fhir_id') = ?"
            params.append(fhir_id)
        if accession is not None:
            where += " AND r.accession = ?"
            params.append(accession)
        return self._rows(where, params, limit)

    # ------------------------------------------------ Task worklist (signals)

    def tasks(self, *, status: str | None, pool: str | None, limit: int) -> list[tuple[StoredReport, datetime | None]]:
        """Routed reports that stand for a Task, newest first, each with when its Task was completed.

        A report released with no correction asks nobody for anything: no
        Task. A Task is completed (the datetime: when) once a later report of
        the same accession arrived that supersedes its report: a final for a
        preliminary, a corrected or amended report for a final. A second copy
        at the same stage (a resend, the same report over the other
        transport) does not complete it. Until then it is open (None).
        ``status``: "requested" (open only), "completed", or None (both).
        """
        where, params, done = _task_filter(status, pool)
        sql = f"SELECT {_COLUMNS}, CASE WHEN r.accession = '' THEN NULL ELSE {done} END {_FROM} {where} ORDER BY r.id DESC LIMIT ?"
        return [(_stored(row), _time(row[8]) if row[8] else None) for row in self._select(sql, (*params, limit))]

    def open_task_pools(self, *, limit: int) -> list[TaskPool]:
        """The newest ``limit`` open Tasks counted by pool (see ReportReader.open_task_pools)."""
        where, params, _ = _task_filter("requested", None)
        sql = (
            "SELECT pool, count(*), min(received) FROM (SELECT"
            " coalesce(json_extract(r.route_json, '$.pool'), '') AS pool, m.received AS received"
            f" {_FROM} {where} ORDER BY r.id DESC LIMIT ?) AS open GROUP BY pool"
        )
        rows = self._select(sql, (*params, limit))
        return sorted((TaskPool(str(pool), int(n), _time(oldest)) for pool, n, oldest in rows), key=lambda p: p.pool)

    def close(self) -> None:
        """Close the read connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _task_filter(status: str | None, pool: str | None) -> tuple[str, list[Any], str]:
    """:func:`listener.store.rows.task_filter` in SQLite's SQL."""
    return task_filter(
        status,
        pool,
        stage=_stage,
        corrections="coalesce(json_array_length(r.route_json, '$.corrections'), 0)",
        pool_of="json_extract(r.route_json, '$.pool')",
        mark="?",
    )
