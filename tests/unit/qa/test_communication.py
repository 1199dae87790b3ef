"""Communication rules: critical results documented as told (who, when, how); impression clarity."""

from __future__ import annotations

import pytest

from listener.model import Severity
from tests.unit.qa.factory import findings_for, make_report

PTX = "FINDINGS:\nThere is a large right pneumothorax.\nIMPRESSION:\nLarge right pneumothorax."


def _rules(text: str, **kw: object) -> list[str]:
    return [f.rule for f in findings_for(make_report(text, **kw), rule_prefix="communication.")]


def test_critical_without_communication_is_error() -> None:
    """An affirmed pneumothorax with no communication statement is an error naming the concept."""
    found = findings_for(make_report(PTX), rule_prefix="communication.critical_not_communicated")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert "pneumothorax" in found[0].message
    assert found[0].evidence[0].text.lower() == "pneumothorax"
    assert "large right" not in found[0].message.lower()


@pytest.mark.parametrize(
    "statement",
    [
        "Critical result discussed with Dr. Rivera by telephone at 02:14.",
        "COMMUNICATION:\nDr. Rivera was notified by phone at 2:14 am with read-back.",
        "These findings were called to the emergency department physician at 0214 hours.",
        "Findings discussed with Dr. Lee in person. Read back at 14:10.",
        "Critical result notification documented through Primordial.",
    ],
)
def test_complete_communication_is_clean(statement: str) -> None:
    """A communication statement with who, when and how (or a notification system) silences every rule."""
    assert _rules(PTX + "\n" + statement) == []


@pytest.mark.parametrize(
    ("statement", "missing"),
    [
        ("Findings discussed with Dr. Rivera.", "when, how"),
        ("Critical result called at 02:14.", "who"),
        ("Dr. Rivera was informed at 02:14.", "how"),
    ],
)
def test_incomplete_communication(statement: str, missing: str) -> None:
    """A statement lacking who, when or how is a warning that names the missing parts."""
    found = findings_for(make_report(PTX + "\n" + statement), rule_prefix="communication.")
    assert [f.rule for f in found] == ["communication.incomplete_communication"]
    assert found[0].severity is Severity.WARNING
    assert found[0].message.endswith(f"say {missing}.")


def test_incomplete_communication_needs_a_critical_result() -> None:
    """A partial statement in a report with no critical result is not a defect."""
    text = "FINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNormal chest. Discussed with the patient."
    assert _rules(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "FINDINGS:\nNo pneumothorax.\nIMPRESSION:\nNo pneumothorax.",
        # known and stable
        "FINDINGS:\nSmall right apical pneumothorax, unchanged.\nIMPRESSION:\nStable small right pneumothorax.",
        "FINDINGS:\nDecreasing right pneumothorax.\nIMPRESSION:\nDecreasing right pneumothorax.",
        # the question, not the answer
        "INDICATION:\nRule out pneumothorax.\nFINDINGS:\nThe lungs are clear.\nIMPRESSION:\nNormal chest.",
        # history
        "FINDINGS:\nHistory of pneumothorax. Lungs clear.\nIMPRESSION:\nNo acute process.",
        # a cross-reference is not a communication, but here the finding is negated anyway
        "FINDINGS:\nNo free air.\nIMPRESSION:\nAs discussed above, no free air.",
    ],
)
def test_critical_negatives(text: str) -> None:
    """Negated, known, indication-only and historical critical findings need no call."""
    assert "communication.critical_not_communicated" not in _rules(text)
    assert "communication.suspected_critical_not_communicated" not in _rules(text)


def test_cross_reference_is_not_a_communication() -> None:
    """'As discussed above' does not document telling anybody."""
    text = "FINDINGS:\nThere is free air under the diaphragm.\nIMPRESSION:\nPneumoperitoneum, as discussed above."
    assert "communication.critical_not_communicated" in _rules(text)


def test_suspected_critical_is_warning() -> None:
    """A strongly suspected critical finding without communication is a warning."""
    text = "FINDINGS:\nDilated appendix with periappendiceal stranding.\nIMPRESSION:\nFindings suspicious for appendicitis."
    found = findings_for(make_report(text), rule_prefix="communication.")
    assert [f.rule for f in found] == ["communication.suspected_critical_not_communicated"]
    assert found[0].severity is Severity.WARNING


def test_weakly_hedged_critical_is_not_flagged() -> None:
    """'Cannot exclude' is the differential, not a result somebody must act on now."""
    text = "FINDINGS:\nSubtle lucency at the apex.\nIMPRESSION:\nA tiny pneumothorax cannot be excluded."
    assert not [r for r in _rules(text) if "critical" in r]


def test_impression_hedging() -> None:
    """An impression with more hedges than sentences (and at least three) is a warning."""
    text = (
        "FINDINGS:\nBasilar opacity.\nIMPRESSION:\nOpacity may represent atelectasis versus possible pneumonia, "
        "possibly aspiration. Questionable small effusion."
    )
    found = findings_for(make_report(text), rule_prefix="communication.impression_hedging")
    assert len(found) == 1 and found[0].severity is Severity.WARNING


def test_impression_hedging_single_hedge_is_fine() -> None:
    """One hedge in a short impression is judgement, not a defect."""
    text = "FINDINGS:\nBasilar opacity.\nIMPRESSION:\nRight basilar opacity, likely atelectasis."
    assert "communication.impression_hedging" not in _rules(text)


def test_impression_no_definite() -> None:
    """An impression whose every statement is hedged is a warning."""
    text = (
        "FINDINGS:\nBasilar opacity.\nIMPRESSION:\n1. Possible atelectasis. "
        "2. Small effusion is suspected. 3. Recommend follow-up radiograph."
    )
    found = findings_for(make_report(text), rule_prefix="communication.impression_no_definite")
    assert len(found) == 1 and found[0].severity is Severity.WARNING


@pytest.mark.parametrize(
    "impression",
    [
        "1. Opacity may represent atelectasis. 2. Low lung volumes.",
        "Possible early pneumonia.",
        "No acute cardiopulmonary process.",
        "1. Possible small effusion. 2. Chest CT may be helpful for further evaluation.",
        # an observation stated plainly, then what it may mean
        "1. Opacity may represent atelectasis. 2. Possible small effusion.",
        "Patchy opacities in right upper lobe, concerning for pneumonia. Right paratracheal density possibly reactive "
        "lymphadenopathy.",
        "1. Mildly prominent interstitial markings, which could represent interstitial edema. 2. Mild blunting of the "
        "posterior sulcus, which could represent a small effusion.",
        # degree words are no hedge
        "1. Borderline cardiomegaly. 2. Age-indeterminate, chronic deformity in the midthoracic spine.",
    ],
)
def test_impression_no_definite_negatives(impression: str) -> None:
    """One plain statement (an observation stated before its hedged meaning counts), or a single hedged one, is enough."""
    text = "FINDINGS:\nBasilar opacity.\nIMPRESSION:\n" + impression
    assert "communication.impression_no_definite" not in _rules(text)


def test_called_for_results_is_a_communication() -> None:
    """'Dr. X was called for results.' documents a call (who and how; the time is missing), so the report is not uncommunicated."""
    rules = _rules(PTX + "\nDr. Rivera was called for results.")
    assert "communication.critical_not_communicated" not in rules
    assert "communication.incomplete_communication" in rules


@pytest.mark.parametrize(
    "text",
    [
        # the findings describe the free air plainly; the impression says it is expected after surgery
        "FINDINGS:\nThere is lucency beneath the diaphragm, consistent with pneumoperitoneum.\n"
        "IMPRESSION:\nPneumoperitoneum, postoperative secondary to recent laparoscopic surgery.",
        # the next sentence explains the finding
        "FINDINGS:\nSmall amount of free intraperitoneal air.\nIMPRESSION:\nSmall amount of free air. This is likely postprocedural.",
        # a neurology case history filed in the radiology feed
        "CC:, Headache.,HX:, On admission a head CT demonstrated a subarachnoid hemorrhage.",
    ],
)
def test_known_expected_or_narrative_critical_findings_need_no_call(text: str) -> None:
    """A critical finding called expected/known anywhere in the report, or told in a case history, raises no communication error."""
    assert "communication.critical_not_communicated" not in _rules(text)


def test_new_critical_finding_beside_a_known_other_one_still_fires() -> None:
    """Known-ness is per finding: a new pneumothorax is still uncommunicated when the free air is postoperative."""
    text = (
        "FINDINGS:\nModerate right pneumothorax. Free air under the diaphragm.\n"
        "IMPRESSION:\nModerate right pneumothorax. Free air, postoperative."
    )
    found = findings_for(make_report(text), rule_prefix="communication.critical_not_communicated")
    assert len(found) == 1 and "pneumothorax" in found[0].message


@pytest.mark.parametrize(
    "impression",
    [
        "Findings could represent pleural effusion; other etiologies cannot be excluded.",
        "Questionable atelectasis, possibly related to technique.",
        "Cannot exclude nodule. This may possibly represent a normal variant.",
    ],
)
def test_impression_with_no_definite_statement(impression: str) -> None:
    """One sentence with two hedges, or hedged sentences only, commits to nothing."""
    text = "FINDINGS:\nThe lungs are clear. The heart is normal.\nIMPRESSION:\n" + impression
    found = findings_for(make_report(text), rule_prefix="communication.impression_no_definite")
    assert len(found) == 1 and found[0].severity is Severity.WARNING


@pytest.mark.parametrize(
    "impression",
    [
        "Possible early pneumonia.",  # one hedge: a legitimate answer
        "Right basilar opacity, possibly atelectasis or pneumonia.",  # the observation is plain
        "Small left pleural effusion. Possible atelectasis, cannot exclude pneumonia.",  # a plain statement
    ],
)
def test_impression_with_a_definite_statement(impression: str) -> None:
    """A single hedge, or a plain observation before the hedge, is a definite statement."""
    text = "FINDINGS:\nThe lungs are clear. The heart is normal.\nIMPRESSION:\n" + impression
    assert not findings_for(make_report(text), rule_prefix="communication.impression_no_definite")
