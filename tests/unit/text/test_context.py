"""ConText scope rules: negation, hedges, history, indication, experiencer, side."""

from __future__ import annotations

import pytest

from listener.text.context import (
    Mention,
    definite_statements,
    find_mentions,
    has_definite_statement,
    hedge_count,
    hedge_density,
)
from listener.text.terms import Terms


def mentions(text: str, terms: Terms) -> list[Mention]:
    return list(find_mentions(text, 0, None, terms))


def one(text: str, terms: Terms, concept: str) -> Mention:
    found = [m for m in mentions(text, terms) if m.concept == concept]
    assert len(found) == 1, found
    return found[0]


def test_no_pneumothorax_is_negated(terms: Terms) -> None:
    """The plainest negation."""
    m = one("No pneumothorax.", terms, "pneumothorax")
    assert m.negated and not m.affirmed
    assert (m.start, m.end, m.text) == (3, 15, "pneumothorax")
    assert m.critical and m.significant
    assert [c.category for c in m.cues] == ["negated"]


def test_negation_stops_at_the_sentence_end(terms: Terms) -> None:
    """'Small right pneumothorax. No effusion.': the first affirmed right, the second negated."""
    text = "Small right pneumothorax. No effusion."
    ptx = one(text, terms, "pneumothorax")
    eff = one(text, terms, "pleural_effusion")
    assert ptx.affirmed and ptx.laterality == "right"
    assert (ptx.sentence_start, ptx.sentence_end) == (0, 25)
    assert eff.negated


def test_pseudo_trigger_no_change(terms: Terms) -> None:
    """'No change in the small right pneumothorax' affirms it: 'no change' is no negation."""
    m = one("No change in the small right pneumothorax.", terms, "pneumothorax")
    assert m.affirmed and m.laterality == "right"


@pytest.mark.parametrize(
    "text",
    [
        "Not only a pneumothorax but also an effusion.",
        "Without change, the pneumothorax persists.",
        "No increase in the pneumothorax.",
    ],
)
def test_other_pseudo_triggers(text: str, terms: Terms) -> None:
    """'not only', 'without change', 'no increase' do not negate."""
    assert not one(text, terms, "pneumothorax").negated


def test_cannot_be_excluded_is_uncertain(terms: Terms) -> None:
    """A backward hedge."""
    m = one("Pneumothorax cannot be excluded.", terms, "pneumothorax")
    assert m.uncertain and not m.negated and not m.affirmed


@pytest.mark.parametrize(
    "text",
    [
        "Findings may represent pneumonia.",
        "Opacity suspicious for pneumonia.",
        "Possibly pneumonia.",
        "Cannot exclude pneumonia.",
        "Pneumonia is not excluded.",
        "Atelectasis versus pneumonia.",
    ],
)
def test_hedges(text: str, terms: Terms) -> None:
    """Forward and backward hedges make the finding uncertain."""
    m = one(text, terms, "pneumonia")
    assert m.uncertain and not m.negated


def test_terminator_but_ends_the_negation(terms: Terms) -> None:
    """'no pneumothorax but a small effusion': the effusion is affirmed."""
    text = "There is no pneumothorax but a small effusion."
    assert one(text, terms, "pneumothorax").negated
    assert one(text, terms, "pleural_effusion").affirmed


@pytest.mark.parametrize("word", ["however", "although", "which", "aside from", ";"])
def test_other_terminators(word: str, terms: Terms) -> None:
    """Terminators stop a forward negation before the next finding."""
    assert not one(f"No pneumothorax {word} small effusion.", terms, "pleural_effusion").negated


def test_negation_reaches_a_list(terms: Terms) -> None:
    """One 'no' covers every finding of its list, hedged adjectives included."""
    text = "No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax."
    found = mentions(text, terms)
    assert {m.concept for m in found} >= {"consolidation", "pleural_effusion", "pneumothorax"}
    assert all(m.negated and not m.uncertain for m in found)


def test_window_limits_the_scope(terms: Terms) -> None:
    """Beyond the word window a trigger no longer reaches."""
    text = "No " + "word " * 20 + "pneumothorax."
    assert not one(text, terms, "pneumothorax").negated


def test_backward_negation(terms: Terms) -> None:
    """'is not seen', 'has resolved', 'no longer seen' follow the finding."""
    assert one("A pneumothorax is not seen.", terms, "pneumothorax").negated
    assert one("The pneumothorax has resolved.", terms, "pneumothorax").negated
    assert one("The effusion is no longer seen.", terms, "pleural_effusion").negated


def test_resolution_is_negation(terms: Terms) -> None:
    """'Interval resolution of' and 'resolved' say the finding is gone."""
    m = one("Interval resolution of the left pleural effusion.", terms, "pleural_effusion")
    assert m.negated and m.laterality == "left"
    assert one("Resolved right pneumothorax.", terms, "pneumothorax").negated


def test_history_of_is_historical(terms: Terms) -> None:
    """History is not a current finding."""
    m = one("History of fracture.", terms, "fracture")
    assert m.historical and not m.negated and not m.affirmed


def test_healed_and_old_are_historical(terms: Terms) -> None:
    """'Healed left rib fractures' is old, and still left."""
    m = one("Healed left rib fractures.", terms, "fracture")
    assert m.historical and m.laterality == "left"


def test_rule_out_is_an_indication(terms: Terms) -> None:
    """'rule out pulmonary embolism' asks; it does not find."""
    m = one("Rule out pulmonary embolism.", terms, "pulmonary_embolism")
    assert m.hypothetical and not m.affirmed and m.critical


@pytest.mark.parametrize("text", ["R/O pneumonia.", "Evaluate for pneumonia.", "Cough, assess for pneumonia."])
def test_other_indications(text: str, terms: Terms) -> None:
    """r/o, evaluate for, assess for."""
    assert one(text, terms, "pneumonia").hypothetical


def test_family_history_is_another_experiencer(terms: Terms) -> None:
    """A relative's finding is not the patient's."""
    m = one("Family history of aortic aneurysm.", terms, "aneurysm")
    assert m.experiencer == "other" and not m.affirmed


def test_affirmed_finding_has_no_cues(terms: Terms) -> None:
    """A plain statement is affirmed."""
    m = one("Large left pleural effusion.", terms, "pleural_effusion")
    assert m.affirmed and m.cues == () and m.laterality == "left"


def test_laterality_does_not_leak_across_findings(terms: Terms) -> None:
    """The side before one finding is not given to the next one."""
    text = "Left pleural effusion with adjacent atelectasis. Right effusion is also present."
    found = mentions(text, terms)
    assert [(m.concept, m.laterality) for m in found] == [
        ("pleural_effusion", "left"),
        ("atelectasis", ""),
        ("pleural_effusion", "right"),
    ]


def test_side_after_the_finding(terms: Terms) -> None:
    """'pneumothorax in the right apex' is right-sided."""
    assert one("Small pneumothorax in the right apex.", terms, "pneumothorax").laterality == "right"


def test_bilateral(terms: Terms) -> None:
    """'Bilateral pleural effusions' and 'right greater than left' are bilateral."""
    assert one("Bilateral pleural effusions.", terms, "pleural_effusion").laterality == "bilateral"
    assert one("Effusions, right greater than left.", terms, "pleural_effusion").laterality == "bilateral"


def test_critical_beats_anatomy_at_the_same_position(terms: Terms) -> None:
    """'ovarian torsion' is the critical finding, not just the ovary."""
    m = one("Findings consistent with right ovarian torsion.", terms, "ovarian_torsion")
    assert m.critical and m.sex == "female"


def test_pe_tube_is_not_pulmonary_embolism(terms: Terms) -> None:
    """The ambiguous 'PE' of pyConTextNLP's lexicon is guarded."""
    assert [m for m in mentions("PE tubes in place. No PE.", terms) if m.concept == "pulmonary_embolism"][0].negated
    assert len([m for m in mentions("PE tubes in place.", terms) if m.concept == "pulmonary_embolism"]) == 0


def test_region_offsets(terms: Terms) -> None:
    """Only text[start:end] is scanned and offsets stay absolute."""
    text = "INDICATION: pneumothorax. FINDINGS: No pneumothorax."
    found = find_mentions(text, 26, None, terms)
    assert len(found) == 1 and found[0].start == 39 and found[0].negated


def test_hedge_density(terms: Terms) -> None:
    """Hedges per sentence."""
    text = "Possible pneumonia. Effusion cannot be excluded. No pneumothorax."
    assert hedge_count(text, 0, None, terms) == 2
    assert hedge_density(text, 0, None, terms) == pytest.approx(2 / 3)
    assert hedge_density("", 0, None, terms) == 0.0


def test_definite_statements(terms: Terms) -> None:
    """A plain sentence is definite; a hedged one is not."""
    assert has_definite_statement("No acute cardiopulmonary abnormality.", 0, None, terms)
    assert has_definite_statement("Right lower lobe pneumonia.", 0, None, terms)
    assert not has_definite_statement("Possible pneumonia. Effusion cannot be excluded.", 0, None, terms)
    text = "Possibly atelectasis. Small right effusion."
    assert [s.text_of(text) for s in definite_statements(text, 0, None, terms)] == ["Small right effusion."]


def test_backward_negation_stops_at_a_clause_comma(terms: Terms) -> None:
    """'Heart size is enlarged, pulmonary vascularity within normal limits': the enlarged heart stays affirmed."""
    m = one("Heart size is enlarged, pulmonary vascularity within normal limits.", terms, "cardiomegaly")
    assert m.affirmed
    assert one("Heart is enlarged, lungs are normal.", terms, "cardiomegaly").affirmed


def test_backward_negation_still_reaches_over_a_list(terms: Terms) -> None:
    """'Pneumothorax, effusion, and consolidation are absent': every finding of the list is negated."""
    found = mentions("Pneumothorax, effusion, and consolidation are absent.", terms)
    assert [m.concept for m in found] == ["pneumothorax", "pleural_effusion", "consolidation"]
    assert all(m.negated for m in found)
    assert one("Pleural effusion: none.", terms, "pleural_effusion").negated


@pytest.mark.parametrize(
    ("text", "concept"),
    [
        ("There is bone marrow edema in the lateral femoral condyle.", "marrow_edema"),
        ("Bone bruise of the lateral tibial plateau.", "marrow_edema"),
        ("Soft tissue edema over the lateral malleolus.", "soft_tissue_edema"),
        ("There is edema of the subcutis adipose.", "soft_tissue_edema"),
        ("Interstitial edema of the short plantar ligament.", "soft_tissue_edema"),
        ("Vasogenic edema in the left frontal lobe.", "cerebral_edema"),
        ("Small joint effusion.", "joint_effusion"),
        ("Small effusion in the knee joint.", "joint_effusion"),
        ("Small effusion is noted within the suprapatellar recess.", "joint_effusion"),
        ("Tendon sheath effusion of the peroneal tendons.", "tendon_sheath_effusion"),
    ],
)
def test_musculoskeletal_edema_and_effusion_are_not_chest_findings(text: str, concept: str, terms: Terms) -> None:
    """Edema and effusion qualified by non-chest anatomy get their own concept, never pulmonary_edema/pleural_effusion."""
    found = {m.concept for m in mentions(text, terms)}
    assert concept in found
    assert not found & {"pulmonary_edema", "pleural_effusion"}


def test_chest_edema_and_effusion_keep_their_concepts(terms: Terms) -> None:
    """Bare or lung-qualified edema/effusion in a chest report stay pulmonary_edema/pleural_effusion."""
    text = "Interstitial opacities consistent with edema in the lower lobes. Small left effusion in the costophrenic recess."
    assert {m.concept for m in mentions(text, terms)} == {"airspace_opacity", "pulmonary_edema", "pleural_effusion"}


def test_bibasilar_side_word_overlapping_a_finding_sets_its_side(terms: Terms) -> None:
    """'Bi-basilar opacities': the side word overlaps the finding's match and still gives it a side."""
    assert one("Bi-basilar opacities.", terms, "airspace_opacity").laterality == "bilateral"


@pytest.mark.parametrize(
    "text",
    [
        "Pneumonia seen on CT examination dated March 3, 2020 is not seen.",
        "Pneumonia seen on CT examination dated Mar. 3rd, 2020 is not seen.",
        "Pneumonia seen on CT examination dated XXXX, XXXX is not seen.",
        "Pneumonia seen on CT examination dated March 3 2020 is not seen.",
    ],
)
def test_comma_inside_a_date_does_not_end_the_negated_clause(text: str, terms: Terms) -> None:
    """A backward negation reaches over the comma of a date, written or de-identified (indiana:3103)."""
    assert one(text, terms, "pneumonia").negated


@pytest.mark.parametrize(
    "text",
    [
        "Pneumonia seen on CT examination dated March 3, follow-up film is not seen.",
        "Heart size is enlarged, XXXX, pneumonia seen, the film is not seen.",
    ],
)
def test_comma_that_only_looks_like_a_date_still_ends_the_clause(text: str, terms: Terms) -> None:
    """A comma after a day with no year, or after XXXX with a word, still starts a clause."""
    assert not one(text, terms, "pneumonia").negated


def test_parenthetical_aside_does_not_count_against_the_window(terms: Terms) -> None:
    """The words of '(not seen on prior chest x-XXXX)' do not push 'is not seen' out of reach (indiana:3103)."""
    text = (
        "Pneumonia seen on CT examination dated XXXX, XXXX (not seen on prior chest x-XXXX) "
        "is not seen either on XXXX chest x-XXXX."
    )
    assert one(text, terms, "pneumonia").negated


def test_long_gap_without_an_aside_is_still_out_of_reach(terms: Terms) -> None:
    """The same number of words outside brackets keeps the negation out of the window."""
    text = (
        "Pneumonia seen on CT examination dated XXXX, XXXX and then on prior chest x-XXXX "
        "is not seen either on XXXX chest x-XXXX."
    )
    assert not one(text, terms, "pneumonia").negated


@pytest.mark.parametrize(
    ("text", "concept"),
    [
        ("On a previous outside XXXX scan (XXXX), the right upper lobe was consolidated.", "consolidation"),
        ("On the prior study dated XXXX, there was a small right pleural effusion.", "pleural_effusion"),
        ("On an earlier chest radiograph, pneumonia was present in the left lower lobe.", "pneumonia"),
    ],
)
def test_sentence_set_on_a_previous_study_is_historical(text: str, concept: str, terms: Terms) -> None:
    """'On a previous/prior/outside ... scan, X' describes the earlier study: X is historical (indiana:744)."""
    m = one(text, terms, concept)
    assert m.historical and not m.affirmed


@pytest.mark.parametrize(
    ("text", "concept"),
    [
        ("Compared to the prior study, there is new consolidation.", "consolidation"),
        ("As on the prior study, the effusion persists.", "pleural_effusion"),
        ("As seen on the prior study, the right effusion persists.", "pleural_effusion"),
        ("On the current study, the right upper lobe is consolidated.", "consolidation"),
        ("On today's radiograph, there is a right pneumothorax.", "pneumothorax"),
    ],
)
def test_comparison_with_a_prior_study_is_not_historical(text: str, concept: str, terms: Terms) -> None:
    """A comparison with the prior, 'as on the prior' and the current study describe the present."""
    m = one(text, terms, concept)
    assert not m.historical and m.affirmed


@pytest.mark.parametrize(
    "text",
    [
        "The lungs are clear. No pneumothorax, pleural effusion, or edema.",
        "Heart size is normal. Mild edema.",
        "IMPRESSION: Cardiomegaly with midlung and lower lobe edema.",
    ],
)
def test_bare_edema_in_a_report_about_the_lungs_is_pulmonary_edema(text: str, terms: Terms) -> None:
    """Chest-report wording: bare 'edema' is pulmonary edema (significant)."""
    m = one(text, terms, "pulmonary_edema")
    assert m.significant and m.text.lower() == "edema"


@pytest.mark.parametrize(
    "text",
    [
        "There was minimal associated edema and no mass effect.",
        "These findings are compatible with edema.",
        "The lungs are clear. There is edema surrounding the lesion.",
        "The lungs are clear. A small amount of edema is identified adjacent to the medial collateral ligament.",
        "INDICATION: Scrotal edema, dyspnea. FINDINGS: The lungs are clear.",
    ],
)
def test_bare_edema_elsewhere_stays_generic(text: str, terms: Terms) -> None:
    """No lung context, or another site named in the sentence: generic, not significant 'edema' (issue 4)."""
    m = one(text, terms, "edema")
    assert not m.significant
    assert not [x for x in mentions(text, terms) if x.concept == "pulmonary_edema"]


def test_qualified_pulmonary_edema_needs_no_context(terms: Terms) -> None:
    """'pulmonary edema' and 'edema in both lungs' are pulmonary edema in any report."""
    assert one("Mild interstitial pulmonary edema.", terms, "pulmonary_edema").significant
    assert one("There is edema in both lungs.", terms, "pulmonary_edema").text == "edema in both lungs"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Wedge-shaped opacity in the left lower lobe.", "Wedge-shaped opacity"),
        ("No retrocardiac opacity.", "retrocardiac opacity"),
        ("Lingular opacities have cleared.", "Lingular opacities"),
        ("Vague opacities are noted in the left upper lobe.", "Vague opacities"),
    ],
)
def test_located_opacity_is_an_airspace_opacity(text: str, found: str, terms: Terms) -> None:
    """A lingular, retrocardiac or wedge-shaped opacity is an airspace opacity mention (issue 4)."""
    assert one(text, terms, "airspace_opacity").text == found


@pytest.mark.parametrize(
    "text",
    [
        "The right upper lobe is clear.",
        "Opacity of the lens.",
        "Vague region of low density in the left frontal lobe.",
        "No upper lobe predominance. Overlying soft tissue opacity.",
    ],
)
def test_lobe_words_without_an_opacity_are_no_airspace_opacity(text: str, terms: Terms) -> None:
    """A lobe named without an opacity, or an opacity with no lung qualifier, is no airspace opacity."""
    assert not [m for m in mentions(text, terms) if m.concept == "airspace_opacity"]


@pytest.mark.parametrize(
    "text",
    [
        "Interval removal of right chest tube, a small pneumothorax.",
        "There has been removal of 2 left-sided chest tubes, small residual apical pneumothorax.",
        "Interval removal of the left PICC line, new small pneumothorax at the apex.",
    ],
)
def test_removal_of_a_device_does_not_deny_the_finding_after_it(text: str, terms: Terms) -> None:
    """The removal of a tube, line or drain says the device is gone; the finding after it is stated (docs/qa-rules.md "Round 7")."""
    assert one(text, terms, "pneumothorax").affirmed


def test_removal_of_a_finding_still_denies_it(terms: Terms) -> None:
    """The near miss: "removal of" with the finding as its own object still says it is gone."""
    assert one("Interval removal of the left breast mass.", terms, "mass").negated
    assert one("Interval removal of the foreign body and mass.", terms, "mass").negated
