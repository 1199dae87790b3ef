"""Inline headings: the heading-first search finds what the inline pattern's ``finditer`` finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from listener.model import SectionKind
from listener.text.sections import HeadingRules, _inline_headings, compile_heading_rules, sectionize

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
