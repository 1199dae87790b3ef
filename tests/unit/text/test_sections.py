"""Section headings: vocabulary headings, the "HEADING,:" variant, and stand-alone unknown headings ending an impression."""

from __future__ import annotations

from listener.assemble import build_pipeline
from listener.config import load_config
from listener.model import Section, SectionKind
from listener.text.sections import HeadingRules, sectionize


def kinds(sections: tuple[Section, ...]) -> list[tuple[str, str, str]]:
    return [(s.kind.value, s.heading, s.text) for s in sections]


def test_inline_heading_with_a_stray_comma_before_the_colon(rules: HeadingRules) -> None:
    """MTSamples "...,IMPRESSION,: NORMAL MRI" is an impression heading (mtsamples:1609)."""
    text = "FINDINGS:,No fracture. No effusion.,IMPRESSION,: NORMAL MRI OF THE RIGHT ANKLE."
    assert kinds(sectionize(text, rules)) == [
        ("findings", "FINDINGS", "No fracture. No effusion."),
        ("impression", "IMPRESSION", "NORMAL MRI OF THE RIGHT ANKLE."),
    ]


def test_line_heading_with_a_stray_comma_before_the_colon(rules: HeadingRules) -> None:
    """'Impression,:' at a line start is a heading too."""
    text = "Findings: No effusion.\nImpression,: Normal."
    assert [s.kind for s in sectionize(text, rules)] == [SectionKind.FINDINGS, SectionKind.IMPRESSION]


def test_comma_after_a_heading_word_in_prose_is_no_heading(rules: HeadingRules) -> None:
    """'In summary, ...' inside a sentence makes no section: it has no colon."""
    text = "FINDINGS: The liver is normal, in summary, the study is normal.\nIMPRESSION: Normal."
    assert [s.heading for s in sectionize(text, rules)] == ["FINDINGS", "IMPRESSION"]


def test_unknown_stand_alone_heading_ends_the_impression(rules: HeadingRules) -> None:
    """',COURSE: ,' after the impression starts an other section (mtsamples:1585)."""
    text = "IMPRESSION:, C-spine lesion.,COURSE: ,MRI C-spine revealed a disk herniation."
    assert kinds(sectionize(text, rules)) == [
        ("impression", "IMPRESSION", "C-spine lesion."),
        ("other", "COURSE", "MRI C-spine revealed a disk herniation."),
    ]


def test_unknown_heading_with_a_comma_ends_the_impression(rules: HeadingRules) -> None:
    """A procedure heading with a comma in it ends the impression (mtsamples:1663)."""
    text = (
        "IMPRESSION: , Solitary left renal mass.,CT-GUIDED NEEDLE BIOPSY, LEFT KIDNEY MASS: , "
        "Three core biopsies were obtained.,IMPRESSION: , Three core biopsies."
    )
    assert kinds(sectionize(text, rules)) == [
        ("impression", "IMPRESSION", "Solitary left renal mass."),
        ("other", "CT-GUIDED NEEDLE BIOPSY, LEFT KIDNEY MASS", "Three core biopsies were obtained."),
        ("impression", "IMPRESSION", "Three core biopsies."),
    ]


def test_unknown_heading_alone_on_its_line_ends_the_impression(rules: HeadingRules) -> None:
    """'PLAN:' alone on a line after the impression is its own section."""
    text = "IMPRESSION:\nNo acute fracture.\nPLAN:\nFollow up in clinic."
    assert kinds(sectionize(text, rules))[-1] == ("other", "PLAN", "Follow up in clinic.")


def test_unknown_subheading_followed_by_text_stays_in_the_impression(rules: HeadingRules) -> None:
    """'LAD: Dense plaque' (text after the colon on the same line) is a subheading, not a section."""
    text = "IMPRESSION: Coronary analysis:,LM: Normal.,LAD: Dense calcific plaque."
    assert kinds(sectionize(text, rules)) == [
        ("impression", "IMPRESSION", "Coronary analysis:,LM: Normal.,LAD: Dense calcific plaque."),
    ]


def test_unknown_heading_ending_in_an_impression_word_keeps_the_impression(rules: HeadingRules) -> None:
    """'ECHO INTERPRETATION:' after the impression heading is more of the impression."""
    text = "SUMMARY:,1. Normal study.,ECHO INTERPRETATION:,Normal left ventricular function."
    assert [s.kind for s in sectionize(text, rules)] == [SectionKind.IMPRESSION]


def test_unknown_headings_do_not_split_findings(rules: HeadingRules) -> None:
    """Organ and vessel subheadings inside findings stay in the findings."""
    text = "FINDINGS:,PERICARDIUM: ,Normal.,LEFT MAIN CORONARY ARTERY:,Patent.,IMPRESSION: Normal."
    assert [s.kind for s in sectionize(text, rules)] == [SectionKind.FINDINGS, SectionKind.IMPRESSION]


def test_mixed_case_or_lower_case_label_does_not_end_the_impression(rules: HeadingRules) -> None:
    """'Plan:' in mixed case and a label inside a sentence are not headings."""
    text = "IMPRESSION: Small effusion. Note: Follow up.,Plan:,Repeat film."
    assert [s.kind for s in sectionize(text, rules)] == [SectionKind.IMPRESSION]


def test_shipped_mapping_finds_the_mtsamples_headings() -> None:
    """The repository's default mapping (what the decoders use) finds the headings of the three QA reports."""
    rules = build_pipeline(load_config(None)).mappings.default.heading_rules
    text = (
        "EXAM:,MRI OF THE RIGHT ANKLE,FINDINGS:,No fracture.,IMPRESSION,: NORMAL MRI.,"
        "CT-GUIDED NEEDLE BIOPSY, LEFT KIDNEY MASS: , Core biopsies obtained."
    )
    found = [(s.kind, s.heading) for s in sectionize(text, rules)]
    assert found == [
        (SectionKind.TECHNIQUE, "EXAM"),
        (SectionKind.FINDINGS, "FINDINGS"),
        (SectionKind.IMPRESSION, "IMPRESSION"),
        (SectionKind.OTHER, "CT-GUIDED NEEDLE BIOPSY, LEFT KIDNEY MASS"),
    ]


def test_interpretation_before_an_impression_is_the_findings(rules: HeadingRules) -> None:
    """',INTERPRETATION: , ...,IMPRESSION:, ...' with no findings heading: the interpretation describes the images."""
    text = "EXAM: , Chest.,INTERPRETATION: , There is a left pneumothorax.,IMPRESSION:, Left pneumothorax."
    assert kinds(sectionize(text, rules)) == [
        ("technique", "EXAM", "Chest."),
        ("findings", "INTERPRETATION", "There is a left pneumothorax."),
        ("impression", "IMPRESSION", "Left pneumothorax."),
    ]


def test_interpretation_stays_the_impression_beside_findings_or_an_empty_impression(rules: HeadingRules) -> None:
    """With a findings section, or with only an empty impression after it, an interpretation is the conclusion."""
    with_findings = "FINDINGS: A left pneumothorax.\nINTERPRETATION: Left pneumothorax.\nIMPRESSION: See above."
    assert [s.kind for s in sectionize(with_findings, rules)] == [SectionKind.FINDINGS] + [SectionKind.IMPRESSION] * 2
    empty_after = "EXAM: , Chest.,INTERPRETATION: , There is a left pneumothorax.,IMPRESSION:"
    assert [s.kind for s in sectionize(empty_after, rules)][1:] == [SectionKind.IMPRESSION, SectionKind.IMPRESSION]


def test_shipped_mapping_reads_technique_and_findings_as_findings() -> None:
    """'TECHNIQUE AND FINDINGS:' (MTSamples ultrasound and CTA reports) heads the findings, not the history."""
    rules = build_pipeline(load_config(None)).mappings.default.heading_rules
    text = "HISTORY: , Swelling.,TECHNIQUE AND FINDINGS:,  Ultrasound of the left neck.,IMPRESSION:, Phlegmon."
    found = [(s.kind, s.heading) for s in sectionize(text, rules)]
    assert found == [
        (SectionKind.INDICATION, "HISTORY"),
        (SectionKind.FINDINGS, "TECHNIQUE AND FINDINGS"),
        (SectionKind.IMPRESSION, "IMPRESSION"),
    ]
