"""JSON views of what the store holds: one message, its details, one outbox row.

``overread messages``, ``show`` and ``outbox list`` print them with
``--format json`` (docs/cli.md, docs/operations.md), and the ``/api`` message
browser answers with the same objects (docs/http-api.md). Kept apart from the
commands so that the daemon's HTTP API and the CLI share them without
importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from listener.store.base import AuditEntry, MessageDetail, MessageSummary, OutboxRow

__all__ = ["audit_dict", "detail_dict", "iso_utc", "message_dict", "row_dict"]


def message_dict(msg: MessageSummary) -> dict[str, Any]:
    """One message as the JSON object ``overread messages --format json`` prints."""
    return {
        "message_id": msg.control_id,
        "sender": {"application": msg.sender_application, "facility": msg.sender_facility},
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
    """The JSON document ``overread show --format json`` prints (and ``GET /api/messages/<pk>`` answers)."""
    return {
        **message_dict(detail.summary),
        "processed": iso_utc(detail.processed),
        "ack": _text(detail.ack),
        "raw": _text(detail.raw) if with_raw else None,
        "raw_bytes": len(detail.raw) if detail.raw is not None else None,
        "reports": [_report_dict(r, with_raw) for r in detail.reports],
        "outbox": [
            {**row_dict(row), "events": [{"at": iso_utc(e.at), "event": e.event, "detail": e.detail} for e in events]}
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
