"""compare() on small hand-written prelim/final pairs (our own texts, no corpus)."""

from __future__ import annotations

import json

import pytest

from listener.model import Report, ResultStatus
from listener.outcomes import Comparison, compare, load_outcome_rules, qa_findings
from tests.unit.qa.factory import RECEIVED, make_report, pipeline

RULES = load_outcome_rules()
NORMAL = (
    "FINDINGS: Heart size is normal. The lungs are clear. No pneumothorax. No pleural effusion.\n"
    "IMPRESSION: No acute cardiopulmonary abnormality."
)


def _pair(prelim: str, final: str) -> tuple[Report, Report]:
    return make_report(prelim, status=ResultStatus.PRELIMINARY), make_report(final)


def run(prelim: str, final: str, *, qa: bool = False) -> Comparison:
    p, f = _pair(prelim, final)
    config = pipeline().qa
    assert config is not None
    findings = qa_findings(p, f, config, RECEIVED) if qa else None
    return compare(p, f, terms=config.terms, rules=RULES, qa_findings=findings)


def kinds(c: Comparison) -> list[tuple[str, str]]:
    return [(d.kind, d.concept) for d in c.differences]


def test_identical_reports_concur() -> None:
    c = run(NORMAL, NORMAL)
    assert c.grade == "1"
    assert c.differences == ()


@pytest.mark.parametrize(
    "final",
    [
        NORMAL.replace("abnormality", "process"),
        NORMAL.replace("No acute cardiopulmonary abnormality.", "Normal chest radiograph."),
        NORMAL.replace("No acute cardiopulmonary abnormality.", "NO ACUTE CARDIOPULMONARY DISEASE"),
    ],
)
def test_equivalent_impression_wording_concurs(final: str) -> None:
    assert run(NORMAL, final).grade == "1"


def test_reordered_impression_is_not_a_difference() -> None:
    prelim = (
        "FINDINGS: Small left pleural effusion. Cardiomegaly.\nIMPRESSION: Cardiomegaly. Small left pleural effusion."
    )
    final = (
        "FINDINGS: Small left pleural effusion. Cardiomegaly.\nIMPRESSION: Small left pleural effusion. Cardiomegaly."
    )
    c = run(prelim, final)
    assert c.grade == "1"
    assert all(d.category == "operational" for d in c.differences)


def test_typo_fixed_is_wording_only() -> None:
    c = run(NORMAL.replace("Heart size", "Haert size"), NORMAL)
    assert c.grade == "1"
    assert kinds(c) == [("wording_changed", "")]
    d = c.differences[0]
    assert d.prelim[0].text == "Haert" and d.final[0].text == "Heart"


def test_critical_finding_added_is_3b_with_evidence_from_both() -> None:
    final = NORMAL.replace("No pneumothorax.", "Large right pneumothorax.").replace(
        "No acute cardiopulmonary abnormality.", "Large right pneumothorax."
    )
    p, f = _pair(NORMAL, final)
    config = pipeline().qa
    assert config is not None
    c = compare(p, f, terms=config.terms, rules=RULES)
    assert c.grade == "3b" and c.significant
    first = c.differences[0]
    assert (first.kind, first.concept, first.category) == ("critical_added", "pneumothorax", "interpretive")
    assert (first.from_state, first.to_state, first.rule) == ("negated", "affirmed", "critical_added")
    assert [e.text for e in first.prelim] == ["No pneumothorax."]
    assert [e.text for e in first.final] == ["Large right pneumothorax.", "Large right pneumothorax."]
    for e in first.final:
        assert f.text[e.start : e.end] == e.text
    for e in first.prelim:
        assert p.text[e.start : e.end] == e.text
    assert c.deciding == (first,)


def test_flipped_negation_of_a_significant_finding_is_2b() -> None:
    final = NORMAL.replace("No pleural effusion.", "Small left pleural effusion.")
    c = run(NORMAL, final)
    assert c.grade == "2b"
    d = c.interpretive[0]
    assert (d.kind, d.concept, d.from_state, d.to_state) == (
        "assertion_changed",
        "pleural_effusion",
        "negated",
        "affirmed",
    )


def test_critical_overcall_is_3b() -> None:
    prelim = "FINDINGS: Small right pneumothorax.\nIMPRESSION: Small right pneumothorax."
    final = "FINDINGS: No pneumothorax.\nIMPRESSION: No pneumothorax."
    c = run(prelim, final)
    assert c.grade == "3b"
    assert c.interpretive[0].rule == "critical_overcall"


def test_side_changed_is_2b() -> None:
    prelim = "FINDINGS: Right lower lobe consolidation.\nIMPRESSION: Right lower lobe pneumonia."
    c = run(prelim, prelim.replace("Right", "Left"))
    assert c.grade == "2b"
    assert {d.kind for d in c.interpretive} == {"side_changed"}
    assert c.interpretive[0].detail == "right -> left"


def test_hedging_only_is_2a() -> None:
    prelim = "FINDINGS: Possible small left pleural effusion.\nIMPRESSION: Possible small left pleural effusion."
    c = run(prelim, prelim.replace("Possible small", "Small"))
    assert c.grade == "2a"
    assert c.interpretive[0].detail == "hedged -> affirmed"


def test_laterality_typo_fixed_is_operational() -> None:
    prelim = "FINDINGS: Right lower lobe consolidation.\nIMPRESSION: Left lower lobe consolidation."
    final = "FINDINGS: Right lower lobe consolidation.\nIMPRESSION: Right lower lobe consolidation."
    c = run(prelim, final, qa=True)
    assert c.grade == "1"
    assert c.interpretive == ()
    assert ("laterality_corrected", "consolidation") in kinds(c)
    assert any(d.kind == "qa_fixed" and d.concept.startswith("laterality.") for d in c.differences)


def test_communication_statement_added_is_operational() -> None:
    prelim = "FINDINGS: Large right pneumothorax.\nIMPRESSION: Large right pneumothorax."
    final = prelim + " Discussed with Dr. Jones by telephone at 10:30."
    c = run(prelim, final)
    assert c.grade == "1"
    assert kinds(c) == [("communication_added", "communication")]
    assert c.differences[0].final[0].text.startswith("Discussed with")


def test_section_added_is_operational() -> None:
    prelim = "FINDINGS: Heart size is normal. The lungs are clear."
    final = prelim + "\nIMPRESSION: No acute cardiopulmonary abnormality."
    c = run(prelim, final)
    assert c.grade == "1"
    assert ("sections_changed", "impression") in kinds(c)


def test_negative_statement_dropped_is_operational() -> None:
    c = run(NORMAL, NORMAL.replace(" No pneumothorax.", ""))
    assert c.grade == "1"
    assert kinds(c) == [("statement_removed", "pneumothorax")]


def test_interpretive_differences_come_first_and_output_is_deterministic() -> None:
    prelim = "FINDINGS: Right lower lobe consolidation. No pleural effusion.\nIMPRESSION: Right lower lobe pneumonia."
    final = (
        "FINDINGS: Left lower lobe consolidation. Small left pleural effusion.\n"
        "IMPRESSION: Left lower lobe pneumonia. Small left pleural effusion. Discussed with Dr. Jones at 10:30."
    )
    first, second = run(prelim, final), run(prelim, final)
    assert first == second
    categories = [d.category for d in first.differences]
    assert categories == sorted(categories, key=lambda c: c != "interpretive")
    data = first.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["grade"] == "2b"
    assert data["interpretive"] == len(first.interpretive) and data["operational"] == len(first.operational)
    assert set(data["differences"][0]) == {
        "kind",
        "category",
        "concept",
        "severity",
        "from",
        "to",
        "detail",
        "grade",
        "rule",
        "prelim",
        "final",
    }


def test_side_of_paired_anatomy_counts_when_no_concept_carries_it() -> None:
    prelim = "FINDINGS: Old healed fracture of the right 8th rib.\nIMPRESSION: No acute cardiopulmonary abnormality."
    c = run(prelim, prelim.replace("right", "left"))
    assert c.grade == "2b"
    (d,) = c.interpretive
    assert d.kind == "side_changed" and d.detail == "right -> left"


def test_finding_dated_to_the_past_is_2a() -> None:
    prelim = "FINDINGS: Fracture of the right 8th rib.\nIMPRESSION: Right 8th rib fracture."
    final = "FINDINGS: Old healed fracture of the right 8th rib.\nIMPRESSION: Old healed right 8th rib fracture."
    c = run(prelim, final)
    assert c.grade == "2a"
    assert any(d.to_state == "historical" for d in c.interpretive)


def test_no_qa_findings_means_no_qa_differences() -> None:
    prelim = "FINDINGS: Right lower lobe consolidation.\nIMPRESSION: Left lower lobe consolidation."
    final = "FINDINGS: Right lower lobe consolidation.\nIMPRESSION: Right lower lobe consolidation."
    c = run(prelim, final)
    assert not any(d.kind.startswith("qa_") for d in c.differences)
    # The prelim's sections disagreed on the side and the final keeps one: still a typo fixed.
    assert ("laterality_corrected", "consolidation") in kinds(c)
    assert c.grade == "1"
