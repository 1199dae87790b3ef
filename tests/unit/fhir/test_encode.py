"""encode: OperationOutcome, Task and DetectedIssue builders produce resources fhir.resources accepts."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from listener.errors import FhirDecodeError, MissingField
from listener.fhir.encode import (
    EntryResult,
    Issue,
    bundle_response,
    detected_issue_for,
    operation_outcome,
    outcome_for_error,
    outcome_for_routes,
    push_bundle,
    task_for,
)
from listener.fhir.models import model_class
from listener.model import Evidence, Finding, Patient, Procedure, Report, ResultStatus, Route, Sender, Severity, Times

NOW = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
REPORT = Report(
    message_id="dr-1",
    message_type="DiagnosticReport",
    version="R4",
    sender=Sender("c", "f"),
    accession="A1",
    patient=Patient("ZZ1"),
    procedure=Procedure("70450", "CPT"),
    status=ResultStatus.FINAL,
    times=Times(),
    text="t",
)
ROUTE = Route(
    bucket="process_check",
    pool="neuro",
    priority="stat",
    reasons=("qa.errors",),
    corrections=("laterality.impression_vs_findings",),
    policy_version="v7",
    deadline=NOW,
)
FINDING = Finding(
    rule="laterality.impression_vs_findings",
    severity=Severity.ERROR,
    message="impression side differs from the order",
    evidence=(Evidence("impression", 12, 16, "left"),),
    suggestion="check the side",
)


def _valid(version: str, resource: dict[str, object]) -> None:
    model_class(version, str(resource["resourceType"])).model_validate(resource)  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_task_fields(version: str) -> None:
    """Task: intent order, code correction for a process_check with corrections, owner pool, deadline, inputs."""
    task = task_for(REPORT, ROUTE, authored_on=NOW, report_reference="DiagnosticReport/dr-1", version=version)
    _valid(version, task)
    assert (task["intent"], task["status"], task["priority"]) == ("order", "requested", "stat")
    assert task["code"]["coding"][0]["code"] == "correction"
    assert task["focus"] == {"reference": "DiagnosticReport/dr-1"}
    assert task["owner"]["identifier"]["value"] == "neuro"
    assert task["businessStatus"]["coding"][0]["code"] == "process_check"
    assert task["restriction"]["period"]["end"] == NOW.isoformat()
    assert [i["valueString"] for i in task["input"]] == ["qa.errors", "laterality.impression_vs_findings", "v7"]


def test_task_overread_and_logical_focus() -> None:
    """An overread bucket gives code overread; without a FHIR id the focus names the accession."""
    route = Route(bucket="selective_overread", pool="overread", priority="routine", reasons=("critical",))
    task = task_for(REPORT, route, authored_on=NOW)
    assert task["code"]["coding"][0]["code"] == "overread"
    assert task["focus"]["identifier"]["value"] == "A1"
    assert "restriction" not in task


@pytest.mark.parametrize(
    ("severity", "expected"), [(Severity.ERROR, "high"), (Severity.WARNING, "moderate"), (Severity.INFO, "low")]
)
@pytest.mark.parametrize("version", ["R4", "R5"])
def test_detected_issue(severity: Severity, expected: str, version: str) -> None:
    """DetectedIssue: rule id as code, severity mapped, report implicated, evidence span with offsets."""
    finding = Finding(FINDING.rule, severity, FINDING.message, FINDING.evidence, FINDING.suggestion)
    issue = detected_issue_for(
        REPORT, finding, identified=NOW, report_reference="DiagnosticReport/dr-1", version=version
    )
    _valid(version, issue)
    assert issue["code"]["coding"][0]["code"] == "laterality.impression_vs_findings"
    assert issue["severity"] == expected
    assert issue["implicated"] == [{"reference": "DiagnosticReport/dr-1"}]
    assert issue["detail"] == FINDING.message
    span = issue["evidence"][0]
    assert span["code"][0]["text"] == "left"
    assert span["extension"][0]["valueRange"]["low"]["value"] == 12


def test_outcome_for_fhir_error_lists_every_issue() -> None:
    """Each validation issue becomes an OperationOutcome issue with its code and expression."""
    error = FhirDecodeError(
        "x",
        issue_code="required",
        expression="DiagnosticReport.code",
        issues=(("required", "DiagnosticReport.code", "a"), ("value", "DiagnosticReport.issued", "b")),
    )
    outcome = outcome_for_error(error)
    _valid("R4", outcome)
    assert [(i["severity"], i["code"], i["expression"]) for i in outcome["issue"]] == [
        ("error", "required", ["DiagnosticReport.code"]),
        ("error", "value", ["DiagnosticReport.issued"]),
    ]


def test_outcome_for_hl7_error() -> None:
    """An HL7-side DecodeError maps its table 0357 code to an issue type and keeps its location."""
    outcome = outcome_for_error(MissingField("accession number is empty", location="OBR-3"))
    assert outcome["issue"][0]["code"] == "required"
    assert outcome["issue"][0]["expression"] == ["OBR-3"]


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_outcome_for_routes(version: str) -> None:
    """An accepted body gets information issues carrying each route's summary, and no report text."""
    outcome = outcome_for_routes(
        [("Bundle.entry[3].resource", ROUTE), ("Bundle.entry[4].resource", None)], version=version
    )
    _valid(version, outcome)
    first = outcome["issue"][0]
    assert (first["severity"], first["code"]) == ("information", "informational")
    assert "bucket process_check" in first["diagnostics"] and "pool neuro" in first["diagnostics"]
    assert outcome["issue"][1]["diagnostics"] == "accepted; no routing policy"


def test_empty_outcome_is_still_valid() -> None:
    """An OperationOutcome needs at least one issue; an empty list gets an informational one."""
    _valid("R4", operation_outcome([]))
    _valid("R4", operation_outcome([Issue("warning", "processing", "w")]))


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_push_bundle_is_a_transaction_of_conditional_creates(version: str) -> None:
    """push_bundle: one Task then one DetectedIssue per finding, each a conditional create keyed by the decision id, valid in the version, the same for the same decision."""
    second = Finding(rule="completeness.placeholder", severity=Severity.WARNING, message="placeholder left in")
    bundle = push_bundle(REPORT, ROUTE, (FINDING, second), decision_id="D1", authored_on=NOW, version=version)
    _valid(version, bundle)
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction")
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Task", "DetectedIssue", "DetectedIssue"]
    conditions = [e["request"]["ifNoneExist"] for e in bundle["entry"]]
    system = "https://overread.invalid/fhir/NamingSystem/decision"
    assert conditions == [f"identifier={system}|D1", f"identifier={system}|D1-1", f"identifier={system}|D1-2"]
    assert all(
        e["request"] == {"method": "POST", "url": k, "ifNoneExist": c}
        for e, k, c in zip(bundle["entry"], kinds, conditions, strict=True)
    )
    task = bundle["entry"][0]["resource"]
    assert task["identifier"][0] == {"system": system, "value": "D1"}
    assert task["focus"]["identifier"]["value"] == "A1"  # logical: the report is not on that server
    assert [e["resource"]["severity"] for e in bundle["entry"][1:]] == ["high", "moderate"]
    assert len({e["fullUrl"] for e in bundle["entry"]}) == 3
    assert push_bundle(REPORT, ROUTE, (FINDING, second), decision_id="D1", authored_on=NOW, version=version) == bundle
    other = push_bundle(REPORT, ROUTE, (FINDING,), decision_id="D2", authored_on=NOW, version=version)
    assert other["entry"][0]["fullUrl"] != bundle["entry"][0]["fullUrl"]


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_bundle_response_pairs_entries(version: str) -> None:
    """bundle_response: a transaction-response/batch-response with one entry per result, status, location and outcome kept, valid FHIR."""
    outcome = outcome_for_routes([("Bundle.entry[1].resource", ROUTE)])
    results = (EntryResult("200 OK"), EntryResult("201 Created", "DiagnosticReport/abc", outcome))
    for kind in ("transaction", "batch"):
        bundle = bundle_response(kind, results, version=version)
        _valid(version, bundle)
        assert bundle["type"] == f"{kind}-response"
        assert [e["response"] for e in bundle["entry"]] == [
            {"status": "200 OK"},
            {"status": "201 Created", "location": "DiagnosticReport/abc", "outcome": outcome},
        ]


def _model_validations(build: Callable[[], object]) -> int:
    """How many fhir.resources models ``build()`` constructs (``model_validate`` calls, nested ones too)."""
    count = 0

    def hook(frame, event, arg):  # type: ignore[no-untyped-def]
        nonlocal count
        if event == "call" and frame.f_code.co_name == "model_validate":
            count += 1

    sys.setprofile(hook)
    try:
        build()
    finally:
        sys.setprofile(None)
    return count


def test_bundle_response_checks_each_entry_shape_once() -> None:
    """A 4 MB transaction of 13,500 entries once cost the network thread 2 s of checks for its answer
    (docs/hardening.md, "FHIR input size and shape"): the check's work does not grow with the entries."""
    outcome = outcome_for_routes([("Bundle.entry[1].resource", ROUTE)])

    def answer(n: int) -> Callable[[], object]:
        notes = [
            EntryResult(
                "200 OK", "", operation_outcome((Issue("information", "informational", "read", f"e{i}"),), check=False)
            )
            for i in range(n)
        ]
        return lambda: bundle_response(
            "transaction", [*notes, EntryResult("201 Created", "DiagnosticReport/a", outcome)]
        )

    few, many = _model_validations(answer(3)), _model_validations(answer(300))
    assert 0 < few == many
