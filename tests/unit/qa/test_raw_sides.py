"""The laterality rules' plain side words of a sentence, read from its section's search.

``_keyed_sides`` reads each sentence's side words (with the words after them) from the section's one
search, cut at the sentence's end, instead of searching each sentence (docs/benchmarks.md, "Worker
CPU, round 9"). These tests hold that to the search of the sentence itself, for any stretch of a
generated section: sentence bounds from ``split_sentences`` and arbitrary ones, bounds that cut a
word included.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from listener.qa.laterality import _raw_side_spans, _raw_sides, _raw_sides_within
from listener.text import split_sentences

_PIECES = st.sampled_from(
    [
        "left",
        "Right",
        "LEFT",
        "right-sided",
        "left sided",
        "-sided",
        " sided",
        "sidedness",
        "lower",
        "lobe",
        "xxxx",
        "base",
        "ab",
        "é",
        "_",
        " ",
        "  ",
        ", ",
        "-",
        ". ",
        ".\n",
        "\n",
        "\n\n",
        ";",
        "(",
        ")",
    ]
)
_TEXTS = st.lists(_PIECES, max_size=40).map("".join)


def _within(text: str, start: int, end: int, lo: int, hi: int) -> list[tuple[str, int, int, list[str]]]:
    spans = _raw_side_spans(text, lo, hi)
    return _raw_sides_within(text, spans, [s[1] for s in spans], start, end)


@settings(max_examples=400, deadline=None)
@given(_TEXTS, st.data())
def test_a_stretch_reads_what_its_own_search_finds(text: str, data: st.DataObject) -> None:
    lo = data.draw(st.integers(0, len(text)))
    hi = data.draw(st.integers(lo, len(text)))
    start = data.draw(st.integers(lo, hi))
    end = data.draw(st.integers(start, hi))
    assert _within(text, start, end, lo, hi) == _raw_sides(text, start, end)


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_each_sentence_reads_what_its_own_search_finds(text: str) -> None:
    for sent in split_sentences(text):
        assert _within(text, sent.start, sent.end, 0, len(text)) == _raw_sides(text, sent.start, sent.end)


def test_the_words_after_a_side_word_stop_at_the_sentence_end() -> None:
    text = "Opacity on the right\nlower lobe base. Left lung."
    end = text.index("\n")
    assert _within(text, 0, end, 0, len(text)) == [("right", 15, 20, [])]
    assert _within(text, 0, len(text), 0, len(text))[0] == ("right", 15, 20, ["lower", "lobe", "base"])


def test_a_bound_inside_a_word_searches_the_stretch() -> None:
    text = "rightx lobe"
    assert _raw_sides(text, 0, len(text)) == []
    assert _within(text, 0, 5, 0, len(text)) == [("right", 0, 5, [])]
