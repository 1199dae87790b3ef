"""Every real HL7 v2 file in tests/data/hl7 (copied from ../shared/corpus/hl7) decodes or fails precisely.

The expected table is the regression guard: a change in what any file decodes
to (or which HL7 error code it gets) shows up here by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.cli import check_messages, split_file
from listener.errors import DecodeError
from listener.model import SectionKind
from listener.pipeline import Pipeline
from tests.conftest import RECEIVED

# file -> per message: "accepted:<reports>" or the HL7 table 0357 error code.
EXPECTED = {
    "dcm4che/omi_o23_in_file_named_orm_zds.hl7": ["200"],
    "dcm4che/omi_o23_v251_head_ct_veterinary.hl7": ["200"],
    "dcm4che/omi_o23_v251_imaging_order_ipc.hl7": ["200"],
    "dcm4che/orm_o01_v231_mesa_zds.hl7": ["200"],
    "dcm4che/oru_v251_cda_ed_17kb.hl7": ["accepted:1"],
    "dcm4che/oru_v251_mesa_no_msh7.hl7": ["accepted:1"],
    "dcm4che/oru_v251_pdf_ed_base64.hl7": ["accepted:1"],
    "dcm4che/oru_v251_sr_critical_findings_radlex.hl7": ["accepted:1"],
    "fhir-converter/orm_o01_v26_ct_head_bom_lf.hl7": ["200"],
    "fhir-converter/orm_o01_v26_ct_head_mr_brain_two_orders_bom_lf.hl7": ["200"],
    "fhir-converter/oru_r01_v24_glucose_short_lf.hl7": ["accepted:1"],
    "fhir-converter/oru_r01_v251_lab_kitchen_sink_lf.hl7": ["accepted:1"],
    "hapi/bar_p01_encoding_chars_3_only_lf.hl7": ["200"],
    "hapi/erp_z99_v231_msh18_8859_1.hl7": ["200"],
    "hapi/orm_v22_ct_biopsy_new_order_lf.hl7": ["200"],
    "hapi/orm_v22_elbow_cancel_lf.hl7": ["200"],
    "hapi/orm_v22_xr_knee_lf.hl7": ["200"],
    "hapi/oru_v22_radis1_ct_prelim_inline_obx_lf.hl7": ["accepted:3"],
    "nhapi-fuzz/fuzz_hang1.hl7": ["101"],
    "nhapi-fuzz/fuzz_id000092_bad_encoding_chars.hl7": ["200"],
    "nhapi-fuzz/fuzz_id000109_nul_and_ctrl_bytes.hl7": ["200"],
    "nhapi-fuzz/fuzz_so5_long_version.hl7": ["102"],
    "nhapi-fuzz/fuzz_stackoverflow1.hl7": ["101"],
    "nhapi-fuzz/fuzz_sys1_truncated_msh.hl7": ["102"],
    "python-hl7/adt_a01_v23_quoted_nulls.hl7": ["200"],
    "python-hl7/batch_bad_missing_msh.hl7": ["100"],
    "python-hl7/batch_bhs_adt_a04_v25_msh18_ascii.hl7": ["200"],
    "python-hl7/file_fhs_two_batches_adt_v25.hl7": ["200"],
    "python-hl7/oru_r01_v24_ghh_glucose_sn_fn.hl7": ["accepted:1"],
    "scout/junk_empty_frame_cr_only.hl7": ["100"],
    "scout/junk_not_hl7_idx_msg.hl7": ["100"],
    "scout/junk_unparseable_text_lf.hl7": ["100"],
}
# Every other scout file is a radiology ORU^R01 with one report.
RADIOLOGY_ORU_COUNT = 29  # PROVENANCE.md: scout 24, hapi 1, dcm4che 4


def _corpus_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "hl7").rglob("*.hl7"))


def _results(path: Path, pipeline: Pipeline) -> list[str]:
    out = []
    for _msg, outcome in check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED):
        if outcome.error is not None:
            assert isinstance(outcome.error, DecodeError)
            assert outcome.error_type == "", f"unexpected internal error {outcome.error_type}"
            out.append(outcome.error.hl7_code)
        else:
            out.append(f"{outcome.disposition}:{len(outcome.reports)}")
    return out


def test_corpus_table_matches(corpus: Path, pipeline: Pipeline) -> None:
    """Each corpus file gives exactly its expected decode result or error code."""
    seen = {}
    for path in _corpus_files(corpus):
        name = str(path.relative_to(corpus / "hl7"))
        seen[name] = _results(path, pipeline)
    for name, results in seen.items():
        expected = EXPECTED.get(name, ["accepted:1"])
        assert results == expected, name
    assert len(seen) >= len(EXPECTED) + 24, "corpus files went missing"


def test_radiology_orus_have_accession_status_and_sections(corpus: Path, pipeline: Pipeline) -> None:
    """Every radiology ORU decodes with an accession, a status, and sections when it has text."""
    radiology = 0
    for path in _corpus_files(corpus):
        if "glucose" in path.name or "kitchen_sink" in path.name or not path.name.startswith("oru"):
            continue
        for _msg, outcome in check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED):
            assert outcome.error is None, path.name
            radiology += 1
            for result in outcome.reports:
                report = result.report
                assert report.accession, path.name
                if report.text.strip():
                    assert report.sections, path.name
                    for sec in report.sections:
                        assert report.text[sec.start : sec.end] == sec.text
    assert radiology == RADIOLOGY_ORU_COUNT


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("scout/oru_v27_wetread_us_abdomen_31obx.hl7", "preliminary"),
        ("scout/oru_v27_prelim_xr_chest.hl7", "preliminary"),
        ("scout/oru_v27_final_mammo_diag.hl7", "final"),
        ("scout/oru_v24_final_us_abdomen_tx_tilde_rp.hl7", "final"),
        ("hapi/oru_v22_radis1_ct_prelim_inline_obx_lf.hl7", "preliminary"),
    ],
)
def test_status_words(corpus: Path, pipeline: Pipeline, name: str, status: str) -> None:
    """Status words (Wet Read, Prelim, Final) map like table codes (P, F)."""
    path = corpus / "hl7" / name
    (_msg, outcome), *_ = check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED)
    assert outcome.reports[0].report.status.value == status


def test_latin1_and_utf8_text(corpus: Path, pipeline: Pipeline) -> None:
    """Latin-1 bytes decode as latin text; undeclared UTF-8 decodes as UTF-8."""
    latin = corpus / "hl7/scout/oru_v24_latin1_plusminus_divide.hl7"
    ((_m, outcome),) = check_messages(split_file(latin, latin.read_bytes()), pipeline, RECEIVED)
    assert "\u00b1" in outcome.reports[0].report.text
    utf8 = corpus / "hl7/scout/oru_v24_utf8_curly_apostrophe.hl7"
    ((_m, outcome),) = check_messages(split_file(utf8, utf8.read_bytes()), pipeline, RECEIVED)
    assert "\u2019" in outcome.reports[0].report.text
    assert outcome.reports[0].report.charset == "utf-8"


def test_tilde_repetitions_are_lines_and_sections_found(corpus: Path, pipeline: Pipeline) -> None:
    """TX repetitions (~) are line breaks; the FINDINGS/IMPRESSION headings inside become sections."""
    path = corpus / "hl7/scout/oru_v24_final_us_abdomen_tx_tilde_rp.hl7"
    ((_m, outcome),) = check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED)
    report = outcome.reports[0].report
    impression = report.section(SectionKind.IMPRESSION)
    assert impression is not None and impression.text.startswith("Suspicious left adnexal mass")
    assert report.section(SectionKind.FINDINGS) is not None


def test_escape_s_becomes_component_separator(corpus: Path, pipeline: Pipeline) -> None:
    """\\S\\ in report text is unescaped to '^'."""
    path = corpus / "hl7/scout/oru_v24_final_petct_escS.hl7"
    ((_m, outcome),) = check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED)
    assert "^18F-FDG" in outcome.reports[0].report.text


def test_pdf_report_is_not_decoded_as_text(corpus: Path, pipeline: Pipeline) -> None:
    """An ED base64 PDF is recorded as a PDF report, never turned into text."""
    path = corpus / "hl7/dcm4che/oru_v251_pdf_ed_base64.hl7"
    ((_m, outcome),) = check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED)
    report = outcome.reports[0].report
    assert report.text_kind == "pdf"
    assert "JVBER" not in report.text


def test_cda_report_text_extracted(corpus: Path, pipeline: Pipeline) -> None:
    """A CDA document in ED gives its narrative as text with its section titles."""
    path = corpus / "hl7/dcm4che/oru_v251_cda_ed_17kb.hl7"
    ((_m, outcome),) = check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED)
    report = outcome.reports[0].report
    assert report.text_kind == "cda"
    assert report.section(SectionKind.FINDINGS) is not None


def test_feed_mappings_apply(corpus: Path, pipeline: Pipeline) -> None:
    """SOMERIS local codes yield CPT (BHC76140 -> 76140); MESA takes the accession from OBR-18."""
    path = corpus / "hl7/scout/oru_v27_final_76140_outside_exam.hl7"
    ((_m, outcome),) = check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED)
    proc = outcome.reports[0].report.procedure
    assert (proc.code, proc.coding_system, proc.local_code) == ("76140", "CPT", "BHC76140")
    assert outcome.feed == "someris"
    path = corpus / "hl7/dcm4che/oru_v251_mesa_no_msh7.hl7"
    ((_m, outcome),) = check_messages(split_file(path, path.read_bytes()), pipeline, RECEIVED)
    assert outcome.reports[0].report.accession == "ACC1"
    assert outcome.reports[0].report.times.message is None
