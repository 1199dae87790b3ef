"""Stored routes and findings -> FHIR searchset Bundles of Task and DetectedIssue.

Pure: rows in, JSON-ready dicts out; no I/O, no clock. The resources are built
by ``listener.fhir.encode`` (and validated there), from the JSON the server
stored with each report.

Ids are stable: ``Task/route-<report pk>`` and ``DetectedIssue/finding-<report pk>-<n>``.
A report received over HTTP is referenced as ``DiagnosticReport/<id>`` (the id
of its Location); one received over MLLP by its accession number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from listener.fhir.encode import detected_issue_for, task_for
from listener.model import Evidence, Finding, Patient, Procedure, Report, ResultStatus, Route, Sender, Severity, Times
from listener.store.base import StoredReport

__all__ = ["detected_issue_bundle", "searchset", "task_bundle", "worklist_bundle"]

JSON = dict[str, Any]


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None


def _report(row: StoredReport, data: JSON) -> Report:
    """The few Report fields the encoders read (ids, accession), from the stored JSON."""
    try:
        status = ResultStatus(str(data.get("status", "final")))
    except ValueError:
        status = ResultStatus.FINAL
    sender = data.get("sender") or {}
    return Report(
        message_id=str(data.get("message_id", "")),
        message_type=str(data.get("message_type", "")),
        version=str(data.get("version", "")),
        sender=Sender(str(sender.get("application", "")), str(sender.get("facility", ""))),
        accession=row.accession,
        patient=Patient(""),
        procedure=Procedure(""),
        status=status,
        times=Times(),
        text="",
    )


def _route(data: JSON) -> Route:
    return Route(
        bucket=str(data.get("bucket", "")),
        pool=str(data.get("pool", "")),
        priority=str(data.get("priority", "routine")),
        reasons=tuple(str(r) for r in data.get("reasons", ())),
        corrections=tuple(str(c) for c in data.get("corrections", ())),
        policy_version=str(data.get("policy_version", "")),
        deadline=_time(data.get("deadline")),
    )


def _finding(data: JSON) -> Finding:
    return Finding(
        rule=str(data.get("rule", "")),
        severity=Severity(str(data.get("severity", "info"))),
        message=str(data.get("message", "")),
        evidence=tuple(
            Evidence(str(e.get("section", "")), int(e.get("start", 0)), int(e.get("end", 0)), str(e.get("text", "")))
            for e in data.get("evidence", ())
        ),
        suggestion=str(data.get("suggestion", "")),
    )


def _reference(row: StoredReport, data: JSON) -> str:
    fhir_id = data.get("fhir_id")
    return f"DiagnosticReport/{fhir_id}" if row.transport == "http" and fhir_id else ""


def searchset(resources: Sequence[JSON], base_url: str) -> JSON:
    """A ``searchset`` Bundle holding ``resources`` as matches."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def task_bundle(rows: Iterable[StoredReport], base_url: str, *, version: str = "R4") -> JSON:
    """Tasks (status requested) for routed reports, newest first, in FHIR ``version`` (R4 or R5)."""
    return worklist_bundle(((row, None) for row in rows), base_url, version=version)


def worklist_bundle(
    rows: Iterable[tuple[StoredReport, datetime | None]], base_url: str, *, version: str = "R4"
) -> JSON:
    """Tasks with their state: ``requested`` while open, ``completed`` once the final arrived.

    ``rows``: (stored report, when its Task was completed or None), from
    :meth:`listener.store.base.ReportReader.tasks`.
    """
    tasks = []
    for row, completed in rows:
        route_data = json.loads(row.route_json)
        if not route_data:
            continue
        data = json.loads(row.report_json)
        task = task_for(
            _report(row, data),
            _route(route_data),
            authored_on=row.received,
            report_reference=_reference(row, data),
            task_id=f"route-{row.report_pk}",
            version=version,
        )
        if completed is not None:
            task["status"] = "completed"
            task["lastModified"] = completed.isoformat()
        tasks.append(task)
    return searchset(tasks, base_url)


def detected_issue_bundle(rows: Iterable[StoredReport], base_url: str, *, version: str = "R4") -> JSON:
    """DetectedIssues, one per stored finding, newest report first, in FHIR ``version`` (R4 or R5)."""
    issues = []
    for row in rows:
        data = json.loads(row.report_json)
        report = _report(row, data)
        for n, finding in enumerate(json.loads(row.findings_json), start=1):
            issues.append(
                detected_issue_for(
                    report,
                    _finding(finding),
                    identified=row.received,
                    report_reference=_reference(row, data),
                    issue_id=f"finding-{row.report_pk}-{n}",
                    version=version,
                )
            )
    return searchset(issues, base_url)
