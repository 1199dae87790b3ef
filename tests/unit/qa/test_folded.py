"""engine.Folded gives exactly the matches of its case-insensitive pattern.

The QA rules run their case-insensitive patterns through ``Folded`` (a
case-sensitive search over the lower-cased text, then the original pattern
anchored where it found one). These tests hold every folded pattern of every
rule module to the original on generated ASCII and non-ASCII texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import listener.qa.alignment
import listener.qa.coding
import listener.qa.communication
import listener.qa.comparison
import listener.qa.completeness
import listener.qa.consistency
import listener.qa.contradiction
import listener.qa.engine
import listener.qa.laterality
from listener.qa.engine import Folded

_MODULES = (
    listener.qa.alignment,
    listener.qa.coding,
    listener.qa.communication,
    listener.qa.comparison,
    listener.qa.completeness,
    listener.qa.consistency,
    listener.qa.contradiction,
    listener.qa.laterality,
)


def _folded_in(value: object, depth: int = 0) -> Iterator[Folded]:
    if isinstance(value, Folded):
        yield value
    elif depth < 3 and isinstance(value, (tuple, list, frozenset, set)):
        for item in value:
            yield from _folded_in(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _folded_in(item, depth + 1)


def _all_folded() -> list[Folded]:
    found: dict[int, Folded] = {}
    for module in _MODULES:
        for value in vars(module).values():
            for f in _folded_in(value):
                found[id(f)] = f
    return list(found.values())


FOLDED = _all_folded()

# Words the rule patterns look for, in mixed case, between punctuation and digits.
_WORDS = st.sampled_from(
    "No NO no Pneumothorax PNEUMOTHORAX right LEFT Left contrast WITHOUT With IV "
    "gadolinium Impression: FINDINGS: Comparison None. Dr. Smith called at 10:15 "
    "by telephone discussed BI-RADS 4 birads category *** [ ] XXX __ <date> CT MRI US "
    "ultrasound mammogram 2020-01-02 03/04/2021 year-old prostate uterus ovary "
    "pregnant fracture, 76140 outside study limited 52 26 may represent cannot be excluded".split()
)
_PUNCT = st.sampled_from([" ", "  ", ", ", ". ", "\n", ": ", "-", "/", "(", ")", "é", "ß", "İ", "ﬁ"])
_TEXTS = st.lists(st.one_of(_WORDS, _PUNCT, st.text(alphabet="aAzZ09 .,:-\n", max_size=6)), max_size=40).map("".join)


def test_every_rule_module_folds_some_patterns() -> None:
    """The collection below is not empty (guards the property test against testing nothing)."""
    assert len(FOLDED) >= 30


def test_folded_search_checks_the_leading_word_boundary_itself() -> None:
    """A ``\\b``-led pattern is searched without its boundary, then the boundary is checked: matches
    inside a word are passed over, the search goes on to the next one."""
    f = Folded(re.compile(r"\bopacit(y|ies)\b", re.IGNORECASE))
    text = "Nonopacity, then OPACITIES and opacity"
    m = f.search(text)
    assert m is not None and m.span() == (17, 26) and m.group(1) == "IES"
    assert f.search(text, 0, 13) is None
    assert f.search("xopacity") is None


def test_folded_without_re_internals_keeps_the_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``re``'s internal parser is missing (not CPython 3.11), patterns keep their ``\\b``:
    the same matches, found the slower way."""
    import listener.qa.engine as engine

    assert engine._unbounded_body(r"\bopacit(y|ies)\b", 0) is not None
    monkeypatch.setattr(engine, "re_parser", None)
    assert engine._unbounded_body(r"\bopacit(y|ies)\b", 0) is None
    f = Folded(re.compile(r"\bopacit(y|ies)\b", re.IGNORECASE))
    m = f.search("Nonopacity, then OPACITIES and opacity")
    assert m is not None and m.span() == (17, 26)
    assert f.search("xopacity") is None


def test_folded_finds_the_boundary_through_the_character_before() -> None:
    """A body whose matches start with a word character is searched after one non-word character
    (the boundary in one C search); at offset 0, and at a start whose previous character is a word
    character, the matches are those of the original."""
    f = Folded(re.compile(r"\b(left|right)(?:[ -]sided)?\b", re.IGNORECASE))
    assert f._led is not None
    text = "Bright, leftward: LEFT-sided; right"
    assert [m.span() for m in f.finditer(text)] == [m.span() for m in f.pattern.finditer(text)] == [(18, 28), (30, 35)]
    for pos in range(len(text) + 2):
        a, b = f.search(text, pos), f.pattern.search(text, pos)
        assert (a and a.span()) == (b and b.span()), pos
    m = f.search("left lung")
    assert m is not None and m.span() == (0, 4)
    assert f.search("xleft", 1) is None  # "x" before the start is a word character: no boundary


@pytest.mark.skipif(
    listener.qa.engine.__file__.endswith(".so"), reason="compiled engine: a patched module global does not reach Folded"
)
def test_folded_without_the_led_search_finds_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that may start with a non-word character, or no ``re`` internals, keeps the boundary
    test in Python: the same matches."""
    import listener.qa.engine as engine

    assert engine._led_by_non_word(re.compile(r"[-a]x")) is None
    assert engine._led_by_non_word(re.compile(r"(?x) ab # comment")) is None
    monkeypatch.setattr(engine, "_led_by_non_word", lambda body: None)
    f = Folded(re.compile(r"\b(left|right)(?:[ -]sided)?\b", re.IGNORECASE))
    assert f._body is not None and f._led is None
    text = "Bright, leftward: LEFT-sided; right"
    assert [m.span() for m in f.finditer(text)] == [(18, 28), (30, 35)]


def test_folded_refuses_patterns_it_cannot_fold() -> None:
    """Only case-insensitive patterns without inline flags are accepted."""
    with pytest.raises(ValueError):
        Folded(re.compile("abc"))
    with pytest.raises(ValueError):
        Folded(re.compile("(?-i:US)x", re.IGNORECASE))


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_folded_matches_equal_the_original(text: str) -> None:
    """search, match and finditer give the same spans and groups as the original pattern, at any start."""
    for f in FOLDED:
        p = f.pattern
        for pos in (0, 1, len(text) // 3, len(text) // 2):
            a, b = f.search(text, pos), p.search(text, pos)
            assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), p.pattern
            a, b = f.match(text, pos), p.match(text, pos)
            assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), p.pattern
            # an end inside the text: a word cut there ends at a word boundary for re
            end = pos + (len(text) - pos) * 3 // 4
            a, b = f.search(text, pos, end), p.search(text, pos, end)
            assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), p.pattern
        assert [(m.span(), m.groups()) for m in f.finditer(text)] == [
            (m.span(), m.groups()) for m in p.finditer(text)
        ], p.pattern


def test_needed_literals_of_a_pattern() -> None:
    """What every match must hold: a literal run, one of an alternation's, a repeated group's; nothing
    when a branch or an optional part could do without, or the literal is shorter than three."""
    import listener.qa.engine as engine

    def needed(source: str) -> set[str] | None:
        found = engine._needed_literals(re.compile(source))
        return None if found is None else set(found)

    assert needed(r"\bopacit(y|ies)\b") == {"opacit"}
    assert needed(r"\b(left|right)\s+rib") == {"left", "right"}
    assert needed(r"\b(left|right)\s+lung\b") == {"lung"}  # of two needs, the more selective
    assert needed(r"\b(no|without)\b[^.]*\bpneumothorax") == {"pneumothorax"}
    assert needed(r"(?:ab)+cde") == {"cde"}
    assert needed(r"(?>abcd)x") == {"abcd"}
    assert needed(r"\b(left|r)\b") is None  # "r" is too short to be worth a test
    assert needed(r"(abc)?d") is None
    assert needed(r"abc|\d+") is None
    assert needed(r"(?=abcd)x") is None  # a look-ahead's text is not part of the match


def test_folded_in_a_run_skips_texts_without_a_needed_literal() -> None:
    """Inside a QA run a text that holds none of the needed literals is answered at once, and the
    answer is remembered per pattern for the last text; a text that holds one is searched."""
    import listener.qa.engine as engine

    f = Folded(re.compile(r"\bpneumothora(x|ces)\b", re.IGNORECASE))
    assert f._needed is engine._NOT_YET  # worked out at the first search in a run
    token = engine._RUN.set(engine._Run())
    try:
        run = engine._RUN.get()
        assert run is not None
        text = "No PNEUMOTHORAX. " + "x" * 300
        m = f.search(text)
        assert m is not None and m.group() == "PNEUMOTHORAX"
        assert f._needed == frozenset({"pneumothora"})
        other = "No effusion. " + "y" * 300
        assert f.search(other) is None
        assert list(f.finditer(other)) == []
        assert run.present == {f: (other.lower(), False)}
        assert f.search(text) is not None
        assert run.present == {f: (text.lower(), True)}
    finally:
        engine._RUN.reset(token)


@settings(max_examples=200, deadline=None)
@given(_TEXTS)
def test_folded_in_a_run_matches_equal_the_original(text: str) -> None:
    """As test_folded_matches_equal_the_original, inside a QA run (the run's memo of lowered texts and
    of needed literals in use: the text is made long enough for them)."""
    import listener.qa.engine as engine

    text = text + " " + "z" * engine._SHORT
    token = engine._RUN.set(engine._Run())
    try:
        for f in FOLDED:
            p = f.pattern
            for pos in (0, len(text) // 2):
                a, b = f.search(text, pos), p.search(text, pos)
                assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), p.pattern
            assert [(m.span(), m.groups()) for m in f.finditer(text)] == [
                (m.span(), m.groups()) for m in p.finditer(text)
            ], p.pattern
    finally:
        engine._RUN.reset(token)


def test_folded_with_a_literal_start_searches_its_body() -> None:
    """A body with a literal start is searched on its own (``re`` skips to the literal in C) and the
    boundary is checked in Python: no led search, the matches of the original at every offset."""
    f = Folded(re.compile(r"\b(?:not|no|never)\b[^.;]{0,20}", re.IGNORECASE))
    assert f._body is not None and f._led is None
    text = "Piano: no effusion. Known NOT seen; snow, never"
    for pos in range(len(text) + 2):
        a, b = f.search(text, pos), f.pattern.search(text, pos)
        assert (a and a.span()) == (b and b.span()), pos
    assert [m.span() for m in f.finditer(text)] == [m.span() for m in f.pattern.finditer(text)]


@settings(max_examples=100, deadline=None)
@given(_TEXTS, st.lists(st.integers(0, 400), min_size=1, max_size=4))
def test_folded_in_a_run_answers_each_stretch_as_the_original(text: str, offsets: list[int]) -> None:
    """Inside a QA run a search of a kept text is answered once per pattern, text and offsets
    (``_Run.first``) and finditer starts from that answer: every search and finditer of the same
    text between any offsets, asked twice and in either order, gives the original's matches."""
    import listener.qa.engine as engine

    text = text + " " + "z" * engine._SHORT
    token = engine._RUN.set(engine._Run())
    try:
        for f in FOLDED:
            p = f.pattern
            for pos, endpos in [(a, b) for a in offsets for b in offsets] * 2:
                it = [(m.span(), m.groups()) for m in f.finditer(text, pos, endpos)]
                assert it == [(m.span(), m.groups()) for m in p.finditer(text, pos, endpos)], p.pattern
                a, b = f.search(text, pos, endpos), p.search(text, pos, endpos)
                assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), p.pattern
    finally:
        engine._RUN.reset(token)
