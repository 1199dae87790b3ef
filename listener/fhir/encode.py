"""Our answers in FHIR: OperationOutcome, Task (a routing decision), DetectedIssue (a QA finding).

Pure: no I/O, no clock (times are arguments), no logging. Each builder returns a
JSON-ready dict and checks it by constructing the fhir.resources model of the
chosen version (R4 by default, R5 on request): a builder bug fails loudly here,
not at the receiving server.

Codes of our own vocabularies (task kind, bucket, rule id, route reason) use
systems under :data:`BASE`, a reserved ``.invalid`` host that never resolves;
deployments that publish their CodeSystems pass their own ``base``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from listener.errors import DecodeError, FhirDecodeError
from listener.fhir.models import model_class, normalize_version
from listener.model import Finding, Report, Route, Severity

JSON = dict[str, Any]

BASE = "https://overread.invalid/fhir"
ACCESSION_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
_SEVERITY = {Severity.ERROR: "high", Severity.WARNING: "moderate", Severity.INFO: "low"}
_PRIORITY = {"stat": "stat", "asap": "asap", "urgent": "urgent", "routine": "routine"}
_OVERREAD_BUCKETS = frozenset({"always_final", "selective_overread"})
# HL7 table 0357 codes -> OperationOutcome issue types, for HL7-side DecodeErrors.
_HL7_TO_FHIR = {
    "100": "structure",
    "101": "required",
    "102": "value",
    "103": "code-invalid",
    "200": "not-supported",
    "201": "not-supported",
    "202": "not-supported",
    "203": "not-supported",
    "207": "exception",
}


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue. ``diagnostics`` never holds a value from the input."""

    severity: str  # fatal | error | warning | information
    code: str  # http://hl7.org/fhir/issue-type
    diagnostics: str
    expression: str = ""


def _checked(version: str, resource: JSON) -> JSON:
    model_class(normalize_version(version), str(resource["resourceType"])).model_validate(resource)  # type: ignore[attr-defined]
    return resource


def operation_outcome(issues: Sequence[Issue], *, version: str = "R4", check: bool = True) -> JSON:
    """An OperationOutcome with ``issues`` (at least one).

    ``check=False`` leaves the check to the caller: an outcome inside a
    :func:`bundle_response` entry, which checks one entry of each shape.
    """
    if not issues:
        issues = (Issue("information", "informational", "no issues"),)
    out = []
    for issue in issues:
        item: JSON = {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
        if issue.expression:
            item["expression"] = [issue.expression]
        out.append(item)
    resource: JSON = {"resourceType": "OperationOutcome", "issue": out}
    return _checked(version, resource) if check else resource


def issues_for_error(error: DecodeError) -> tuple[Issue, ...]:
    """Issues for a decode failure: every FHIR issue found, or the HL7 error's location.

    An unreadable body (not JSON, not UTF-8) is ``fatal``; everything else ``error``.
    """
    if isinstance(error, FhirDecodeError):
        fatal = error.issue_code == "structure" and not error.expression
        return tuple(
            Issue("fatal" if fatal else "error", code, message, expression)
            for code, expression, message in error.issues
        )
    return (Issue("error", _HL7_TO_FHIR.get(error.hl7_code, "invalid"), error.message, error.location),)


def outcome_for_error(error: DecodeError, *, version: str = "R4") -> JSON:
    """The OperationOutcome answering a body we refused."""
    return operation_outcome(issues_for_error(error), version=version)


def route_summary(route: Route) -> str:
    """One line describing a route, with no report or patient data."""
    parts = [f"bucket {route.bucket}", f"pool {route.pool}", f"priority {route.priority}"]
    if route.reasons:
        parts.append("reasons " + ", ".join(route.reasons))
    if route.corrections:
        parts.append("corrections " + ", ".join(route.corrections))
    if route.policy_version:
        parts.append(f"policy {route.policy_version}")
    return "; ".join(parts)


def outcome_for_routes(routed: Sequence[tuple[str, Route | None]], *, version: str = "R4") -> JSON:
    """The information OperationOutcome of an accepted body.

    Args:
        routed: (expression of the DiagnosticReport, e.g. ``Bundle.entry[2].resource``, its route).
    """
    issues = [
        Issue("information", "informational", route_summary(route) if route else "accepted; no routing policy", where)
        for where, route in routed
    ]
    return operation_outcome(issues, version=version)


def _report_reference(report: Report, reference: str) -> JSON:
    if reference:
        return {"reference": reference}
    ref: JSON = {"type": "DiagnosticReport"}
    if report.accession:
        ref["identifier"] = {"type": ACCESSION_TYPE, "value": report.accession}
    else:
        ref["display"] = f"report {report.message_id}"
    return ref


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # our clock is UTC; naive means UTC here
    return value.isoformat()


def _concept(system: str, code: str, text: str = "") -> JSON:
    concept: JSON = {"coding": [{"system": system, "code": code}]}
    if text:
        concept["text"] = text
    return concept


def task_for(
    report: Report,
    route: Route,
    *,
    authored_on: datetime,
    report_reference: str = "",
    task_id: str = "",
    kind: str = "",
    version: str = "R4",
    base: str = BASE,
) -> JSON:
    """A Task asking the route's pool to act on a report.

    Args:
        report: the report.
        route: the routing decision.
        authored_on: when the decision was made.
        report_reference: ``DiagnosticReport/<id>`` when the report exists as a FHIR
            resource; otherwise the focus is a logical reference by accession.
        task_id: the Task's id, if the store assigned one.
        kind: "overread" or "correction"; by default "overread" for the
            always_final and selective_overread buckets, "correction" when the
            route carries corrections otherwise, "overread" else.
        version: "R4" or "R5".
        base: the base URL of our CodeSystems.

    Returns:
        The Task as JSON (validated).
    """
    if not kind:
        kind = "overread" if route.bucket in _OVERREAD_BUCKETS or not route.corrections else "correction"
    task: JSON = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": _PRIORITY.get(route.priority, "routine"),
        "code": _concept(f"{base}/CodeSystem/task-kind", kind, kind),
        "focus": _report_reference(report, report_reference),
        "authoredOn": _instant(authored_on),
        "owner": {"identifier": {"system": f"{base}/NamingSystem/pool", "value": route.pool}, "display": route.pool},
        "businessStatus": _concept(f"{base}/CodeSystem/bucket", route.bucket, route.bucket),
    }
    if task_id:
        task["id"] = task_id
    if report.accession:
        task["identifier"] = [{"type": ACCESSION_TYPE, "value": report.accession}]
    if route.deadline is not None:
        task["restriction"] = {"period": {"end": _instant(route.deadline)}}
    inputs = [
        {"type": _concept(f"{base}/CodeSystem/route-reason", reason, "reason"), "valueString": reason}
        for reason in route.reasons
    ]
    inputs += [
        {"type": _concept(f"{base}/CodeSystem/qa-rule", rule, "correction"), "valueString": rule}
        for rule in route.corrections
    ]
    if route.policy_version:
        inputs.append(
            {
                "type": _concept(f"{base}/CodeSystem/input", "policy-version", "policy version"),
                "valueString": route.policy_version,
            }
        )
    if inputs:
        task["input"] = inputs
    return _checked(version, task)


def detected_issue_for(
    report: Report,
    finding: Finding,
    *,
    identified: datetime,
    report_reference: str = "",
    issue_id: str = "",
    version: str = "R4",
    base: str = BASE,
) -> JSON:
    """A DetectedIssue for one QA finding, implicating the report.

    Evidence spans become ``evidence`` entries: the section as a code, the
    quoted text as its text, the offsets in an extension.
    """
    issue: JSON = {
        "resourceType": "DetectedIssue",
        "status": "final",
        "code": _concept(f"{base}/CodeSystem/qa-rule", finding.rule, finding.category),
        "severity": _SEVERITY[finding.severity],
        "identifiedDateTime": _instant(identified),
        "implicated": [_report_reference(report, report_reference)],
        "detail": finding.message,
    }
    if issue_id:
        issue["id"] = issue_id
    evidence = []
    for span in finding.evidence:
        code = _concept(f"{base}/CodeSystem/report-section", span.section or "other", span.text)
        evidence.append(
            {
                "extension": [
                    {
                        "url": f"{base}/StructureDefinition/evidence-span",
                        "valueRange": {"low": {"value": span.start}, "high": {"value": span.end}},
                    }
                ],
                "code": [code],
            }
        )
    if evidence:
        issue["evidence"] = evidence
    if finding.suggestion:
        issue["mitigation"] = [{"action": {"text": finding.suggestion}}]
    return _checked(version, issue)


def _uuid_urn(name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{BASE}/{name}')}"


def push_bundle(
    report: Report,
    route: Route,
    findings: Sequence[Finding],
    *,
    decision_id: str,
    authored_on: datetime,
    version: str = "R4",
    base: str = BASE,
) -> JSON:
    """The transaction Bundle POSTed to a FHIR server for one routing decision.

    One Task (the decision) and one DetectedIssue per finding, each a
    conditional create (``ifNoneExist`` on an identifier derived from the
    decision id): a retry after a lost answer, or the same decision sent twice,
    creates nothing new at a conforming server. The Task and DetectedIssues
    reference the report logically (by accession): the report itself lives at
    the sender, not at that server.

    Args:
        report: the report.
        route: its routing decision.
        findings: its QA findings.
        decision_id: the stable id of the decision (:func:`listener.outbox.decision_id_for`).
        authored_on: when the decision was made.
        version: "R4" or "R5".
        base: the base URL of our CodeSystems and NamingSystems.

    Returns:
        The Bundle as JSON (validated, every entry too).
    """
    system = f"{base}/NamingSystem/decision"
    task = task_for(report, route, authored_on=authored_on, version=version, base=base)
    task.setdefault("identifier", []).insert(0, {"system": system, "value": decision_id})
    entries = [("Task", decision_id, _checked(version, task))]
    for n, finding in enumerate(findings, start=1):
        issue = detected_issue_for(report, finding, identified=authored_on, version=version, base=base)
        key = f"{decision_id}-{n}"
        issue["identifier"] = [{"system": system, "value": key}]
        entries.append(("DetectedIssue", key, _checked(version, issue)))
    bundle: JSON = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": _uuid_urn(f"{kind}/{key}"),
                "resource": resource,
                "request": {"method": "POST", "url": kind, "ifNoneExist": f"identifier={system}|{key}"},
            }
            for kind, key, resource in entries
        ],
    }
    return _checked(version, bundle)


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What happened to one entry of a transaction or batch Bundle we accepted."""

    status: str  # "201 Created", "200 OK"
    location: str = ""
    outcome: JSON | None = None


def bundle_response(kind: str, results: Sequence[EntryResult], *, version: str = "R4") -> JSON:
    """The ``transaction-response`` / ``batch-response`` Bundle answering an accepted Bundle.

    Args:
        kind: the request Bundle's type, ``transaction`` or ``batch``.
        results: one per request entry, in entry order (FHIR pairs them by position).
        version: "R4" or "R5".
    """
    entries = []
    # The check builds the fhir.resources model, about 0.1 ms per entry: a 4 MB transaction of
    # 13,500 entries cost the daemon's network thread 2 s for its answer. Entries differ only in
    # their strings, so one of each shape is checked (docs/hardening.md, "FHIR input size and shape").
    shapes: dict[tuple[str, bool, int], JSON] = {}
    for result in results:
        response: JSON = {"status": result.status}
        if result.location:
            response["location"] = result.location
        if result.outcome is not None:
            response["outcome"] = result.outcome
        entry = {"response": response}
        entries.append(entry)
        issues = len(result.outcome.get("issue", ())) if result.outcome is not None else -1
        shapes.setdefault((result.status, bool(result.location), issues), entry)
    _checked(version, {"resourceType": "Bundle", "type": f"{kind}-response", "entry": list(shapes.values())})
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": entries}
