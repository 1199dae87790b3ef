"""Radiology-aware sentence splitting with offsets into the original text.

Pure: no I/O, no clock. Sentences are the scope limit of every ConText
trigger, so a split in the wrong place leaks a negation into the next finding
and a missed split lets "rule out" in the indication reach the findings.

What ends a sentence:
- ``.``, ``!`` or ``?`` after a non-space character and before whitespace, the
  end of the text, a comma (a scraper's line break: ``contrast.,REASON``) or
  a capitalised word glued to it (``apex.There``);
- a lone ``.`` after whitespace, before the same (a dictated full stop:
  ``crowding . 3. Atelectasis``, ``is normal . XXXX intact``);
- a blank line; a line break before a numbered or bulleted item or a heading,
  or after a line that ends with ``:`` or is an all-capitals heading;
- an inline capitalised heading (``HISTORY: cough FINDINGS: ...``).

What does not: abbreviations (``Dr.``, ``approx.``, ``vs.``, ``e.g.``), single
initials, decimals (``3.5 cm``), list numbers (``1. Effusion``), a line break
inside wrapped prose, or the de-identification token ``XXXX``.

A run-on stretch of more than ``MAX_SENTENCE_WORDS`` whitespace-separated
tokens is cut into pieces of that many tokens, a token longer than
``MAX_TOKEN_CHARS`` counting as one per 32 characters (see docs/hardening.md,
"Linear text analysis"). Every trigger scope and every per-sentence test of the QA
rules is then bounded, so their cost grows with the report's length, not with
its square. The longest sentence of the corpus has 110 words; a clinical
trigger reaches a dozen.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from operator import itemgetter

from listener.text.cache import TextCache

__all__ = ["Span", "split_sentences"]


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open range ``[start, end)`` of offsets into a text."""

    start: int
    end: int

    def text_of(self, text: str) -> str:
        """The characters of ``text`` this span covers."""
        return text[self.start : self.end]


# Words that end with a period without ending the sentence (lower case, no dot).
_ABBREVIATIONS = frozenset(
    """
    dr drs mr mrs ms prof st approx appr vs e.g i.e cf fig figs incl resp esp
    min max sp hx dx rx tx pt pts yo y.o a.m p.m no.s jr sr mt ft ca co
    """.split()
)
# Abbreviated months: their dot ends no sentence when a day follows ("Mar. 3").
_MONTHS = frozenset("jan feb mar apr jun jul aug sep sept oct nov dec".split())
_DAY_AFTER = re.compile(r"[ \t]*\d{1,2}(?:st|nd|rd|th)?\b")

_CANDIDATE = re.compile(
    r"""
    (?P<punct>(?:(?<=\S)[.!?]+|(?<=\s)\.[.!?]*)["')\]]*,?)(?=\s|$|,|[A-Z][a-z])
    | (?P<newline>\r\n|\r|\n)
    | (?<=[a-z0-9.;,]\ )(?P<heading>(?=[A-Z][A-Z/&]+(?:\ [A-Z/&]+){0,4}:))
    """,
    re.VERBOSE,
)
# _CANDIDATE's three kinds as three patterns that each start with a character
# (class), so ``re`` skips in C to the places where one can start; _split
# merges their matches by offset. A pattern that starts with a look-behind
# (or an alternation of them) is tried at every position of the text: about
# five times slower on a report. The kinds never share a character (a
# heading starts at a capital, a full stop at ``.!?``, a line end at CR or
# LF), so the merged list is _CANDIDATE's ``finditer``: the look-behind of
# ``punct`` is checked after its first character, and ``heading`` takes that
# capital (one character, where _CANDIDATE's match is empty: the next
# search starts after it either way; _split reads only its start).
_PUNCT = re.compile(r"""(?P<punct>[.!?](?:(?<=\S[.!?])|(?<=\s\.))[.!?]*["')\]]*,?)(?=\s|$|,|[A-Z][a-z])""")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_HEADING = re.compile(r"[A-Z](?<=[a-z0-9.;,] [A-Z])(?=[A-Z/&]+(?: [A-Z/&]+){0,4}:)")
_PUNCT_KIND, _NEWLINE_KIND, _HEADING_KIND = 0, 1, 2
# What the token before a full stop is made of (ASCII letters, digits, dots).
_TOKEN_CHARS = string.ascii_letters + string.digits + "."
# What makes a line break end a sentence when it follows the break (after blanks): a blank line, a
# list item ("2. ", "- ") or a heading ("Impression:"). One pattern, so one match per line break.
_BREAK_AHEAD = re.compile(r"[ \t]*(?:\r\n|\r|\n|(?:\d{1,2}[.)]|[-*\u2022])\s|[A-Z][A-Za-z /&]{1,40}:)")
_LINE_IS_HEADING = re.compile(r"[^a-z]*[A-Z][^a-z]*")
_HAS_WORD = re.compile(r"\w")
#: A token of the cap: a whitespace-separated run, or a piece of at most MAX_TOKEN_CHARS of a
#: longer one, so that a run with no blank in it ("effusion,effusion,...") is cut too.
MAX_TOKEN_CHARS = 32
_TOKEN = re.compile(rf"\S{{1,{MAX_TOKEN_CHARS}}}")

#: A sentence longer than this many whitespace-separated tokens is cut into
#: pieces of at most this many (docs/hardening.md, "Linear text analysis").
MAX_SENTENCE_WORDS = 150
# A span of at most this many characters cannot hold more tokens than the cap.
_CAP_CHARS = 2 * MAX_SENTENCE_WORDS


def _is_list_number(text: str, token_start: int, lo: int) -> bool:
    """True when the number before a period opens a list item ("2. Effusion")."""
    i = token_start - 1
    while i >= lo and text[i] in " \t":
        i -= 1
    return i < lo or text[i] in "\r\n.:;!?)"


def _token_before(text: str, end: int, lo: int) -> tuple[int, int] | None:
    """The span of what ``([A-Za-z0-9.]+)$`` finds in the 40 characters before ``end`` (not before ``lo``).

    Strategy: look only at the last few characters; a search from ``lo``
    with a ``$`` anchor would try every position of the region (quadratic).
    The token is the longest run of _TOKEN_CHARS ending at ``end``, or at a
    line feed right before it (where ``$`` holds too), found by one
    ``rstrip`` in C: the pattern tries each position of the stretch and
    backtracks from each.
    """
    floor = max(lo, end - 40)
    if end > floor and text[end - 1] == "\n":
        end -= 1
    start = floor + len(text[floor:end].rstrip(_TOKEN_CHARS))
    return None if start == end else (start, end)


def _punct_ends(text: str, m: re.Match[str], lo: int) -> bool:
    punct = m.group("punct")
    if punct[0] != "." or punct.startswith(".."):
        return True  # "?", "!", or an abbreviation's dot plus the full stop
    span = _token_before(text, m.start(), lo)
    if span is None:
        return True
    token_start, token_end = span
    word = text[token_start:token_end]
    low = word.lower().rstrip(".")
    if low in _ABBREVIATIONS:
        return False
    if low in _MONTHS and _DAY_AFTER.match(text, m.end()) is not None:
        return False  # "dated Mar. 3, 2020"
    if len(word) == 1 and word.isalpha():
        return False  # an initial ("J. Smith") or an abbreviation letter
    if word.isdigit() and len(word) <= 2 and _is_list_number(text, token_start, lo):
        return False
    return True


def _newline_ends(text: str, pos: int, after: int, lo: int, hi: int) -> bool:
    """Decide whether the line break at ``pos`` (ending at ``after``) ends a sentence."""
    line_start = max(text.rfind("\n", lo, pos), text.rfind("\r", lo, pos)) + 1
    line_start = max(line_start, lo)
    line = text[line_start:pos].strip()
    if not line:
        return True
    if line.endswith((":", ".", "!", "?", ";")):
        return True
    if _BREAK_AHEAD.match(text, after, hi):
        return True  # a blank line, a list item or a heading follows
    # An all-capitals line is a heading ("FINDINGS"), unless it is dictated
    # prose in capitals that continues on the next line in capitals too.
    if _is_heading_line(line) and len(line.split()) <= 6:
        return True
    return False


def _is_heading_line(line: str) -> bool:
    """``_LINE_IS_HEADING.fullmatch(line)``: no lower-case letter and a capital.

    On ASCII that is ``str.isupper`` (its cased characters are the letters), which costs less than
    a pattern call; a wrapped report tests it at each line break of prose (docs/benchmarks.md,
    "Worker CPU, round 8").
    """
    return line.isupper() if line.isascii() else _LINE_IS_HEADING.fullmatch(line) is not None


def split_sentences(
    text: str, start: int = 0, end: int | None = None, *, cache: TextCache | None = None
) -> tuple[Span, ...]:
    """Split ``text[start:end]`` into sentences.

    Args:
        text: the full report text (offsets are kept relative to it).
        start: where the region to split begins.
        end: where it ends (default: the end of ``text``).
        cache: the report's shared results (the same region is split once).

    Returns:
        Spans in order, trimmed of surrounding whitespace, never empty and
        never overlapping; a region with no word character gives ``()``.
    """
    hi = len(text) if end is None else min(end, len(text))
    lo = max(0, start)
    if cache is None:
        return _split(text, lo, hi)
    key = (text, lo, hi)
    cached = cache.sentences.get(key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    spans = cache.sentences[key] = _split(text, lo, hi)
    return spans


def _candidates(text: str, lo: int, hi: int) -> list[tuple[int, int, re.Match[str]]]:
    """(offset, kind, match) of every place _CANDIDATE's ``finditer`` would match in ``text[lo:hi]``, in order."""
    found = [(m.start(), _PUNCT_KIND, m) for m in _PUNCT.finditer(text, lo, hi)]
    found += [(m.start(), _NEWLINE_KIND, m) for m in _NEWLINE.finditer(text, lo, hi)]
    found += [(m.start(), _HEADING_KIND, m) for m in _HEADING.finditer(text, lo, hi)]
    found.sort(key=itemgetter(0))
    return found


def _split(text: str, lo: int, hi: int) -> tuple[Span, ...]:
    cuts: list[int] = []
    for _, kind, m in _candidates(text, lo, hi):
        if kind == _PUNCT_KIND:
            if _punct_ends(text, m, lo):
                cuts.append(m.end())
        elif kind == _NEWLINE_KIND:
            if _newline_ends(text, m.start(), m.end(), lo, hi):
                cuts.append(m.start())
        else:
            cuts.append(m.start())
    cuts.append(hi)
    spans: list[Span] = []
    prev = lo
    for cut in cuts:
        if cut <= prev:
            continue
        s, e = prev, cut
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        # A leftover comma from "contrast.,REASON" belongs to no sentence.
        while s < e and text[s] == ",":
            s += 1
            while s < e and text[s].isspace():
                s += 1
        if s < e and _HAS_WORD.search(text, s, e):
            if e - s <= _CAP_CHARS:
                spans.append(Span(s, e))
            else:
                _append_capped(text, s, e, spans)
        prev = cut
    return tuple(spans)


def _append_capped(text: str, s: int, e: int, spans: list[Span]) -> None:
    """Append ``[s, e)`` as pieces of at most ``MAX_SENTENCE_WORDS`` tokens each.

    A piece runs from its first token's start to its last token's end; a
    piece with no word character (a run of punctuation) is dropped, as a
    sentence would be.
    """
    count = 0
    first = s
    last_end = s
    for tok in _TOKEN.finditer(text, s, e):
        if count == MAX_SENTENCE_WORDS:
            if _HAS_WORD.search(text, first, last_end):
                spans.append(Span(first, last_end))
            count = 0
        if count == 0:
            first = tok.start()
        last_end = tok.end()
        count += 1
    if count and _HAS_WORD.search(text, first, last_end):
        spans.append(Span(first, last_end))
