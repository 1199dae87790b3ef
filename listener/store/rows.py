"""Row-to-value conversions both SQL backends share (SQLite and PostgreSQL read the same columns).

Each backend passes its own ``moment``: how a stored time column becomes an
aware UTC datetime (SQLite stores text, PostgreSQL a ``timestamptz``). The
store contract: docs/store.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from listener.store.base import BucketBin, HistoryEntry, MessageSummary, TrafficBin
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
