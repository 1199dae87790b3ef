"""Loading policies/terms: frozen compiled values, and errors that name file:line."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from listener.assemble import DEFAULT_TERMS_DIR, load_terms
from listener.errors import ConfigError
from listener.text.scanner import build_scanner
from listener.text.terms import Terms

LATERALITY = """\
kind: laterality
sides:
  left: ['left']
  right: ['right']
  bilateral: ['bilateral']
paired_anatomy:
  knee: ['knees?']
"""
CONCEPTS = """\
kind: concepts
concepts:
  pneumothorax:
    synonyms: ['pneumothorax']
    critical: true
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        (folder / name).write_text(body, encoding="utf-8")
    return folder


def error_for(tmp_path: Path, extra: dict[str, str]) -> ConfigError:
    write(tmp_path, {"laterality.yaml": LATERALITY, "concepts.yaml": CONCEPTS, **extra})
    with pytest.raises(ConfigError) as info:
        load_terms(tmp_path)
    return info.value


def test_shipped_vocabularies_load(terms: Terms) -> None:
    """policies/terms compiles, with critical, significant and sex-specific concepts."""
    assert terms.concept("pneumothorax").critical
    assert terms.concept("tension_pneumothorax").broader == "pneumothorax"
    assert terms.concept("lung_nodule").significant and not terms.concept("lung_nodule").critical
    assert terms.concept("prostate").sex == "male" and terms.concept("uterus").sex == "female"
    assert {t.category for t in terms.modifier_groups.values()} >= {
        "negated",
        "uncertain",
        "historical",
        "hypothetical",
        "other_experiencer",
        "pseudo",
        "terminate",
    }
    assert len(terms.digest) == 64 and all(s.endswith(".yaml") for s in terms.sources)


def test_terms_are_frozen(terms: Terms) -> None:
    """Compiled terms are immutable values."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        terms.digest = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        terms.concepts["x"] = terms.concept("pneumothorax")  # type: ignore[index]


def test_minimal_directory_loads(tmp_path: Path) -> None:
    """One concept file and one laterality file are enough."""
    terms = load_terms(write(tmp_path, {"a.yaml": CONCEPTS, "b.yaml": LATERALITY}))
    assert list(terms.concepts) == ["pneumothorax"]


def test_invalid_regex_names_file_and_line(tmp_path: Path) -> None:
    """A broken pattern is reported at its own line."""
    err = error_for(
        tmp_path, {"neg.yaml": "kind: modifiers\ncategory: negated\ntriggers:\n  - 'no'\n  - '(unclosed'\n"}
    )
    assert err.path.endswith("neg.yaml") and err.line == 5
    assert "invalid regular expression" in str(err) and "neg.yaml:5" in str(err)


def test_unknown_category_names_file_and_line(tmp_path: Path) -> None:
    """A typo in category is refused, with its line."""
    err = error_for(tmp_path, {"neg.yaml": "kind: modifiers\ncategory: negatd\ntriggers: ['no']\n"})
    assert err.path.endswith("neg.yaml") and err.line == 2


def test_unknown_key_in_a_concept(tmp_path: Path) -> None:
    """A misspelt flag ('critcal') is not silently ignored."""
    body = "kind: concepts\nconcepts:\n  mass:\n    synonyms: ['mass']\n    critcal: true\n"
    err = error_for(tmp_path, {"more.yaml": body})
    assert err.path.endswith("more.yaml") and err.line == 5 and "critcal" in str(err)


def test_duplicate_concept_across_files(tmp_path: Path) -> None:
    """The same concept in two files is an error pointing at the second."""
    err = error_for(tmp_path, {"z.yaml": "kind: concepts\nconcepts:\n  pneumothorax:\n    synonyms: ['ptx']\n"})
    assert err.path.endswith("z.yaml") and err.line == 3 and "already defined" in str(err)


def test_bad_sex_and_direction_values(tmp_path: Path) -> None:
    """Enumerated values are checked."""
    err = error_for(
        tmp_path, {"s.yaml": "kind: concepts\nconcepts:\n  uterus:\n    synonyms: ['uterus']\n    sex: f\n"}
    )
    assert err.line == 5
    bad = "kind: modifiers\ncategory: negated\ntriggers:\n  - {pattern: 'no', direction: sideways}\n"
    second = tmp_path / "second"
    second.mkdir()
    err = error_for(second, {"d.yaml": bad})
    assert err.path.endswith("d.yaml") and err.line == 4


def test_named_groups_and_empty_patterns_are_refused(tmp_path: Path) -> None:
    """Named groups are the compiler's; a pattern matching '' would match everywhere."""
    err = error_for(tmp_path, {"n.yaml": "kind: modifiers\ncategory: negated\ntriggers: ['(?P<x>no)']\n"})
    assert "named groups" in str(err) and err.line == 3
    err = error_for(tmp_path, {"n.yaml": "kind: modifiers\ncategory: negated\ntriggers:\n  - 'x?'\n"})
    assert "empty string" in str(err) and err.line == 4


def test_invalid_yaml_and_missing_kind(tmp_path: Path) -> None:
    """YAML syntax errors and a missing kind name the file."""
    err = error_for(tmp_path, {"y.yaml": "kind: concepts\nconcepts: [\n"})
    assert err.path.endswith("y.yaml") and err.line is not None
    err = error_for(tmp_path, {"y.yaml": "triggers: ['no']\n"})
    assert err.path.endswith("y.yaml") and "kind" in str(err)


def test_missing_laterality_or_directory(tmp_path: Path) -> None:
    """Both a laterality file and at least one concept are required."""
    write(tmp_path, {"c.yaml": CONCEPTS})
    with pytest.raises(ConfigError, match="laterality"):
        load_terms(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_terms(tmp_path / "nope")


def test_unknown_broader_concept(tmp_path: Path) -> None:
    """'broader' must name a defined concept; the error points at the concept."""
    body = "kind: concepts\nconcepts:\n  tension:\n    synonyms: ['tension']\n    broader: ptx\n"
    err = error_for(tmp_path, {"t.yaml": body})
    assert err.path.endswith("t.yaml") and err.line == 3


def test_spaces_match_any_whitespace(tmp_path: Path) -> None:
    """'pleural effusion' in YAML matches across a line break; 'can ?not' keeps its optional space."""
    from listener.text.context import find_mentions

    shutil.copytree(DEFAULT_TERMS_DIR, tmp_path / "terms")
    terms = load_terms(tmp_path / "terms")
    (m,) = find_mentions("Small pleural\n  effusion.", 0, None, terms)
    assert m.text == "pleural\n  effusion"
    (m,) = find_mentions("Pneumonia can not be excluded.", 0, None, terms)
    assert m.uncertain


def _token_finditer(rx: re.Pattern[str], text: str) -> list[tuple[int, int, str | None]]:
    """Leftmost non-overlapping matches of ``rx`` tried at every token start (the Scanner's contract)."""
    out: list[tuple[int, int, str | None]] = []
    floor = 0
    for tok in re.finditer(r"\w+|[^\w\s]", text):
        if tok.start() < floor:
            continue
        m = rx.match(text, tok.start())
        if m is not None:
            out.append((m.start(), m.end(), m.lastgroup))
            floor = m.end()
    return out


def test_scanner_finds_what_the_whole_alternation_finds(terms: Terms) -> None:
    """The prefix-dispatched Scanner gives the same matches as one big alternation of every concept and trigger."""
    text = (
        "FINDINGS: No pneumothorax. Bibasilar atelectasis; small effusion in the knee joint?\n"
        "Pulmonary edema is not excluded, r/o PE vs. pneumonia. No evidence of consolidation. "
        "Heart size within normal limits, s/p CABG. NOT SEEN: fracture. Negative. Hydropneumothorax: none."
    )
    trigger_groups = [(g, (terms.modifier_patterns[g],)) for g in terms.modifier_groups]
    concept_groups = [(f"k{i}", (p,)) for i, p in enumerate(p for ps in terms.concept_patterns.values() for p in ps)]
    for groups in (trigger_groups, concept_groups):
        whole = re.compile(
            r"(?:(?<!\w)|(?!\w))(?:"
            + "|".join(f"(?P<{g}>{'|'.join(ps)})" for g, ps in groups)
            + r")(?:(?!\w)|(?<!\w))",
            re.IGNORECASE,
        )
        got = [(m.start(), m.end(), m.lastgroup) for m in build_scanner(groups).scan(text)]
        assert got == _token_finditer(whole, text)
        assert got


def test_in_context_must_name_a_defined_concept(tmp_path: Path) -> None:
    """'in_context.concept' must name a defined concept; the error points at the concept."""
    body = (
        "kind: concepts\nconcepts:\n  edema:\n    synonyms: ['edema']\n"
        "    in_context:\n      concept: lung_edema\n      report: ['lungs?']\n"
    )
    err = error_for(tmp_path, {"e.yaml": body})
    assert err.path.endswith("e.yaml") and err.line == 3 and "lung_edema" in str(err)


def test_in_context_needs_report_patterns_and_known_keys(tmp_path: Path) -> None:
    """An empty 'report' list or an unknown key under in_context is refused with file and line."""
    base = (
        "kind: concepts\nconcepts:\n  edema:\n    synonyms: ['edema']\n    in_context:\n      concept: pneumothorax\n"
    )
    err = error_for(tmp_path, {"e.yaml": base + "      report: []\n"})
    assert err.path.endswith("e.yaml") and "report" in str(err)
    err = error_for(tmp_path, {"e.yaml": base + "      report: ['lungs?']\n      sentence: ['x']\n"})
    assert err.path.endswith("e.yaml") and "sentence" in str(err)
