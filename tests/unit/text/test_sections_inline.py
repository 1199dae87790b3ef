"""Inline headings: the heading-first search finds what the inline pattern's ``finditer`` finds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.model import SectionKind
from listener.pipeline import Pipeline
from listener.text.sections import (
    _ALONE_HEADING,
    HeadingRules,
    _alone_headings,
    _inline_headings,
    _line_headings,
    _next_head,
    compile_heading_rules,
    sectionize,
)
from tests.conftest import DATA

# Pieces that put headings after every kind of separator, blank run and non-separator.
_PIECES = [" ", "  ", "\t", ".", ",", ";", ":", "\n", "a", "X", ",:", " ,", "Findings", "IMPRESSION,"]
_PIECES += ["FINDINGS", "IMPRESSION", "INTERPRETATION", "NUCLEAR", "EXAM", "CLINICAL", "SUMMARY"]


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=24))
def test_inline_headings_are_the_inline_patterns_matches(rules: HeadingRules, pieces: list[str]) -> None:
    """The heading-first search finds what ``inline_pattern.finditer`` finds: same headings, offsets and ends."""
    text = "".join(pieces)
    assert rules.inline_heads is not None
    expected = [(m.start("heading"), m.end(), m.group("heading")) for m in rules.inline_pattern.finditer(text)]
    found = [(m.start("heading"), m.end(), m.group("heading")) for m in _inline_headings(text, rules.inline_heads)]
    assert found == expected


# Pieces for the search before each colon: headings of one and several words with blank runs
# inside, colons after blanks and commas, a long run of blanks and a colon inside a time.
_HEAD_PIECES = _PIECES + ["NUCLEAR INTERPRETATION", "NUCLEAR \t INTERPRETATION", "SUMMARY , :", "10:30", "    "]


def _head(match: re.Match[str] | None) -> tuple[tuple[int, int], str] | None:
    return None if match is None else (match.span(), match.group("heading"))


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from(_HEAD_PIECES), max_size=24), pos=st.integers(0, 200))
def test_the_search_before_each_colon_is_the_heads_search(rules: HeadingRules, pieces: list[str], pos: int) -> None:
    """``_next_head`` finds what ``heads.search`` finds from any offset: same heading, start and end."""
    text = "".join(pieces)
    assert rules.inline_heads is not None and rules.heads_reach == len("NUCLEAR INTERPRETATION") + 1
    expected = _head(rules.inline_heads.search(text, pos))
    assert _head(_next_head(text, rules.inline_heads, rules.heads_reach, pos)) == expected


@pytest.fixture(name="shipped", scope="module")
def fixture_shipped(pipeline: Pipeline) -> HeadingRules:
    """The shipped heading vocabulary (the default mapping's), of the session's pipeline (only read here)."""
    return pipeline.mappings.default.heading_rules


def _inline_found(text: str, rules: HeadingRules) -> list[tuple[int, int, str]]:
    """What ``sectionize`` finds inline: through ``heads``, grouped by first character, before each colon."""
    assert rules.inline_heads is not None
    found = _inline_headings(text, rules.inline_heads, rules.heads_reach)
    return [(m.start("heading"), m.end(), m.group("heading")) for m in found]


def _inline_expected(text: str, rules: HeadingRules) -> list[tuple[int, int, str]]:
    """``inline_pattern.finditer``: each match's heading, where it starts and where the match ends."""
    return [(m.start("heading"), m.end(), m.group("heading")) for m in rules.inline_pattern.finditer(text)]


def test_the_search_before_each_colon_over_the_shipped_files(shipped: HeadingRules) -> None:
    """Every shipped HL7 v2 file, segments as lines or run together, the shipped vocabulary: the inline pattern's matches."""
    assert shipped.inline_heads is not None and shipped.heads_reach > 0
    files = sorted((DATA / "hl7").rglob("*.hl7"))
    assert files
    found = 0
    for path in files:
        lines = path.read_bytes().decode("latin-1").replace("\r\n", "\n").replace("\r", "\n")
        # As sent, and run together (lines and fields joined by commas, as some dictations send).
        for text in (lines, lines.replace("\n", ",").replace("|", ",")):
            expected = _inline_expected(text, shipped)
            assert _inline_found(text, shipped) == expected, path.name
            found += len(expected)
            for pos in range(0, len(text), 7):
                expected_head = _head(shipped.inline_heads.search(text, pos))
                assert _head(_next_head(text, shipped.inline_heads, shipped.heads_reach, pos)) == expected_head
    assert found > 0


@pytest.fixture(name="shipped_words", scope="module")
def fixture_shipped_words(shipped: HeadingRules) -> list[str]:
    """The shipped headings (with a blank run between their words too) and their words alone."""
    variants = ({heading, heading.replace(" ", " \t "), *heading.split()} for heading in shipped.headings)
    return sorted(set().union(*variants))


# What goes before a heading (a separator, blanks, a word's end) and after it (a colon, a comma).
_BEFORE = ["", ".", ",", ";", "  ", "\t", "\n", "a", "X", ". "]
_AFTER = ["", ":", " :", ",:", " ,:", ": ,", " ", "\n", "a"]


@settings(max_examples=3000, deadline=None)
@given(data=st.data())
def test_inline_headings_of_the_shipped_vocabulary(
    shipped: HeadingRules, shipped_words: list[str], data: st.DataObject
) -> None:
    """Any text of the shipped headings' words: what ``sectionize`` finds inline is the inline pattern's matches."""
    piece = st.tuples(st.sampled_from(_BEFORE), st.sampled_from(shipped_words), st.sampled_from(_AFTER))
    text = "".join("".join(p) for p in data.draw(st.lists(piece, max_size=8)))
    assert _inline_found(text, shipped) == _inline_expected(text, shipped)


@settings(max_examples=3000, deadline=None)
@given(data=st.data())
def test_line_headings_of_the_shipped_vocabulary(
    shipped: HeadingRules, shipped_words: list[str], data: st.DataObject
) -> None:
    """Any text of the shipped headings' words, in any case: the search led by line feeds finds ``line_pattern``'s."""
    before = st.sampled_from(["", "\n", "\n ", "\n\t", "a", "\r\n"])
    word = st.sampled_from(shipped_words).flatmap(lambda w: st.sampled_from([w, w.lower(), w.title()]))
    piece = st.tuples(before, word, st.sampled_from(_AFTER))
    text = "".join("".join(p) for p in data.draw(st.lists(piece, max_size=8)))
    expected = [(m.span(), m.group("heading"), m.group("colon")) for m in shipped.line_pattern.finditer(text)]
    assert [(m.span(), m.group("heading"), m.group("colon")) for m in _line_headings(text, shipped)] == expected


def test_inline_headings_resume_where_the_last_match_ended(rules: HeadingRules) -> None:
    """A heading right after another's blanks counts only from where that match ended, as in finditer."""
    text = "x.FINDINGS:  IMPRESSION: a,EXAM:b SUMMARY: c"
    assert rules.inline_heads is not None
    found = [m.group("heading") for m in _inline_headings(text, rules.inline_heads)]
    assert (
        found == [m.group("heading") for m in rules.inline_pattern.finditer(text)] == ["FINDINGS", "IMPRESSION", "EXAM"]
    )


def test_a_vocabulary_with_an_empty_heading_keeps_the_inline_pattern() -> None:
    """An empty heading would match anywhere: such a vocabulary is searched with ``inline_pattern`` as it is."""
    rules = compile_heading_rules({"": SectionKind.OTHER, "FINDINGS": SectionKind.FINDINGS})
    assert rules.inline_heads is None
    assert [s.heading for s in sectionize("x. FINDINGS: normal.", rules)] == ["", "FINDINGS"]


# Pieces for the line and stand-alone headings: line feeds (and a carriage return, which is no line
# start for ``^``), separators, blanks, cased headings and words that are not headings.
_LINE_PIECES = ["\n", "\r\n", " ", "\t", ".", ",", ";", ":", "a", "x", "Findings", "findings", "IMPRESSION"]
_LINE_PIECES += ["Impression:", "CLINICAL HISTORY", "Clinical  history", "COURSE", "PLAN: ,", "CT-GUIDED"]


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from(_LINE_PIECES), max_size=24))
def test_line_headings_are_the_line_patterns_matches(rules: HeadingRules, pieces: list[str]) -> None:
    """The search led by line feeds finds what ``line_pattern.finditer`` finds: same headings, offsets and ends."""
    text = "".join(pieces)
    assert rules.line_heads is not None
    expected = [
        (m.start("heading"), m.end(), m.group("heading"), m.group("colon")) for m in rules.line_pattern.finditer(text)
    ]
    found = [(m.start("heading"), m.end(), m.group("heading"), m.group("colon")) for m in _line_headings(text, rules)]
    assert found == expected


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from(_LINE_PIECES), max_size=24), lo=st.integers(0, 40), span=st.integers(0, 80))
def test_alone_headings_are_the_alone_patterns_matches(pieces: list[str], lo: int, span: int) -> None:
    """The search led by what a stand-alone heading follows finds what ``_ALONE_HEADING.finditer`` finds in a range."""
    text = "".join(pieces)
    lo = min(lo, len(text))
    hi = min(lo + span, len(text))
    expected = [(m.span(), m.group("heading")) for m in _ALONE_HEADING.finditer(text, lo, hi)]
    assert [(m.span(), m.group("heading")) for m in _alone_headings(text, lo, hi)] == expected


def test_a_non_ascii_text_keeps_the_line_pattern(rules: HeadingRules) -> None:
    """A text ``str.lower`` may change the length of is searched with ``line_pattern`` as it is."""
    text = "İ\nFindings: clear.\nIMPRESSION\nNormal."
    assert [m.group("heading") for m in _line_headings(text, rules)] == ["Findings", "IMPRESSION"]
