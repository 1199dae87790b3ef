"""Sentence splitting: offsets into the original text, radiology edge cases."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from listener.text.sentences import (
    _BREAK_AHEAD,
    _CANDIDATE,
    _LINE_IS_HEADING,
    Span,
    _candidates,
    _is_heading_line,
    _token_before,
    split_sentences,
)


def texts(text: str, start: int = 0, end: int | None = None) -> list[str]:
    return [s.text_of(text) for s in split_sentences(text, start, end)]


def test_offsets_point_into_the_original_text() -> None:
    """Each span slices the original text, with no surrounding whitespace."""
    text = "  No pneumothorax.   Small effusion.  "
    spans = split_sentences(text)
    assert spans == (Span(2, 18), Span(21, 36))
    assert [s.text_of(text) for s in spans] == ["No pneumothorax.", "Small effusion."]


def test_region_limits_are_respected() -> None:
    """Only text[start:end] is split and offsets stay absolute."""
    text = "FINDINGS: No effusion. IMPRESSION: Normal."
    spans = split_sentences(text, 10, 22)
    assert spans == (Span(10, 22),)


def test_abbreviations_and_decimals_do_not_split() -> None:
    """Dr., approx., vs., p.m. and 3.5 cm stay inside their sentence."""
    text = "Nodule measures 3.5 cm. Discussed with Dr. Smith at 2:14 p.m. by telephone. Approx. 2 cm vs. 3 cm."
    assert texts(text) == [
        "Nodule measures 3.5 cm.",
        "Discussed with Dr. Smith at 2:14 p.m. by telephone.",
        "Approx. 2 cm vs. 3 cm.",
    ]


def test_numbered_list_items_are_sentences() -> None:
    """'1.' opens an item; it does not end a sentence of its own."""
    text = "1. Bullous emphysema. 2. Probably scarring in the left apex. 3. No effusion"
    assert texts(text) == ["1. Bullous emphysema.", "2. Probably scarring in the left apex.", "3. No effusion"]


def test_line_breaks_end_headings_and_list_items_but_not_wrapped_prose() -> None:
    """A heading line or a list item ends at the line break; wrapped prose does not."""
    text = "FINDINGS:\nThe heart is normal\nin size. No effusion\n\nIMPRESSION\nNormal chest\n1. No acute disease\n2. Stable."
    assert texts(text) == [
        "FINDINGS:",
        "The heart is normal\nin size.",
        "No effusion",
        "IMPRESSION",
        "Normal chest",
        "1. No acute disease",
        "2. Stable.",
    ]


def test_crlf_and_cr_line_breaks() -> None:
    """CRLF and CR-only files split like LF files."""
    assert texts("IMPRESSION:\r\nNo effusion.\r\n\r\nEnd") == ["IMPRESSION:", "No effusion.", "End"]
    assert texts("IMPRESSION:\rNo effusion.") == ["IMPRESSION:", "No effusion."]


def test_glued_sentences_and_scraped_commas() -> None:
    """'apex.There' and 'contrast.,REASON' (a scraper's line break) split."""
    assert texts("left lung apex.There are streaky opacities") == ["left lung apex.", "There are streaky opacities"]
    assert texts("EXAM: , CT head without contrast.,REASON FOR EXAM: , Headache.") == [
        "EXAM: , CT head without contrast.",
        "REASON FOR EXAM: , Headache.",
    ]


def test_inline_capitalised_heading_starts_a_sentence() -> None:
    """'HISTORY: cough FINDINGS: ...' must not let the indication reach the findings."""
    assert texts("HISTORY: rule out pneumonia FINDINGS: no pneumothorax") == [
        "HISTORY: rule out pneumonia",
        "FINDINGS: no pneumothorax",
    ]


def test_deidentification_tokens_and_double_periods() -> None:
    """XXXX tokens are words; 'p.m..' ends the sentence after the abbreviation."""
    assert texts("PA and lateral chest x-XXXX dated XXXX, XXXX at XXXX p.m.. No effusion.") == [
        "PA and lateral chest x-XXXX dated XXXX, XXXX at XXXX p.m..",
        "No effusion.",
    ]


def test_question_mark_ends_but_leading_question_mark_does_not() -> None:
    """'? pneumonia' at a sentence start is a hedge, not an end."""
    assert texts("Cough. ? pneumonia. Any effusion? None.") == ["Cough.", "? pneumonia.", "Any effusion?", "None."]


def test_empty_and_punctuation_only_regions() -> None:
    """No word, no sentence."""
    assert split_sentences("") == ()
    assert split_sentences(" .\n, ") == ()


def test_abbreviated_month_before_a_day_ends_no_sentence() -> None:
    """'dated Mar. 3rd, 2020 is clear.' is one sentence; 'in Mar. The' is two."""
    assert len(split_sentences("Effusion on CT dated Mar. 3rd, 2020 is not seen.", 0, None)) == 1
    assert len(split_sentences("The film was taken in Mar. The lungs are clear.", 0, None)) == 2


# Pieces that put full stops, line ends and capitals after every kind of character.
_PIECES = [" ", "  ", "\t", ".", "..", "!", "?", ",", ";", ":", "\n", "\r", "\r\n", '"', ")", "]", "'"]
_PIECES += ["a", "x1", "Dr", "Mar", "3", "No", "FINDINGS", "IMPRESSION", "CT/MR", "A&B", "Liver", "E"]
_PIECES += [", ", ". ", "; ", "a ", "9 ", "FINDINGS:", "CT HEAD:", "A/B:", "E:", " Xy"]


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=30), cut=st.integers(0, 6))
def test_candidates_are_the_candidate_patterns_matches(pieces: list[str], cut: int) -> None:
    """The three patterns merged give _CANDIDATE's finditer: same kinds, starts and ends (headings: same start)."""
    text = "".join(pieces)
    lo, hi = min(cut, len(text)), max(len(text) - cut, min(cut, len(text)))
    kinds = ("punct", "newline", "heading")
    expected = [(m.start(), m.lastgroup) for m in _CANDIDATE.finditer(text, lo, hi)]
    ends = [m.end() for m in _CANDIDATE.finditer(text, lo, hi) if m.lastgroup != "heading"]
    found = _candidates(text, lo, hi)
    assert [(at, kinds[kind]) for at, kind, _ in found] == expected
    assert [m.end() for _, kind, m in found if kinds[kind] != "heading"] == ends


def test_candidates_find_every_kind() -> None:
    """A full stop, a line end and a run-in capital heading, each where _CANDIDATE finds it."""
    text = "No effusion. Stable.\nheart normal, FINDINGS: clear"
    found = [(at, kind) for at, kind, _ in _candidates(text, 0, len(text))]
    assert found == [(11, 0), (19, 0), (20, 1), (35, 2)]
    assert [m.start() for m in _CANDIDATE.finditer(text)] == [11, 19, 20, 35]


def test_lone_full_stop_after_a_space_ends_the_sentence() -> None:
    """A dictated ' .' ends its sentence, so the numbered item after it is a sentence of its own (docs/qa-rules.md "Round 7")."""
    assert texts("2. Low lung volumes with atelectasis . 3. Atelectasis is not seen.") == [
        "2. Low lung volumes with atelectasis .",
        "3. Atelectasis is not seen.",
    ]
    assert texts("No pneumothorax . Small right pleural effusion.") == [
        "No pneumothorax .",
        "Small right pleural effusion.",
    ]


def test_full_stop_after_a_space_before_a_digit_or_a_question_mark_after_a_space_ends_nothing() -> None:
    """The near misses: ' .5 cm' is a decimal and ' ? pneumonia' a hedge; neither ends the sentence."""
    assert texts("Nodule of .5 cm in the right apex. Cough ? pneumonia.") == [
        "Nodule of .5 cm in the right apex.",
        "Cough ? pneumonia.",
    ]


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=30), lo=st.integers(0, 8))
def test_token_before_is_what_the_anchored_pattern_finds(pieces: list[str], lo: int) -> None:
    """The token before each offset is the span ``([A-Za-z0-9.]+)$`` finds in the 40 characters before it."""
    text = "".join(pieces)
    pattern = re.compile(r"([A-Za-z0-9.]+)$")
    lo = min(lo, len(text))
    for end in range(lo, len(text) + 1):
        found = pattern.search(text, max(lo, end - 40), end)
        assert _token_before(text, end, lo) == (found and found.span(1)), end


def test_a_line_of_prose_ends_before_a_blank_line_a_list_item_or_a_heading() -> None:
    """Wrapped prose goes on over its line break, except when a blank line, an item or a heading follows."""
    assert texts("The heart is normal\n\nin size") == ["The heart is normal", "in size"]
    assert texts("The heart is normal\n  2) in size") == ["The heart is normal", "2) in size"]
    assert texts("The heart is normal\n- in size") == ["The heart is normal", "- in size"]
    assert texts("The heart is normal\nImpression: clear") == ["The heart is normal", "Impression: clear"]
    assert texts("The heart is normal\nin size: clear") == ["The heart is normal\nin size: clear"]


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(st.sampled_from([*_PIECES, "12", "1)", "-", "*", "\u2022", "Ab/c", " a:"]), max_size=12))
def test_break_ahead_is_any_of_a_blank_line_a_list_item_and_a_heading(pieces: list[str]) -> None:
    """_BREAK_AHEAD matches where one of the three tests it stands for matches (after any blanks)."""
    text = "".join(pieces)
    blank = re.compile(r"[ \t]*(?:\r\n|\r|\n)")
    item = re.compile(r"[ \t]*(?:\d{1,2}[.)]|[-*\u2022])\s")
    heading = re.compile(r"[ \t]*[A-Z][A-Za-z /&]{1,40}:")
    for at in range(len(text) + 1):
        expected = any(p.match(text, at) for p in (blank, item, heading))
        assert (_BREAK_AHEAD.match(text, at) is not None) == expected, at


@settings(max_examples=3000, deadline=None)
@given(line=st.text(st.sampled_from("aZ Q1_:/&-.\u00e9\u00c9\u0130\u00df"), max_size=12))
def test_heading_line_is_the_capitals_pattern(line: str) -> None:
    """_is_heading_line is _LINE_IS_HEADING's fullmatch, on ASCII and non-ASCII lines."""
    assert _is_heading_line(line) == (_LINE_IS_HEADING.fullmatch(line) is not None)


def test_a_run_with_no_blank_is_cut_by_the_cap() -> None:
    """A run-on with no whitespace is one whitespace token; the cap counts it in pieces of at most
    MAX_TOKEN_CHARS characters, so it is cut like a run-on of words (docs/hardening.md)."""
    from listener.text.sentences import MAX_SENTENCE_WORDS, MAX_TOKEN_CHARS

    text = "effusion," * 2000
    spans = split_sentences(text)
    assert len(spans) > 1
    assert max(s.end - s.start for s in spans) <= MAX_SENTENCE_WORDS * MAX_TOKEN_CHARS
    assert "".join(text[s.start : s.end] for s in spans) == text
