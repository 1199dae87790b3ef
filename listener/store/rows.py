"""Row-to-value conversions both SQL backends share (SQLite and PostgreSQL read the same columns).

Each backend passes its own ``moment``: how a stored time column becomes an
aware UTC datetime (SQLite stores text, PostgreSQL a ``timestamptz``). The
store contract: docs/store.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from listener.store.base import HistoryEntry, MessageSummary
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
