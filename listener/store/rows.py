"""Row-to-value conversions both SQL backends share (SQLite and PostgreSQL read the same columns).

Each backend passes its own ``moment``: how a stored time column becomes an
aware UTC datetime (SQLite stores text, PostgreSQL a ``timestamptz``). The
store contract: docs/store.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from listener.outcomes.history import prelim_minutes, summarize
from listener.store.base import BucketBin, HistoryEntry, LoneVersions, MessageSummary, TrafficBin
from listener.store.compact import unpack_json

#: The columns of a message's summary row, selected from ``messages m``: :func:`message_summary` reads them.
SUMMARY_COLUMNS = (
    "m.id, m.control_id, m.sender_application, m.sender_facility, m.feed,"
    " m.received, m.transport, m.state, m.ack_code, m.error_code,"
    " (SELECT count(*) FROM reports r WHERE r.message_id = m.id),"
    " m.raw IS NOT NULL, m.processing"
)


def message_summary(row: Sequence[Any], moment: Callable[[Any], datetime]) -> MessageSummary:
    """A MessageSummary from a row of the backends' ``SUMMARY_COLUMNS``."""
    return MessageSummary(
        message_pk=int(row[0]),
        control_id=row[1],
        sender_application=row[2],
        sender_facility=row[3],
        feed=row[4],
        received=moment(row[5]),
        transport=row[6],
        state=row[7],
        ack_code=row[8],
        error_code=row[9],
        report_count=int(row[10]),
        raw_kept=bool(row[11]),
        processing=int(row[12]),
    )


def history_entry(row: Sequence[Any], moment: Callable[[Any], datetime]) -> HistoryEntry:
    """A HistoryEntry of (message id, seq, control id, received, transport, feed, report, findings, bucket, kept).

    The report and findings are read in either stored form (listener/store/compact.py).
    """
    pk, seq, cid, received, transport, feed, report, findings, bucket, kept = row
    return HistoryEntry(
        int(pk),
        int(seq),
        str(cid),
        moment(received),
        str(transport),
        str(feed),
        unpack_json(report),
        unpack_json(findings),
        str(bucket),
        bool(kept),
    )


#: The message columns :meth:`~listener.store.base.Store.traffic` groups by, after the bin.
TRAFFIC_COLUMNS = ("sender_application", "sender_facility", "transport", "ack_code", "state")


def _ordered(columns: Sequence[str], collate: str) -> str:
    return ", ".join(f"{c}{collate}" for c in columns)


def traffic_sql(hour: str, window: str, collate: str = "") -> str:
    """The GROUP BY of :meth:`~listener.store.base.Store.traffic` by hour over ``messages m``.

    ``hour`` is the backend's SQL for the hour of ``m.received`` (the leading
    expression of its ``messages_traffic`` index, so the groups come in index
    order), ``window`` its conditions for the window (with the placeholders),
    ``collate`` what follows each text column in ORDER BY so every backend
    orders by code point. Counts are ``n``.
    """
    columns = [f"m.{c}" for c in TRAFFIC_COLUMNS]
    return (
        f"SELECT {hour} AS bin, {', '.join(columns)}, count(*) AS n FROM messages m WHERE {window}"
        f" GROUP BY {hour}, {', '.join(columns)} ORDER BY {hour}, {_ordered(columns, collate)}"
    )


def bucket_mix_sql(hour: str, window: str, collate: str = "") -> str:
    """The GROUP BY of :meth:`~listener.store.base.Store.bucket_mix` by hour (see :func:`traffic_sql`).

    ``reports`` holds the current processing's reports only (a reprocess moves
    the earlier ones to ``processings``); each one's bucket is read from the
    ``reports_message_bucket`` index.
    """
    return (
        f"SELECT {hour} AS bin, r.bucket, count(*) AS n FROM messages m JOIN reports r ON r.message_id = m.id"
        f" WHERE {window} GROUP BY {hour}, r.bucket ORDER BY {hour}, r.bucket{collate}"
    )


def by_day(hours: str, day: str, columns: Sequence[str], collate: str = "") -> str:
    """The hourly counts of ``hours`` (:func:`traffic_sql` or :func:`bucket_mix_sql`) added up by day.

    ``day`` is the backend's SQL for the day of an hour ``bin``.
    """
    names = ", ".join(columns)
    return (
        f"SELECT {day} AS day, {names}, sum(n) FROM ({hours}) AS hours"
        f" GROUP BY day, {names} ORDER BY day, {_ordered(columns, collate)}"
    )


def traffic_bins(rows: Sequence[Sequence[Any]], moment: Callable[[Any], datetime]) -> tuple[TrafficBin, ...]:
    """TrafficBins of the rows of :func:`traffic_sql`; ``moment`` turns a bin value into its aware UTC start."""
    return tuple(
        TrafficBin(moment(start), str(app), str(facility), str(transport), str(ack), str(state), int(count))
        for start, app, facility, transport, ack, state, count in rows
    )


def bucket_bins(rows: Sequence[Sequence[Any]], moment: Callable[[Any], datetime]) -> tuple[BucketBin, ...]:
    """BucketBins of the rows of :func:`bucket_mix_sql`."""
    return tuple(BucketBin(moment(start), str(bucket), int(count)) for start, bucket, count in rows)


#: The ``reports`` columns of a version summary, in :func:`version_columns`' order (docs/store.md,
#: "Version summaries").
VERSION_COLUMNS = ("received", "stage", "clinical_at", "prelim_minutes", "summary")
#: How many version summaries a schema step back-fills per batch (bounds its memory).
VERSION_BATCH = 500
_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; a sender time whose UTC form falls outside year 1..9999 is clamped to that range."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return _EARLIEST if value.year == 1 else _LATEST


def version_columns(
    report_json: str, findings_json: str, received: datetime, processed: bool
) -> tuple[datetime, int | None, datetime, float | None, str]:
    """The :data:`VERSION_COLUMNS` of a report row.

    Its message's receive time; the report's stage (None when the message is
    not processed: the row is no version of its accession); its clinical time
    (the report time, else the receive time); for a preliminary with an
    observation time, the minutes from that to the clinical time as the
    scorecard's ``prelim_minutes`` counts them (None otherwise, or when
    negative); the :meth:`~listener.outcomes.history.ReadSummary.to_text` of
    its summary.
    """
    found = summarize(report_json, findings_json)
    clinical = _utc(found.report_time) if found.report_time is not None else received
    return (
        received,
        found.stage if processed else None,
        clinical,
        prelim_minutes(found.stage, found.observation_time, found.report_time or received),
        found.to_text(),
    )


def lone_versions_sql(windows: int, mark: str, cast: str = "", collate: str = "") -> str:
    """The GROUP BY of :meth:`~listener.store.base.Store.lone_versions` over ``reports r``.

    ``mark`` is the backend's placeholder, ``cast`` what follows a window bound
    placeholder (PostgreSQL types it), ``collate`` what makes ``min()`` of
    accessions compare by code point. Parameters: each window's bounds, then
    the receive window. Reads the ``reports_versions`` index over the receive
    window, and each row's accession in ``reports_accession`` (any other row
    of the accession, a version or not, leaves it to
    :meth:`~listener.store.base.Store.multi_version_accessions`).
    """
    values = ", ".join(f"({i}, {mark}{cast}, {mark}{cast})" for i in range(windows))
    return (
        f"WITH w (i, s, u) AS (VALUES {values})"
        f" SELECT w.i, r.summary, r.prelim_minutes, count(*), min(r.accession{collate})"
        " FROM reports r JOIN w ON r.clinical_at >= w.s AND r.clinical_at < w.u"
        f" WHERE r.received >= {mark} AND r.received < {mark} AND r.stage IS NOT NULL AND r.accession != ''"
        f" AND NOT EXISTS ({OTHER_ROW}) GROUP BY w.i, r.summary, r.prelim_minutes"
    )


#: A report row of the same accession as ``reports r`` other than ``r``.
OTHER_ROW = "SELECT 1 FROM reports o WHERE o.accession = r.accession AND o.id != r.id"

#: :meth:`~listener.store.base.Store.multi_version_accessions`: ``mark`` stands for the placeholder.
MULTI_VERSION_SQL = (
    "SELECT DISTINCT r.accession FROM reports r WHERE r.received >= {mark} AND r.received < {mark}"
    f" AND r.stage IS NOT NULL AND r.accession != '' AND EXISTS ({OTHER_ROW}) ORDER BY r.accession"
)


def task_filter(
    status: str | None, pool: str | None, *, stage: Callable[[str], str], corrections: str, pool_of: str, mark: str
) -> tuple[str, list[Any], str]:
    """The conditions of a Task search over ``reports r`` joined to ``messages m``
    (:meth:`~listener.store.base.ReportReader.tasks`) and their parameters, and the SQL of a
    Task's completion time.

    The backend gives its SQL for a report's ``stage`` (by table alias), for the number of
    ``corrections`` in ``r``'s route, for the ``pool`` of ``r``'s route, and its placeholder.
    """
    done = (
        "(SELECT min(m2.received) FROM reports r2 JOIN messages m2 ON m2.id = r2.message_id"
        " WHERE m2.state = 'processed' AND r2.accession = r.accession AND r2.id > r.id"
        f" AND {stage('r2')} > {stage('r')})"
    )
    where = f"AND r.route_json != 'null' AND NOT (r.bucket = 'release' AND {corrections} = 0)"
    params: list[Any] = []
    if pool is not None:
        where += f" AND {pool_of} = {mark}"
        params.append(pool)
    if status == "requested":
        where += f" AND (r.accession = '' OR {done} IS NULL)"
    elif status == "completed":
        where += f" AND r.accession != '' AND {done} IS NOT NULL"
    return where, params, done


def lone_rows(rows: Sequence[Sequence[Any]]) -> tuple[LoneVersions, ...]:
    """LoneVersions of the rows of :func:`lone_versions_sql`."""
    return tuple(
        LoneVersions(int(i), str(summary), None if minutes is None else float(minutes), int(count), str(first))
        for i, summary, minutes, count, first in rows
    )
