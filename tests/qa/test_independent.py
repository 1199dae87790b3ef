"""The independent injector's own sanity: valid labels, one defect per copy, a deterministic set.

These tests check the injector, never the rules: detection figures of the
independent set are reported by ``bench/qa.py`` and docs/qa-evaluation.md, not
asserted. They read ../shared/corpus, so they are in the corpus tier (deselected
with one summary line on a clone without it, see tests/conftest.py).
"""

from __future__ import annotations

import ast
import re
import string
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.qa import independent
from tests.qa.evaluate import load_docs
from tests.qa.independent import CATEGORIES, CHEST_VIEWS, INJECTIONS, INJECTORS, build_independent_cases, impression
from tests.qa.inject import Case, Doc

pytestmark = pytest.mark.corpus

PER_INJECTION = 60

#: Characters an injection may add besides letters and digits (template blanks only in placeholder_left).
PLAIN = set(string.ascii_letters + string.digits + " \n.,:;-/()'")
BLANK_CHARS = set("_*[]<>")


@pytest.fixture(name="docs", scope="module")
def fixture_docs() -> list[Doc]:
    """Clean corpus documents (read from ../shared/corpus now, never stored in the repo)."""
    return load_docs()


@pytest.fixture(name="cases", scope="module")
def fixture_cases(docs: list[Doc]) -> list[Case]:
    """The independent labeled subset."""
    return build_independent_cases(docs, per_injection=PER_INJECTION)


def split(a: str, b: str) -> tuple[int, str, str]:
    """(common prefix length, the base's changed middle, the copy's changed middle)."""
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    return prefix, a[prefix : len(a) - suffix], b[prefix : len(b) - suffix]


def word_changes(a: str, b: str) -> list[tuple[str, str]]:
    """Pairs of differing words when both texts have the same word layout."""
    wa, wb = re.split(r"(\W+)", a), re.split(r"(\W+)", b)
    assert len(wa) == len(wb)
    return [(x, y) for x, y in zip(wa, wb, strict=True) if x != y]


def of(cases: list[Case], injection: str) -> list[Case]:
    made = [c for c in cases if c.injection == injection]
    assert made, injection
    return made


def test_every_injection_is_labeled_with_a_valid_category(cases: list[Case]) -> None:
    """Each injection has a builder and a category of issue 4's rule families; every case carries its own."""
    assert set(INJECTIONS) == set(INJECTORS)
    assert set(INJECTIONS.values()) <= CATEGORIES
    assert {c.injection for c in cases} == set(INJECTIONS)
    for case in cases:
        assert case.category == INJECTIONS[case.injection], case.id
        assert case.id == f"ind:{case.injection}:{case.base.id}"


def test_the_categories_of_both_issues_are_covered() -> None:
    """Issue 4's and issue 14's defect families each have at least one injection."""
    covered = set(INJECTIONS.values())
    assert {
        "laterality",
        "contradiction",
        "completeness",
        "communication",
        "comparison",
        "coding",
        "consistency",
        "alignment",
    } <= covered


def test_only_the_defect_field_changes(cases: list[Case]) -> None:
    """A copy differs from its base in the text, or only in sex, code or order text where that is the defect."""
    for case in cases:
        base, injected = case.base, case.injected
        assert (base.id, base.source, base.modality, base.body_region, base.contrast, base.exam_at) == (
            injected.id,
            injected.source,
            injected.modality,
            injected.body_region,
            injected.contrast,
            injected.exam_at,
        ), case.id
        changed = {
            name
            for name in ("text", "sex", "procedure_code", "procedure_text")
            if getattr(base, name) != getattr(injected, name)
        }
        if case.injection == "sex_organ_mismatch" and case.variant.startswith("sex:"):
            expected = {"sex"}
        elif case.injection == "region_code_mismatch" or case.variant.startswith("code:"):
            expected = {"procedure_code"}
        elif case.injection == "order_side_swap":
            expected = {"procedure_text"}
        else:
            expected = {"text"}
        assert changed == expected, (case.id, changed)


def test_copies_add_no_marker(cases: list[Case]) -> None:
    """Added text is plain words and punctuation; template blanks appear only where they are the defect."""
    for case in cases:
        _, removed, added = split(case.base.text, case.injected.text)
        allowed = PLAIN | BLANK_CHARS if case.injection == "placeholder_left" else PLAIN
        new_chars = set(added) - set(removed)  # (a multi-edit span keeps base text between its edits)
        assert new_chars <= allowed, (case.id, new_chars - allowed)
        assert "XXXX" not in added or "XXXX" in case.base.text


def test_side_swaps_change_one_side_word(cases: list[Case]) -> None:
    """The side swap turns exactly one left/right word to the other side (the located swap too)."""
    swaps = of(cases, "impression_side_swap") + [c for c in of(cases, "located_side_added") if c.variant == "swap"]
    for case in swaps:
        changes = word_changes(case.base.text, case.injected.text)
        assert len(changes) == 1, case.id
        assert {changes[0][0].lower(), changes[0][1].lower()} == {"left", "right"}, case.id


def test_located_side_is_added_to_the_impression(cases: list[Case]) -> None:
    """The added location names the side the findings do not, inside the impression."""
    for case in (c for c in of(cases, "located_side_added") if c.variant != "swap"):
        at, removed, added = split(case.base.text, case.injected.text)
        section = impression(case.base.text)
        assert section is not None and section.body <= at <= section.end, case.id
        assert len(removed) <= 1, case.id  # at most the capital the sentence started with
        assert re.search(r"\b(left|right)\b", added, re.I), case.id


def test_order_side_swap_changes_only_the_side(cases: list[Case]) -> None:
    """The order's procedure text keeps its words but one side."""
    for case in of(cases, "order_side_swap"):
        changes = word_changes(case.base.procedure_text, case.injected.procedure_text)
        assert [{a.lower(), b.lower()} for a, b in changes] == [{"left", "right"}], case.id


def test_dropped_negation_removes_a_denial(cases: list[Case]) -> None:
    """The base denies the finding where the copy now states it; the finding was denied elsewhere too."""
    for case in of(cases, "negation_dropped"):
        _, removed, added = split(case.base.text, case.injected.text)
        assert re.search(r"\bno\b", removed, re.I) or removed.lower().startswith("o "), case.id
        assert not re.search(r"\b(no|not|without)\b", added, re.I), case.id
        term = case.variant.partition(":")[2]
        denials = re.findall(rf"\b(?:no|without)\b[^.;]*\b{term}", case.base.text, re.I)
        assert len(denials) >= 2, case.id


@pytest.mark.parametrize(
    "injection", ["impression_denies_affirmed", "plural_denied", "impression_only_finding", "communication_missing"]
)
def test_added_sentences_go_into_the_impression(cases: list[Case], injection: str) -> None:
    """Sentences are only added (nothing of the base removed), inside the impression (or the findings)."""
    for case in of(cases, injection):
        # communication_missing adds the statement to the base: the copy is the shorter text.
        longer, shorter = (
            (case.base.text, case.injected.text)
            if injection == "communication_missing" and case.variant.startswith("none:")
            else (case.injected.text, case.base.text)
        )
        if injection == "communication_missing" and case.variant.startswith("incomplete:"):
            at, old, new = split(case.base.text, case.injected.text)
            assert re.search(r"\d{2}:\d{2}", old), case.id  # the complete statement says when
            assert not re.search(r"\d{2}:\d{2}", new), case.id  # the incomplete one does not
            continue
        at, removed, added = split(shorter, longer)
        assert removed == "", case.id
        assert re.search(r"[A-Za-z]{3}", added), case.id
        section = impression(shorter)
        if section is not None and injection != "communication_missing":
            assert section.body <= at, case.id


def test_denials_deny_the_labeled_finding(cases: list[Case]) -> None:
    """The added denial names the finding the variant says the impression affirms (or the findings list as plural)."""
    for case in of(cases, "impression_denies_affirmed") + of(cases, "plural_denied"):
        term = case.variant.partition(":")[2]
        _, _, added = split(case.base.text, case.injected.text)
        stem = term.lower()[:-1] if term.endswith("y") else term.lower()  # opacity / opacities
        assert stem in added.lower(), case.id
        assert re.search(r"\b(no|not|negative)\b", added, re.I), case.id


@pytest.mark.parametrize("injection", ["normal_impression", "impression_hedged"])
def test_impression_rewrites_stay_in_the_impression(cases: list[Case], injection: str) -> None:
    """Everything before the impression's body and after its end is untouched."""
    for case in of(cases, injection):
        section = impression(case.base.text)
        assert section is not None
        at, removed, _ = split(case.base.text, case.injected.text)
        assert at >= section.body, case.id
        assert at + len(removed) <= section.end, case.id


def test_impression_removal_removes_only_the_impression(cases: list[Case]) -> None:
    """Deleted: the heading and its text go; empty: the heading stays and its text goes."""
    for case in of(cases, "impression_removed"):
        _, removed, added = split(case.base.text, case.injected.text)
        assert added.strip() == "", case.id
        if case.variant == "deleted":
            assert re.search(r"IMPRESSION|CONCLUSION|OPINION", removed), case.id
        else:
            assert impression(case.injected.text) is None, case.id  # no impression with text left
            assert re.search(r"(IMPRESSIONS?|CONCLUSIONS?|OPINION):", case.injected.text), case.id  # the heading stays


def test_placeholders_replace_one_value(cases: list[Case]) -> None:
    """One measurement or comparison is replaced by one template blank."""
    for case in of(cases, "placeholder_left"):
        _, removed, added = split(case.base.text, case.injected.text)
        blank = case.variant.partition(":")[2]
        assert blank in added and len(added) <= len(blank) + 2, case.id
        assert len(removed) <= 120, case.id


def test_cut_dictations_are_prefixes_ending_mid_sentence(cases: list[Case]) -> None:
    """The copy is the base cut inside its last sentence, after a word no sentence ends with."""
    for case in of(cases, "dictation_cut"):
        base, cut = case.base.text.rstrip(), case.injected.text
        assert base.startswith(cut) and len(cut) < len(base), case.id
        assert cut[-1].isalpha(), case.id
        rest = re.sub(r"\d\.\d", "", base[len(cut) : -1])
        assert "." not in rest.replace("..", ""), case.id  # only the last sentence was cut
        assert cut.split()[-1].lower() == case.variant.partition(":")[2], case.id


def test_birads_removal_removes_only_the_category(cases: list[Case]) -> None:
    """Every BI-RADS statement goes; nothing is added."""
    for case in of(cases, "birads_dropped"):
        assert re.search(r"BI-?RADS", case.base.text, re.I)
        assert not re.search(r"BI-?RADS", case.injected.text, re.I), case.id
        assert len(case.injected.text) < len(case.base.text)


def _dates(text: str) -> list[datetime]:
    found = []
    for pattern, form in (
        (r"\d{2}/\d{2}/\d{4}", "%m/%d/%Y"),
        (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"),
        (r"[A-Z][a-z]+ \d{1,2}, \d{4}", "%B %d, %Y"),
    ):
        found += [datetime.strptime(m, form) for m in re.findall(pattern, text)]
    return found


def test_comparison_dates_move_from_before_to_after_the_exam(cases: list[Case]) -> None:
    """The prepared base cites a prior before the exam; the copy cites it after; only that line differs."""
    for case in of(cases, "comparison_after_exam"):
        assert case.prepared, case.id
        exam = case.base.exam_at.replace(tzinfo=None)
        _, old, new = split(case.base.text, case.injected.text)
        line_base = [ln for ln in case.base.text.splitlines() if "COMPARISON" in ln] or [case.base.text]
        line_copy = [ln for ln in case.injected.text.splitlines() if "COMPARISON" in ln] or [case.injected.text]
        before, after = _dates(line_base[0]), _dates(line_copy[0])
        assert before and after, case.id
        assert max(before) < exam < min(after), case.id
        assert "\n" not in old and "\n" not in new, case.id


def test_comparison_removal_deletes_the_section(cases: list[Case]) -> None:
    """The copy is the base without its comparison section."""
    for case in of(cases, "comparison_removed"):
        _, removed, added = split(case.base.text, case.injected.text)
        assert added.strip(" ,") == "", case.id
        assert "COMPARISON" in removed, case.id
        assert "COMPARISON" not in case.injected.text, case.id


def test_contrast_rewrites_touch_only_contrast_words(cases: list[Case]) -> None:
    """A code swap picks the family's code for another contrast; a text swap changes only contrast phrases."""
    for case in of(cases, "contrast_mismatch"):
        if case.variant.startswith("code:"):
            codes = dict(case.base.contrast_codes)
            assert case.injected.procedure_code in codes.values(), case.id
            assert codes.get(case.base.contrast) != case.injected.procedure_code, case.id
            continue
        at, removed, added = split(case.base.text, case.injected.text)
        around_base = case.base.text[max(0, at - 30) : at + len(removed) + 40]
        around_copy = case.injected.text[max(0, at - 30) : at + len(added) + 40]
        assert re.search(r"contrast", around_base, re.I) and re.search(r"contrast", around_copy, re.I), case.id
        assert case.injected.procedure_code == case.base.procedure_code


def test_view_counts_disagree_with_the_code(cases: list[Case]) -> None:
    """The base's technique line matches its chest code's view count; the copy's code or line does not."""
    counts = {"Single": 1, "Portable": 1, "One": 1, "PA and": 2, "Frontal": 2, "Two": 2, "Three": 3, "PA,": 3}
    for case in of(cases, "view_count_mismatch"):
        assert case.prepared, case.id
        stated, _, billed = case.variant.partition(":")[2].partition("->")
        assert CHEST_VIEWS[case.base.procedure_code] == int(stated), case.id
        if case.variant.startswith("code:"):
            assert CHEST_VIEWS[case.injected.procedure_code] == int(billed), case.id
        else:
            technique = re.search(r"TECHNIQUE: (.*?views? of the chest[^.]*\.|[^.]*\.)", case.injected.text)
            assert technique is not None, case.id
            line = technique.group(1)
            if "bilateral oblique" in line or line.startswith("Four"):
                assert int(billed) == 4, case.id
            else:
                guess = next(n for key, n in counts.items() if line.startswith(key))
                assert guess == int(billed), case.id
        assert int(stated) != int(billed), case.id


def test_region_codes_belong_to_another_region_or_modality(cases: list[Case]) -> None:
    """The billed code is one of the table's codes for another region of the modality, or another modality."""
    by_code = {code: key for key, code in independent.REGION_CODES.items()}
    for case in of(cases, "region_code_mismatch"):
        modality, region = by_code[case.injected.procedure_code]
        assert (modality, region) != (case.base.modality, case.base.body_region), case.id
        assert modality == case.base.modality or region == case.base.body_region, case.id


def test_sex_organ_cases_mismatch(cases: list[Case]) -> None:
    """Flipped: the report names the other sex's organs; inserted: a template sentence about them is added."""
    female = re.compile(r"\b(uter|ovar|endometri|adnexa|cervix)", re.I)
    male = re.compile(r"\b(prostat|testic|testis|testes|scrot|seminal|epididym)", re.I)
    for case in of(cases, "sex_organ_mismatch"):
        sex = case.injected.sex
        organs = female if sex == "M" else male
        assert organs.search(case.injected.text), case.id
        if case.variant.startswith("organ:"):
            _, removed, added = split(case.base.text, case.injected.text)
            assert removed == "" and organs.search(added), case.id


def test_left_out_findings_leave_the_findings_alone(cases: list[Case]) -> None:
    """Only impression text is removed (with its item number); the findings still state the finding."""
    for case in of(cases, "finding_left_out"):
        section = impression(case.base.text)
        assert section is not None
        at, removed, _ = split(case.base.text, case.injected.text)
        assert at >= section.start, case.id
        term = case.variant.partition(":")[2]
        assert term.split()[-1].rstrip("s") in removed.lower(), case.id
        assert term.split()[-1].rstrip("s") in case.injected.text[: section.start].lower(), case.id


def test_variants_are_varied(cases: list[Case]) -> None:
    """Injections with several phrasings use more than one of them in the set."""
    for injection in (
        "negation_dropped",
        "impression_denies_affirmed",
        "plural_denied",
        "normal_impression",
        "impression_removed",
        "placeholder_left",
        "communication_missing",
        "impression_hedged",
        "comparison_after_exam",
        "contrast_mismatch",
        "view_count_mismatch",
    ):
        forms = Counter(c.variant.partition(":")[0] for c in of(cases, injection))
        assert len(forms) >= 2, (injection, forms)


def test_the_set_is_deterministic(docs: list[Doc]) -> None:
    """The same docs and seed give the same cases; another seed gives another selection."""
    first = build_independent_cases(docs[:900] + docs[-273:], per_injection=8)
    second = build_independent_cases(docs[:900] + docs[-273:], per_injection=8)
    other = build_independent_cases(docs[:900] + docs[-273:], per_injection=8, seed=1)

    def key(cases: list[Case]) -> list[tuple[str, str, str, str, str]]:
        return [(c.id, c.variant, c.injected.text, c.injected.sex, c.injected.procedure_code) for c in cases]

    assert key(first) == key(second)
    assert key(first) != key(other)


def test_independent_injector_does_not_know_the_rules() -> None:
    """independent.py imports nothing from listener, and of tests only inject.py's records and loader."""
    tree = ast.parse(Path(independent.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not any(name == "listener" or name.startswith("listener.") for name in imported)
    assert {name for name in imported if name.startswith("tests")} == {"tests.qa.inject"}
