"""Contradiction rules: a finding affirmed and denied; a normal impression over findings."""

from __future__ import annotations

import pytest

from listener.model import Severity
from tests.unit.qa.factory import findings_for, make_report


def _rules(text: str) -> list[str]:
    return [f.rule for f in findings_for(make_report(text), rule_prefix="contradiction.")]


def test_pneumothorax_affirmed_in_findings_denied_in_impression() -> None:
    """'Small right pneumothorax' vs 'No pneumothorax' is an error with both sentences as evidence."""
    report = make_report(
        "FINDINGS:\nThere is a small right apical pneumothorax. Heart size is normal.\nIMPRESSION:\nNo pneumothorax."
    )
    found = findings_for(report, rule_prefix="contradiction.affirmed_and_negated")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert [e.section for e in found[0].evidence] == ["findings", "impression"]
    assert "pneumothorax" in found[0].message and "apical" not in found[0].message


def test_negation_within_findings_contradicts() -> None:
    """Two findings sentences that say 'pleural effusion' and 'no pleural effusion'."""
    assert "contradiction.affirmed_and_negated" in _rules(
        "FINDINGS:\nThere is a moderate right pleural effusion. No pleural effusion.\nIMPRESSION:\nRight effusion."
    )


@pytest.mark.parametrize(
    "text",
    [
        # sides differ
        "FINDINGS:\nNo pneumothorax on the left. Small right pneumothorax.\nIMPRESSION:\nSmall right pneumothorax.",
        "FINDINGS:\nNo left pleural effusion.\nIMPRESSION:\nSmall right pleural effusion.",
        # qualified negations
        "FINDINGS:\nSmall right pneumothorax.\nIMPRESSION:\nSmall right pneumothorax, no new pneumothorax.",
        "FINDINGS:\nSmall apical pneumothorax. No large pneumothorax.\nIMPRESSION:\nSmall pneumothorax.",
        "FINDINGS:\nNondisplaced fracture of the distal radius. No displaced fracture.\nIMPRESSION:\nNondisplaced radius fracture.",
        # change over time
        "FINDINGS:\nThe left pleural effusion has resolved. Small right pleural effusion.\nIMPRESSION:\nSmall pleural effusion.",
        # no change / no increase pseudo-negations
        "FINDINGS:\nRight pleural effusion, no increase.\nIMPRESSION:\nRight pleural effusion, no change.",
        # different places
        "FINDINGS:\nFracture through the femoral neck. Knee: no fracture is seen.\nIMPRESSION:\nFemoral neck fracture.",
        # hedged affirmation
        "FINDINGS:\nNo pneumothorax.\nIMPRESSION:\nPossible tiny pneumothorax cannot be excluded.",
    ],
)
def test_affirmed_and_negated_negatives(text: str) -> None:
    """Legitimate report patterns are not contradictions."""
    assert "contradiction.affirmed_and_negated" not in _rules(text)


def test_normal_impression_over_pneumothorax() -> None:
    """'No acute cardiopulmonary abnormality' over an affirmed pneumothorax is an error."""
    report = make_report(
        "FINDINGS:\nThere is a right pneumothorax. No pleural effusion.\n"
        "IMPRESSION:\nNo acute cardiopulmonary abnormality."
    )
    found = findings_for(report, rule_prefix="contradiction.normal_impression")
    assert len(found) == 1 and found[0].severity is Severity.ERROR
    assert [e.section for e in found[0].evidence] == ["impression", "findings"]
    assert "pneumothorax" in found[0].message


def test_plain_normal_impression_over_significant_finding() -> None:
    """'Normal chest' over a 2 cm mass contradicts; any significant concept counts for a plain 'normal'."""
    assert "contradiction.normal_impression" in _rules(
        "FINDINGS:\nThere is a 2 cm mass in the right upper lobe.\nIMPRESSION:\nNormal chest."
    )


@pytest.mark.parametrize(
    "text",
    [
        # chronic/stable findings under "no acute"
        "FINDINGS:\nStable cardiomegaly. No pneumothorax.\nIMPRESSION:\nNo acute cardiopulmonary abnormality.",
        # minor finding under "no acute"
        "FINDINGS:\nMinimal left basilar atelectasis.\nIMPRESSION:\nNo acute cardiopulmonary disease.",
        # non-acute concept under "no acute"
        "FINDINGS:\nModerate cardiomegaly.\nIMPRESSION:\nNo acute cardiopulmonary process.",
        # impression states something besides the normal phrase
        "FINDINGS:\nRight lower lobe pneumonia.\nIMPRESSION:\nRight lower lobe pneumonia. Otherwise normal.",
        # calcified granuloma (benign)
        "FINDINGS:\nCalcified granuloma in the left upper lobe.\nIMPRESSION:\nNormal chest.",
        # impression points to findings
        "FINDINGS:\nRight pneumothorax.\nIMPRESSION:\nSee findings above. Otherwise no acute disease.",
        # all negated findings
        "FINDINGS:\nNo pneumothorax or effusion.\nIMPRESSION:\nNormal chest radiograph.",
    ],
)
def test_normal_impression_negatives(text: str) -> None:
    """Normal impressions over stable, minor, benign or absent findings are fine."""
    assert "contradiction.normal_impression" not in _rules(text)


@pytest.mark.parametrize(
    "text",
    [
        # an opacity the same sentence explains as atelectasis/scarring
        "FINDINGS:\nThere is left base streaky opacity due to scarring or discoid atelectasis.\n"
        "IMPRESSION:\nNo acute cardiopulmonary disease.",
        "FINDINGS:\nThere are streaky left basilar airspace opacities, compatible with atelectasis.\n"
        "IMPRESSION:\nNo acute cardiopulmonary abnormality.",
        # blunting explained as scarring
        "FINDINGS:\nBlunting of the left costophrenic angle represents scarring.\n"
        "IMPRESSION:\nNo acute radiographic cardiopulmonary process.",
        # the impression explains the opacity
        "FINDINGS:\nThere is right basilar opacity. No pneumothorax.\n"
        "IMPRESSION:\nRight basilar atelectasis. Otherwise, no acute cardiopulmonary disease.",
        # the next sentence explains it
        "FINDINGS:\nThere is patchy opacity in the right middle lobe. This is most compatible with bronchiectasis.\n"
        "IMPRESSION:\nNo acute cardiopulmonary process.",
        # an interstitial pattern is not acute airspace disease
        "FINDINGS:\nDiffuse interstitial opacities. No focal airspace disease.\n"
        "IMPRESSION:\nNegative for acute cardiopulmonary disease.",
        # opacities that are clearing
        "FINDINGS:\nThere has been clearing of left base airspace opacities.\nIMPRESSION:\nNo evidence of acute disease.",
        # a specific denial is no normal impression; ligament edema is not pulmonary edema
        "FINDINGS:\nSprain of the anterior tibiofibular ligament with diffuse interstitial edema.\n"
        "IMPRESSION:\nSyndesmotic sprain without an active marrow stress phenomenon.",
        "FINDINGS:\nThere is bone marrow edema in the talar dome.\n"
        "IMPRESSION:\nTalar dome contusion. No acute osseous abnormality elsewhere.",
    ],
)
def test_normal_impression_explained_findings_negatives(text: str) -> None:
    """Findings the report itself explains as not acute (atelectasis, scarring, clearing, non-lung edema) are no contradiction."""
    assert "contradiction.normal_impression" not in _rules(text)


@pytest.mark.parametrize(
    ("text", "concept"),
    [
        # dropped negation
        (
            "FINDINGS:\nThere is no focal consolidation. There is pneumothorax.\nIMPRESSION:\nNo acute cardiopulmonary disease.",
            "pneumothorax",
        ),
        # a residual pneumothorax that grew
        (
            "FINDINGS:\nInterval removal of left-sided chest tube. Small residual left apical pneumothorax has increased "
            "slightly in size.\nIMPRESSION:\nNo acute cardiopulmonary abnormality.",
            "pneumothorax",
        ),
        # garbled: 'clear of airspace disease' lost its 'of'
        (
            "FINDINGS:\nLungs are clear airspace disease. Negative for pneumothorax.\n"
            "IMPRESSION:\nNo acute cardiopulmonary abnormality.",
            "airspace opacity",
        ),
        # an opacity explained only for the other lung: still an unexplained pneumonia
        (
            "FINDINGS:\nRight lower lobe pneumonia. Left base streaky opacity due to scarring.\n"
            "IMPRESSION:\nNo acute cardiopulmonary abnormality.",
            "pneumonia",
        ),
        # a clearly pulmonary edema
        (
            "FINDINGS:\nThere is interstitial pulmonary edema.\nIMPRESSION:\nNo acute cardiopulmonary disease.",
            "pulmonary edema",
        ),
    ],
)
def test_normal_impression_true_alarms_kept(text: str, concept: str) -> None:
    """Dropped negations, a growing residual pneumothorax, garbled findings and unexplained acute findings still contradict 'no acute'."""
    found = findings_for(make_report(text), rule_prefix="contradiction.normal_impression")
    assert len(found) == 1 and concept in found[0].message


def test_midline_shift_is_a_sign_not_herniation() -> None:
    """A midline shift does not affirm herniation, so "no uncal herniation" beside it is no contradiction.

    The CT head sample (samples/hl7/ct-head-critical-sdh-communicated.hl7) words it this way.
    """
    text = (
        "FINDINGS:\nAcute right subdural hematoma. Mass effect with 6 mm of leftward midline shift. "
        "No uncal herniation.\nIMPRESSION:\nAcute right subdural hematoma with 6 mm midline shift."
    )
    assert "contradiction.affirmed_and_negated" not in _rules(text)
    # The shift itself is still compared with its own denial.
    assert "contradiction.affirmed_and_negated" in _rules(
        "FINDINGS:\nAcute right subdural hematoma with 6 mm of leftward midline shift.\n"
        "IMPRESSION:\nAcute right subdural hematoma. No midline shift."
    )


@pytest.mark.parametrize(
    "text",
    [
        # impression: affirmed in one numbered item, denied in another
        "FINDINGS:\nLeft lower lobe airspace opacity.\nIMPRESSION:\n1. Left lower lobe pneumonia.\n2. No pneumonia.",
        "FINDINGS:\nAn 8 mm nodule in the right upper lobe.\nIMPRESSION:\n1. 8 mm right upper lobe nodule.\n"
        "2. No pulmonary nodule.",
        "FINDINGS:\nThe heart is normal.\nIMPRESSION:\n1. Small left pleural effusion.\n2. Negative for pleural effusion.",
        # a plural or bilateral finding denied
        "FINDINGS:\nThere are small effusions. Mild cardiomegaly.\nIMPRESSION:\nMild cardiomegaly. No pleural effusion.",
        "FINDINGS:\nBilateral lower lobe consolidation.\nIMPRESSION:\nNo consolidation.",
        "FINDINGS:\nBilateral hydronephrosis.\nIMPRESSION:\nKidneys without hydronephrosis.",
        # a non-significant finding: any finding, not a fixed list
        "FINDINGS:\nVolume loss in the left lower lobe.\nIMPRESSION:\n1. Left lower lobe volume loss.\n2. No volume loss.",
        # a site-variable finding denied plainly
        "FINDINGS:\nThere is a nondisplaced fracture of the right distal radius.\nIMPRESSION:\nNo fracture.",
    ],
)
def test_affirmed_and_negated_forms(text: str) -> None:
    """Within the impression, bilateral/plural vs a bare denial, any finding: each is a contradiction."""
    assert "contradiction.affirmed_and_negated" in _rules(text)


@pytest.mark.parametrize(
    "text",
    [
        # numbered items about different sides
        "FINDINGS:\nSmall right pneumothorax.\nIMPRESSION:\n1. Small right pneumothorax.\n2. No left pneumothorax."
        "\nDiscussed with Dr. Rivera by telephone at 02:14.",
        # numbered items about different findings
        "FINDINGS:\nLeft lower lobe airspace opacity.\nIMPRESSION:\n1. Left lower lobe pneumonia.\n2. No pleural effusion.",
        # a hedged item and a denial
        "FINDINGS:\nLeft lower lobe airspace opacity.\nIMPRESSION:\n1. Possible early pneumonia.\n2. No lobar pneumonia.",
        # a qualified denial in the impression
        "FINDINGS:\nSmall bilateral pleural effusions.\nIMPRESSION:\n1. Small bilateral pleural effusions.\n"
        "2. No large pleural effusion.",
        # a denial at a named place
        "FINDINGS:\nFracture of the right distal radius.\nIMPRESSION:\n1. Right distal radius fracture.\n"
        "2. No fracture of the ulna.",
        # organ anatomy is not a finding
        "FINDINGS:\nThe ovaries are normal.\nIMPRESSION:\nNo ovarian abnormality. Normal uterus and ovaries.",
        # a bare denial in a section that describes several body parts speaks about one of them
        "FINDINGS:\nPelvis and left hip: there is an impacted fracture of the left femoral neck. Left knee: "
        "mild arthritic changes. No fracture is seen.\nIMPRESSION:\nImpacted fracture of the left femoral neck.",
    ],
)
def test_affirmed_and_negated_form_near_misses(text: str) -> None:
    """Different sides, different findings, hedged, qualified or placed denials are not contradictions."""
    assert "contradiction.affirmed_and_negated" not in _rules(text)


@pytest.mark.parametrize(
    "text",
    [
        # the same qualifier on both: the denial denies exactly what is affirmed
        "FINDINGS:\nThe lungs are hypoventilated. There is focal consolidation.\nIMPRESSION:\nNo focal consolidation.",
        "FINDINGS:\nNo focal lung consolidation. Displaced rib fractures.\nIMPRESSION:\nNo displaced fractures.",
        # a denial list with its "no" dropped
        "FINDINGS:\nThe lungs are clear. Large pleural effusion or pneumothorax.\nIMPRESSION:\nSpecifically, no pneumothorax.",
        # a side word in a bare denial is compared as a side
        "FINDINGS:\nSmall bilateral pleural effusions.\nIMPRESSION:\n1. Cardiomegaly.\n2. No bilateral pleural effusions.",
        # a qualifier on the first item of a denial list narrows that item only
        "FINDINGS:\nThere is no acute infiltrate, pleural effusion or pneumothorax.\nIMPRESSION:\nSmall right pneumothorax.",
        # a bare denial of any opacity against a named airspace opacity
        "FINDINGS:\nLeft basilar patchy opacities.\nIMPRESSION:\nLeft basilar patchy opacities. No evidence of opacity.",
        "FINDINGS:\nPatchy airspace disease in the right middle lobe.\nIMPRESSION:\nOpacity is not seen.",
        # an opacity the vocabulary does not name ("Bandlike opacities")
        "FINDINGS:\nBandlike opacities are present in the right base.\nIMPRESSION:\nNo opacity.",
        # a finding characterized as benign or known, denied bare in the impression
        "FINDINGS:\nHeart size normal.\nIMPRESSION:\nLungs are clear. 5 mm right apical granuloma unchanged. No granuloma.",
    ],
)
def test_contradiction_forms_of_issue_14(text: str) -> None:
    """Qualified denials, dropped "no" in a list, sides in a denial, benign findings denied bare."""
    assert "contradiction.affirmed_and_negated" in _rules(text)


@pytest.mark.parametrize(
    "text",
    [
        # the affirmation lacks the denial's qualifier
        "FINDINGS:\nPatchy consolidation at the left base.\nIMPRESSION:\nNo focal consolidation.",
        "FINDINGS:\nNondisplaced fracture of the radius. No displaced fracture.\nIMPRESSION:\nNondisplaced fracture.",
        # relative qualifiers never match an affirmation
        "FINDINGS:\nNew small right pneumothorax.\nIMPRESSION:\nNo new pneumothorax since this morning's film.",
        # "or" offering alternatives affirms neither
        "FINDINGS:\nLeft basilar opacity, atelectasis or pneumonia. No pneumonia.\nIMPRESSION:\nAtelectasis.",
        # a benign finding against a qualified denial
        "FINDINGS:\nCalcified right lower lung nodule.\nIMPRESSION:\nNo suspicious nodule.",
        # an opacity denied with a qualifier or at a place
        "FINDINGS:\nLeft basilar patchy opacities.\nIMPRESSION:\nNo focal opacity.",
        "FINDINGS:\nLeft basilar patchy opacities.\nIMPRESSION:\nNo opacity in the right lung.",
        # the only opacity is hedged, projecting or artifactual
        "FINDINGS:\nOpacities projecting over the right apex are artifactual.\nIMPRESSION:\nNo opacity.",
        "FINDINGS:\nThere may be an opacity at the left base.\nIMPRESSION:\nNo opacity.",
        # a side word: the sides differ
        "FINDINGS:\nSmall right pleural effusion.\nIMPRESSION:\nNo left pleural effusion.",
    ],
)
def test_contradiction_forms_of_issue_14_near_misses(text: str) -> None:
    """Near misses of the forms above: a narrower denial, alternatives, different sides."""
    assert "contradiction.affirmed_and_negated" not in _rules(text)


def test_device_in_another_clause_does_not_soften_the_finding() -> None:
    """A tube named in the sentence's other clause leaves the finding after the comma plainly stated (docs/qa-rules.md "Round 7")."""
    assert "contradiction.affirmed_and_negated" in _rules(
        "FINDINGS:\nNo acute focal consolidation or pneumothorax.\nIMPRESSION:\n"
        "1. Right basilar atelectasis. 2. Right chest tube in place, a small pneumothorax."
    )


def test_device_in_the_findings_own_clause_still_softens_it() -> None:
    """The near miss: a tube in the finding's own clause makes a device statement, which a qualified denial does not meet."""
    assert "contradiction.affirmed_and_negated" not in _rules(
        "FINDINGS:\nNo acute focal consolidation or pneumothorax.\nIMPRESSION:\n"
        "1. Right basilar atelectasis. 2. Right chest tube in place with a small pneumothorax."
    )


def test_a_question_mark_softens_the_affirmed_sentence() -> None:
    """A finding asked about ("a small right pneumothorax?") is not plainly stated, nor is one in a device sentence
    that ends in a question mark: a qualified denial meets neither; the plain statement it meets."""
    head = "FINDINGS:\nNo acute focal consolidation or pneumothorax.\nIMPRESSION:\n1. Right basilar atelectasis. "
    assert "contradiction.affirmed_and_negated" in _rules(head + "2. A small right pneumothorax.")
    assert "contradiction.affirmed_and_negated" not in _rules(head + "2. A small right pneumothorax?")
    assert "contradiction.affirmed_and_negated" not in _rules(
        head + "2. Right chest tube in place, a small pneumothorax?"
    )
