"""Every real FHIR file in tests/data/fhir is accepted or refused precisely (see tests/data/fhir/PROVENANCE.md).

The expected table is the regression guard: per file and client setting, either
"accepted:<n reports>" or the OperationOutcome issue code and FHIRPath of the
first issue. The HL7/FHIR pairs (the converter's input and expected output)
must agree on their key fields.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.errors import FhirDecodeError
from listener.fhir import FhirClient, decode_fhir
from listener.fhir.encode import outcome_for_error
from listener.hl7v2.decode import decode_message
from listener.model import Report, ResultStatus
from listener.pipeline import Pipeline, ReportOutcome, process, process_fhir
from tests.conftest import RECEIVED

R4 = FhirClient()
R5 = FhirClient(version="R5")
STU3 = FhirClient(version="STU3", versions=("STU3",))
ANY_CATEGORY = FhirClient(radiology_only=False)

# (file, client name) -> "accepted:<n>" or (issue code, expression).
EXPECTED: dict[tuple[str, str], str | tuple[str, str]] = {
    ("fhir-converter/r4_bundle_batch_from_ccda_imaging_report_no_diagnosticreport.json", "R4"): (
        "required",
        "Bundle.entry.resource.ofType(DiagnosticReport)",
    ),
    ("fhir-converter/r4_bundle_batch_from_oru_r01_01_lab_kitchen_sink_expected.json", "R4"): (
        "not-supported",
        "Bundle.entry[88].resource.category",
    ),  # BLB: blood bank, not radiology
    ("fhir-converter/r4_bundle_batch_from_oru_r01_01_lab_kitchen_sink_expected.json", "ANY_CATEGORY"): "accepted:3",
    ("fhir-converter/r4_bundle_batch_from_oru_r01_01_lab_kitchen_sink_expected.json", "R5"): (
        "structure",
        "Bundle.entry[0].resource.destination[0].endpoint",
    ),
    ("fhir-converter/r4_bundle_batch_from_oru_r01_rmgead_glucose_expected.json", "R4"): "accepted:1",
    ("fhir-converter/r4_bundle_batch_from_oru_r01_rmgead_glucose_expected.json", "STU3"): (
        "not-supported",
        "Bundle",
    ),  # STU3 has no ServiceRequest
    ("fhir-converter/r4_dr_102_dxa_converted_from_stu3_expected.json", "R4"): "accepted:1",
    ("fhir-converter/r4_dr_102_dxa_converted_from_stu3_expected.json", "R5"): "accepted:1",
    ("fhir-converter/stu3_dr_102_dxa_spec_example_converter_input.json", "R4"): (
        "structure",
        "DiagnosticReport.performer[0].role",
    ),
    ("fhir-converter/stu3_dr_102_dxa_spec_example_converter_input.json", "STU3"): "accepted:1",
    ("hl7-fhir-source/r5_dr_contained_composition_hasmember_dgr1_pass.json", "R5"): (
        "structure",
        "DiagnosticReport.contained[0].subject",
    ),
    ("hl7-fhir-source/r5_dr_contained_composition_hasmember_dgr1_pass.json", "R4"): (
        "structure",
        "DiagnosticReport.composition",
    ),
    ("linuxforhealth-r4-spec/r4_dr_f201_ct_head_neck_conclusioncode.json", "R4"): "accepted:1",
    ("linuxforhealth-r4-spec/r4_dr_f201_ct_head_neck_conclusioncode.json", "R5"): (
        "structure",
        "DiagnosticReport.imagingStudy",
    ),
    ("linuxforhealth-r4-spec/r4_dr_ultrasound_abdomen_media_link.json", "R4"): "accepted:1",
    ("linuxforhealth-r4-spec/r4_dr_ultrasound_abdomen_media_link.json", "R5"): "accepted:1",
    ("stu3-spec/stu3_dr_f201_ct_head_neck_codeddiagnosis_single_category.json", "R4"): (
        "structure",
        "DiagnosticReport.category",
    ),
    ("stu3-spec/stu3_dr_f201_ct_head_neck_codeddiagnosis_single_category.json", "STU3"): (
        "required",
        "DiagnosticReport.performer[0].actor",
    ),
    ("us-core/r4_dr_note_cardiology_report.json", "R4"): ("not-supported", "DiagnosticReport.category"),
    ("us-core/r4_dr_note_chest_xray_xhtml_b64_media.json", "R4"): "accepted:1",
    # A client fixed to R5 wins over the (R4) US Core profile; this file is valid R5 too.
    ("us-core/r4_dr_note_chest_xray_xhtml_b64_media.json", "R5"): "accepted:1",
    ("us-core/r4_dr_note_dxa_bad_datetime_double_slash_refs_2021.json", "R4"): (
        "value",
        "DiagnosticReport.effectiveDateTime",
    ),
    ("us-core/r4_dr_note_dxa_pdf_b64_results.json", "R4"): "accepted:1",
    ("us-core/r4_servicerequest_chest_xray_order.json", "R4"): ("not-supported", ""),
}
CLIENTS = {"R4": R4, "R5": R5, "STU3": STU3, "ANY_CATEGORY": ANY_CATEGORY}


def _decode(corpus: Path, name: str, client: FhirClient, pipeline: Pipeline) -> tuple[Report, ...]:
    body = (corpus / "fhir" / name).read_bytes()
    return decode_fhir(
        body, mapping=pipeline.mappings.default, received_at=RECEIVED, client=client, procedures=pipeline.procedures
    )


def test_table_covers_every_file(corpus: Path) -> None:
    """Every corpus JSON file has at least one expected outcome (new files must be added here)."""
    files = {str(p.relative_to(corpus / "fhir")) for p in (corpus / "fhir").rglob("*.json")}
    assert files == {name for name, _ in EXPECTED}


@pytest.mark.parametrize(("name", "client"), sorted(EXPECTED))
def test_corpus_file(name: str, client: str, corpus: Path, pipeline: Pipeline) -> None:
    """The file decodes to the expected number of Reports, or fails with the expected issue code and expression."""
    expected = EXPECTED[(name, client)]
    if isinstance(expected, str):
        reports = _decode(corpus, name, CLIENTS[client], pipeline)
        assert f"accepted:{len(reports)}" == expected
        for report in reports:
            assert report.text.strip() or report.text_kind in ("pdf", "binary")
        return
    with pytest.raises(FhirDecodeError) as info:
        _decode(corpus, name, CLIENTS[client], pipeline)
    assert (info.value.issue_code, info.value.expression) == expected
    outcome = outcome_for_error(info.value)
    assert outcome["issue"][0]["code"] == expected[0]


def test_chest_xray_xhtml_sections(corpus: Path, pipeline: Pipeline) -> None:
    """US Core chest X-ray: base64 XHTML (mislabelled application/xhtml) gives sectioned text and a reader."""
    (report,) = _decode(corpus, "us-core/r4_dr_note_chest_xray_xhtml_b64_media.json", R4, pipeline)
    kinds = [s.kind.value for s in report.sections]
    assert kinds[-3:] == ["comparison", "findings", "impression"] or "impression" in kinds
    assert report.procedure.code == "30746-2" and report.procedure.coding_system == "LN"
    assert report.modality == "XR"
    assert report.reader is not None and report.reader.name == "Dr Ronald Bone"


def test_dxa_pdf_not_decoded(corpus: Path, pipeline: Pipeline) -> None:
    """US Core DXA: a 25 KB base64 PDF is recorded as pdf, not decoded; six external results are noted."""
    (report,) = _decode(corpus, "us-core/r4_dr_note_dxa_pdf_b64_results.json", R4, pipeline)
    assert (report.text_kind, report.text) == ("pdf", "")
    assert sum("result[" in w for w in report.warnings) == 6


def test_dxa_2021_accepted_once_date_fixed(corpus: Path, pipeline: Pipeline) -> None:
    """The 2021 DXA file fails only on its date; fixed, its Observation//id references are read with warnings."""
    body = (corpus / "fhir" / "us-core/r4_dr_note_dxa_bad_datetime_double_slash_refs_2021.json").read_bytes()
    body = body.replace(b'"2021-11-10 T19:30:46-08:00"', b'"2021-11-10T19:30:46-08:00"')
    (report,) = decode_fhir(body, mapping=pipeline.mappings.default, received_at=RECEIVED)
    assert report.text_kind == "pdf"
    assert any("irregular form" in w for w in report.warnings)


def test_f201_conclusion_is_impression(corpus: Path, pipeline: Pipeline) -> None:
    """f201 (R4): conclusion becomes the impression; the generated narrative (with its patient header) is not used."""
    (report,) = _decode(corpus, "linuxforhealth-r4-spec/r4_dr_f201_ct_head_neck_conclusioncode.json", R4, pipeline)
    assert report.text == "IMPRESSION:\nCT brains: large tumor sphenoid/clivus."
    assert report.modality == "CT"


def test_stu3_and_converted_r4_agree(corpus: Path, pipeline: Pipeline) -> None:
    """The STU3 DXA example and the converter's R4 version of it give the same key fields."""
    (stu3,) = _decode(corpus, "fhir-converter/stu3_dr_102_dxa_spec_example_converter_input.json", STU3, pipeline)
    (r4,) = _decode(corpus, "fhir-converter/r4_dr_102_dxa_converted_from_stu3_expected.json", R4, pipeline)
    fields = lambda r: (r.message_id, r.procedure, r.status, r.times.observation, r.times.report, r.reader, r.text)  # noqa: E731
    assert fields(stu3) == fields(r4)
    assert "osteopenic range" in r4.text


def _hl7(corpus: Path, name: str, pipeline: Pipeline) -> Report:
    raw = (corpus / "hl7" / "fhir-converter" / name).read_bytes()
    (report,) = decode_message(raw, pipeline.mappings, received_at=RECEIVED, procedures=pipeline.procedures).reports
    return report


def _pair_fields(report: Report) -> tuple[object, ...]:
    return (
        report.accession,
        report.filler_order,
        report.patient.id,
        report.patient.sex,
        report.patient.birth_date,
        report.procedure.code,
        report.procedure.text,
        report.status,
        report.times.observation,
    )


def test_glucose_pair_same_key_fields(corpus: Path, pipeline: Pipeline) -> None:
    """The GHH glucose ORU and the converter's FHIR Bundle of it agree on accession, patient, procedure, status, time and text."""
    hl7 = _hl7(corpus, "oru_r01_v24_glucose_short_lf.hl7", pipeline)
    (fhir,) = _decode(corpus, "fhir-converter/r4_bundle_batch_from_oru_r01_rmgead_glucose_expected.json", R4, pipeline)
    assert _pair_fields(fhir) == _pair_fields(hl7)
    assert fhir.text == hl7.text == "GLUCOSE: 182 mg/dl"
    assert fhir.placer_order == hl7.placer_order


def test_kitchen_sink_pair_same_key_fields(corpus: Path, pipeline: Pipeline) -> None:
    """Kitchen-sink ORU: with the category check off, the one final DiagnosticReport matches the HL7 OBR group.

    The other two DiagnosticReports come from OBX rows before the OBR (which the
    HL7 decoder does not attach to a report); they carry only image URLs.
    """
    hl7 = _hl7(corpus, "oru_r01_v251_lab_kitchen_sink_lf.hl7", pipeline)
    reports = _decode(
        corpus, "fhir-converter/r4_bundle_batch_from_oru_r01_01_lab_kitchen_sink_expected.json", ANY_CATEGORY, pipeline
    )
    (fhir,) = [r for r in reports if r.status is ResultStatus.FINAL]
    assert _pair_fields(fhir)[:2] == _pair_fields(hl7)[:2]
    assert (fhir.patient.sex, fhir.patient.birth_date) == (hl7.patient.sex, hl7.patient.birth_date)
    assert fhir.procedure.code == hl7.procedure.code
    assert [r.text_kind for r in reports if r is not fhir] == ["binary", "binary"]


def _decision(result: ReportOutcome) -> tuple[object, ...]:
    route = result.route
    return (
        sorted((f.rule, f.severity) for f in result.findings),
        (route.bucket, route.pool, route.priority, route.reasons, route.corrections) if route else None,
    )


@pytest.mark.parametrize(
    ("hl7_name", "fhir_name", "client"),
    [
        ("oru_r01_v24_glucose_short_lf.hl7", "r4_bundle_batch_from_oru_r01_rmgead_glucose_expected.json", R4),
        (
            "oru_r01_v251_lab_kitchen_sink_lf.hl7",
            "r4_bundle_batch_from_oru_r01_01_lab_kitchen_sink_expected.json",
            ANY_CATEGORY,
        ),
    ],
)
def test_hl7_and_fhir_twins_same_findings_and_route(
    hl7_name: str, fhir_name: str, client: FhirClient, corpus: Path, pipeline: Pipeline
) -> None:
    """A corpus ORU (hl7/fhir-converter) and the converter's FHIR Bundle of it, through the whole pipeline, give the same QA findings and the same route."""
    hl7 = process((corpus / "hl7" / "fhir-converter" / hl7_name).read_bytes(), pipeline, received_at=RECEIVED)
    fhir = process_fhir(
        (corpus / "fhir" / "fhir-converter" / fhir_name).read_bytes(), pipeline, received_at=RECEIVED, client=client
    )
    assert hl7.error is None and fhir.error is None
    (hl7_report,) = hl7.reports
    (fhir_report,) = [r for r in fhir.reports if r.report.status is ResultStatus.FINAL]
    assert hl7_report.route is not None
    assert _decision(fhir_report) == _decision(hl7_report)
