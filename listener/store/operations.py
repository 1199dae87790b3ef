"""SQLite statements behind the operator's tools: show, reprocess, resend, kick, audit.

Layer: storage, no Twisted and no logging. Each function takes the
connection it runs on: reads get the store's shared reader (under its lock),
writes run on the group-commit writer thread inside its transaction, so every
change here commits with everything else that changes the same rows (a
replaced processing with its reports and routing messages; a delivery with its
event). What the operator sees is described in docs/operations.md ("Finding one
message", "Reprocessing", "Resending and unsticking the outbox", "Audit").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from listener.errors import StoreError
from listener.store.base import (
    SCORER_MAX,
    AuditEntry,
    DestinationState,
    MessageDetail,
    MessageRecord,
    MessageSummary,
    OutboxEvent,
    OutboxRow,
    Processing,
    ReportRecord,
    ReportRow,
    SaveResult,
    ScoreRecord,
    StoredScore,
    audit_target_json,
)
from listener.store.base import TEXT_MAX as DETAIL_MAX
from listener.store.compact import join_route, pack_json, pack_raw, unpack_json, unpack_raw
from listener.store.rows import (
    PRIOR_COLUMNS,
    SUMMARY_COLUMNS,
    VERSION_COLUMNS,
    forms_of,
    message_summary,
    prior_values,
    version_columns,
    version_values,
)

#: The message columns a MessageSummary is read from (alias ``m``).

OUTBOX_COLUMNS = (
    "o.id, o.destination, o.accession, o.control_id, o.payload, o.state, o.attempts,"
    " o.next_attempt_at, o.last_error, o.created, o.delivered_at, o.message_id, o.resent_from,"
    " o.lease_holder, o.lease_expires"
)


def ts(value: datetime) -> str:
    """Format an aware datetime as fixed-width UTC text (text order is time order)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def dt(text: str) -> datetime:
    """The aware UTC datetime of a stored time text."""
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def version_texts(
    report_json: str, findings_json: str, received: str, processed: bool
) -> tuple[str, int | None, str, float | None, str]:
    """:func:`listener.store.rows.version_columns` with the times as stored text (``received`` already is)."""
    return _as_stored(version_columns(report_json, findings_json, dt(received), processed), received)


def _as_stored(
    values: tuple[datetime, int | None, datetime, float | None, str], received: str
) -> tuple[str, int | None, str, float | None, str]:
    """A version summary's column values (:func:`listener.store.rows.version_values`) with the times
    as stored text (``received``: the message's, already stored text)."""
    _, stage, clinical, minutes, summary = values
    return received, stage, ts(clinical), minutes, summary


def _opt_dt(text: str | None) -> datetime | None:
    return dt(text) if text else None


def summary(row: Sequence[Any]) -> MessageSummary:
    """A MessageSummary from a row of :data:`SUMMARY_COLUMNS` (times stored as text)."""
    return message_summary(row, dt)


def outbox_row(row: Sequence[Any]) -> OutboxRow:
    """An OutboxRow from a row of :data:`OUTBOX_COLUMNS`."""
    return OutboxRow(
        id=row[0],
        destination=row[1],
        accession=row[2],
        control_id=row[3],
        payload=bytes(row[4]),
        state=row[5],
        attempts=row[6],
        next_attempt_at=dt(row[7]),
        last_error=row[8],
        created=dt(row[9]),
        delivered_at=_opt_dt(row[10]),
        message_pk=int(row[11]),
        resent_from=row[12],
        lease_holder=row[13] or "",
        lease_expires=_opt_dt(row[14]),
    )


def add_event(conn: sqlite3.Connection, outbox_id: int, at: datetime, event: str, detail: str = "") -> None:
    """Record one event of an outbox row (writer thread, inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO outbox_events (outbox_id, at, event, detail) VALUES (?, ?, ?, ?)",
        (outbox_id, ts(at), event, detail[:DETAIL_MAX]),
    )


# ------------------------------------------------------------------- reading


def _report_rows(conn: sqlite3.Connection, message_pk: int) -> tuple[ReportRow, ...]:
    return tuple(
        ReportRow(
            seq=r[0],
            accession=r[1],
            bucket=r[2],
            report_json=unpack_json(r[3]),
            findings_json=unpack_json(r[4]),
            route_json=join_route(r[5], r[6]),
        )
        for r in conn.execute(
            "SELECT seq, accession, bucket, report_json, findings_json, route_json, explanation FROM reports"
            " WHERE message_id = ? ORDER BY seq",
            (message_pk,),
        )
    )


def _reports_from_json(text: str) -> tuple[ReportRow, ...]:
    return tuple(
        ReportRow(
            seq=int(r["seq"]),
            accession=str(r["accession"]),
            bucket=str(r["bucket"]),
            report_json=str(r["report_json"]),
            findings_json=str(r["findings_json"]),
            route_json=str(r["route_json"]),
        )
        for r in json.loads(text)
    )


def message_detail(conn: sqlite3.Connection, message_pk: int) -> MessageDetail | None:
    """Everything stored about one message (reader connection)."""
    row = conn.execute(
        f"SELECT {SUMMARY_COLUMNS}, m.processed, m.ack, m.raw FROM messages m WHERE m.id = ?", (message_pk,)
    ).fetchone()
    if row is None:
        return None
    head = summary(row)
    processings = tuple(
        Processing(
            number=p[0],
            processed=dt(p[1]),
            superseded=dt(p[2]),
            superseded_by=p[3],
            feed=p[4],
            state=p[5],
            ack_code=p[6],
            error_code=p[7],
            ack=bytes(p[8]),
            raw=unpack_raw(p[9]),
            reports=_reports_from_json(p[10]),
        )
        for p in conn.execute(
            "SELECT number, processed, superseded, superseded_by, feed, state, ack_code, error_code, ack, raw,"
            " reports_json FROM processings WHERE message_id = ? ORDER BY number",
            (message_pk,),
        )
    )
    outbox = []
    for o in conn.execute(f"SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.message_id = ? ORDER BY o.id", (message_pk,)):
        events = tuple(
            OutboxEvent(dt(e[0]), e[1], e[2])
            for e in conn.execute(
                "SELECT at, event, detail FROM outbox_events WHERE outbox_id = ? ORDER BY id", (o[0],)
            )
        )
        outbox.append((outbox_row(o), events))
    return MessageDetail(
        summary=head,
        processed=dt(row[13]) if row[13] else head.received,
        ack=bytes(row[14]),
        raw=unpack_raw(row[15]),
        reports=_report_rows(conn, message_pk),
        processings=processings,
        outbox=tuple(outbox),
    )


def destination_states(conn: sqlite3.Connection, destination: str | None = None) -> list[DestinationState]:
    """The recorded connection state of every destination (or one)."""
    return [
        DestinationState(r[0], r[1], r[2], _opt_dt(r[3]), _opt_dt(r[4]), _opt_dt(r[5]))
        for r in conn.execute(
            "SELECT destination, connect_failures, last_connect_error, last_connect_error_at, next_connect_at,"
            " kick_requested_at FROM destination_state WHERE (?1 IS NULL OR destination = ?1) ORDER BY destination",
            (destination,),
        )
    ]


def audit_entries(
    conn: sqlite3.Connection, *, since: datetime | None, action: str | None, limit: int | None
) -> list[AuditEntry]:
    """Audit entries, oldest first, from ``since`` on."""
    return [
        AuditEntry(r[0], dt(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])
        for r in conn.execute(
            "SELECT id, at, actor, via, action, target, rows, detail FROM audit"
            " WHERE at >= ?1 AND (?2 IS NULL OR action = ?2) ORDER BY id LIMIT ?3",
            (ts(since) if since is not None else "", action, -1 if limit is None else limit),
        )
    ]


# ------------------------------------------------------------------- writing


def _report_row(pk: int, seq: int, r: ReportRecord, received: str, processed: bool) -> tuple[Any, ...]:
    """The values of one ``reports`` INSERT: the forms the record came with (a worker process made
    them) or made now."""
    f = forms_of(r)
    return (
        pk,
        seq,
        r.accession,
        r.bucket,
        pack_json(r.report_json) if f.report_json is None else f.report_json,
        pack_json(r.findings_json) if f.findings_json is None else f.findings_json,
        f.route,
        f.explanation,
        r.patient_id,
        r.patient_authority,
        *_as_stored(
            version_values(f.stage, f.report_time, f.observation_time, f.summary, dt(received), processed), received
        ),
        *prior_values(f.prior, received[:10]),
    )


def insert_children(conn: sqlite3.Connection, pk: int, record: MessageRecord, created: str, received: str) -> None:
    """Insert a record's reports and outbox rows for message ``pk`` (writer thread); ``received`` is
    the message's stored receive time (each report's version summary keeps it)."""
    if record.reports:
        conn.executemany(
            "INSERT INTO reports (message_id, seq, accession, bucket, report_json,"
            f" findings_json, route_json, explanation, patient_id, patient_authority, {', '.join(VERSION_COLUMNS)},"
            f" {', '.join(PRIOR_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [_report_row(pk, seq, r, received, record.state == "processed") for seq, r in enumerate(record.reports)],
        )
    for o in record.outbox:
        conn.execute(
            "INSERT INTO outbox (message_id, destination, accession, control_id, payload,"
            " next_attempt_at, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
            (pk, o.destination, o.accession, o.control_id, o.payload, created),
        )
    if record.scores:
        insert_scores(conn, record.scores, pk)


def insert_scores(conn: sqlite3.Connection, scores: Sequence[ScoreRecord], message_pk: int | None) -> int:
    """Insert explicit scores, skipping those already stored; return how many were new (writer thread)."""
    new = 0
    for s in scores:
        cur = conn.execute(
            "INSERT INTO scores (accession, grade, source, scorer, note, scored_at, message_id)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (accession, source, scorer, grade, scored_at) DO NOTHING",
            (s.accession, s.grade, s.source, s.scorer[:SCORER_MAX], s.note[:DETAIL_MAX], ts(s.scored_at), message_pk),
        )
        new += cur.rowcount
    return new


def scores_of(conn: sqlite3.Connection, accession: str, limit: int) -> tuple[StoredScore, ...]:
    """An accession's scores in the order they were recorded."""
    rows = conn.execute(
        "SELECT id, accession, grade, source, scorer, note, scored_at, message_id FROM scores"
        " WHERE accession = ? ORDER BY id LIMIT ?",
        (accession, limit),
    ).fetchall()
    return tuple(_stored_score(row) for row in rows)


def _stored_score(row: Sequence[Any]) -> StoredScore:
    """A StoredScore of (id, accession, grade, source, scorer, note, scored_at, message_id)."""
    pk, acc, grade, source, scorer, note, at, msg = row
    return StoredScore(int(pk), ScoreRecord(str(acc), grade, source, dt(at), str(scorer), str(note)), msg)


def scores_of_many(
    conn: sqlite3.Connection, accessions: Sequence[str], limit: int
) -> dict[str, tuple[StoredScore, ...]]:
    """The scores of each of ``accessions`` that has any, each in the order recorded, at most ``limit`` each."""
    rows = conn.execute(
        "SELECT id, accession, grade, source, scorer, note, scored_at, message_id FROM (SELECT *,"
        " row_number() OVER (PARTITION BY accession ORDER BY id) AS n FROM scores"
        f" WHERE accession IN ({','.join('?' * len(accessions))})) WHERE n <= ? ORDER BY accession, id",
        (*accessions, limit),
    ).fetchall()
    found: dict[str, list[StoredScore]] = {}
    for row in rows:
        stored = _stored_score(row)
        found.setdefault(stored.score.accession, []).append(stored)
    return {a: tuple(s) for a, s in found.items()}


def never_accepted(conn: sqlite3.Connection, message_pk: int) -> bool:
    """True when no processing of the message was ever accepted: none routed anything, and
    every earlier processing was a rejection (a sender's resend may then replace it)."""
    (found,) = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE message_id = ?1)"
        " AND NOT EXISTS (SELECT 1 FROM processings WHERE message_id = ?1 AND state != 'rejected')",
        (message_pk,),
    ).fetchone()
    return bool(found)


def replace_processing(
    conn: sqlite3.Connection,
    message_pk: int,
    record: MessageRecord,
    *,
    now: datetime,
    superseded_by: str,
    expected_processing: int | None,
) -> SaveResult:
    """Keep the message's current processing as a numbered earlier one and store ``record`` as the new one.

    The raw bytes are replaced only when ``record`` carries some; the earlier
    processing keeps the old bytes when they differ. The control id becomes
    ``record.control_id`` (the same, except for a FHIR body accepted under its
    resource identity after a refusal kept under its bytes). ``record.outbox`` is
    queued as given (the caller decides which routing messages a new
    processing sends).

    Raises:
        StoreError: the message is unknown, or was processed again since the
            caller read it (``expected_processing`` no longer current).
    """
    row = conn.execute(
        "SELECT processing, processed, received, feed, state, ack_code, error_code, ack, raw FROM messages WHERE id = ?",
        (message_pk,),
    ).fetchone()
    if row is None:
        raise StoreError(f"message {message_pk} is not in the store")
    number, processed, received, feed, state, ack_code, error_code, ack, stored_raw = row
    raw = unpack_raw(stored_raw)
    if expected_processing is not None and number != expected_processing:
        raise StoreError(f"message {message_pk} was processed again meanwhile (now processing {number}); run again")
    old_reports = [
        {
            "seq": r.seq,
            "accession": r.accession,
            "bucket": r.bucket,
            "report_json": r.report_json,
            "findings_json": r.findings_json,
            "route_json": r.route_json,
        }
        for r in _report_rows(conn, message_pk)
    ]
    new_raw = record.raw
    kept_raw = stored_raw if (new_raw is not None and raw is not None and raw != new_raw) else None
    conn.execute(
        "INSERT INTO processings (message_id, number, processed, superseded, superseded_by, feed, state, ack_code,"
        " error_code, ack, raw, reports_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            message_pk,
            number,
            processed or received,
            ts(now),
            superseded_by[:DETAIL_MAX],
            feed,
            state,
            ack_code,
            error_code,
            ack,
            kept_raw,
            json.dumps(old_reports, ensure_ascii=False),
        ),
    )
    conn.execute("DELETE FROM reports WHERE message_id = ?", (message_pk,))
    conn.execute(
        "UPDATE messages SET feed = ?, state = ?, ack_code = ?, error_code = ?, ack = ?, processing = ?, processed = ?,"
        " raw = coalesce(?, raw), control_id = ? WHERE id = ?",
        (
            record.feed,
            record.state,
            record.ack_code,
            record.error_code,
            record.ack,
            number + 1,
            ts(now),
            pack_raw(new_raw, record.packed_raw),
            record.control_id,
            message_pk,
        ),
    )
    insert_children(conn, message_pk, record, ts(now), str(received))
    return SaveResult(message_pk, False, record.ack, record.ack_code, record.state, number + 1)


def record_audit(
    conn: sqlite3.Connection,
    *,
    at: datetime,
    actor: str,
    via: str,
    action: str,
    target: dict[str, Any],
    rows: int,
    detail: str = "",
) -> int:
    """Append one audit entry (writer thread); return its id."""
    cur = conn.execute(
        "INSERT INTO audit (at, actor, via, action, target, rows, detail) VALUES (?,?,?,?,?,?,?)",
        (ts(at), actor[:200], via, action, audit_target_json(target), int(rows), detail[:DETAIL_MAX]),
    )
    return int(cur.lastrowid or 0)


def outbox_resend(
    conn: sqlite3.Connection, ids: Sequence[int], now: datetime, *, force: bool, note: str
) -> list[tuple[int, int]]:
    """Queue delivered rows again as new pending rows (same payload and MSH-10); return (old, new) pairs.

    A row is skipped when it is not delivered, or when a later row of its
    (destination, accession) is pending or delivered (the RIS would get an
    older decision after a newer one) unless ``force``.
    """
    pairs = []
    stamp = ts(now)
    for row_id in ids:
        found = conn.execute(
            "SELECT o.message_id, o.destination, o.accession, o.control_id, o.payload FROM outbox o"
            " WHERE o.id = ?1 AND o.state = 'delivered'"
            " AND (?2 OR NOT EXISTS (SELECT 1 FROM outbox l WHERE l.destination = o.destination"
            "   AND l.accession = o.accession AND l.id > o.id AND l.state IN ('pending', 'delivered')))",
            (int(row_id), int(force)),
        ).fetchone()
        if found is None:
            continue
        cur = conn.execute(
            "INSERT INTO outbox (message_id, destination, accession, control_id, payload, next_attempt_at, created,"
            " updated, resent_from) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7)",
            (*found, stamp, int(row_id)),
        )
        new_id = int(cur.lastrowid or 0)
        add_event(conn, int(row_id), now, "resent", f"queued again as row {new_id}{note}")
        add_event(conn, new_id, now, "queued", f"resend of row {row_id}{note}")
        pairs.append((int(row_id), new_id))
    return pairs


def outbox_kick(conn: sqlite3.Connection, destination: str | None, now: datetime, note: str) -> int:
    """Make pending rows waiting for a retry time due now, and ask the worker to reconnect now.

    Returns:
        How many pending rows the destination(s) hold: all are tried at the worker's next poll.
    """
    stamp = ts(now)
    waiting = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at > ?1 AND (?2 IS NULL OR destination = ?2)",
            (stamp, destination),
        )
    ]
    for row_id in waiting:
        conn.execute("UPDATE outbox SET next_attempt_at = ?, updated = ? WHERE id = ?", (stamp, stamp, row_id))
        add_event(conn, row_id, now, "kicked", f"due now{note}")
    names = (
        [destination]
        if destination is not None
        else [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT destination FROM outbox UNION SELECT destination FROM destination_state"
            )
        ]
    )
    for name in names:
        conn.execute(
            "INSERT INTO destination_state (destination, kick_requested_at, updated) VALUES (?1, ?2, ?2)"
            " ON CONFLICT (destination) DO UPDATE SET kick_requested_at = ?2, updated = ?2",
            (name, stamp),
        )
    (pending,) = conn.execute(
        "SELECT count(*) FROM outbox WHERE state = 'pending' AND (?1 IS NULL OR destination = ?1)", (destination,)
    ).fetchone()
    return int(pending)


def destination_connect_failed(
    conn: sqlite3.Connection, destination: str, now: datetime, failures: int, error_text: str, next_connect_at: datetime
) -> None:
    """Record a failed connection attempt of a destination's worker."""
    conn.execute(
        "INSERT INTO destination_state (destination, connect_failures, last_connect_error, last_connect_error_at,"
        " next_connect_at, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?4)"
        " ON CONFLICT (destination) DO UPDATE SET connect_failures = ?2, last_connect_error = ?3,"
        " last_connect_error_at = ?4, next_connect_at = ?5, updated = ?4",
        (destination, failures, error_text[:DETAIL_MAX], ts(now), ts(next_connect_at)),
    )


def destination_connected(conn: sqlite3.Connection, destination: str, now: datetime) -> None:
    """Record that a destination's worker is connected (clears the failure count; keeps the last error text)."""
    conn.execute(
        "UPDATE destination_state SET connect_failures = 0, next_connect_at = NULL, updated = ?2 WHERE destination = ?1",
        (destination, ts(now)),
    )
