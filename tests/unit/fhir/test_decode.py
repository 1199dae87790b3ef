"""decode_fhir: versions, media types, our checks, references, extras, and the patient-data canary."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from listener.errors import FhirDecodeError, FhirUnsupportedMediaType
from listener.fhir import FhirClient, prime_models
from listener.fhir.encode import outcome_for_error
from listener.fhir.text import attachment_text, html_to_text
from listener.hl7v2.decode import decode_message
from listener.model import Report, ResultStatus, SectionKind
from listener.pipeline import Pipeline
from tests.conftest import RECEIVED, REPO
from tests.unit.fhir.conftest import Decode

SAMPLES = REPO / "samples" / "fhir"
CANARY = "ZZCANARY4417"

# samples/fhir file -> the samples/hl7 scenario it mirrors.
PAIRS = {
    "ct-head-wo-overnight-telerad-prelim.json": "ct-head-wo-overnight-telerad-prelim.hl7",
    "ct-head-critical-sdh-communicated.json": "ct-head-critical-sdh-communicated.hl7",
    "xr-chest-pneumothorax-no-communication.json": "xr-chest-pneumothorax-no-communication.hl7",
    "xr-chest-2v-normal.json": "xr-chest-2v-normal.hl7",
    "bundle-transaction-mr-knee-left.json": "mr-knee-left-73721-lt.hl7",
}


def _dr(**extra: Any) -> dict[str, Any]:
    text = "FINDINGS:\nNo acute abnormality.\nIMPRESSION:\nNormal chest."
    dr: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": "t1",
        "status": "final",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "LP29684-5"}]}],
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "71046"}], "text": "XR CHEST 2 VIEWS"},
        "presentedForm": [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}],
    }
    dr.update(extra)
    return dr


def _body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _key_fields(report: Report) -> tuple[object, ...]:
    return (
        report.accession,
        report.patient.id,
        report.patient.sex,
        report.patient.birth_date,
        report.procedure.code,
        report.procedure.coding_system,
        report.status,
        report.modality,
        report.body_region,
        report.order_laterality,
        report.priority,
        report.reader.id if report.reader else None,
        report.times.observation,
        report.times.report,
        tuple(sec.kind for sec in report.sections),
        tuple((sec.kind, sec.text) for sec in report.sections),
    )


def test_prime_models_runs_twice() -> None:
    """Priming builds the validators once and is harmless to repeat (daemon reload)."""
    prime_models(("R4", "R5", "STU3"))  # STU3 has no ServiceRequest: skipped, not an error
    prime_models(("R4",))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_samples_match_their_hl7_twin(name: str, decode: Decode, pipeline: Pipeline) -> None:
    """Each FHIR sample decodes to the same key fields and sections as the HL7 sample it mirrors."""
    (report,) = decode((SAMPLES / name).read_bytes())
    hl7 = (REPO / "samples" / "hl7" / PAIRS[name]).read_bytes()
    (twin,) = decode_message(hl7, pipeline.mappings, received_at=RECEIVED, procedures=pipeline.procedures).reports
    assert _key_fields(report) == _key_fields(twin)
    assert report.warnings == ()
    assert report.version == "R4"


def test_every_sample_is_paired() -> None:
    """Every file in samples/fhir is covered by the pairing table (and so decoded by a test)."""
    assert sorted(p.name for p in SAMPLES.glob("*.json")) == sorted(PAIRS)


def test_contained_patient_and_order_resolved(decode: Decode) -> None:
    """`#id` references reach contained Patient, ServiceRequest (accession, priority) and Practitioner."""
    (report,) = decode((SAMPLES / "ct-head-wo-overnight-telerad-prelim.json").read_bytes())
    assert report.status is ResultStatus.PRELIMINARY
    assert report.priority == "stat"
    assert report.patient.id == "ZZ9000101"
    assert report.reader is not None and report.reader.id == "NT7741"
    assert report.section(SectionKind.IMPRESSION) is not None


def test_bundle_urn_uuid_references(decode: Decode) -> None:
    """A transaction Bundle's urn:uuid fullUrls resolve Patient, order, reader and Observations."""
    (report,) = decode((SAMPLES / "bundle-transaction-mr-knee-left.json").read_bytes())
    assert report.order_laterality == "left"
    assert report.message_id.startswith("urn:uuid:")
    assert report.times.message is not None


def test_media_type_parameter_chooses_version(decode: Decode) -> None:
    """fhirVersion=5.0 selects R5: an R4-only element is then refused, not silently retried as R4."""
    doc = _dr(imagingStudy=[{"display": "study"}])
    (report,) = decode(_body(doc), media_type="application/fhir+json; fhirVersion=4.0")
    assert report.version == "R4"
    with pytest.raises(FhirDecodeError) as info:
        decode(_body(doc), media_type="application/fhir+json; fhirVersion=5.0")
    assert (info.value.issue_code, info.value.expression) == ("structure", "DiagnosticReport.imagingStudy")


def test_profile_chooses_version(decode: Decode) -> None:
    """A US Core profile says R4 even when the client's default is R5."""
    doc = _dr(meta={"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-diagnosticreport-note|9.0.0"]})
    (report,) = decode(_body(doc), client=FhirClient(default_version="R5"))
    assert report.version == "R4"


def test_configured_version_conflicting_media_type_refused(decode: Decode) -> None:
    """A client configured R4 that labels its body fhirVersion=5.0 is told so (not-supported)."""
    with pytest.raises(FhirDecodeError) as info:
        decode(_body(_dr()), media_type="application/fhir+json; fhirVersion=5.0", client=FhirClient(version="R4"))
    assert info.value.issue_code == "not-supported"


def test_stu3_only_when_configured(decode: Decode) -> None:
    """STU3 needs the client setting; asking for it by media type alone is refused."""
    with pytest.raises(FhirDecodeError) as info:
        decode(_body(_dr()), media_type="application/fhir+json; fhirVersion=3.0")
    assert info.value.issue_code == "not-supported"


@pytest.mark.parametrize("header", ["text/plain", "application/xml", "application/fhir+json; charset=latin-1"])
def test_wrong_media_type(header: str, decode: Decode) -> None:
    """Non-JSON or non-UTF-8 content types raise the 415 error."""
    with pytest.raises(FhirUnsupportedMediaType):
        decode(_body(_dr()), media_type=header)


@pytest.mark.parametrize("body", [b"", b"{", b"[1]", b"\xff\xfe{}", b'"DiagnosticReport"'])
def test_unreadable_body(body: bytes, decode: Decode) -> None:
    """Bodies that are not a JSON object are structure errors, fatal in the OperationOutcome."""
    with pytest.raises(FhirDecodeError) as info:
        decode(body)
    assert info.value.issue_code == "structure"
    assert outcome_for_error(info.value)["issue"][0]["severity"] == "fatal"


@pytest.mark.parametrize(
    ("change", "code", "expression"),
    [
        ({"status": "done"}, "code-invalid", "DiagnosticReport.status"),
        ({"status": None}, "required", "DiagnosticReport.status"),
        ({"code": None}, "required", "DiagnosticReport.code"),
        ({"presentedForm": None}, "required", "DiagnosticReport.presentedForm"),
        ({"effectiveDateTime": "2026-13-40"}, "value", "DiagnosticReport.effectiveDateTime"),
        (
            {"category": [{"coding": [{"system": "http://loinc.org", "code": "LP29708-2"}]}]},
            "not-supported",
            "DiagnosticReport.category",
        ),
        ({"resourceType": "Observation"}, "not-supported", ""),
    ],
)
def test_checks_name_code_and_expression(change: dict[str, Any], code: str, expression: str, decode: Decode) -> None:
    """Each refusal carries the OperationOutcome issue code and the FHIRPath of the element."""
    doc = {k: v for k, v in {**_dr(), **change}.items() if v is not None}
    with pytest.raises(FhirDecodeError) as info:
        decode(_body(doc))
    assert (info.value.issue_code, info.value.expression) == (code, expression)


@pytest.mark.parametrize(
    "status", ["registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "unknown"]
)
def test_every_status_code_accepted(status: str, decode: Decode) -> None:
    """All DiagnosticReport status codes map to a ResultStatus and keep the raw code."""
    (report,) = decode(_body(_dr(status=status)))
    assert report.status_raw == status


@pytest.mark.parametrize(
    "category",
    [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]},
        {"coding": [{"system": "http://hl7.org/fhir/v2/0074", "code": "RAD"}]},
        {"coding": [{"system": "http://snomed.info/sct", "code": "394914008"}]},
        {"text": "Radiology"},
    ],
)
def test_radiology_category_spellings(category: dict[str, Any], decode: Decode) -> None:
    """LOINC, v2-0074 (current and pre-R4 system URIs), SNOMED and text-only categories count as radiology."""
    (report,) = decode(_body(_dr(category=[category])))
    assert not [w for w in report.warnings if "category" in w]


def test_vendor_extras_refused_by_default_and_stripped_on_request(decode: Decode) -> None:
    """Unknown elements fail validation unless the client accepts them; then each is stripped with a warning."""
    doc = _dr(
        vendorScore=3,
        contained=[{"resourceType": "Patient", "id": "p", "vendorFlag": True}],
        subject={"reference": "#p"},
    )
    with pytest.raises(FhirDecodeError) as info:
        decode(_body(doc))
    assert info.value.issue_code == "structure"
    assert {e for _, e, _ in info.value.issues} == {
        "DiagnosticReport.vendorScore",
        "DiagnosticReport.contained[0].vendorFlag",
    }
    (report,) = decode(_body(doc), client=FhirClient(accept_extra_fields=True))
    assert any("DiagnosticReport.vendorScore" in w for w in report.warnings)
    assert any("DiagnosticReport.contained[0].vendorFlag" in w for w in report.warnings)


def test_pdf_recorded_not_decoded(decode: Decode) -> None:
    """A PDF presentedForm gives text_kind pdf with no text, and is accepted."""
    pdf = base64.b64encode(b"%PDF-1.4 fake").decode()
    (report,) = decode(_body(_dr(presentedForm=[{"contentType": "application/pdf", "data": pdf}])))
    assert (report.text_kind, report.text) == ("pdf", "")


def test_conclusion_appended_once(decode: Decode) -> None:
    """conclusion becomes an impression section, unless the presented text already holds it."""
    (report,) = decode(_body(_dr(conclusion="Normal chest.")))
    assert report.text.count("Normal chest.") == 1
    (report,) = decode(_body(_dr(presentedForm=None, conclusion="Small effusion.")))
    sec = report.section(SectionKind.IMPRESSION)
    assert sec is not None and sec.text == "Small effusion."


def test_observation_values_become_text(decode: Decode) -> None:
    """Contained result Observations give text: strings, concept text, quantities as label: value unit."""
    contained = [
        {
            "resourceType": "Observation",
            "id": "f",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "18782-3"}]},
            "valueString": "Lungs clear.",
        },
        {
            "resourceType": "Observation",
            "id": "i",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "19005-8"}]},
            "valueCodeableConcept": {"text": "Normal."},
        },
        {
            "resourceType": "Observation",
            "id": "q",
            "status": "final",
            "code": {"text": "CTDIvol"},
            "valueQuantity": {"value": 12.5, "unit": "mGy"},
            "interpretation": [{"coding": [{"code": "H"}]}],
        },
    ]
    doc = _dr(presentedForm=None, contained=contained, result=[{"reference": f"#{c['id']}"} for c in contained])
    (report,) = decode(_body(doc))
    assert [s.kind for s in report.sections] == [SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.OTHER]
    assert "CTDIvol: 12.5 mGy" in report.text
    assert report.abnormal_flags == ("H",)


def test_canary_never_in_errors(decode: Decode) -> None:
    """A patient value in a failing element appears in no error message, issue or OperationOutcome."""
    bad = [
        _dr(effectiveDateTime=CANARY),
        _dr(status=CANARY),
        _dr(contained=[{"resourceType": "Patient", "id": "p", "birthDate": CANARY, "name": [{"family": CANARY}]}]),
        _dr(contained=[{"resourceType": "Patient", "id": "p", CANARY: CANARY}]),
        _dr(presentedForm=[{"contentType": "text/plain", "data": CANARY + "!"}]),
        _dr(contained=[{"resourceType": CANARY, "id": "p"}]),
        {"resourceType": CANARY},
        {"resourceType": "Bundle", "type": CANARY},
    ]
    for doc in bad:
        with pytest.raises(FhirDecodeError) as info:
            decode(_body(doc))
        assert CANARY not in str(info.value)
        assert CANARY not in repr(info.value.issues)
        assert CANARY not in json.dumps(outcome_for_error(info.value))


def test_canary_never_in_warnings(decode: Decode) -> None:
    """Warnings (stored, maybe shown) name paths only, never values."""
    doc = _dr(subject={"reference": f"Patient/{CANARY}"}, basedOn=[{"reference": f"ServiceRequest//{CANARY}"}])
    doc["contained"] = [{"resourceType": "Patient", "id": "p", CANARY: 1}]
    (report,) = decode(_body(doc), client=FhirClient(accept_extra_fields=True))
    assert report.warnings and all(CANARY not in w for w in report.warnings)


def test_bundle_of_wrong_type_or_without_reports(decode: Decode) -> None:
    """searchset/message Bundles and Bundles without a DiagnosticReport are refused with their expression."""
    entry = {"resource": _dr()}
    with pytest.raises(FhirDecodeError) as info:
        decode(_body({"resourceType": "Bundle", "type": "searchset", "entry": [entry]}))
    assert (info.value.issue_code, info.value.expression) == ("not-supported", "Bundle.type")
    with pytest.raises(FhirDecodeError) as info:
        decode(_body({"resourceType": "Bundle", "type": "batch", "entry": []}))
    assert info.value.expression == "Bundle.entry.resource.ofType(DiagnosticReport)"


def test_bundle_is_all_or_nothing(decode: Decode) -> None:
    """One bad DiagnosticReport in a Bundle fails the Bundle, naming its entry."""
    good, bad = _dr(), _dr(id="t2", status="done")
    with pytest.raises(FhirDecodeError) as info:
        decode(
            _body({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": good}, {"resource": bad}]})
        )
    assert info.value.expression == "Bundle.entry[1].resource.status"
    reports = decode(
        _body(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": good}, {"resource": copy.deepcopy(good)}],
            }
        )
    )
    assert len(reports) == 2


@pytest.mark.parametrize(
    ("request_", "code", "expression"),
    [
        (None, "required", "Bundle.entry[0].request"),
        ({"url": "DiagnosticReport"}, "required", "Bundle.entry[0].request.method"),
        ({"method": "GET", "url": "DiagnosticReport"}, "not-supported", "Bundle.entry[0].request.method"),
        ({"method": "PATCH", "url": "DiagnosticReport/t1"}, "not-supported", "Bundle.entry[0].request.method"),
    ],
)
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_transaction_and_batch_entries_need_create_or_update(
    kind: str, request_: dict[str, str] | None, code: str, expression: str, decode: Decode
) -> None:
    """Transaction/batch entries must carry a request (bdl-3) whose method is POST or PUT; a read, patch or delete is refused naming the entry, PUT and POST are taken."""
    entry: dict[str, Any] = {"resource": _dr()}
    if request_ is not None:
        entry["request"] = request_
    with pytest.raises(FhirDecodeError) as info:
        decode(_body({"resourceType": "Bundle", "type": kind, "entry": [entry]}))
    assert (info.value.issue_code, info.value.expression) == (code, expression)
    for method in ("POST", "PUT"):
        entry["request"] = {"method": method, "url": "DiagnosticReport" if method == "POST" else "DiagnosticReport/t1"}
        assert len(decode(_body({"resourceType": "Bundle", "type": kind, "entry": [entry]}))) == 1
    # A collection carries no requests at all.
    assert len(decode(_body({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _dr()}]}))) == 1


def test_html_reduced_to_lines() -> None:
    """XHTML blocks become lines; head/title, tags and entities go; pre keeps its breaks."""
    markup = '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>T</title></head><body><p>FINDINGS: a &amp; b</p>x<br/>y<pre>1\n2</pre></body></html>'
    assert html_to_text(markup) == "FINDINGS: a & b\nx\ny\n1\n2"


def test_attachment_kinds() -> None:
    """URL-only and image attachments are never fetched or decoded; wrapped base64 text is read."""
    data = base64.b64encode(b"Line one\r\nLine two").decode()
    wrapped = " ".join(data[i : i + 8] for i in range(0, len(data), 8))
    assert attachment_text("text/plain", wrapped, False) == ("Line one\nLine two", "text")
    assert attachment_text("application/pdf", None, True) == ("", "pdf")
    assert attachment_text("image/pict", None, True) == ("", "binary")
    assert attachment_text("text/plain", None, False) == ("", "none")


def test_sample_files_are_json_objects() -> None:
    """Every sample parses as a JSON object with a resourceType (guards hand edits)."""
    for path in SAMPLES.glob("*.json"):
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        assert doc["resourceType"] in ("DiagnosticReport", "Bundle")
