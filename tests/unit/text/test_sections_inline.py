"""Inline headings: the heading-first search finds what the inline pattern's ``finditer`` finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from listener.model import SectionKind
from listener.text.sections import (
    _ALONE_HEADING,
    HeadingRules,
    _alone_headings,
    _inline_headings,
    _line_headings,
    compile_heading_rules,
    sectionize,
)

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
