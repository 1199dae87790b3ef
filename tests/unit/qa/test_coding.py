"""Coding rules: the billed CPT code against what the report describes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from listener.errors import ConfigError
from listener.model import Severity
from listener.procedures import load_procedures
from listener.sites import Directory, Site
from tests.unit.qa.factory import findings_for, make_report, pipeline

HEAD = "INDICATION: Headache.\nCOMPARISON: None.\n"


def rules(report, prefix: str = "coding.", **kwargs):  # type: ignore[no-untyped-def]
    return {f.rule: f for f in findings_for(report, rule_prefix=prefix, **kwargs)}


def contrast(text: str, code: str):  # type: ignore[no-untyped-def]
    found = rules(make_report(text, procedure=code), "coding.contrast_mismatch")
    return found.get("coding.contrast_mismatch")


# --- contrast -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "suggested"),
    [
        ("TECHNIQUE: CT of the head without contrast.", "70460", "70450"),
        ("TECHNIQUE: CT of the head without contrast.", "70470", "70450"),
        ("TECHNIQUE: Axial CT images of the head with IV contrast.", "70450", "70460"),
        ("TECHNIQUE: CT head without and with contrast.", "70450", "70470"),
        ("TECHNIQUE: CT head without and with contrast.", "70460", "70470"),
        ("TECHNIQUE: CT head with contrast.", "70470", "70460"),
        (
            "TECHNIQUE: Axial images through the abdomen and pelvis following the administration of 100 mL Omnipaque 350.",
            "74176",
            "74177",
        ),
        ("TECHNIQUE: Abdomen and pelvis CT. No IV contrast was administered.", "74177", "74176"),
        (
            "TECHNIQUE: CT abdomen and pelvis with oral contrast. Intravenous contrast was not administered.",
            "74177",
            "74176",
        ),
        (
            "TECHNIQUE: Multiplanar MR images of the brain before and after administration of gadolinium.",
            "70551",
            "70553",
        ),
        ("TECHNIQUE: MRI brain pre- and post-contrast.", "70552", "70553"),
        ("TECHNIQUE: Sagittal and axial images of the lumbar spine after 15 mL Gadavist IV.", "72148", "72149"),
        ("TECHNIQUE: CT chest w/o contrast.", "71260", "71250"),
        ("CONTRAST: None.\nFINDINGS: Normal chest.", "71260", "71250"),
        ("TECHNIQUE: CT abdomen and pelvis following intravenous contrast.", "74176", "74177"),
        ("TECHNIQUE: Axial images of the head after IV contrast.", "70450", "70460"),
    ],
)
def test_contrast_mismatch_found_with_the_right_code_suggested(text: str, code: str, suggested: str) -> None:
    """Each contrast family: the stated contrast against the code's, the family code suggested, severity error."""
    finding = contrast(HEAD + text + "\nFINDINGS: Normal.\nIMPRESSION: Normal.", code)
    assert finding is not None
    assert finding.severity is Severity.ERROR
    assert suggested in finding.suggestion and code in finding.message
    assert finding.evidence and all(e.text == finding.evidence[0].text or e.text for e in finding.evidence)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("TECHNIQUE: CT of the head without contrast.", "70450"),
        ("TECHNIQUE: CT abdomen and pelvis with IV contrast. No oral contrast.", "74177"),
        ("TECHNIQUE: CT abdomen and pelvis without oral contrast, with intravenous contrast.", "74177"),
        ("TECHNIQUE: CT abdomen and pelvis with oral contrast.", "74176"),
        ("TECHNIQUE: CT head.\nCOMPARISON: Prior contrast-enhanced CT of the head.", "70450"),
        ("TECHNIQUE: CT head. Contrast was not administered.", "70450"),
        ("TECHNIQUE: Noncontrast CT head and CTA of the head and neck with contrast.", "70450"),
        ("TECHNIQUE: CT head without contrast and CT chest with contrast.", "70450"),
        ("TECHNIQUE: CTA chest without and with contrast.", "71275"),
        ("TECHNIQUE: MRI brain with and without gadolinium.", "70553"),
        ("TECHNIQUE: Sagittal T1, axial T2 and postcontrast T1 images of the brain.", "70553"),
        ("TECHNIQUE: CT head.\nIMPRESSION: A contrast-enhanced MRI is recommended.", "70450"),
        ("TECHNIQUE: PA and lateral chest.", "71046"),
        ("TECHNIQUE: Barium swallow with contrast.", "74220"),
    ],
)
def test_contrast_consistent_or_unstated_is_silent(text: str, code: str) -> None:
    """Consistent wording, oral-only contrast, prior studies, plans, other exams in one report, non-contrast codes: no finding."""
    assert contrast(HEAD + text + "\nFINDINGS: Normal.\nIMPRESSION: Normal.", code) is None


def test_contrast_of_an_angiography_in_the_exam_line_is_this_exam() -> None:
    """The exam line names this exam, an angiography included; elsewhere an angiography is another exam."""
    title = (
        "CT ANGIOGRAPHY CHEST WITHOUT INTRAVENOUS CONTRAST\nINDICATION: Pain.\nFINDINGS: Normal.\nIMPRESSION: Normal."
    )
    finding = contrast(title, "71260")
    assert finding is not None and finding.message.startswith("Report describes the exam without contrast")
    aside = (
        "INDICATION: Pain.\nTECHNIQUE: CT chest with contrast. CT angiography was also performed without contrast.\n"
        "FINDINGS: Normal.\nIMPRESSION: Normal."
    )
    assert contrast(aside, "71260") is None


def test_contrast_unknown_code_gets_no_check() -> None:
    """A code missing from procedures.yaml gets no coding checks at all."""
    assert contrast(HEAD + "TECHNIQUE: CT head with contrast.", "99999") is None


def test_contrast_mismatch_message_has_no_report_text() -> None:
    """The message names codes and contrast kinds only; the quote is evidence with offsets."""
    text = HEAD + "TECHNIQUE: CT of the head without contrast, patient Smith.\nFINDINGS: Normal."
    finding = contrast(text, "70460")
    assert finding is not None and "Smith" not in finding.message
    ev = finding.evidence[0]
    assert text[ev.start : ev.end] == ev.text == "without contrast" and ev.section == "technique"


# --- modality and region ------------------------------------------------------------------------------


def test_modality_mismatch_mri_text_on_ct_code() -> None:
    """A technique that names only MRI on a CT code is flagged (warning)."""
    found = rules(make_report(HEAD + "TECHNIQUE: MRI of the brain.\nFINDINGS: Normal.", procedure="70450"))
    assert found["coding.modality_mismatch"].severity is Severity.WARNING


def test_modality_silent_when_code_modality_also_named_or_unnamed() -> None:
    """PET/CT, a CT report comparing with an MRI, or no modality named at all: no finding."""
    assert "coding.modality_mismatch" not in rules(
        make_report(HEAD + "TECHNIQUE: CT head and MRI brain.\nFINDINGS: x.", procedure="70450")
    )
    assert "coding.modality_mismatch" not in rules(
        make_report("COMPARISON: MRI brain.\nFINDINGS: Normal.", procedure="70450")
    )
    assert "coding.modality_mismatch" not in rules(
        make_report(HEAD + "TECHNIQUE: Axial images.\nFINDINGS: x.", procedure="70450")
    )


def test_body_region_mismatch_and_related_regions() -> None:
    """A chest exam on a head code is flagged; abdomen/pelvis on an abdomen code and knee on a knee code are not."""
    found = rules(make_report(HEAD + "TECHNIQUE: CT of the chest without contrast.\nFINDINGS: x.", procedure="70450"))
    assert "coding.body_region_mismatch" in found
    ok = rules(make_report(HEAD + "TECHNIQUE: CT of the abdomen and pelvis.\nFINDINGS: x.", procedure="74150"))
    assert "coding.body_region_mismatch" not in ok
    ok = rules(make_report(HEAD + "TECHNIQUE: Three views of the left knee.\nFINDINGS: x.", procedure="73562"))
    assert "coding.body_region_mismatch" not in ok
    ok = rules(
        make_report(HEAD + "TECHNIQUE: CT head. Images through the lung apices.\nFINDINGS: x.", procedure="70450")
    )
    assert "coding.body_region_mismatch" not in ok


CHEST_BODY = (
    "INDICATION: Cough.\nCOMPARISON: None.\nFINDINGS: The lungs are clear. The heart size is normal.\n"
    "IMPRESSION: No acute cardiopulmonary process."
)


def test_body_region_of_a_passive_technique_sentence() -> None:
    """ "Axial CT images were obtained through the facial bones" names the exam's region like "CT of the face"."""
    text = "TECHNIQUE: Sequential axial CT images were obtained through the facial bones.\nFINDINGS: Normal."
    assert "coding.body_region_mismatch" in rules(make_report(text, procedure="72131"))
    assert "coding.body_region_mismatch" not in rules(make_report(text, procedure="70486"))
    # a region several words after the passive verb is not the exam's
    far = "TECHNIQUE: Axial CT images were obtained with attention to the lower facial bones and sinuses.\nFINDINGS: x."
    assert "coding.body_region_mismatch" not in rules(make_report(far, procedure="72131"))


@pytest.mark.parametrize(
    ("text", "code", "procedure_text"),
    [
        # an MRI billed as a radiograph: "radiographs" in a plan names no exam of today
        (
            "EXAM: MRI right knee without gadolinium.\nFINDINGS: Possible Segond fracture; correlation with "
            "radiographs is recommended.\nIMPRESSION: Possible Segond fracture.",
            "73560",
            "",
        ),
        # a chest radiograph billed as CT: "Chest CT may be of further value" is a suggestion
        (CHEST_BODY + " Chest CT may be of further value.", "71250", "CHEST 2V FRONTAL/LATERAL"),
    ],
)
def test_modality_named_only_in_a_plan_does_not_cover_the_code(text: str, code: str, procedure_text: str) -> None:
    found = rules(make_report(text, procedure=code, procedure_text=procedure_text))
    assert "coding.modality_mismatch" in found


def test_modality_named_in_a_sentence_about_today_covers_the_code() -> None:
    """Near miss: the radiographs are part of today's exam, so the code's modality is named."""
    text = (
        "EXAM: MRI right knee without gadolinium.\nFINDINGS: Radiographs obtained today show a Segond fracture.\n"
        "IMPRESSION: Segond fracture."
    )
    assert "coding.modality_mismatch" not in rules(make_report(text, procedure="73560"))


@pytest.mark.parametrize("title", ["Xray Chest PA and Lateral", "CHEST 2V FRONTAL/LATERAL", "Two views of the chest"])
def test_exam_title_decides_when_the_text_names_no_exam(title: str) -> None:
    """A chest radiograph whose text has no exam line: its exam title decides region and modality."""
    knee = rules(make_report(CHEST_BODY, procedure="73560", procedure_text=title))
    assert "coding.body_region_mismatch" in knee and "coding.modality_mismatch" not in knee
    assert knee["coding.body_region_mismatch"].evidence == ()
    assert "chest" in knee["coding.body_region_mismatch"].message
    ct = rules(make_report(CHEST_BODY, procedure="71250", procedure_text=title))
    assert "coding.modality_mismatch" in ct and "coding.body_region_mismatch" not in ct
    assert ct["coding.modality_mismatch"].message == "The exam title describes a XR exam; code 71250 is CT."
    # the right code, and a title that names no region or modality: silent
    assert not {"coding.body_region_mismatch", "coding.modality_mismatch"} & set(
        rules(make_report(CHEST_BODY, procedure="71046", procedure_text=title))
    )
    assert not {"coding.body_region_mismatch", "coding.modality_mismatch"} & set(
        rules(make_report(CHEST_BODY, procedure="73560", procedure_text="Outpatient study"))
    )


def test_exam_title_projections_name_the_radiograph_beside_a_comparison_ct() -> None:
    """A radiograph title that also cites a comparison CT names the radiograph: no finding on a chest radiograph code."""
    title = "PA and lateral chest 2026-11-02 at 10:14, comparison CT from 2026-10-01"
    assert "coding.modality_mismatch" not in rules(make_report(CHEST_BODY, procedure="71046", procedure_text=title))
    assert "coding.modality_mismatch" not in rules(make_report(CHEST_BODY, procedure="71250", procedure_text=title))


def test_text_exam_line_wins_over_the_exam_title() -> None:
    """When the report's own technique names the region, the exam title is not consulted."""
    text = "TECHNIQUE: Two views of the right knee.\nFINDINGS: No fracture.\nIMPRESSION: Normal knee."
    assert "coding.body_region_mismatch" not in rules(make_report(text, procedure="73560", procedure_text="XR chest"))


def test_exam_heading_line_names_the_region() -> None:
    """The first sentence under "EXAM:" is the exam name: its region counts without an exam word next to it."""
    text = "EXAM: Chest PA & Lateral.\nFINDINGS: The lungs are clear.\nIMPRESSION: Normal."
    assert "coding.body_region_mismatch" in rules(make_report(text, procedure="73560"))
    assert "coding.body_region_mismatch" not in rules(make_report(text, procedure="71046"))


def test_radiograph_projections_against_a_ct_code() -> None:
    """Projections in the technique mean a radiograph; a CT named only in a recommendation does not count."""
    text = (
        "TECHNIQUE: PA and lateral views of the chest.\nFINDINGS: A 1 cm nodule in the left lower lobe.\n"
        "IMPRESSION: Nodule. Recommend CT chest."
    )
    assert "coding.modality_mismatch" in rules(make_report(text, procedure="71250"))
    # a CT described as performed: the report names the code's modality for this exam
    done = text.replace("PA and lateral views of the chest.", "PA and lateral views of the chest. CT was performed.")
    assert "coding.modality_mismatch" not in rules(make_report(done, procedure="71250"))
    # projections never argue against a radiograph, fluoroscopy or mammography code
    assert "coding.modality_mismatch" not in rules(make_report(text, procedure="71046"))


# --- mammography --------------------------------------------------------------------------------------


def test_screening_code_on_diagnostic_exam() -> None:
    """77067 with a palpable lump or a callback in the indication is flagged; "no palpable lump" is not."""
    lump = "INDICATION: Palpable lump in the left breast.\nFINDINGS: Scattered fibroglandular density.\nIMPRESSION: BI-RADS 1."
    assert "coding.mammo_screening_diagnostic" in rules(make_report(lump, procedure="77067"))
    callback = "INDICATION: Callback from screening.\nFINDINGS: x.\nIMPRESSION: BI-RADS 2."
    assert "coding.mammo_screening_diagnostic" in rules(make_report(callback, procedure="77067"))
    routine = "INDICATION: Screening. No palpable abnormality.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1."
    assert "coding.mammo_screening_diagnostic" not in rules(make_report(routine, procedure="77067"))


def test_diagnostic_code_on_screening_exam() -> None:
    """77066 on an exam described only as routine screening is flagged; with a diagnostic cue it is not."""
    screening = "INDICATION: Routine screening mammogram.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1."
    assert "coding.mammo_screening_diagnostic" in rules(make_report(screening, procedure="77066"))
    both = "INDICATION: Screening; now palpable lump right breast.\nFINDINGS: x.\nIMPRESSION: BI-RADS 3."
    assert "coding.mammo_screening_diagnostic" not in rules(make_report(both, procedure="77066"))


def test_tomosynthesis_described_not_billed_and_billed_not_described() -> None:
    """Tomosynthesis described without a tomo code is an info hint; a tomo code with no tomosynthesis described is a warning."""
    text = "INDICATION: Screening.\nTECHNIQUE: Bilateral 2D and tomosynthesis images.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1."
    found = rules(make_report(text, procedure="77067"))
    assert found["coding.tomosynthesis_not_billed"].severity is Severity.INFO
    assert "coding.tomosynthesis_not_billed" not in rules(make_report(text, procedure="77067", modifiers=("77063",)))
    plain = "INDICATION: Screening.\nTECHNIQUE: CC and MLO views.\nFINDINGS: x.\nIMPRESSION: BI-RADS 1."
    assert "coding.tomosynthesis_not_described" in rules(make_report(plain, procedure="77067", modifiers=("77063",)))
    assert "coding.tomosynthesis_not_described" not in rules(make_report(text, procedure="77062"))
    negated = "INDICATION: Screening.\nTECHNIQUE: Tomosynthesis was not performed.\nFINDINGS: x."
    assert "coding.tomosynthesis_not_billed" not in rules(make_report(negated, procedure="77067"))


# --- 76140 --------------------------------------------------------------------------------------------


def test_consultation_code_needs_an_outside_study() -> None:
    """76140 without any statement that the images came from elsewhere is flagged; with one it is not."""
    here = "INDICATION: Cough.\nFINDINGS: Clear lungs.\nIMPRESSION: Normal."
    assert "coding.consultation_in_house" in rules(make_report(here, procedure="76140"))
    outside = "INDICATION: Cough. Outside images submitted for review.\nFINDINGS: Clear lungs.\nIMPRESSION: Normal."
    assert "coding.consultation_in_house" not in rules(make_report(outside, procedure="76140"))


def test_outside_study_hint_is_info_and_ignores_comparisons() -> None:
    """A second-opinion read gets an info hint about 76140; an outside prior used for comparison does not."""
    text = "INDICATION: Knee pain. Received for second opinion.\nFINDINGS: Intact ligaments.\nIMPRESSION: Normal."
    found = rules(make_report(text, procedure="73721"))
    assert found["coding.outside_study_hint"].severity is Severity.INFO
    assert "billable" not in found["coding.outside_study_hint"].message
    cmp = "INDICATION: Knee pain.\nCOMPARISON: Outside radiographs from 2025.\nFINDINGS: x.\nIMPRESSION: Normal."
    assert "coding.outside_study_hint" not in rules(make_report(cmp, procedure="73721"))


# --- modifiers, site, reason -------------------------------------------------------------------------


def test_limited_exam_without_modifier_52() -> None:
    """A limited exam in the technique needs modifier 52; with 52, a limited code, or image-quality "limited" it is silent."""
    text = "INDICATION: Pain.\nTECHNIQUE: Limited ultrasound of the abdomen.\nFINDINGS: x.\nIMPRESSION: Normal."
    assert "coding.limited_without_modifier" in rules(make_report(text, procedure="76700"))
    assert "coding.limited_without_modifier" not in rules(make_report(text, procedure="76700", modifiers=("52",)))
    assert "coding.limited_without_modifier" not in rules(make_report(text, procedure="76705"))
    quality = "INDICATION: Pain.\nFINDINGS: Limited study due to body habitus.\nIMPRESSION: Limited chest radiograph examination."
    assert "coding.limited_without_modifier" not in rules(make_report(quality, procedure="71046"))
    stopped = "INDICATION: Pain.\nFINDINGS: The examination was terminated at patient request.\nIMPRESSION: x."
    assert "coding.limited_without_modifier" in rules(make_report(stopped, procedure="76700"))


def _directory(professional_only: bool) -> Directory:
    site = Site(
        code="GENHOSP",
        name="General",
        state="TX",
        country="US",
        timezone=ZoneInfo("America/Chicago"),
        sending_facilities=("GENHOSP",),
        professional_only=professional_only,
        turnaround_minutes=MappingProxyType({}),
        us_final_required=False,
        medicare_financial_classes=("MC",),
        client="",
    )
    return Directory(MappingProxyType({"GENHOSP": site}), MappingProxyType({}), MappingProxyType({"stat": 30}))


def test_professional_only_site_needs_modifier_26() -> None:
    """A professional-only site billed without 26 is flagged; with 26, or at a global-billing site, it is not."""
    text = "INDICATION: Cough.\nFINDINGS: Clear.\nIMPRESSION: Normal."
    qa_pro = replace(pipeline().qa, directory=_directory(True))
    qa_global = replace(pipeline().qa, directory=_directory(False))
    assert "coding.professional_component_missing" in rules(make_report(text), qa=qa_pro)
    assert "coding.professional_component_missing" not in rules(make_report(text, modifiers=("26",)), qa=qa_pro)
    assert "coding.professional_component_missing" not in rules(make_report(text), qa=qa_global)


def test_reason_missing_only_when_order_and_text_are_silent() -> None:
    """No reason, no ICD-10 and no indication: info finding; any one of them present: silent."""
    bare = "FINDINGS: Clear lungs.\nIMPRESSION: Normal."
    assert rules(make_report(bare))["coding.reason_missing"].severity is Severity.INFO
    assert "coding.reason_missing" not in rules(make_report(bare, reason="Cough"))
    assert "coding.reason_missing" not in rules(make_report(bare, diagnosis_codes=("R05.9",)))
    assert "coding.reason_missing" not in rules(make_report("INDICATION: Cough.\n" + bare))


# --- radiograph views -------------------------------------------------------------------------------------

VIEW_BODY = "\nFINDINGS: The lungs are clear.\nIMPRESSION: No acute abnormality."


def views(text: str, code: str, modifiers: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    found = rules(make_report(text, procedure=code, modifiers=modifiers), "coding.view_count_mismatch")
    return found.get("coding.view_count_mismatch")


@pytest.mark.parametrize(
    ("text", "code", "documented", "suggested"),
    [
        ("EXAMINATION: XR CHEST PA AND LATERAL", "71045", 2, "71046"),
        ("TECHNIQUE: Two views of the chest.", "71045", 2, "71046"),
        ("TECHNIQUE: 2 views of the chest.", "71047", 2, "71046"),
        ("EXAM: XR CHEST 2V", "71045", 2, "71046"),
        ("TECHNIQUE: Frontal and lateral views of the chest.", "71045", 2, "71046"),
        ("TECHNIQUE: PA/lateral chest radiographs.", "71048", 2, "71046"),
        ("TECHNIQUE: Single portable AP view of the chest.", "71046", 1, "71045"),
        ("EXAM: Single portable AP", "71046", 1, "71045"),
        ("TECHNIQUE: PA, lateral and apical lordotic views of the chest.", "71046", 3, "71047"),
        ("TECHNIQUE: Four views of the chest.", "71046", 4, "71048"),
        ("TECHNIQUE: 3 views of the left knee.", "73560", 3, "73562"),
        ("FINDINGS: AP, lateral and sunrise views of the left knee. Mild narrowing.", "73560", 3, "73562"),
        ("TECHNIQUE: AP and lateral views and a sunrise view of the right knee.", "73564", 3, "73562"),
        ("TECHNIQUE: AP, lateral and oblique views of the right ankle.", "73600", 3, "73610"),
        ("TECHNIQUE: AP and lateral views of the right wrist.", "73110", 2, "73100"),
        (
            "TECHNIQUE: AP, lateral, odontoid, both obliques, flexion and extension views of the cervical spine.",
            "72040",
            7,
            "72052",
        ),
        ("TECHNIQUE: Two views of the lumbar spine.", "72110", 2, "72100"),
        ("TECHNIQUE: AP pelvis and frog-leg lateral views of the left hip.", "73501", 2, "73502"),
        ("FINDINGS: PA and lateral views of the chest were obtained. The lungs are clear.", "71045", 2, "71046"),
        # named views that carry their own noun need nothing after them
        ("FINDINGS: PA and lateral views were obtained. The lungs are clear.", "71045", 2, "71046"),
        ("FINDINGS: Frontal and lateral views. The lungs are clear.", "71048", 2, "71046"),
        # on a radiograph code a number of images is a number of views
        ("FINDINGS: 2 images. Heart size is normal.", "71045", 2, "71046"),
        ("FINDINGS: Three images of the right ankle are obtained. No fracture.", "73600", 3, "73610"),
        # a count may name the position ("single AP view")
        ("FINDINGS: Single AP view of the chest was obtained. The lungs are clear.", "71046", 1, "71045"),
        # "bilateral" two clauses on (a run-on sentence the splitter keeps whole) says nothing of the views
        (
            "FINDINGS: PA, lateral and oblique views. stable sternotomy wires; small bilateral pleural effusions.",
            "71046",
            3,
            "71047",
        ),
    ],
)
def test_view_count_mismatch_found_with_the_right_code_suggested(
    text: str, code: str, documented: int, suggested: str
) -> None:
    found = views(text + VIEW_BODY, code)
    assert found is not None
    assert found.severity is Severity.WARNING
    assert f"documents {documented} view" in found.message
    assert f"Bill {suggested} " in found.suggestion


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("EXAMINATION: XR CHEST PA AND LATERAL", "71046"),
        ("TECHNIQUE: Frontal and lateral views of the chest.", "71046"),
        ("EXAM: Single portable AP", "71045"),
        ("EXAM: XR CHEST 1 VIEW, PORTABLE AP", "71045"),
        ("TECHNIQUE: 3 views of the left knee.", "73562"),
        ("TECHNIQUE: Two views of the right knee.", "73560"),
        ("TECHNIQUE: Supine and upright views of the abdomen.", "74019"),
        ("TECHNIQUE: AP, lateral and oblique views of the right ankle.", "73610"),
        ("TECHNIQUE: AP, scapular Y and axillary views of the left shoulder.", "73030"),
        # the views are not stated
        ("EXAM: XR CHEST", "71045"),
        ("EXAM: Upright portable chest radiograph.", "71046"),
        # a comparison study's views are not this exam's
        ("COMPARISON: Prior two views 2025-01-02.\nFINDINGS: Compared with the prior two views, no change.", "71045"),
        # one view named in the findings is an image of the exam, not its view count
        ("FINDINGS: On the lateral view there is a small effusion.", "71046"),
        # views added to others, of each side, or an unknown number: no count to compare
        ("TECHNIQUE: Frontal and lateral views. Additional lateral decubitus view.", "71046"),
        ("TECHNIQUE: Two views of each knee.", "73560"),
        ("TECHNIQUE: Multiple views of the chest.", "71045"),
        # a range or a bound is no count
        ("EXAM: XR LUMBAR SPINE 2-3 VIEWS", "72110"),
        # a date is no count
        ("TECHNIQUE: PA and lateral views of the chest, 2026/11/05 radiographs.", "71046"),
        ("EXAM: XR CHEST 4 OR MORE VIEWS", "71047"),
        ("TECHNIQUE: Minimum of 4 views of the right knee.", "73562"),
        # another family's anatomy: a body-region question, not a view count
        ("TECHNIQUE: Two views of the right ankle.", "73564"),
        # "lateral" as anatomy, not a view
        ("FINDINGS: Lateral meniscus is intact. Lateral joint space is preserved.", "73560"),
        # one image named in the findings, like one view
        ("FINDINGS: On the lateral image there is a small effusion.", "71046"),
        # named views of each side, in the same clause: no count
        ("FINDINGS: Frontal and lateral views of both knees.", "73560"),
        # more images than the named views (a repeated exposure): no count
        ("FINDINGS: Frontal and lateral radiographs of the chest. A total of 3 images were obtained.", "71047"),
        ("FINDINGS: Frontal and lateral radiographs of the chest. A total of 3 images were obtained.", "71046"),
        # views recommended, not taken
        ("FINDINGS: Patchy opacity.\nIMPRESSION: PA and lateral chest radiograph may be of benefit.", "71045"),
        # images of an unknown number
        ("FINDINGS: Multiple images of the chest were evaluated.", "71045"),
    ],
)
def test_view_count_consistent_or_unstated_is_silent(text: str, code: str) -> None:
    assert views(text + VIEW_BODY, code) is None


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (
            "TECHNIQUE: PA and lateral views. Two views.\nFINDINGS: Three views show clear lungs.",
            "71046",
            "Report's view statements disagree (2 and 3 views); code 71046 is for 2 views.",
        ),
        (
            "TECHNIQUE: One view of the chest (AP upright).\nFINDINGS: The examination consists of frontal and "
            "lateral radiographs of the chest.",
            "71046",
            "Report's view statements disagree (1 and 2 views); code 71046 is for 2 views.",
        ),
        (
            "TECHNIQUE: Three views of the chest.\nFINDINGS: 2 images.",
            "71046",
            "Report's view statements disagree (2 and 3 views); code 71046 is for 2 views.",
        ),
    ],
)
def test_view_statements_that_disagree_outside_the_code_range(text: str, code: str, message: str) -> None:
    """Statements of different counts, one outside the code's range: the report does not support the code.
    The evidence starts with the statement outside the range."""
    found = views(text + VIEW_BODY, code)
    assert found is not None and found.message == message
    assert found.evidence[0].text.lower().startswith(("three", "one"))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        # both counts in the code's range (73560: 1-2 views)
        ("TECHNIQUE: One view of the right knee.\nFINDINGS: Two views of the right knee show no fracture.", "73560"),
        # fewer views billed as a reduced service
        ("TECHNIQUE: One view of the chest.\nFINDINGS: Frontal and lateral radiographs of the chest.", "71046+52"),
    ],
)
def test_view_statements_that_disagree_inside_the_code_range_are_silent(text: str, code: str) -> None:
    procedure, _, modifier = code.partition("+")
    assert views(text + VIEW_BODY, procedure, modifiers=(modifier,) if modifier else ()) is None


def test_view_count_scapular_y_is_a_view() -> None:
    found = views("TECHNIQUE: Scapular Y view of the left shoulder." + VIEW_BODY, "73030")
    assert found is not None and "documents 1 view;" in found.message
    assert views("TECHNIQUE: Patient is 45 y.\nFINDINGS: Lateral aspect of the shoulder is normal.", "73030") is None


def test_view_count_fewer_views_with_modifier_52_is_silent() -> None:
    text = "TECHNIQUE: One view of the right wrist." + VIEW_BODY
    found = views(text, "73100")
    assert found is not None
    assert "No code of this family" in found.suggestion
    assert views(text, "73100", modifiers=("52",)) is None


def test_view_count_message_has_no_report_text() -> None:
    found = views("TECHNIQUE: Two views of the chest of Mr ZZTEST." + VIEW_BODY, "71045")
    assert found is not None
    assert "ZZTEST" not in found.message and "ZZTEST" not in found.suggestion
    assert found.message == "Report documents 2 views; code 71045 is for 1 view."


def test_view_codes_by_family() -> None:
    table = pipeline().procedures
    assert table is not None
    assert table.view_codes("chest", 2) == ("71046",)
    assert table.view_codes("lumbosacral_spine", 6) == ("72110", "72114")
    assert table.view_codes("wrist", 1) == ()


def test_view_family_needs_views(tmp_path: Path) -> None:
    """The loader refuses a view_family on a code without a view range, naming file and line."""
    path = tmp_path / "procedures.yaml"
    path.write_text(
        'version: 1\nprocedures:\n  "71045":\n    description: "chest radiograph"\n    modality: XR\n'
        "    body_region: chest\n    view_family: chest\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="view_family but no views") as caught:
        load_procedures(path)
    assert "procedures.yaml:7" in str(caught.value)


def test_view_count_of_another_anatomy_in_the_same_report_is_not_counted() -> None:
    """A chest report that goes on to the sternum counts only the chest's views."""
    text = (
        "FINDINGS: Chest. The examination consists of frontal and lateral radiographs of the chest. Clear lungs. "
        "Thoracic spine. The examination consists of frontal, lateral and swimmers lateral radiographs of the "
        "thoracic spine. Sternum. The examination consists of 2 oblique and one lateral radiograph of the sternum."
        "\nIMPRESSION: No acute abnormality."
    )
    assert views(text, "71046") is None
    found = views(text, "71045")
    assert found is not None and "documents 2 views" in found.message


def test_view_count_numbers_before_named_views_multiply() -> None:
    found = views("TECHNIQUE: AP, lateral and 2 oblique views of the right foot." + VIEW_BODY, "73620")
    assert found is not None and "documents 4 views" in found.message
