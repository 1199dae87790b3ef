"""Model values -> JSON-ready dicts (the CLI contract of docs/cli.md, the store's columns).

Pure. Patient identity is only included when ``include_patient`` is set (the
store keeps it; the CLI and logs never print it).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from listener.errors import DecodeError
from listener.model import Evidence, Finding, Report, Route


def _time(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def evidence_dict(ev: Evidence) -> dict[str, Any]:
    return {"section": ev.section, "start": ev.start, "end": ev.end, "text": ev.text}


def finding_dict(f: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rule": f.rule,
        "category": f.category,
        "severity": f.severity.value,
        "message": f.message,
        "evidence": [evidence_dict(e) for e in f.evidence],
    }
    if f.suggestion:
        out["suggestion"] = f.suggestion
    return out


def route_dict(r: Route | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "bucket": r.bucket,
        "pool": r.pool,
        "priority": r.priority,
        "reasons": list(r.reasons),
        "corrections": list(r.corrections),
        "policy_version": r.policy_version,
        "deadline": _time(r.deadline),
        "explanation": list(r.explanation),
    }


def report_dict(r: Report, *, include_patient: bool = False, include_text: bool = False) -> dict[str, Any]:
    """The report's decoded fields. Text and patient only on request."""
    out: dict[str, Any] = {
        "message_id": r.message_id,
        "message_type": r.message_type,
        "version": r.version,
        "sender": {"application": r.sender.application, "facility": r.sender.facility, "feed": r.sender.feed},
        "accession": r.accession,
        "placer_order": r.placer_order,
        "filler_order": r.filler_order,
        "status": r.status.value,
        "status_raw": r.status_raw,
        "procedure": {
            "code": r.procedure.code,
            "coding_system": r.procedure.coding_system,
            "text": r.procedure.text,
            "modifiers": list(r.procedure.modifiers),
            "local_code": r.procedure.local_code,
        },
        "modality": r.modality,
        "body_region": r.body_region,
        "order_laterality": r.order_laterality,
        "priority": r.priority,
        "reader": None
        if r.reader is None
        else {"id": r.reader.id, "type": r.reader.type, "location": r.reader.location},
        "site": r.site,
        "financial_class": r.financial_class,
        "diagnosis_codes": list(r.diagnosis_codes),
        "times": {
            "observation": _time(r.times.observation),
            "report": _time(r.times.report),
            "received": _time(r.times.received),
            "message": _time(r.times.message),
        },
        "sections": [{"kind": s.kind.value, "heading": s.heading, "start": s.start, "end": s.end} for s in r.sections],
        "text_kind": r.text_kind,
        "text_length": len(r.text),
        "charset": r.charset,
        "abnormal_flags": list(r.abnormal_flags),
        "obr_index": r.obr_index,
        "warnings": list(r.warnings),
    }
    if r.peer_review is not None:
        out["peer_review"] = {
            "grade": r.peer_review.grade,
            "scorer": r.peer_review.scorer,
            "scored_at": _time(r.peer_review.scored_at),
        }
    if include_patient:
        out["patient"] = {
            "id": r.patient.id,
            "id_authority": r.patient.id_authority,
            "sex": r.patient.sex,
            "birth_date": _time(r.patient.birth_date),
        }
        if r.reader is not None:
            out["reader"]["name"] = r.reader.name
        out["reason"] = r.reason
    if include_text:
        out["text"] = r.text
        out["comparison_text"] = r.comparison_text
    return out


def error_dict(err: DecodeError) -> dict[str, Any]:
    """The CLI's error object: HL7 table 0357 code, or the FHIR issue code with its FHIRPath."""
    issue_code = getattr(err, "issue_code", "")
    if issue_code:
        return {
            "code": issue_code,
            "name": "FHIR issue",
            "location": getattr(err, "expression", ""),
            "message": err.message,
        }
    return {"code": err.hl7_code, "name": err.code_name, "location": err.location, "message": err.message}
