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
    """Findings on the ordered side, impression on the other: an error on the impression."""
    report = make_report(
        "FINDINGS:\nThere is a nondisplaced fracture of the left distal radius.\n"
        "IMPRESSION:\nNondisplaced fracture of the right distal radius.",
        procedure="73110",
        modifiers=("LT",),
    )
    found = findings_for(report, rule_prefix="laterality.impression_vs_order")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert found[0].evidence[0].section == "impression"


def test_compartment_is_not_a_comparison() -> None:
    """'medial compartment' does not make the impression sentence about a comparison (sample knee report)."""
    report = make_report(
        "FINDINGS:\nViews of the left knee. Medial joint space narrowing.\n"
        "IMPRESSION:\nModerate osteoarthritis of the right knee, predominantly medial compartment.",
        procedure="73562",
        modifiers=("LT",),
    )
    assert [f.rule for f in findings_for(report, rule_prefix="laterality.impression_vs_order")] == [
        "laterality.impression_vs_order"
    ]


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
        "FINDINGS:\nThe right lower lobe is collapsed. The left lung is clear.\n"
        "IMPRESSION:\nLeft lower lobe findings as described."
    )
    found = findings_for(report, rule_prefix="laterality.impression_side_vs_findings_anatomy")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert "lung lobe" in found[0].message


def test_impression_anatomy_side_left_to_the_located_rule() -> None:
    """A located finding whose side swaps is an error of the located rule; the anatomy warning stays silent."""
    report = make_report(
        "FINDINGS:\nConsolidation has developed in the right lower lobe. The left lung is clear.\n"
        "IMPRESSION:\nLeft lower lobe airspace disease consistent with pneumonia."
    )
    assert _rules(report) == ["laterality.located_finding_side_mismatch"]


def test_impression_anatomy_negated_sentences_do_not_count() -> None:
    """'Left lung clear' in findings and 'no lesion in the right lung' in impression are not sides of a finding."""
    report = make_report(
        "FINDINGS:\nThe left lung is clear. Small nodule in the left upper lobe.\n"
        "IMPRESSION:\nNo lesion in the right lung. Left upper lobe nodule."
    )
    assert _rules(report) == []


@pytest.mark.parametrize(
    "text",
    [
        # a lobe that does not exist on that side, and the findings only on the right
        "FINDINGS:\nRight middle lobe opacity is present. No pneumothorax.\n"
        "IMPRESSION:\nLeft middle lobe opacity which may represent atelectasis.",
        # rib, with a chest part named on the same side elsewhere in the findings
        "FINDINGS:\nThe lungs are clear. There is a lucency through the posterior right 12th rib.\n"
        "IMPRESSION:\nLucency through the left 12th posterior rib, concerning for fracture.",
        # hemidiaphragm; the impression also names the right side for another part
        "FINDINGS:\nElevated right hemidiaphragm. Atelectasis in the right lung base.\n"
        "IMPRESSION:\n1. Atelectasis in the right lung base. 2. Elevated left hemidiaphragm.",
        # lung base vs base
        "FINDINGS:\nBandlike opacity in the left lung base. No effusion.\n"
        "IMPRESSION:\nRight base bandlike opacity, likely atelectasis.",
        # a past event compared with the findings' past event
        "FINDINGS:\nStable postoperative changes of left thoracotomy and left upper lobectomy. The lungs are clear.\n"
        "IMPRESSION:\nPostoperative changes of right upper lobectomy. No acute findings.",
        # side word with no known anatomy: compared by the next word
        "FINDINGS:\nThere is mild blunting of the right costophrenic XXXX, without definite pleural effusion.\n"
        "IMPRESSION:\nMildly blunted left costophrenic XXXX.",
        # a device's side
        "FINDINGS:\nRight-sided chest tube tip projects outside the thoracic cavity. No pneumothorax.\n"
        "IMPRESSION:\nLeft-sided chest tube tip projects outside the thoracic cavity.",
    ],
)
def test_impression_side_swapped_for_anatomy_warns(text: str) -> None:
    """Natural side swaps in the impression: lobes, ribs, hemidiaphragm, surgery, unknown parts, devices."""
    found = findings_for(make_report(text), rule_prefix="laterality.impression_side_vs_findings_anatomy")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert [e.section for e in found[0].evidence] == ["impression", "findings"]
    assert "XXXX" not in found[0].message and "tube" not in found[0].message  # no free text quoted


@pytest.mark.parametrize(
    "text",
    [
        # history of the other side: the findings speak of no past event
        "FINDINGS:\nThe right breast shows scattered fibroglandular density. No suspicious mass.\n"
        "IMPRESSION:\nStatus post left mastectomy. Benign right breast.",
        # the impression sets the sides against each other
        "FINDINGS:\nRight lower lobe consolidation.\nIMPRESSION:\nRight lower lobe pneumonia. Left lung clear.",
        "FINDINGS:\nAtelectasis in the right lung base.\n"
        "IMPRESSION:\nRight basilar atelectasis, larger than the left base.",
        # the lingula and the retrocardiac region are left chest parts without a side word
        "FINDINGS:\nPatchy infiltrate in the right lower lobe. Opacity in the retrocardiac region.\n"
        "IMPRESSION:\nRight lower lobe infiltrate and probable left basilar infiltrate.",
        "FINDINGS:\nMasslike density over the lingula. Opacity in the right lung zone.\n"
        "IMPRESSION:\nLeft upper lobe nodule and right opacity.",
        # contralateral statement
        "FINDINGS:\nSmall right pleural effusion.\n"
        "IMPRESSION:\nSmall right pleural effusion. The contralateral left hemithorax is clear.",
        # bilateral findings
        "FINDINGS:\nBibasilar atelectasis.\nIMPRESSION:\nLeft basilar atelectasis.",
        # findings name both sides
        "FINDINGS:\nRight upper lobe scarring. Left lower lobe atelectasis.\nIMPRESSION:\nLeft lower lobe atelectasis.",
    ],
)
def test_impression_side_vs_findings_anatomy_negatives(text: str) -> None:
    """Purposeful side statements, sides implied by anatomy, and bilateral findings do not fire."""
    assert findings_for(make_report(text), rule_prefix="laterality.impression_side") == []


def test_concept_rule_accepts_lung_apex_as_apex() -> None:
    """'Left lung apex' in the findings supports 'left apex' in the impression (same chest part)."""
    report = make_report(
        "FINDINGS:\nIrregular opacities in the left lung apex. Streaky opacities in the right upper lobe, scarring.\n"
        "IMPRESSION:\nProbably scarring in the left apex."
    )
    assert findings_for(report, rule_prefix="laterality.impression_vs_findings") == []


# --- laterality.located_finding_side_mismatch

LOCATED = "laterality.located_finding_side_mismatch"


@pytest.mark.parametrize(
    ("text", "procedure"),
    [
        # lobe: the findings also name the left side (an effusion), so the anatomy rule cannot decide
        (
            "FINDINGS:\nConsolidation in the right lower lobe. Small left pleural effusion.\n"
            "IMPRESSION:\n1. Left lower lobe pneumonia.\n2. Small left pleural effusion.",
            "71046",
        ),
        # volume loss in a lobe
        (
            "FINDINGS:\nVolume loss in the right upper lobe with elevation of the right hilum. "
            "Small left pleural effusion.\nIMPRESSION:\n1. Left upper lobe volume loss.\n2. Small left pleural effusion.",
            "71046",
        ),
        # apex vs upper lung: places compare within the chest
        (
            "FINDINGS:\nSmall pneumothorax at the right apex. Left pleural effusion.\n"
            "IMPRESSION:\nSmall left apical pneumothorax. Left pleural effusion.\nDiscussed with Dr. Rivera by "
            "telephone at 02:14.",
            "71046",
        ),
        # a nodule in a lobe
        (
            "FINDINGS:\nA 6 mm nodule in the right upper lobe. Left lung clear.\nIMPRESSION:\n6 mm left upper lobe nodule.",
            "71250",
        ),
        # kidney
        (
            "FINDINGS:\nThere is moderate hydronephrosis of the left kidney. The right kidney is normal.\n"
            "IMPRESSION:\nModerate hydronephrosis of the right kidney.",
            "74176",
        ),
    ],
)
def test_located_finding_on_the_other_side_in_the_impression(text: str, procedure: str) -> None:
    """A finding placed in a lobe, apex or kidney on one side in the findings and the other in the impression."""
    report = make_report(text, procedure=procedure)
    found = findings_for(report, rule_prefix=LOCATED)
    assert len(found) == 1
    assert found[0].severity is Severity.ERROR
    assert [e.section for e in found[0].evidence] == ["impression", "findings"]
    assert all(report.text[e.start : e.end] == e.text for e in found[0].evidence)
    # The message names canonical places and sides, never the report's words.
    assert "left" in found[0].message and "right" in found[0].message


@pytest.mark.parametrize(
    "text",
    [
        # the same side in both
        "FINDINGS:\nConsolidation in the right lower lobe. Small left pleural effusion.\n"
        "IMPRESSION:\n1. Right lower lobe pneumonia.\n2. Small left pleural effusion.",
        # present on both sides in the findings
        "FINDINGS:\nPatchy opacity in the right lower lobe. Patchy opacity in the left lower lobe.\n"
        "IMPRESSION:\nLeft lower lobe pneumonia.",
        # bilateral in the findings
        "FINDINGS:\nBibasilar opacities.\nIMPRESSION:\nLeft lower lobe pneumonia.",
        # the impression names both sides too
        "FINDINGS:\nConsolidation in the right lower lobe.\nIMPRESSION:\nRight lower lobe pneumonia. "
        "Left lower lobe atelectasis is also present.",
        # another place on the other side: upper vs lower lobe
        "FINDINGS:\nConsolidation in the right lower lobe. Left upper lobe is clear.\n"
        "IMPRESSION:\nRight lower lobe pneumonia. Left upper lobe scarring.",
        # the findings put the finding on the impression's side at another place of the region
        "FINDINGS:\nLeft hilar enlargement with opacification of the left upper lobe suggestive of hilar mass. "
        "Questionable small right midlung nodule.\nIMPRESSION:\nSuspected left hilar mass.",
        # a denied side is not a place of the finding
        "FINDINGS:\nConsolidation in the right lower lobe. No left lower lobe consolidation.\n"
        "IMPRESSION:\nRight lower lobe pneumonia.",
    ],
)
def test_located_finding_near_misses(text: str) -> None:
    """Same side, both sides, bilateral, another place, or a denial: no located side mismatch."""
    assert LOCATED not in _rules(make_report(text))


def test_located_finding_one_finding_per_statement() -> None:
    """An impression sentence naming its side twice ("left pleural effusion blunting the left costophrenic
    angle") is one swapped statement, reported once; an adrenal swap is found beside a correct renal side."""
    report = make_report(
        "FINDINGS:\nBlunting of the right costophrenic angle. Left lung clear. Mild atelectasis in the left upper lobe.\n"
        "IMPRESSION:\nSmall left pleural effusion blunting the left costophrenic angle. Left upper lobe atelectasis."
    )
    assert _rules(report) == [LOCATED]
    adrenal = make_report(
        "FINDINGS:\nA 2.1 cm mass in the right adrenal gland. Left adrenal gland normal. Small left renal cyst.\n"
        "IMPRESSION:\n2.1 cm left adrenal mass, indeterminate.",
        procedure="74176",
    )
    assert LOCATED in _rules(adrenal)


def test_located_finding_against_the_order_side() -> None:
    """An LT wrist order, a report naming the left wrist, and a fracture placed in the right radius."""
    text = (
        "FINDINGS:\nLeft wrist: soft tissue swelling. Nondisplaced fracture of the right distal radius.\n"
        "IMPRESSION:\nLeft wrist soft tissue swelling. Nondisplaced fracture of the right distal radius."
    )
    found = findings_for(make_report(text, procedure="73110", modifiers=("LT",)), rule_prefix=LOCATED)
    assert len(found) == 1 and "order is for the left side" in found[0].message
    same = text.replace("right distal", "left distal")
    assert not findings_for(make_report(same, procedure="73110", modifiers=("LT",)), rule_prefix=LOCATED)
    # An old fracture of the other side is not about this exam.
    old = text.replace(
        "Nondisplaced fracture of the right distal radius.\nIMPRESSION",
        "Old healed fracture of the right distal radius.\nIMPRESSION",
    ).replace(" Nondisplaced fracture of the right distal radius.", "")
    assert not findings_for(make_report(old, procedure="73110", modifiers=("LT",)), rule_prefix=LOCATED)


def test_located_places_are_configurable() -> None:
    """The ``places`` parameter decides what located anatomy is: without the chest, a lobe swap is not compared."""
    from dataclasses import replace
    from types import MappingProxyType

    from listener.qa.laterality import DEFAULT_PLACES
    from tests.unit.qa.factory import pipeline

    text = (
        "FINDINGS:\nConsolidation in the right lower lobe. Small left pleural effusion.\n"
        "IMPRESSION:\n1. Left lower lobe pneumonia.\n2. Small left pleural effusion."
    )
    base = pipeline().qa
    assert base is not None
    settings = base.rules[LOCATED]
    places = {k: v for k, v in DEFAULT_PLACES.items() if k != "chest"}
    qa = replace(
        base,
        rules=MappingProxyType({**base.rules, LOCATED: replace(settings, params=MappingProxyType({"places": places}))}),
    )
    assert LOCATED in _rules(make_report(text))
    assert not findings_for(make_report(text), qa=qa, rule_prefix=LOCATED)


def test_located_places_load_from_qa_yaml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``places`` set in policies/qa.yaml (nested mappings of regex lists) loads and decides the located anatomy."""
    import shutil

    from listener.assemble import load_qa_config
    from tests.conftest import REPO
    from tests.unit.qa.factory import RECEIVED

    shutil.copytree(REPO / "policies", tmp_path / "policies")
    qa_yaml = tmp_path / "policies" / "qa.yaml"
    qa_yaml.write_text(
        qa_yaml.read_text()
        + "  laterality.located_finding_side_mismatch:\n"
        + "    params:\n"
        + "      places:\n"
        + "        kidney: {any: ['kidneys?', 'renal']}\n"
    )
    config = load_qa_config(tmp_path / "policies", procedures=None)
    from listener.qa.engine import QaContext

    kidney = make_report(
        "FINDINGS:\nThere is moderate hydronephrosis of the left kidney. The right kidney is normal.\n"
        "IMPRESSION:\nModerate hydronephrosis of the right kidney.",
        procedure="74176",
    )
    chest = make_report(
        "FINDINGS:\nConsolidation in the right lower lobe. Small left pleural effusion.\n"
        "IMPRESSION:\n1. Left lower lobe pneumonia.\n2. Small left pleural effusion."
    )
    assert LOCATED in {f.rule for f in findings_for(kidney, qa=config, context=QaContext(now=RECEIVED))}
    # The chest is no longer located anatomy under this policy.
    assert LOCATED not in {f.rule for f in findings_for(chest, qa=config, context=QaContext(now=RECEIVED))}
