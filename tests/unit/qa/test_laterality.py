"""Laterality rules: order side vs report, impression side vs findings side."""

from __future__ import annotations

import pytest

from listener.model import Severity
from tests.unit.qa.factory import findings_for, make_report

KNEE = "73560"  # knee radiograph, laterality required


def _rules(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.rule for f in findings_for(report, rule_prefix="laterality.")]


def test_left_knee_order_with_right_knee_report_is_an_error() -> None:
    """An LT order whose report only describes the right knee is the wrong side."""
    report = make_report(
        "FINDINGS:\nThere is a small joint effusion of the right knee. No fracture.\n"
        "IMPRESSION:\nSmall right knee effusion.",
        procedure=KNEE,
        modifiers=("LT",),
    )
    found = findings_for(report, rule_prefix="laterality.order_vs_report")
    assert len(found) == 1
    assert found[0].severity is Severity.ERROR
    assert "left" in found[0].message and "right" in found[0].message
    assert all(e.text.lower().startswith("right") for e in found[0].evidence)
    assert all(report.text[e.start : e.end] == e.text for e in found[0].evidence)


def test_order_side_from_decoder_field_is_used() -> None:
    """order_laterality set by the decoder drives the check as RT/LT would."""
    report = make_report(
        "FINDINGS:\nThe left knee shows no fracture.\nIMPRESSION:\nNormal left knee.",
        procedure=KNEE,
        order_laterality="right",
    )
    assert "laterality.order_vs_report" in _rules(report)


def test_matching_side_and_bilateral_orders_do_not_fire() -> None:
    """Same side, a bilateral order, or a report that also names the ordered side: no finding."""
    same = make_report(
        "FINDINGS:\nSmall joint effusion of the left knee.\nIMPRESSION:\nLeft knee effusion.",
        procedure=KNEE,
        modifiers=("LT",),
    )
    bilateral_order = make_report(
        "FINDINGS:\nThe right knee is normal.\nIMPRESSION:\nNormal right knee.", procedure=KNEE, modifiers=("50",)
    )
    both = make_report(
        "FINDINGS:\nLeft knee: no fracture. Right knee: mild degenerative change for comparison.\n"
        "IMPRESSION:\nNo acute left knee abnormality.",
        procedure=KNEE,
        modifiers=("LT",),
    )
    for report in (same, bilateral_order, both):
        assert "laterality.order_vs_report" not in _rules(report)


def test_contralateral_comparison_and_non_paired_anatomy_do_not_fire() -> None:
    """'Contralateral right knee' and 'right ventricle' are not a side error for a left order."""
    contra = make_report(
        "FINDINGS:\nCompared with the contralateral right knee, no asymmetry.\nIMPRESSION:\nNo acute abnormality.",
        procedure=KNEE,
        modifiers=("LT",),
    )
    chest = make_report(
        "FINDINGS:\nThe right ventricle is enlarged. Right PICC tip in the SVC.\nIMPRESSION:\nNo acute disease.",
        modifiers=("LT",),
    )
    assert "laterality.order_vs_report" not in _rules(contra)
    assert "laterality.order_vs_report" not in _rules(chest)


def test_impression_opposite_to_order_when_findings_match_order() -> None:
    """Findings on the ordered side, impression on the other: a warning on the impression."""
    report = make_report(
        "FINDINGS:\nThere is a nondisplaced fracture of the left distal radius.\n"
        "IMPRESSION:\nNondisplaced fracture of the right distal radius.",
        procedure="73110",
        modifiers=("LT",),
    )
    found = findings_for(report, rule_prefix="laterality.impression_vs_order")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert found[0].evidence[0].section == "impression"


def test_impression_side_swapped_against_findings_is_an_error() -> None:
    """'Right pneumothorax' in findings but 'left pneumothorax' in impression."""
    report = make_report(
        "FINDINGS:\nThere is a small right apical pneumothorax. No pleural effusion.\n"
        "IMPRESSION:\nSmall left apical pneumothorax."
    )
    found = findings_for(report, rule_prefix="laterality.impression_vs_findings")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    sections = [e.section for e in found[0].evidence]
    assert sections == ["impression", "findings"]
    assert "pneumothorax" in found[0].message
    assert "apical" not in found[0].message  # vocabulary words only, never free text


@pytest.mark.parametrize(
    "text",
    [
        # same side
        "FINDINGS:\nSmall right pneumothorax.\nIMPRESSION:\nSmall right pneumothorax.",
        # both sides in the findings
        "FINDINGS:\nSmall right pneumothorax. Tiny left pneumothorax.\nIMPRESSION:\nSmall left pneumothorax.",
        # the impression sentence names both sides
        "FINDINGS:\nRight pleural effusion.\nIMPRESSION:\nRight pleural effusion, no left effusion.",
        # bilateral exam described on one side only
        "FINDINGS:\nBilateral pleural effusions.\nIMPRESSION:\nLeft pleural effusion larger.",
        # different concepts on different sides
        "FINDINGS:\nRight lower lobe consolidation. Left pleural effusion.\nIMPRESSION:\nRight lower lobe pneumonia. Left effusion.",
        # non-paired anatomy
        "FINDINGS:\nThe left ventricle is enlarged.\nIMPRESSION:\nRight heart enlargement.",
    ],
)
def test_impression_vs_findings_negatives(text: str) -> None:
    """Legitimate side patterns produce no laterality finding."""
    assert not [r for r in _rules(make_report(text)) if r.startswith("laterality.impression")]


def test_impression_anatomy_side_unsupported_warns() -> None:
    """Impression 'left lower lobe' while the findings only describe the right lower lobe."""
    report = make_report(
        "FINDINGS:\nConsolidation has developed in the right lower lobe. The left lung is clear.\n"
        "IMPRESSION:\nLeft lower lobe airspace disease consistent with pneumonia."
    )
    found = findings_for(report, rule_prefix="laterality.impression_side_vs_findings_anatomy")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert "lung lobe" in found[0].message


def test_impression_anatomy_negated_sentences_do_not_count() -> None:
    """'Left lung clear' in findings and 'no lesion in the right lung' in impression are not sides of a finding."""
    report = make_report(
        "FINDINGS:\nThe left lung is clear. Small nodule in the left upper lobe.\n"
        "IMPRESSION:\nNo lesion in the right lung. Left upper lobe nodule."
    )
    assert _rules(report) == []
