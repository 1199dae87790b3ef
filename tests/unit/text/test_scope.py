"""RegionIndex's words of an ASCII region (a split of the lowered region) are the ``\\w+`` matches."""

from __future__ import annotations

import re
from itertools import accumulate

from hypothesis import given, settings
from hypothesis import strategies as st

from listener.text.scope import _LIST_WORDS, RegionIndex

_PIECES = st.one_of(
    st.sampled_from(["And", "the", "LEFT", "effusion", "Mild", "no", "x1", "_a", "9"]),
    st.text(alphabet="aZ_0 .,;()-\t\n\x1c", max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join), st.data())
def test_ascii_region_words_are_the_word_matches(text: str, data: st.DataObject) -> None:
    """Starts, ends and the prefix counts of words outside _LIST_WORDS, for any region (cut words
    included), equal those of ``\\w+``'s matches in the region, each word lowered."""
    lo = data.draw(st.integers(0, len(text) + 1), label="lo")
    hi = data.draw(st.integers(0, len(text) + 2), label="hi")
    index = RegionIndex(text, lo, hi, [])
    matches = list(re.compile(r"\w+").finditer(text, lo, hi))
    assert index._word_starts == [m.start() for m in matches]
    assert index._word_ends == [m.end() for m in matches]
    nonlist = list(accumulate((m.group().lower() not in _LIST_WORDS for m in matches), initial=0))
    assert index._nonlist == nonlist
