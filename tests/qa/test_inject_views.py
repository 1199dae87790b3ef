"""The view-count injection on hand-written radiograph texts (no corpus): what it selects and what it writes."""

from __future__ import annotations

import random

from tests.qa.inject import Case, Doc, inject_view_count_changed

CHEST = (("71045", 1, 1), ("71046", 2, 2), ("71047", 3, 3), ("71048", 4, None))
ANKLE = (("73600", 2, 2), ("73610", 3, None))


def _doc(
    text: str, *, codes: tuple[tuple[str, int, int | None], ...] = CHEST, family: str = "chest", code: str = ""
) -> Doc:
    return Doc(
        id="t:1",
        source="indiana",
        text=text,
        procedure_code=code,
        modality="XR",
        body_region="chest",
        view_family=family,
        view_codes=codes,
    )


def _cases(doc: Doc, seeds: int = 40) -> list[Case]:
    return [c for s in range(seeds) if (c := inject_view_count_changed(doc, random.Random(s))) is not None]


def test_base_bills_the_code_for_the_stated_views() -> None:
    """The prepared base bills the family's code for the stated count; ``prepared`` says so when it changed."""
    text = "INDICATION: Cough.\nFINDINGS: PA and lateral views of the chest were obtained. The lungs are clear."
    cases = _cases(_doc(text, code="71045"))
    assert cases
    for case in cases:
        assert case.base.procedure_code == "71046"
        assert case.prepared == "code for the stated views"
    assert {c.prepared for c in _cases(_doc(text, code="71046"))} == {""}


def test_both_forms_are_made_and_each_is_a_real_mismatch() -> None:
    """The code form bills another chest code on the same text; the text form restates another count
    in plain words with the verb in agreement, keeping 71046."""
    text = "INDICATION: Cough.\nFINDINGS: PA and lateral views of the chest were obtained. The lungs are clear."
    cases = _cases(_doc(text, code="71046"))
    forms = {c.variant.split(":", 1)[0] for c in cases}
    assert forms == {"code", "text"}
    restated = set()
    for case in cases:
        if case.variant.startswith("code:"):
            assert case.injected.text == text
            assert case.injected.procedure_code in {"71045", "71047", "71048"}
        else:
            assert case.injected.procedure_code == "71046"
            restated.add(case.injected.text.split("FINDINGS: ", 1)[1].split(". The", 1)[0])
    assert restated <= {
        "Single PA view of the chest was obtained",
        "PA, lateral and oblique views of the chest were obtained",
        "Three views of the chest were obtained",
        "Four views of the chest were obtained",
    }
    assert "Single PA view of the chest was obtained" in restated


def test_the_verb_follows_the_new_count_past_a_phrase() -> None:
    """ "... views of the chest with overlying monitor leads show" becomes "... view ... shows"."""
    text = "FINDINGS: Frontal and lateral views of the chest with overlying monitor leads show clear lungs."
    restated = {c.injected.text for c in _cases(_doc(text, code="71046")) if c.variant.startswith("text:2->1")}
    assert restated == {"FINDINGS: Single frontal view of the chest with overlying monitor leads shows clear lungs."}


def test_every_agreeing_statement_is_restated() -> None:
    """MTSamples states the views in the exam line and the findings: both are restated alike."""
    text = (
        "EXAM: , Three views of the right ankle.,FINDINGS: , Three views of the right ankle are obtained.  No fracture."
    )
    cases = [c for c in _cases(_doc(text, codes=ANKLE, family="ankle", code="73610")) if c.variant.startswith("text:")]
    assert cases
    for case in cases:
        assert case.injected.text == (
            "EXAM: , Two views of the right ankle.,FINDINGS: , Two views of the right ankle are obtained.  No fracture."
        )


def test_reports_it_cannot_use_are_left_alone() -> None:
    """No stated views, statements that disagree, a recommendation, a view named elsewhere, another anatomy."""
    for text in (
        "FINDINGS: The lungs are clear.",
        "FINDINGS: PA and lateral views of the chest. Three views of the chest were obtained.",
        "IMPRESSION: PA and lateral chest radiographs may be of benefit.",
        "FINDINGS: PA and lateral views of the chest were obtained. Lateral decubitus views show no effusion.",
        "FINDINGS: One AP view is expiratory and was repeated.",
        "FINDINGS: Two views of the right ankle were obtained.",
    ):
        assert _cases(_doc(text, code="71046"), seeds=5) == [], text
