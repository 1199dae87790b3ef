"""Side words attached to paired anatomy; non-paired anatomy and devices ignored."""

from __future__ import annotations

import pytest

from listener.text.laterality import lateral_mentions, sides_in
from listener.text.terms import Terms


def found(text: str, terms: Terms) -> list[tuple[str, str]]:
    return [(lm.side, lm.anatomy) for lm in lateral_mentions(text, 0, None, terms)]


def test_left_knee_effusion(terms: Terms) -> None:
    """'left knee effusion' -> left / knee, with offsets."""
    text = "Small left knee effusion."
    (lm,) = lateral_mentions(text, 0, None, terms)
    assert (lm.side, lm.anatomy) == ("left", "knee")
    assert text[lm.start : lm.end] == "left" and text[lm.anatomy_start : lm.anatomy_end] == "knee"
    assert (lm.sentence_start, lm.sentence_end) == (0, len(text))


@pytest.mark.parametrize(
    "text",
    [
        "The left ventricle is normal.",
        "Left ventricular hypertrophy.",
        "The left atrium is dilated.",
        "Right heart strain.",
        "The left lobe of the liver is enlarged.",
        "Right hepatic lobe lesion.",
        "Left-sided chest tube in place.",
        "Tip of the right PICC in the SVC.",
        "Left subclavian catheter tip in the SVC.",
        "Left lateral decubitus views were obtained.",
        "The catheter was left in place.",
        "Right lower quadrant pain.",
        "Left anterior descending artery calcification.",
        "Mediastinal shift to the right.",
    ],
)
def test_non_paired_devices_positions_and_verbs_are_ignored(text: str, terms: Terms) -> None:
    """None of these names the side of a paired organ."""
    assert found(text, terms) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Right lower lobe pneumonia.", [("right", "lung_lobe")]),
        ("Right kidney cyst.", [("right", "kidney")]),
        ("Acute infarct in the left MCA territory.", [("left", "cerebral_artery")]),
        ("Mass in the left breast.", [("left", "breast")]),
        ("Left lateral ventricle is effaced.", [("left", "brain_hemisphere")]),
        ("Right hip arthroplasty.", [("right", "hip")]),
        ("Left ovary is normal.", [("left", "ovary")]),
        ("Knee, left: no fracture.", [("left", "knee")]),
        ("L kidney stone and R hip pain.", [("left", "kidney"), ("right", "hip")]),
        ("Bilateral pleural effusions.", [("bilateral", "pleura")]),
    ],
)
def test_paired_anatomy(text: str, expected: list[tuple[str, str]], terms: Terms) -> None:
    """Side words attach to the paired anatomy they modify, before or after."""
    assert found(text, terms) == expected


def test_side_without_anatomy_is_kept(terms: Terms) -> None:
    """'Effusion on the right' keeps the side with no anatomy (it qualifies a finding)."""
    assert found("Effusion on the right.", terms) == [("right", "")]


def test_abbreviation_needs_adjacent_anatomy(terms: Terms) -> None:
    """A lone 'R' or 'L' (R/O, L4) is no side."""
    assert found("R/O pneumonia. L4-L5 disc bulge.", terms) == []


def test_left_and_right_is_bilateral(terms: Terms) -> None:
    """'left and right kidneys' is one bilateral mention, not two."""
    assert found("The left and right kidneys are normal.", terms) == [("bilateral", "kidney")]


def test_sides_in(terms: Terms) -> None:
    """sides_in collects the sides attached to anatomy (or all of them)."""
    lms = lateral_mentions("Right knee pain. Effusion on the left.", 0, None, terms)
    assert sides_in(lms) == frozenset({"right"})
    assert sides_in(lms, anatomy_only=False) == frozenset({"right", "left"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Left basal atelectasis.", [("left", "lung_lobe")]),
        ("Atelectasis at the right base.", [("right", "lung_lobe")]),
        ("Bibasilar atelectasis.", [("bilateral", "lung_lobe")]),
        ("Bi-basal opacities.", [("bilateral", "lung_lobe")]),
        ("Left basal ganglia infarct.", [("left", "brain_hemisphere")]),
    ],
)
def test_lung_bases_are_lung_anatomy(text: str, expected: list[tuple[str, str]], terms: Terms) -> None:
    """'basal', 'base' and the bi- words ('bibasilar') attach a side to the lung, not to nothing."""
    assert [(lm.side, lm.anatomy) for lm in lateral_mentions(text, 0, None, terms)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Cardiomegaly and bilateral effusion consistent with cardiac decompensation.",
        "Left pneumothorax with chest tube in place.",
    ],
)
def test_side_word_before_a_finding_is_kept_though_non_paired_anatomy_or_a_device_follows(
    text: str, terms: Terms
) -> None:
    """A finding between the side word and the heart or the tube makes the side the finding's (docs/qa-rules.md "Round 7")."""
    (lm,) = lateral_mentions(text, 0, None, terms)
    assert lm.anatomy == ""
    assert text[lm.start : lm.end].lower() in ("bilateral", "left")


@pytest.mark.parametrize(
    "text",
    ["Bilateral cardiac enlargement consistent with failure.", "Left chest tube in place without pneumothorax."],
)
def test_side_word_before_non_paired_anatomy_or_a_device_with_no_finding_between_is_dropped(
    text: str, terms: Terms
) -> None:
    """The near miss: with no finding between them, the side word still names the heart or the device."""
    assert found(text, terms) == []


def test_there_is_left_states_a_side(terms: Terms) -> None:
    """'There is left basilar opacity': after "there" the "is" is no verb of "left" (docs/qa-rules.md "Round 7")."""
    assert found("There is left basilar opacity. There are left-sided axillary clips.", terms) == [
        ("left", "lung_lobe"),
        ("left", "breast"),
    ]


def test_left_as_a_verb_is_still_no_side(terms: Terms) -> None:
    """The near miss: "the catheter is left" and "was left with" use the verb."""
    assert found("The catheter is left within the basilic vein. The patient was left with weakness.", terms) == []
