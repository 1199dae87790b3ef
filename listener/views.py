"""JSON views of what the store holds: one message, its details, one outbox row.

``overread messages``, ``show`` and ``outbox list`` print them with
``--format json`` (docs/cli.md, docs/operations.md), and the ``/api`` message
browser answers with the same objects (docs/http-api.md); :func:`write_detail_text`
is ``overread show``'s text form of the detail document (the console shows it too). Kept apart from the
commands so that the daemon's HTTP API and the CLI share them without
importing each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from listener.errors import hl7_error_label
from listener.hl7v2.keys import shown_key
from listener.hl7v2.segments import read_header
from listener.store.base import AuditEntry, MessageDetail, MessageSummary, OutboxRow

__all__ = [
    "attempts_text",
    "audit_dict",
    "detail_dict",
    "earlier_attempts",
    "iso_utc",
    "last_error_text",
    "message_dict",
    "peer_error_text",
    "reader_label",
    "row_dict",
    "write_detail_text",
]


def message_dict(msg: MessageSummary, declared: str = "") -> dict[str, Any]:
    """One message as the JSON object ``overread messages --format json`` prints.

    The control id and sender are shown as the sender wrote them (:func:`shown_key` with the
    message's MSH-18 ``declared``, when known; docs/operations.md, "Finding one message").
    """
    return {
        "message_id": shown_key(msg.control_id, declared),
        "sender": {
            "application": shown_key(msg.sender_application, declared),
            "facility": shown_key(msg.sender_facility, declared),
        },
        "received": msg.received.isoformat(),
        "state": msg.state,
        "ack_code": msg.ack_code,
        "error_code": msg.error_code,
        "feed": msg.feed,
        "transport": msg.transport,
        "report_count": msg.report_count,
        "raw_kept": msg.raw_kept,
        "processing": msg.processing,
        "message_pk": msg.message_pk,
    }


def row_dict(row: OutboxRow) -> dict[str, Any]:
    """One row as the JSON object ``overread outbox list --format json`` prints (no payload)."""
    return {
        "id": row.id,
        "destination": row.destination,
        "accession": row.accession,
        "control_id": row.control_id,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at.isoformat(),
        "last_error": row.last_error,
        "created": row.created.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
        "message_pk": row.message_pk,
        "resent_from": row.resent_from,
        "lease_holder": row.lease_holder or None,
        "lease_expires": row.lease_expires.isoformat() if row.lease_expires else None,
    }


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def iso_utc(value: datetime | None) -> str | None:
    """``value`` in UTC as ISO 8601 with ``Z``, or None."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def audit_dict(entry: AuditEntry, *, when: Callable[[datetime], str | None] = iso_utc) -> dict[str, Any]:
    """One audit entry as ``overread audit --format json`` and ``/api/audit`` show it.

    ``when`` writes its time: ``iso_utc`` for the CLI; the API passes ``datetime.isoformat``.
    """
    return {
        "id": entry.id,
        "at": when(entry.at),
        "actor": entry.actor,
        "via": entry.via,
        "action": entry.action,
        "target": json.loads(entry.target),
        "rows": entry.rows,
        "detail": entry.detail,
    }


def _report_dict(row: Any, with_text: bool) -> dict[str, Any]:
    report = json.loads(row.report_json)
    findings = json.loads(row.findings_json)
    if not with_text:
        for key in ("text", "comparison_text", "patient", "reason"):
            report.pop(key, None)
        if isinstance(report.get("reader"), dict):
            report["reader"].pop("name", None)
        for finding in findings:
            for evidence in finding.get("evidence", ()):
                evidence.pop("text", None)  # words of the report
    return {
        "seq": row.seq,
        "accession": row.accession,
        "bucket": row.bucket,
        "report": report,
        "findings": findings,
        "route": json.loads(row.route_json),
    }


def detail_dict(detail: MessageDetail, *, with_raw: bool = True) -> dict[str, Any]:
    """The JSON document ``overread show --format json`` prints (and ``GET /api/messages/<pk>`` answers).

    Its keys are decoded with the message's MSH-18 while the raw body is kept (:func:`message_dict`).
    """
    header = read_header(detail.raw) if detail.raw is not None and detail.summary.transport == "mllp" else None
    return {
        **message_dict(detail.summary, header.charset if header is not None else ""),
        "processed": iso_utc(detail.processed),
        "ack": _text(detail.ack),
        "raw": _text(detail.raw) if with_raw else None,
        "raw_bytes": len(detail.raw) if detail.raw is not None else None,
        "reports": [_report_dict(r, with_raw) for r in detail.reports],
        "outbox": [
            {
                **row_dict(row),
                "attempts_before_retry": earlier_attempts([e.event for e in events]),
                "events": [{"at": iso_utc(e.at), "event": e.event, "detail": e.detail} for e in events],
            }
            for row, events in detail.outbox
        ],
        "processings": [
            {
                "number": p.number,
                "processed": iso_utc(p.processed),
                "superseded": iso_utc(p.superseded),
                "superseded_by": p.superseded_by,
                "feed": p.feed,
                "state": p.state,
                "ack_code": p.ack_code,
                "error_code": p.error_code,
                "ack": _text(p.ack),
                "raw": _text(p.raw) if with_raw else None,
                "reports": [_report_dict(r, with_raw) for r in p.reports],
            }
            for p in detail.processings
        ],
    }


#: The ERR-3 code the outbox worker writes into a row's error text: ``AR (ERR-3 200)``.
_PEER_ERR3 = re.compile(r"\(ERR-3 ([0-9]{1,3})\)")


def peer_error_text(text: str) -> str:
    """An error text of the outbox with the meaning of the RIS's ERR-3 code spelled out.

    ``AR (ERR-3 200)`` reads ``AR (ERR-3 200 Unsupported message type: the receiver does not
    take this message type (MSH-9))``: the HL7 table 0357 code the RIS answered, named
    (docs/outbound.md, "Answers"). The stored text (and JSON) keeps the bare code.
    """
    return _PEER_ERR3.sub(lambda m: f"(ERR-3 {hl7_error_label(m.group(1))})", text)


def last_error_text(state: str, error: str) -> str:
    """An outbox row's last error as the text views print it: a delivered row's is from before its delivery.

    The row keeps the RIS's last refusal after a retry delivered it (its history in ``show``
    says when); printed bare beside ``delivered`` it read as a failed delivery (docs/outbound.md).
    The RIS's ERR-3 code is named (:func:`peer_error_text`).
    """
    shown = peer_error_text(error)
    return f"before delivery: {shown}" if shown and state == "delivered" else shown


#: The outbox events that each count one attempt to send a row (docs/outbound.md).
_ATTEMPT_EVENTS = frozenset({"delivered", "failed", "dead"})


def earlier_attempts(events: Sequence[str]) -> int:
    """How many attempts a row had before its last ``outbox retry`` (0 when never retried).

    ``retry`` starts a dead row's attempt count again at 0, so that it gets its
    ``max_attempts`` afresh (docs/outbound.md); the row's events (in order) still hold
    every earlier attempt, and this counts them.
    """
    retried = [n for n, event in enumerate(events) if event == "retried"]
    return sum(1 for event in events[: retried[-1]] if event in _ATTEMPT_EVENTS) if retried else 0


def attempts_text(attempts: int, earlier: int) -> str:
    """A row's attempts as views print them: ``1 (3 before retry)`` once ``retry`` restarted the count."""
    return f"{attempts} ({earlier} before retry)" if earlier else str(attempts)


def reader_label(reader: dict[str, Any]) -> str:
    """A stored report's reader as the text views print it: id, name, and the type when the report gave one.

    Messages name the reader, not whether the reader is internal or external: that comes from
    readers.yaml when the report is routed, and the route's explanation prints it
    (docs/routing.md). The report's own ``unknown`` is left out so it never contradicts that.
    """
    kind = reader.get("type") or ""
    return " ".join(x for x in (reader.get("id") or "-", reader.get("name") or "") if x) + (
        f" ({kind})" if kind and kind != "unknown" else ""
    )


def _segments(text: str) -> str:
    return "\n".join(line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line)


def _write_report_text(out: TextIO, item: dict[str, Any], indent: str = "") -> None:
    report = item["report"]
    proc = report.get("procedure") or {}
    reader = report.get("reader") or {}
    out.write(
        f"{indent}report {item['seq'] + 1}: accession {item['accession'] or '-'}  status {report.get('status', '')}"
        f"  modality {report.get('modality') or '-'}\n"
    )
    out.write(
        f"{indent}  procedure {proc.get('code') or '-'} {proc.get('coding_system') or ''} {proc.get('text') or ''}".rstrip()
        + (f"  modifiers {','.join(proc['modifiers'])}" if proc.get("modifiers") else "")
        + "\n"
    )
    if reader:
        out.write(f"{indent}  reader {reader_label(reader)}\n")
    patient = report.get("patient")
    if patient:
        out.write(
            f"{indent}  patient {patient.get('id') or '-'}"
            + (f" ({patient['id_authority']})" if patient.get("id_authority") else "")
            + "\n"
        )
    sections = [s.get("kind", "") for s in report.get("sections", [])]
    if sections:
        out.write(f"{indent}  sections {', '.join(sections)}\n")
    route = item["route"]
    if route:
        out.write(
            f"{indent}  route {route.get('bucket')}  pool {route.get('pool') or '-'}  priority {route.get('priority')}"
            f"  policy {route.get('policy_version') or '-'}\n"
        )
        for line in route.get("explanation") or route.get("reasons") or []:
            out.write(f"{indent}    why: {line}\n")
        for line in route.get("corrections") or []:
            out.write(f"{indent}    correct: {line}\n")
    findings = item["findings"]
    out.write(f"{indent}  findings ({len(findings)})\n")
    for f in findings:
        out.write(f"{indent}    {f.get('severity')} {f.get('rule')}: {f.get('message')}\n")
        for ev in f.get("evidence", []):
            out.write(
                f"{indent}      evidence {ev.get('section')} [{ev.get('start')}-{ev.get('end')}]"
                + (f" {ev.get('text')!r}" if ev.get("text") else "")
                + "\n"
            )
        if f.get("suggestion"):
            out.write(f"{indent}      suggestion: {f['suggestion']}\n")
    if report.get("text") is not None:
        out.write(f"{indent}  text:\n")
        for line in str(report["text"]).splitlines():
            out.write(f"{indent}    | {line}\n")


def write_detail_text(out: TextIO, data: dict[str, Any]) -> None:
    """``overread show --format text``: the detail document for people."""
    sender = data["sender"]["application"] + (f"/{data['sender']['facility']}" if data["sender"]["facility"] else "")
    out.write(
        f"message {data['message_pk']}  control id {data['message_id']}  from {sender}  via {data['transport']}"
        f"  feed {data['feed']}\n"
    )
    out.write(f"received {data['received']}  processing {data['processing']} (at {data['processed']})\n")
    out.write(
        f"state {data['state']}  answered {data['ack_code']}"
        + (f" error {data['error_code']}" if data["error_code"] else "")
        + "\n"
    )
    out.write("\n== our answer ==\n" + _segments(data["ack"] or "") + "\n")
    if data["raw"] is not None:
        out.write(f"\n== raw body ({data['raw_bytes']} bytes) ==\n")
        out.write((_segments(data["raw"]) if data["transport"] == "mllp" else data["raw"]) + "\n")
    elif data["raw_bytes"] is None:
        out.write("\n== raw body: not kept (purged by retention, or keep_raw is off) ==\n")
    out.write(f"\n== reports ({len(data['reports'])}) ==\n")
    for item in data["reports"]:
        _write_report_text(out, item)
    out.write(f"\n== routing messages ({len(data['outbox'])}) ==\n")
    for row in data["outbox"]:
        extra = f"  resend of row {row['resent_from']}" if row.get("resent_from") else ""
        out.write(
            f"row {row['id']} -> {row['destination']}  accession {row['accession']}  {row['state']}"
            f"  attempts {attempts_text(row['attempts'], row['attempts_before_retry'])}"
            f"  MSH-10 {row['control_id']}{extra}\n"
        )
        if row["last_error"]:
            out.write(f"    last error: {last_error_text(row['state'], row['last_error'])}\n")
        for e in row["events"]:
            detail = peer_error_text(e["detail"])
            out.write(f"    {e['at']}  {e['event']}" + (f": {detail}" if detail else "") + "\n")
    out.write(f"\n== earlier processings ({len(data['processings'])}) ==\n")
    for p in data["processings"]:
        out.write(
            f"processing {p['number']} at {p['processed']}: {p['state']} {p['ack_code']}"
            + (f" error {p['error_code']}" if p["error_code"] else "")
            + f"  feed {p['feed']}; replaced {p['superseded']} by {p['superseded_by']}\n"
        )
        for item in p["reports"]:
            route = item["route"] or {}
            out.write(
                f"    report {item['seq'] + 1}: accession {item['accession'] or '-'}  route {route.get('bucket', '-')}"
                f"  findings {len(item['findings'])}\n"
            )
