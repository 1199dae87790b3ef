"""FHIR destinations: the ``fhir:`` block of destinations.yaml, outbox rows holding Bundles, HTTP status -> answer code."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listener.destinations import FhirSettings, parse_destinations
from listener.errors import ConfigError
from listener.model import Finding, Patient, Procedure, Report, ResultStatus, Route, Sender, Severity, Times
from listener.outbox import judge, outbox_items
from listener.pipeline import ReportOutcome
from listener.server.fhir_push import answer_code, push_url

NOW = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
REPORT = Report(
    message_id="dr-1",
    message_type="DiagnosticReport",
    version="R4",
    sender=Sender("c", "f"),
    accession="A1",
    patient=Patient("ZZ1"),
    procedure=Procedure("71046", "CPT"),
    status=ResultStatus.FINAL,
    times=Times(),
    text="t",
)
ROUTE = Route(bucket="selective_overread", pool="chest", priority="routine", reasons=("critical",))
FINDING = Finding(rule="communication.critical_not_communicated", severity=Severity.ERROR, message="not communicated")

DESTINATIONS = """\
version: 1
destinations:
  ris:
    endpoint: tcp:host=127.0.0.1:port=6661
  hub:
    endpoint: tls:host=fhir.example:port=8443
    fhir: {base: /fhir/r4/, version: r5}
  plain:
    endpoint: tcp:host=\\:\\:1:port=8080
    fhir: {}
"""


def test_fhir_block_parsed() -> None:
    """``fhir:`` makes a destination a FHIR server: base path (trailing slash dropped) and version; absent means HL7."""
    ris, hub, plain = parse_destinations(DESTINATIONS)
    assert ris.fhir is None
    assert hub.fhir == FhirSettings(base="/fhir/r4", version="R5")
    assert plain.fhir == FhirSettings()
    assert push_url(hub) == b"https://fhir.example:8443/fhir/r4"
    assert push_url(plain) == b"http://[::1]:8080/fhir"


@pytest.mark.parametrize(
    ("block", "line", "words"),
    [
        ("fhir: {base: fhir}", 5, "'base' must be a path"),
        ("fhir: {base: '/a b'}", 5, "'base' must be a path"),
        ("fhir: {version: STU3}", 5, "'version' must be R4 or R5"),
        ("fhir: {url: /x}", 5, "url"),
    ],
)
def test_fhir_block_errors_name_the_line(block: str, line: int, words: str) -> None:
    """A bad ``fhir:`` block is a ConfigError naming the file, the line and the key."""
    text = f"version: 1\ndestinations:\n  hub:\n    endpoint: tcp:host=h:port=1\n    {block}\n"
    with pytest.raises(ConfigError) as caught:
        parse_destinations(text, "dest.yaml", base_dir=Path("."))
    message = str(caught.value)
    assert words in message and "dest.yaml" in message and f":{line}" in message


def test_outbox_rows_for_fhir_and_hl7_destinations() -> None:
    """One routed report gives an HL7 row for the RIS and a JSON transaction Bundle row for the FHIR server, with distinct stable control ids."""
    ris, hub, _ = parse_destinations(DESTINATIONS)
    outcome = ReportOutcome(report=REPORT, findings=(FINDING,), route=ROUTE)
    items = outbox_items((outcome,), (ris, hub), now=NOW, sender_application="c", sender_facility="f", control_id="m1")
    assert [i.destination for i in items] == ["ris", "hub"]
    assert items[0].payload.startswith(b"MSH|")
    bundle = json.loads(items[1].payload)
    assert bundle["type"] == "transaction"
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Task", "DetectedIssue"]
    assert bundle["entry"][0]["resource"]["businessStatus"]["coding"][0]["code"] == "selective_overread"
    again = outbox_items((outcome,), (ris, hub), now=NOW, sender_application="c", sender_facility="f", control_id="m1")
    assert again == items
    assert items[0].control_id != items[1].control_id


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (200, "AA", "delivered"),
        (201, "AA", "delivered"),
        (400, "AR", "dead"),
        (401, "AR", "dead"),
        (409, "AR", "dead"),
        (412, "AR", "dead"),
        (422, "AR", "dead"),
        (302, "AR", "dead"),
        (408, "AE", "retry"),
        (429, "AE", "retry"),
        (500, "AE", "retry"),
        (503, "AE", "retry"),
    ],
)
def test_http_status_to_verdict(status: int, code: str, verdict: str) -> None:
    """2xx is delivered; 408/429/5xx are retried; other answers are the server refusing the Bundle (dead letter by default)."""
    ris, _, _ = parse_destinations(DESTINATIONS)
    assert answer_code(status) == code
    assert judge(code, 1, ris.retry) == verdict
