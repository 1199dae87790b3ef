"""Report sections from heading lines and from section hints of the wire format.

Pure: no I/O, no clock. Shared by the HL7 v2 and FHIR decoders (which give
hints: an OBX-3 LOINC code, a FHIR section) and by tests that sectionize plain
report text.

Headings are recognised
  * at the start of a line, in any case, with a colon ("Findings: ...") or as
    the whole line ("IMPRESSION"), and
  * inside a line, in upper case and with a colon, after a sentence or list
    separator ("...,FINDINGS:  ,The liver...", as run-together dictations send;
    "IMPRESSION,: ..." with a stray comma too).

An impression also ends at a heading outside the vocabulary when that heading
stands alone: upper case, at a line start or after a separator, its colon
followed by the line end or by the comma that stands for one in run-together
text ("...,COURSE: ,MRI C-spine revealed...", "...,CT-GUIDED NEEDLE BIOPSY,
LEFT KIDNEY MASS: , Following..."). What follows is an ``other`` section: a
course, a plan, a procedure note or a boilerplate block dictated after the
impression is not part of it. An unknown heading whose last word is an
impression heading ("NUCLEAR INTERPRETATION", "IN SUMMARY") keeps the
impression going. Unknown headings elsewhere never split a section: inside
findings they are organ or vessel subheadings ("LEFT MAIN:", "PERICARDIUM:").
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from listener.model import Section, SectionKind
from listener.text.casefold import lowered_twin
from listener.text.scope import inside_any

#: A hint that says "this is report text: find its sections by heading".
TEXT_HINT = "text"


@dataclass(frozen=True, slots=True)
class HeadingRules:
    """Compiled heading vocabulary: upper-case heading -> section kind."""

    headings: Mapping[str, SectionKind]
    line_pattern: re.Pattern[str]
    inline_pattern: re.Pattern[str]
    impression_words: frozenset[str] = frozenset()
    #: ``inline_pattern`` without what comes before the heading (the
    #: separator and blank space): a pattern that starts with the headings
    #: lets ``re`` skip, in C, every position where no heading starts, and
    #: :func:`_inline_headings` checks the separator itself. None when a
    #: heading is empty or starts with blank space (``inline_pattern`` is
    #: then searched as it is).
    inline_heads: re.Pattern[str] | None = None
    #: ``line_pattern`` without its ``^``, led by a line feed instead, its headings grouped by first
    #: character, lower-cased and case-sensitive (listener/text/casefold.py): searched in a lower-cased ASCII text, it finds each line start
    #: where ``line_pattern`` matches with one C search (``re`` skips to the line feeds; an
    #: ``IGNORECASE`` alternation is tried at every position and enters every branch).
    #: :func:`_line_headings` then matches ``line_pattern`` there. None when a heading is empty or
    #: starts with blank space, or the vocabulary has no lower-case twin.
    line_heads: re.Pattern[str] | None = None
    #: The most characters other than blanks an ``inline_heads`` match holds before its colon (the
    #: longest heading and a comma): :func:`_next_head` searches that far back from each colon. 0
    #: when a heading holds a colon (a match would not end at the first colon after its start).
    heads_reach: int = 0

    def kind_of(self, heading: str) -> SectionKind:
        return self.headings.get(" ".join(heading.upper().split()), SectionKind.OTHER)


def compile_heading_rules(headings: Mapping[str, SectionKind]) -> HeadingRules:
    """Compile a heading vocabulary into the two patterns :func:`sectionize` uses."""
    words = sorted(headings, key=len, reverse=True)  # longest first: CLINICAL HISTORY before CLINICAL
    alternation = "|".join(re.escape(w).replace(r"\ ", r"[ \t]+") for w in words)
    line_pattern = re.compile(rf"^{_line_body(alternation)}", re.IGNORECASE | re.MULTILINE)
    inline_pattern = re.compile(rf"(?:(?<=[.,;])|(?<=[ \t]{{2}}))[ \t]*(?P<heading>{alternation})(?:[ \t]*,)?:[ \t,]*")
    heads = line_heads = None
    reach = 0
    if words and all(w and not w[0].isspace() for w in words):
        heads = re.compile(rf"(?P<heading>{_by_first_character(words)})(?:[ \t]*,)?:[ \t,]*")
        # Grouped by first character as well: ``line_heads`` only finds where ``line_pattern``
        # matches, which a match of any branch tells, whatever the branches' order.
        twin = lowered_twin(re.compile(_line_body(_by_first_character(words)), re.IGNORECASE | re.MULTILINE))
        if twin is not None:
            line_heads = re.compile(f"\n{twin.pattern}", twin.flags)
        if not any(":" in w for w in words):
            reach = len(words[0]) + 1
    impression_words = frozenset(
        w.split()[-1] for w, kind in headings.items() if kind is SectionKind.IMPRESSION and w.split()
    )
    return HeadingRules(dict(headings), line_pattern, inline_pattern, impression_words, heads, line_heads, reach)


def _line_body(alternation: str) -> str:
    """A line heading of ``alternation`` after blanks, then a colon or the line end (without the ``^``)."""
    return rf"[ \t]*(?P<heading>{alternation})[ \t]*(?:,?[ \t]*(?P<colon>:)[ \t]*|$)"


def _by_first_character(words: Sequence[str]) -> str:
    """``words`` as one alternation, each word's blanks as ``[ \\t]+``, grouped by first character.

    ``re`` tries the branches of an alternation one after the other at each
    position: a heading is tried at a capital letter only against the
    headings that start with it. A branch that starts with another
    character fails there, so the branch that matches (the first in
    ``words``' order) is the same: the matches are those of the plain
    alternation, where the pattern is case-sensitive.
    """
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(w[0], []).append(re.escape(w[1:]).replace(r"\ ", r"[ \t]+"))
    return "|".join(f"{re.escape(first)}(?:{'|'.join(rest)})" for first, rest in groups.items())


# An upper-case heading standing alone: at a line start or after a separator,
# words of capitals, digits and -/&' (a comma between words allowed: "CT-GUIDED
# NEEDLE BIOPSY, LEFT KIDNEY MASS"), a colon, then the line end or a comma.
_WORD_UC = r"[A-Z][A-Z0-9/&'-]*"
_ALONE_BODY = rf"[ \t]*(?P<heading>{_WORD_UC}(?:,?[ \t]+{_WORD_UC}){{0,7}})[ \t]*:[ \t]*(?:,|$)"
_ALONE_HEADING = re.compile(rf"(?:^|(?<=[.,;])){_ALONE_BODY}", re.MULTILINE)
# _ALONE_HEADING led by the character its start follows (a line feed for ``^``, or a separator):
# ``re`` skips in C to those characters, where _ALONE_HEADING's look-behinds are tried at every
# position (:func:`_alone_headings`).
_ALONE_LED = re.compile(rf"[\n.,;]{_ALONE_BODY}", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class _Boundary:
    at: int  # where the previous section ends
    body: int  # where this section's text starts
    kind: SectionKind
    heading: str


def sectionize(text: str, rules: HeadingRules, hints: Sequence[tuple[int, str]] = ()) -> tuple[Section, ...]:
    """Split report text into sections with offsets into ``text``.

    Args:
        text: the full report text (lines joined by "\\n").
        rules: the heading vocabulary (from the feed's mapping).
        hints: (offset, kind) pairs where the wire format says a section of
            ``kind`` starts (a SectionKind value, or "text" for plain report
            text whose sections come from headings only).

    Returns:
        Sections in text order. A heading with an empty body gives a section
        with empty text (the completeness rule needs to see it). Text before
        the first heading, if any, is an ``other`` section.
    """
    bounds: dict[int, _Boundary] = {}
    for match in _line_headings(text, rules):
        heading = match.group("heading")
        start = match.start("heading")
        # Skip the line end after a bare heading line so the body starts on the next line.
        body = match.end()
        bounds[start] = _Boundary(start, body, rules.kind_of(heading), heading)
    # Only a line heading can hold a later inline heading (inline matches do not overlap: each starts
    # at or after the previous one's body): one bisection in their spans, not a walk over every
    # heading found so far (a report of many headings cost the square of their number).
    in_line_heading = inside_any((b.at, b.body) for b in bounds.values())
    inline = (
        rules.inline_pattern.finditer(text)
        if rules.inline_heads is None
        else _inline_headings(text, rules.inline_heads, rules.heads_reach)
    )
    for match in inline:
        start = match.start("heading")
        if start not in bounds and not in_line_heading(start):
            heading = match.group("heading")
            bounds[start] = _Boundary(start, match.end(), rules.kind_of(heading), heading)

    _end_impressions(text, rules, bounds)

    previous_hint = ""
    for offset, hint in hints:
        if hint != previous_hint and offset not in bounds:
            if hint and hint != TEXT_HINT:
                bounds[offset] = _Boundary(offset, offset, SectionKind(hint), "")
            elif previous_hint and previous_hint != TEXT_HINT:
                # Plain text after a coded group: the coded section ends here.
                bounds[offset] = _Boundary(offset, offset, SectionKind.OTHER, "")
        previous_hint = hint

    ordered = sorted(bounds.values(), key=lambda b: b.at)
    sections: list[Section] = []
    first = ordered[0].at if ordered else len(text)
    if text[:first].strip():
        sections.append(_section(text, SectionKind.OTHER, "", 0, first))
    for i, bound in enumerate(ordered):
        end = ordered[i + 1].at if i + 1 < len(ordered) else len(text)
        # A heading-only hint boundary inside a heading body: keep the heading's kind.
        sections.append(_section(text, bound.kind, bound.heading, min(bound.body, end), end))
    return tuple(_interpretation_as_findings(_merge_hint_duplicates(sections)))


def _interpretation_as_findings(sections: list[Section]) -> list[Section]:
    """An INTERPRETATION followed by an impression with text, in a report with no findings, is the findings.

    Run-together dictations describe the images under "INTERPRETATION:" and
    conclude under "IMPRESSION:" (docs/qa-rules.md "Round 5").
    """
    if any(sec.kind is SectionKind.FINDINGS for sec in sections):
        return sections
    out = list(sections)
    # The last impression with text: a section before it has one after it (one pass, not a walk
    # over the sections after each one). Only sections already passed are rewritten below.
    last = max((i for i, o in enumerate(out) if o.kind is SectionKind.IMPRESSION and o.text.strip()), default=-1)
    for i, sec in enumerate(out):
        if (
            sec.kind is SectionKind.IMPRESSION
            and " ".join(sec.heading.upper().split()) == "INTERPRETATION"
            and sec.text.strip()
            and i < last
        ):
            out[i] = Section(SectionKind.FINDINGS, sec.heading, sec.start, sec.end, sec.text)
    return out


def _inline_headings(text: str, heads: re.Pattern[str], reach: int = 0) -> Iterator[re.Match[str]]:
    """The matches of ``finditer`` of the inline pattern, found through ``heads`` (same groups, same ends).

    The inline pattern matches from a position ``q`` right after a separator
    (``.``, ``,`` or ``;``) or after two blanks, then blanks, then a heading.
    Here ``heads`` finds each heading and the blanks before it are walked
    back: a ``q`` among them (not before the end of the previous match, where
    ``finditer`` resumes) that follows a separator or two blanks makes the
    same match. Where none does, the search goes on from the next character,
    as ``finditer`` would. Each heading is found by :func:`_next_head` (``reach``: see there).
    """
    pos = floor = 0
    while (match := _next_head(text, heads, reach, pos)) is not None:
        start = match.start()
        q = start
        while q > floor and text[q - 1] in " \t":
            q -= 1
        if any(_after_separator(text, k) for k in range(q, start + 1)):
            yield match
            pos = floor = match.end()
        else:
            pos = start + 1


def _next_head(text: str, heads: re.Pattern[str], reach: int, pos: int) -> re.Match[str] | None:
    """``heads.search(text, pos)``, searched only in the stretch before each colon; ``reach`` 0: as it is.

    A match of ``heads`` is a heading (no colon in it), blanks and a comma
    perhaps, then a colon: the first colon after its start, holding at most
    ``reach`` characters other than blanks before that colon. So the first
    match at or after ``pos`` starts before the first colon at or after
    ``pos``, no further back than ``reach`` such characters, or after that
    colon. Only those stretches are searched (up to the colon: the match
    there ends at it whatever follows), where ``heads.search`` tries a
    heading at every capital letter of the text; the match found is made
    again over the whole text for the blanks and commas after the colon.
    """
    if not reach:
        return heads.search(text, pos)
    while (colon := text.find(":", pos)) >= 0:
        lo = colon - reach
        # Back until text[lo:colon] holds ``reach`` characters other than blanks, or ``pos`` is passed.
        while lo > pos:
            short = reach - (colon - lo) + text.count(" ", lo, colon) + text.count("\t", lo, colon)
            if short <= 0:
                break
            lo -= short
        hit = heads.search(text, max(lo, pos), colon + 1)
        if hit is not None:
            return heads.match(text, hit.start())
        pos = colon + 1
    return None


def _line_headings(text: str, rules: HeadingRules) -> Iterator[re.Match[str]]:
    """The matches of ``rules.line_pattern.finditer(text)``, found through ``rules.line_heads``.

    ``line_pattern`` matches at offset 0 or right after a line feed, and
    never across one (its heading words are joined by blanks, and ``$`` ends
    it before the line feed), so its ``finditer`` matches are: a match at 0,
    then each line start where it matches, from the line feed at or after
    the end of the previous match. ``line_heads`` finds those line starts in
    the lower-cased text (the same offsets on an ASCII text); a non-ASCII text
    is searched with ``line_pattern`` as it is.
    """
    led = rules.line_heads
    if led is None or not text.isascii():
        yield from rules.line_pattern.finditer(text)
        return
    pattern = rules.line_pattern
    low = text.lower()
    pos = 0
    match = pattern.match(text, 0)
    if match is not None:
        yield match
        pos = match.end()
    while (hit := led.search(low, pos)) is not None:
        match = pattern.match(text, hit.start() + 1)
        if match is not None:
            yield match
            pos = match.end()
        else:
            pos = hit.start() + 1


def _alone_headings(text: str, lo: int, hi: int) -> Iterator[re.Match[str]]:
    """The matches of ``_ALONE_HEADING.finditer(text, lo, hi)``, found through ``_ALONE_LED``.

    ``_ALONE_HEADING`` matches at offset 0 or right after a line feed or a
    separator (its look-behind reads the text before ``lo`` too). A match
    after the character at ``q - 1`` is a match of ``_ALONE_LED`` at
    ``q - 1``; the search for the next one starts one character before the
    end of the last match (a match that ends with its comma is followed by a
    candidate right there), as ``finditer`` goes on from that end.
    """
    pos = lo
    if lo == 0:
        match = _ALONE_HEADING.match(text, 0, hi)
        if match is not None:
            yield match
            pos = match.end()
    while (hit := _ALONE_LED.search(text, max(pos - 1, 0), hi)) is not None:
        match = _ALONE_HEADING.match(text, hit.start() + 1, hi)
        if match is not None:
            yield match
            pos = match.end()
        else:
            pos = hit.start() + 2


def _after_separator(text: str, k: int) -> bool:
    """The inline pattern's look-behind at ``k``: after ``.``, ``,`` or ``;``, or after two blanks."""
    return (k >= 1 and text[k - 1] in ".,;") or (k >= 2 and text[k - 2] in " \t" and text[k - 1] in " \t")


def _end_impressions(text: str, rules: HeadingRules, bounds: dict[int, _Boundary]) -> None:
    """Add an ``other`` boundary at each unknown stand-alone heading inside an impression."""
    impressions = [b for b in bounds.values() if b.kind is SectionKind.IMPRESSION]
    if not impressions:
        return
    starts = sorted(bounds)
    for imp in impressions:
        # The next boundary after the impression's start: bisected, not filtered from every start.
        i = bisect_right(starts, imp.at)
        end = starts[i] if i < len(starts) else len(text)
        for match in _alone_headings(text, imp.body, end):
            heading = match.group("heading")
            start = match.start("heading")
            if start in bounds or start < imp.body:
                continue
            words = heading.replace(",", " ").split()
            if rules.kind_of(heading) is not SectionKind.OTHER or words[-1] in rules.impression_words:
                continue
            bounds[start] = _Boundary(start, match.end(), SectionKind.OTHER, heading)
            break  # the impression ends here; what follows is no longer in it


def _section(text: str, kind: SectionKind, heading: str, start: int, end: int) -> Section:
    body = text[start:end]
    stripped_left = len(body) - len(body.lstrip(" \t\r\n,"))
    start += stripped_left
    body = text[start:end].rstrip(" \t\r\n,")
    return Section(kind=kind, heading=heading, start=start, end=start + len(body), text=body)


def _merge_hint_duplicates(sections: list[Section]) -> list[Section]:
    """Drop empty sections that only a hint made.

    An OBX group coded "impression" whose first line is "IMPRESSION:" produces
    both a hint boundary and a heading; the heading one is the real section.
    """
    return [sec for sec in sections if sec.heading or sec.text]
