"""Completeness rules: text present, impression present and filled, BI-RADS, placeholders, truncation."""

from __future__ import annotations

import csv
import re

import pytest

from listener.model import Severity, TextKind
from listener.qa.completeness import birads_categories
from tests.conftest import REPORTS
from tests.unit.qa.factory import findings_for, make_report

FULL = (
    "INDICATION:\nCough.\nCOMPARISON:\nNone.\nFINDINGS:\nThe lungs are clear. The heart size is normal.\n"
    "IMPRESSION:\nNo acute cardiopulmonary process."
)


def _rules(text: str, **kw: object) -> list[str]:
    return [f.rule for f in findings_for(make_report(text, **kw), rule_prefix="completeness.")]


def test_complete_report_is_clean() -> None:
    """A complete chest radiograph report gets no completeness finding."""
    assert _rules(FULL) == []


def test_no_text_is_an_error() -> None:
    """A report with no text at all is an error, and the other rules stay silent."""
    found = findings_for(make_report("", text_kind=TextKind.NONE), rule_prefix="completeness.")
    assert [f.rule for f in found] == ["completeness.no_text"]
    assert found[0].severity is Severity.ERROR


def test_pdf_report_is_info_only() -> None:
    """A PDF report without text gets an informational note, not an error."""
    found = findings_for(make_report("", text_kind=TextKind.PDF), rule_prefix="completeness.")
    assert [(f.rule, f.severity) for f in found] == [("completeness.document_only", Severity.INFO)]


def test_missing_impression() -> None:
    """Findings without any impression section is an error."""
    found = findings_for(
        make_report("INDICATION:\nCough.\nFINDINGS:\nThe lungs are clear."),
        rule_prefix="completeness.missing_impression",
    )
    assert len(found) == 1 and found[0].severity is Severity.ERROR


@pytest.mark.parametrize(
    "text",
    [
        FULL,
        # combined heading
        "INDICATION:\nCough.\nFINDINGS AND IMPRESSION:\nThe lungs are clear.",
        # conclusion counts as impression
        "FINDINGS:\nThe lungs are clear.\nCONCLUSION:\nNormal chest.",
        # free text without headings: not structured as a radiology report
        "The lungs are clear. Normal chest.",
    ],
)
def test_missing_impression_negatives(text: str) -> None:
    """Impressions under other names, and unstructured text, are not flagged."""
    assert "completeness.missing_impression" not in _rules(text)


def test_empty_impression() -> None:
    """An impression heading with nothing under it is an error with the heading as evidence."""
    report = make_report("FINDINGS:\nThe lungs are clear.\nIMPRESSION:\n")
    found = findings_for(report, rule_prefix="completeness.empty_impression")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert found[0].evidence[0].text == "IMPRESSION"
    assert "completeness.missing_impression" not in _rules("FINDINGS:\nThe lungs are clear.\nIMPRESSION:\n")


def test_required_sections_per_modality() -> None:
    """A CT report without technique is flagged (info); a radiograph without technique is not."""
    text = "INDICATION:\nPain.\nFINDINGS:\nNo hemorrhage.\nIMPRESSION:\nNormal head CT."
    found = findings_for(make_report(text, procedure="70450"), rule_prefix="completeness.required_sections")
    assert len(found) == 1 and "technique" in found[0].message and found[0].severity is Severity.INFO
    assert "completeness.required_sections" not in _rules(text, procedure="71046")


def test_required_sections_indication_from_order() -> None:
    """A reason for study sent with the order stands in for a dictated indication."""
    text = "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNormal chest."
    assert "completeness.required_sections" in _rules(text)
    assert "completeness.required_sections" not in _rules(text, reason="Cough")


def test_required_sections_unknown_heading_line() -> None:
    """A findings heading the mapping does not know ("TECHNIQUE AND FINDINGS:") still counts."""
    text = "INDICATION:\nPain.\nTECHNIQUE AND FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNormal chest."
    assert "completeness.required_sections" not in _rules(text)


MAMMO_NEG = (
    "INDICATION:\nScreening.\nFINDINGS:\nScattered fibroglandular densities. No suspicious mass.\n"
    "IMPRESSION:\nNo mammographic evidence of malignancy. Annual screening mammography is recommended.\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BI-RADS 4A: suspicious", [4]),
        ("BIRADS Classification 2 - Benign", [2]),
        ("BI-RADS category: two", [2]),
        ("ACR category 1", [1]),
        ("Assessment: Category 3 - Probably benign", [3]),
        ("BIRADS CATEGORY M/5", [5]),
        ("Right breast BI-RADS 2. Left breast BI-RADS 4.", [2, 4]),
        ("No BI-RADS here; 4 views obtained.", []),
    ],
)
def test_birads_categories(text: str, expected: list[int]) -> None:
    """BI-RADS categories are read in their common spellings, and not invented."""
    assert [c.value for c in birads_categories(text)] == expected


def test_birads_missing_on_mammography_code() -> None:
    """A screening mammogram (77067) without a BI-RADS category is an error."""
    found = findings_for(make_report(MAMMO_NEG, procedure="77067"), rule_prefix="completeness.birads_missing")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert "completeness.birads_missing" not in _rules(MAMMO_NEG + "BI-RADS 1: Negative.", procedure="77067")


def test_birads_missing_by_dictated_title() -> None:
    """An exam title naming a mammogram makes the report mammography even under another code."""
    text = "EXAM:\nDigital screening mammogram.\n" + MAMMO_NEG
    assert "completeness.birads_missing" in _rules(text)


def test_birads_not_required_outside_mammography() -> None:
    """A chest radiograph needs no BI-RADS; a mention of a prior mammogram does not make it one."""
    text = "EXAM:\nChest radiograph, correlate with prior mammogram.\n" + FULL
    assert "completeness.birads_missing" not in _rules(text)


@pytest.mark.parametrize(
    "tail",
    [
        "BI-RADS 2: Benign. Ultrasound-guided biopsy is recommended.",
        "BI-RADS 4: Suspicious. Routine annual screening mammography is recommended.",
        "BI-RADS 0: Incomplete.",
    ],
)
def test_birads_recommendation_contradictions(tail: str) -> None:
    """Benign with biopsy, suspicious with routine screening, and 0 without a workup are flagged."""
    text = "FINDINGS:\nA 9 mm mass in the left breast.\nIMPRESSION:\nMass. " + tail
    found = findings_for(make_report(text, procedure="77066"), rule_prefix="completeness.birads_recommendation")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert "BI-RADS" in found[0].message


@pytest.mark.parametrize(
    "tail",
    [
        "BI-RADS 4: Suspicious. Ultrasound-guided core needle biopsy is recommended.",
        "BI-RADS 2: Benign. Annual screening mammography is recommended. "
        "Lack of radiographic evidence of malignancy should not delay a biopsy if a clinically suspicious mass is present.",
        "BI-RADS 0: Incomplete. Recommend additional spot compression views and ultrasound.",
        "BI-RADS 2: Benign. Biopsy clip in the left breast is unchanged.",
        "Right breast BI-RADS 2. Left breast BI-RADS 4. Stereotactic biopsy of the left breast is recommended.",
    ],
)
def test_birads_recommendation_consistent(tail: str) -> None:
    """Consistent categories and boilerplate about biopsies are not flagged."""
    text = "FINDINGS:\nFindings as described.\nIMPRESSION:\nSee below. " + tail
    assert "completeness.birads_recommendation" not in _rules(text, procedure="77066")


@pytest.mark.parametrize(
    "inserted",
    ["***", "[ ]", "XXX", "__", "<...>", "[insert measurement]", "<SIDE>", "???"],
)
def test_placeholder_found(inserted: str) -> None:
    """Each kind of template placeholder is an error with the placeholder as evidence."""
    text = f"FINDINGS:\nThere is a {inserted} nodule in the right upper lobe.\nIMPRESSION:\nNodule."
    found = findings_for(make_report(text), rule_prefix="completeness.placeholder")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert found[0].evidence[0].text == inserted
    assert inserted not in found[0].message


@pytest.mark.parametrize(
    "text",
    [
        # de-identification token of the evaluation corpus
        "FINDINGS:\nNo XXXX of a pleural effusion.\nIMPRESSION:\nNormal chest x-XXXX.",
        "FINDINGS:\nNodule <5 mm.<BR>Heart normal.\nIMPRESSION:\nNodule, size < 5 mm.",
        "FINDINGS:\nT2-weighted images. Normal.\nIMPRESSION:\nNormal study *.",
    ],
)
def test_placeholder_negatives(text: str) -> None:
    """De-identification tokens, comparisons, HTML breaks and footnote marks are not placeholders."""
    assert "completeness.placeholder" not in _rules(text)


def test_placeholder_ignore_tokens_param() -> None:
    """With ignore_tokens emptied (a live feed), XXXX is a placeholder."""
    from dataclasses import replace
    from types import MappingProxyType

    from tests.unit.qa.factory import pipeline

    qa = pipeline().qa
    assert qa is not None
    rid = "completeness.placeholder"
    settings = qa.rules[rid]
    params = dict(settings.params)
    params["ignore_tokens"] = []
    rules = dict(qa.rules)
    rules[rid] = replace(settings, params=MappingProxyType(params))
    live = replace(qa, rules=MappingProxyType(rules))
    report = make_report("FINDINGS:\nA XXXX nodule.\nIMPRESSION:\nNodule.")
    assert [f.rule for f in findings_for(report, qa=live, rule_prefix=rid)] == [rid]


@pytest.mark.parametrize(
    "text",
    [
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nFindings are consistent with the",
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nRight lower lobe opacity compatible with pneumonia and",
        "FINDINGS:\nThere is a small effusion and\nIMPRESSION:\nSmall effusion.",
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNo acute process. Mild degenerative change of the.",
        # one word before the cut: the whole impression is a fragment
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNegative for",
        "FINDINGS:\nPatchy opacity at the left base.\nIMPRESSION:\nFindings of",
        # a "reviewed" earlier in the last sentence is not a sign-off line
        "FINDINGS:\nNodule.\nIMPRESSION:\nOld chest film from 2019 was reviewed and the",
    ],
)
def test_truncated_dictation(text: str) -> None:
    """A section that stops on a function word is a warning naming the section."""
    found = findings_for(make_report(text), rule_prefix="completeness.truncated")
    assert len(found) == 1 and found[0].severity is Severity.WARNING


@pytest.mark.parametrize(
    "text",
    [
        FULL,
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNegative for hepatitis A",
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nThe tube is in.\nDictated by",
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNormal chest, no change",
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNo acute disease. Line as before in.",
        # a one-line report whose last section ends complete, with "reported" earlier in it
        "EXAM:, MRI brain.,FINDINGS:, Findings were reported to the team.,COURSE:, She continues to improve.",
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNormal chest.\nElectronically signed by Dr. A. Smith on",
    ],
)
def test_truncated_negatives(text: str) -> None:
    """Complete sentences, capital A, sign-off lines and punctuated loose words are not truncation."""
    assert "completeness.truncated" not in _rules(text)


# ---------------------------------------------------------------- clean corpus

_CORPUS = REPORTS
_MTS_HEADING = re.compile(r",\s*([A-Z][A-Z0-9 /&(),-]{2,60}):\s*,?")
_FEMALE = re.compile(r"\b(she|her|woman|female|girl)\b", re.IGNORECASE)
_MALE = re.compile(r"\b(he|his|him|man|male|boy)\b", re.IGNORECASE)


def _clean_reports(limit: int) -> list[str]:
    """Indiana (sectioned from its columns) and mtsamples (inline headings) report texts, read at test time."""
    texts: list[str] = []
    csv.field_size_limit(10**8)
    with open(_CORPUS / "indiana-openi" / "indiana_reports.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parts = [
                f"{head}: {row[key].strip()}"
                for key, head in (
                    ("indication", "INDICATION"),
                    ("comparison", "COMPARISON"),
                    ("findings", "FINDINGS"),
                    ("impression", "IMPRESSION"),
                )
                if (row[key] or "").strip()
            ]
            if parts:
                texts.append("\n".join(parts))
            if len(texts) >= limit:
                break
    with open(_CORPUS / "mtsamples-radiology" / "mtsamples_radiology.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            body = _MTS_HEADING.sub(lambda m: "\n" + m.group(1) + ":\n", "," + (row["transcription"] or "")).strip()
            if body:
                texts.append(re.sub(r"\.,\s*", ".\n", body))
    return texts


def _sex_of(text: str) -> str:
    """The sex the text itself implies (pronouns), else unknown: the corpus has no demographics."""
    f, m = len(_FEMALE.findall(text)), len(_MALE.findall(text))
    return "F" if f > m else "M" if m > f else "U"


@pytest.mark.corpus
def test_clean_corpus_fire_rates_stay_tiny() -> None:
    """On clean Indiana + mtsamples reports, completeness/communication/consistency rarely fire.

    Measured over the whole corpus (4099 reports): any error 1.2%, any
    warning 0.5%. The corpus holds genuine defects (critical findings with
    no documented call, reports without impression, blanks left in), so
    the bounds are small, not zero. required_sections is info and not
    counted.
    """
    texts = _clean_reports(1500)
    errors: dict[str, int] = {"completeness": 0, "communication": 0, "consistency": 0}
    warnings = dict(errors)
    for text in texts:
        found = findings_for(make_report(text, sex=_sex_of(text)))
        for category in errors:
            mine = [f for f in found if f.category == category]
            errors[category] += any(f.severity is Severity.ERROR for f in mine)
            warnings[category] += any(f.severity is Severity.WARNING for f in mine)
    n = len(texts)
    assert errors["completeness"] / n <= 0.01 and warnings["completeness"] / n <= 0.005
    assert errors["communication"] / n <= 0.015 and warnings["communication"] / n <= 0.01
    assert errors["consistency"] / n <= 0.005 and warnings["consistency"] / n <= 0.002


def test_banner_and_separator_lines_are_not_placeholders() -> None:
    """Status banners and separator lines from real feeds are decoration, not placeholders."""
    text = "********FINAL REPORT********\nFINDINGS:\nNormal chest.\n__________\nIMPRESSION:\nNo acute disease.\n*****"
    assert findings_for(make_report(text), rule_prefix="completeness.placeholder") == []
    text = "FINDINGS:\nNodule measuring *** cm.\nIMPRESSION:\nNodule."
    assert len(findings_for(make_report(text), rule_prefix="completeness.placeholder")) == 1


BREAST_MR = (
    "INDICATION:\nHigh risk screening.\nTECHNIQUE:\nAxial and sagittal images before and after gadolinium.\n"
    "FINDINGS:\nMinimal background parenchymal enhancement. No suspicious enhancing mass.\n"
    "IMPRESSION:\nNo MRI evidence of malignancy.\n"
)
BREAST_US = (
    "INDICATION:\nPalpable lump, left breast 2 o'clock.\nFINDINGS:\nAt the site of the palpable lump there is normal "
    "fibroglandular tissue. No cyst or solid mass.\nIMPRESSION:\nNo sonographic abnormality at the palpable site.\n"
)


@pytest.mark.parametrize(
    ("text", "kw", "exam"),
    [
        (BREAST_MR, {"procedure": "77049"}, "Breast MRI"),
        (BREAST_MR, {"procedure": "77046"}, "Breast MRI"),
        (BREAST_US, {"procedure": "76641"}, "Breast ultrasound"),
        (BREAST_US, {"procedure": "76642"}, "Breast ultrasound"),
        # no code: modality and body region from the order
        (BREAST_MR, {"procedure": "", "modality": "MR", "body_region": "breast"}, "Breast MRI"),
        # no code: the ordered procedure's name, or the title dictated at the top
        (BREAST_MR, {"procedure": "", "procedure_text": "MRI Breast - 1"}, "Breast MRI"),
        ("EXAM:\nBilateral breast MRI with and without contrast.\n" + BREAST_MR, {"procedure": ""}, "Breast MRI"),
        ("EXAM:\nUltrasound of the left breast.\n" + BREAST_US, {"procedure": ""}, "Breast ultrasound"),
    ],
)
def test_birads_missing_on_breast_mri_and_ultrasound(text: str, kw: dict[str, object], exam: str) -> None:
    """Breast MRI and breast ultrasound reports need a BI-RADS assessment too (ACR BI-RADS atlas); the message names the exam."""
    found = findings_for(make_report(text, **kw), rule_prefix="completeness.birads_missing")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert found[0].message.startswith(exam)
    assert "completeness.birads_missing" not in _rules(text + "BI-RADS 1: Negative.\n", **kw)


@pytest.mark.parametrize(
    ("text", "kw"),
    [
        # a guided breast procedure reports the procedure
        ("EXAM:\nUltrasound-guided core biopsy of the left breast.\n" + BREAST_US, {"procedure": ""}),
        (BREAST_US, {"procedure": "76642", "procedure_text": "US guided breast biopsy"}),
        # MRI or ultrasound of another region
        (FULL, {"procedure": "76700"}),
        (BREAST_MR, {"procedure": "", "modality": "MR", "body_region": "chest"}),
        # a breast mentioned in passing
        ("EXAM:\nCT chest, correlate with prior breast ultrasound.\n" + FULL, {"procedure": ""}),
    ],
)
def test_birads_not_required_for_breast_procedures_or_other_regions(text: str, kw: dict[str, object]) -> None:
    """Guided breast procedures, other regions and passing mentions need no BI-RADS."""
    assert "completeness.birads_missing" not in _rules(text, **kw)


def test_birads_breast_modalities_can_be_turned_off() -> None:
    """breast_modalities: [] keeps the check to mammography (policy knob)."""
    from dataclasses import replace
    from types import MappingProxyType

    from listener.qa.engine import RuleSettings
    from tests.unit.qa.factory import pipeline

    base = pipeline().qa
    assert base is not None
    current = base.rules["completeness.birads_missing"]
    params = dict(current.params, breast_modalities=[])
    rules = dict(
        base.rules, **{"completeness.birads_missing": RuleSettings(True, current.severity, MappingProxyType(params))}
    )
    qa = replace(base, rules=MappingProxyType(rules))
    report = make_report(BREAST_MR, procedure="77049")
    assert findings_for(report, qa=qa, rule_prefix="completeness.birads_missing") == []
    assert findings_for(make_report(MAMMO_NEG, procedure="77067"), qa=qa, rule_prefix="completeness.birads_missing")


@pytest.mark.parametrize(
    "text",
    [
        # run-on export: the last section is a clinic-style heading, not findings or impression
        "EXAM:, MRI brain.,FINDINGS:, Findings were reported to the team.,COURSE:, She continues to",
        "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNo acute process.\nPLAN:\nFollow-up chest radiograph in",
    ],
)
def test_truncated_last_section_of_any_kind(text: str) -> None:
    """A report that stops mid-sentence is flagged whatever its last heading is."""
    found = findings_for(make_report(text), rule_prefix="completeness.truncated")
    assert len(found) == 1 and found[0].evidence[0].text.endswith(("continues to", "radiograph in"))


def test_missing_impression_when_only_framing_sections_remain() -> None:
    """An indication (or a short technique line) and nothing else: no result is stated at all."""
    assert "completeness.missing_impression" in _rules("INDICATION:\nShortness of breath.")
    assert "completeness.missing_impression" in _rules("INDICATION:\nCough.\nTECHNIQUE:\nPA and lateral views.")


@pytest.mark.parametrize(
    "text",
    [
        "INDICATION:\nCough.\nIMPRESSION:\nNo acute process.",
        # a long technique section is a procedure note the sectioner did not split: left alone
        "PROCEDURE:\n" + "The needle was advanced under fluoroscopic guidance and the joint was injected. " * 6,
    ],
)
def test_missing_impression_framing_negatives(text: str) -> None:
    """An impression present, or a long framing section that holds the whole note, is not flagged."""
    assert "completeness.missing_impression" not in _rules(text)


def test_empty_impression_after_an_interpretation() -> None:
    """An empty IMPRESSION heading after an INTERPRETATION with text is a conclusion never dictated."""
    text = "INDICATION:\nArrhythmia.\nINTERPRETATION:\nThe cardiac chambers are normal in size.\nIMPRESSION:\n"
    found = findings_for(make_report(text), rule_prefix="completeness.empty_impression")
    assert len(found) == 1 and found[0].evidence[0].text == "IMPRESSION"
    done = text + "Normal echocardiogram."
    assert "completeness.empty_impression" not in _rules(done)
    # an empty heading that is not a conclusion heading ("RECOMMENDATION:") is not flagged
    other = "INDICATION:\nArrhythmia.\nIMPRESSION:\nNormal echocardiogram.\nRECOMMENDATION:\n"
    assert "completeness.empty_impression" not in _rules(other)
