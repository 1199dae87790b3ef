"""The QA evaluation on a moderate subset: harness invariants and floors that must not slide.

The full run is ``bench/qa.py`` (up to 300 cases per injection, every clean
report). Here: 40 cases per injection and 600 clean reports (a seeded sample),
well under a minute. Floors are what the rules achieved on this subset when
the harness landed, minus a margin; a category without any enabled rule is
skipped (its rules have not landed), not failed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.qa import inject
from tests.qa.evaluate import Evaluation, categories_with_rules, evaluate, load_docs
from tests.qa.inject import INJECTIONS, SEED, Case, Doc, build_cases
from tests.unit.qa.factory import pipeline

PER_INJECTION = 40
CLEAN = 600

pytestmark = pytest.mark.corpus

#: Detection floors per category on this subset (measured when the harness landed, minus a margin).
FLOORS = {
    "coding": 0.85,
    "communication": 0.75,
    "comparison": 0.90,
    "completeness": 0.93,
    "consistency": 0.75,
    "contradiction": 0.40,
    "laterality": 0.40,
}
OVERALL_FLOOR = 0.75
CLEAN_ERROR_CEILING = 0.03  # issue target: <= 3% of clean reports with an error
CLEAN_ANY_CEILING = 0.10  # issue target: <= 10% with any warning


@pytest.fixture(name="docs", scope="module")
def fixture_docs() -> list[Doc]:
    """Clean corpus documents (read from ../shared/corpus now, never stored in the repo)."""
    return load_docs()


@pytest.fixture(name="cases", scope="module")
def fixture_cases(docs: list[Doc]) -> list[Case]:
    """The labeled subset the evaluation runs on."""
    return build_cases(docs, per_injection=PER_INJECTION, seed=SEED)


@pytest.fixture(name="evaluation", scope="module")
def fixture_evaluation(docs: list[Doc]) -> Evaluation:
    """One evaluation run shared by the figure tests."""
    return evaluate(docs, per_injection=PER_INJECTION, clean_limit=CLEAN, seed=SEED)


def test_corpus_read_at_test_time(docs: list[Doc]) -> None:
    """Both corpora load: Indiana chest X-rays and MTSamples radiology, thousands of clean reports."""
    sources = {d.source for d in docs}
    assert sources == {"indiana", "mtsamples"}
    assert len(docs) > 4000


def test_labels_cover_every_injection(cases: list[Case]) -> None:
    """Every injection kind produced cases, each labeled with its category."""
    made = {c.injection for c in cases}
    assert made == set(INJECTIONS)
    for case in cases:
        assert case.category == INJECTIONS[case.injection]


def test_every_injection_changes_the_report(cases: list[Case]) -> None:
    """No injected copy equals its base: the text changed, or (wrong_sex_organ) the patient's sex, or (contrast, code form) the code."""
    for case in cases:
        if case.injection == "wrong_sex_organ":
            assert case.injected.text == case.base.text and case.injected.sex != case.base.sex, case.id
        elif case.injection in ("contrast_changed", "view_count_changed") and case.variant.startswith("code:"):
            assert case.injected.text == case.base.text and case.injected.procedure_code != case.base.procedure_code, (
                case.id
            )
        else:
            assert case.injected.text != case.base.text, case.id
            assert case.injected.sex == case.base.sex, case.id


def test_laterality_swap_changes_one_side_word(cases: list[Case]) -> None:
    """The laterality injection swaps exactly one left/right word and touches nothing else."""
    for case in (c for c in cases if c.injection == "laterality_swap"):
        base, injected = case.base.text, case.injected.text
        words_base = re.split(r"(\W+)", base)
        words_injected = re.split(r"(\W+)", injected)
        assert len(words_base) == len(words_injected), case.id
        changed = [(a, b) for a, b in zip(words_base, words_injected, strict=True) if a != b]
        assert len(changed) == 1, case.id
        assert {changed[0][0].lower(), changed[0][1].lower()} == {"left", "right"}, case.id


def test_injections_leave_the_rest_of_the_report_alone(cases: list[Case]) -> None:
    """Outside the edited span the injected copy equals its base (common prefix + suffix cover most of it)."""
    for case in cases:
        a, b = case.base.text, case.injected.text
        prefix = 0
        while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
            prefix += 1
        suffix = 0
        while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
            suffix += 1
        if case.injection in (
            "impression_deleted",
            "communication_removed",
            "birads_removed",
            "contrast_changed",
            "view_count_changed",
        ):
            continue  # these remove a section or rewrite several mentions on purpose
        changed = max(len(a), len(b)) - prefix - suffix
        assert changed <= 120, (case.id, changed)


def test_view_count_cases_bill_their_family(cases: list[Case]) -> None:
    """A view-count case's base bills a code of its view family; the code form bills another code of the
    same family, the text form keeps the base's code."""
    view_cases = [c for c in cases if c.injection == "view_count_changed"]
    assert view_cases
    for case in view_cases:
        family = {code for code, _, _ in case.base.view_codes}
        assert case.base.procedure_code in family, case.id
        if case.variant.startswith("code:"):
            assert case.injected.procedure_code in family - {case.base.procedure_code}, case.id
        else:
            assert case.injected.procedure_code == case.base.procedure_code, case.id


def test_sampling_is_deterministic(docs: list[Doc]) -> None:
    """The same seed gives the same labeled set (ids and texts)."""
    first = build_cases(docs[:800], per_injection=10, seed=SEED)
    second = build_cases(docs[:800], per_injection=10, seed=SEED)
    assert [(c.id, c.injected.text, c.injected.sex) for c in first] == [
        (c.id, c.injected.text, c.injected.sex) for c in second
    ]


def test_injector_does_not_know_the_rules() -> None:
    """inject.py imports nothing from listener: it cannot look at the rules, their vocabularies or their text engine."""
    tree = ast.parse(Path(inject.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not any(name == "listener" or name.startswith(("listener.", "tests.")) for name in imported)


def test_clean_baseline_is_measured(evaluation: Evaluation) -> None:
    """The clean baseline ran on every sampled report, and its rates are proper fractions."""
    assert evaluation.clean_n == CLEAN
    assert 0.0 <= evaluation.clean_error_rate <= evaluation.clean_any_rate <= 1.0
    assert len(evaluation.ms) >= CLEAN
    assert evaluation.unchanged == 0


def test_clean_reports_rarely_get_findings(evaluation: Evaluation) -> None:
    """Clean real reports stay under the issue's ceilings: <= 3% with an error, <= 10% with any warning."""
    assert evaluation.clean_error_rate <= CLEAN_ERROR_CEILING, evaluation.clean_rules.most_common(5)
    assert evaluation.clean_any_rate <= CLEAN_ANY_CEILING, evaluation.clean_rules.most_common(5)


@pytest.mark.parametrize("category", sorted(FLOORS))
def test_detection_floor_per_category(evaluation: Evaluation, category: str) -> None:
    """Each category whose rules exist detects at least its floor of injected defects."""
    qa = pipeline().qa
    assert qa is not None
    if category not in categories_with_rules(qa):
        pytest.skip(f"rules for {category} not landed")
    result = evaluation.categories[category]
    assert result.n > 0
    assert result.rate >= FLOORS[category], f"{category}: {result.detected}/{result.n}"


def test_detection_floor_overall(evaluation: Evaluation) -> None:
    """Over the categories whose rules exist, overall detection stays at or above its floor."""
    qa = pipeline().qa
    assert qa is not None
    present = categories_with_rules(qa)
    results = [r for c, r in evaluation.categories.items() if c in present]
    if not results:
        pytest.skip("no QA rules registered")
    n = sum(r.n for r in results)
    detected = sum(r.detected for r in results)
    assert detected / n >= OVERALL_FLOOR, f"{detected}/{n}"
