"""Where a ConText trigger's scope ends: word distances, asides and clause commas.

Pure: no I/O, no clock. :class:`RegionIndex` indexes one region of a report
once (its words, parenthetical asides and clause-separating commas) so that
every question :mod:`listener.text.context` asks about a stretch of it costs
a few bisections instead of a scan of that stretch.

Strategy: a report without sentence breaks is one sentence with thousands of
mentions and triggers; counting the words between each pair by scanning the
text between them made the layer cubic in the report's length (hot paths are
linear: docs/hardening.md, "Linear text analysis"). Every count below is a
difference of two prefix sums over the sorted word offsets.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from operator import not_

__all__ = ["RegionIndex", "inside_any"]

_WORD = re.compile(r"\w+")
# The same words in an ASCII text, found with ``re.ASCII``'s table instead of the Unicode database
# (the same characters are word characters there), as the pieces of a split: the words and the
# stretches between them, alternately, from which every offset is a running sum of lengths.
_ASCII_WORD_SPLIT = re.compile(r"(\w+)", re.ASCII)
# Words that may sit between the findings of a list without opening a new
# clause ("pneumothorax, effusion, and consolidation are absent").
_LIST_WORDS = frozenset(
    """
    and or nor the a an is are was were be been both also all either any as well other no
    small large mild moderate significant focal acute left right bilateral
    """.split()
)
# A comma inside a date: "March 3, 2020", "Mar. 3rd, 2020", "XXXX, XXXX" (the
# Indiana de-identification of "Month day, year"): what must end right at the
# comma (searched in the _DATE_BEFORE characters before it) and what must
# follow it.
_DATE_BEFORE = 16
_DATE_HEAD = re.compile(
    r"(?<!\w)(?:(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?[ \t]+\d{1,2}(?:st|nd|rd|th)?|XXXX)$",
    re.IGNORECASE,
)
_DATE_TAIL = re.compile(r",[ \t]*(?:\d{4}|XXXX)(?!\w)", re.IGNORECASE)
# A parenthetical aside (no nested brackets).
_ASIDE = re.compile(r"\([^()]*\)")


def _is_date_comma(text: str, comma: int) -> bool:
    """True when the comma at ``comma`` is part of a date, not a clause break."""
    return (
        _DATE_TAIL.match(text, comma) is not None
        and _DATE_HEAD.search(text, max(0, comma - _DATE_BEFORE), comma) is not None
    )


class RegionIndex:
    """Offsets of the words, asides and clause commas of ``text[lo:hi]``.

    Built once per region in linear time; every query is O(log n). Offsets
    passed to the queries must lie in ``[lo, hi]``.

    Args:
        text: the full report text.
        lo, hi: the region.
        span_starts: start offsets of the region's concept mentions, sorted
            (a comma followed by another finding of a list opens no clause).
    """

    __slots__ = (
        "_aside_ends",
        "_aside_starts",
        "_aside_words",
        "_bare",
        "_break_prefix",
        "_commas",
        "_nonlist",
        "_span_starts",
        "_word_ends",
        "_word_starts",
    )

    def __init__(self, text: str, lo: int, hi: int, span_starts: Sequence[int]) -> None:
        # Strategy: every per-word list is built by C-level map/accumulate over
        # the matches, not a Python loop per word (a region has hundreds).
        words: Iterable[str]
        if lo >= 0 and text.isascii():
            # An ASCII region split on its words, lowered (the same length, the same words): no
            # Match object per word, and the words come out lowered (docs/benchmarks.md, "Worker
            # CPU, round 10"). The pieces alternate between the stretches around the words and
            # the words, so a word starts at the running sum of the pieces before it.
            pieces = _ASCII_WORD_SPLIT.split(text[lo:hi].lower())
            offsets = list(accumulate(map(len, pieces), initial=lo))
            starts = offsets[1:-1:2]
            ends = offsets[2::2]
            words = pieces[1::2]
        else:
            matches = list(_WORD.finditer(text, lo, hi))
            starts = list(map(re.Match.start, matches))
            ends = list(map(re.Match.end, matches))
            words = map(str.lower, map(re.Match.group, matches))
        self._word_starts = starts
        self._word_ends = ends
        # Prefix counts of the words outside _LIST_WORDS.
        self._nonlist = list(accumulate(map(not_, map(_LIST_WORDS.__contains__, words)), initial=0))
        self._span_starts = span_starts

        # Asides: the words inside each one (prefix sums), and which words sit
        # inside any aside ("bare" words are the others).
        a_starts: list[int] = []
        a_ends: list[int] = []
        a_words = [0]
        if text.find("(", lo, hi) >= 0:
            inside = [False] * len(starts)
            for m in _ASIDE.finditer(text, lo, hi):
                a0, a1 = m.span()
                w0, w1 = bisect_left(starts, a0), bisect_left(starts, a1)
                inside[w0:w1] = [True] * (w1 - w0)
                a_starts.append(a0)
                a_ends.append(a1)
                a_words.append(a_words[-1] + (w1 - w0))
            bare = list(accumulate(map(not_, inside), initial=0))
        else:
            bare = list(range(len(starts) + 1))
        self._aside_starts = a_starts
        self._aside_ends = a_ends
        self._aside_words = a_words
        self._bare = bare

        # Clause commas, and for each stretch between two of them whether it
        # is a clause of its own (see clause_break).
        commas: list[int] = []
        c = text.find(",", lo, hi)
        while c >= 0:
            if not _is_date_comma(text, c):
                commas.append(c)
            c = text.find(",", c + 1, hi)
        self._commas = commas
        breaks = [0]
        k = 0
        for i in range(len(commas) - 1):
            if self._segment_breaks(commas[i], commas[i + 1]):
                k += 1
            breaks.append(k)
        self._break_prefix = breaks

    def words(self, a: int, b: int) -> int:
        """Number of words (``\\w+`` runs, cut ones included) in ``text[a:b]``."""
        if b <= a:
            return 0
        return bisect_left(self._word_starts, b) - bisect_right(self._word_ends, a)

    def bare_words(self, a: int, b: int) -> int:
        """Words of ``text[a:b]`` outside every parenthetical aside of the region.

        Never more than :meth:`gap` counts for the same stretch, and it grows
        as the stretch grows: the bound a scan for triggers in reach stops at.
        """
        if b <= a:
            return 0
        j0 = bisect_right(self._word_ends, a)
        j1 = bisect_left(self._word_starts, b)
        return self._bare[j1] - self._bare[j0] if j1 > j0 else 0

    def gap(self, a: int, b: int, window: int) -> int:
        """Words between a trigger and a finding (``text[a:b]``), asides discounted.

        A parenthetical aside does not count against the window: "Pneumonia
        seen on CT dated XXXX, XXXX (not seen on prior chest x-XXXX) is not
        seen either". The asides are subtracted only when the plain count
        exceeds ``window``.
        """
        n = self.words(a, b)
        if n > window and self._aside_starts:
            i0 = bisect_left(self._aside_starts, a)
            i1 = bisect_right(self._aside_ends, b)
            if i1 > i0:
                n -= self._aside_words[i1] - self._aside_words[i0]
        return n

    def clause_break(self, lo: int, hi: int) -> bool:
        """True when a comma between ``lo`` and ``hi`` starts a clause of its own.

        "Pneumothorax, effusion, or consolidation is absent": each piece after a
        comma names another finding of the same list, so a backward trigger
        reaches back over it. "Heart size is enlarged, pulmonary vascularity
        within normal limits": the piece before the trigger names no finding but
        has words of its own (its subject), so the trigger stops at the comma.
        The comma of a date ("dated March 3, 2020", de-identified "dated XXXX,
        XXXX") is part of the date, not a clause break.
        """
        commas = self._commas
        i0 = bisect_left(commas, lo)
        i1 = bisect_left(commas, hi)
        if i1 <= i0:
            return False
        # Whole stretches between two commas inside [lo, hi): precomputed.
        if self._break_prefix[i1 - 1] - self._break_prefix[i0] > 0:
            return True
        # The last stretch runs from the last comma to ``hi``.
        return self._segment_breaks(commas[i1 - 1], hi)

    def _segment_breaks(self, comma: int, end: int) -> bool:
        """The stretch after ``comma`` up to ``end`` names no finding and has a word of its own."""
        spans = self._span_starts
        if bisect_left(spans, end) > bisect_right(spans, comma):
            return False  # a finding starts inside: another item of a list
        w0 = bisect_left(self._word_starts, comma + 1)
        w1 = bisect_left(self._word_starts, end)
        return w1 > w0 and self._nonlist[w1] - self._nonlist[w0] > 0


def inside_any(spans: Iterable[tuple[int, int]]) -> Callable[[int], bool]:
    """A test of an offset: whether it lies in any of ``spans`` (``start <= offset < end``).

    The spans are sorted once, with the furthest end reached so far, and each test is one
    bisection: testing an offset against every span made a rule that asks it per word or per
    sentence cost the product of the two counts (docs/hardening.md, "Linear text analysis").
    Spans may overlap.
    """
    ordered = sorted(spans)
    starts = [a for a, _ in ordered]
    reach = list(accumulate((b for _, b in ordered), max))

    def inside(offset: int) -> bool:
        i = bisect_right(starts, offset) - 1
        return i >= 0 and offset < reach[i]

    return inside
