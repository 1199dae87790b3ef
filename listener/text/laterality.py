"""Side words (left/right/bilateral) and the paired anatomy they modify.

Pure: no I/O, no clock. Feeds the laterality rules: order side vs report side,
and impression side vs findings side for the same finding.

A side word is attached to the first paired-anatomy phrase that follows it
within a few words in the same sentence ("left lower lobe", "right-sided
hydronephrosis of the kidney"), else to one just before it ("knee, left").
It is dropped when it names no side of the body: directly before non-paired
anatomy ("left ventricle", "right heart", "left lobe of the liver"), before a
device ("left-sided chest tube", "right PICC"), in a position ("left lateral
decubitus") or in a verb phrase ("left in place"). A finding between the side
word and that anatomy or device keeps the side word, for the finding ("bilateral
effusion consistent with cardiac failure", "left pneumothorax with chest tube"). L/R/Lt/Rt count only right
before paired anatomy. A side word with no anatomy nearby is kept with
``anatomy == ""`` (it may qualify a finding: "effusion on the right").
"""

from __future__ import annotations

from dataclasses import dataclass

from listener.text.cache import TextCache
from listener.text.casefold import lowered_text
from listener.text.sentences import Span, split_sentences
from listener.text.terms import Terms

__all__ = ["LateralMention", "lateral_mentions", "sides_in"]


@dataclass(frozen=True, slots=True)
class LateralMention:
    """One side word of the text and what it qualifies.

    Attributes:
        side: ``"left"``, ``"right"`` or ``"bilateral"``.
        start, end: offsets of the side word in the text.
        anatomy: canonical paired-anatomy name (``"knee"``, ``"kidney"``,
            ``"lung_lobe"``...) or ``""`` when no anatomy was found near it.
        anatomy_start, anatomy_end: offsets of the anatomy phrase (equal to
            ``start`` when there is none).
        sentence_start, sentence_end: the sentence holding the side word.
    """

    side: str
    start: int
    end: int
    anatomy: str
    anatomy_start: int
    anatomy_end: int
    sentence_start: int
    sentence_end: int


def _lookback_start(sentence: Span, pos: int) -> int:
    return max(sentence.start, pos - 60)


def lateral_mentions(
    text: str,
    start: int,
    end: int | None,
    terms: Terms,
    *,
    sentences: tuple[Span, ...] | None = None,
    cache: TextCache | None = None,
) -> tuple[LateralMention, ...]:
    """Find side words in ``text[start:end]`` and attach them to paired anatomy.

    Args:
        text: the full report text; offsets are into it.
        start, end: the region to scan (``end=None``: to the end).
        terms: compiled vocabularies (:func:`listener.text.terms.build_terms`).
        sentences: the region's sentences when the caller already has them.
        cache: the report's shared results (the same region is scanned once).

    Returns:
        Mentions in text order; dropped side words (non-paired anatomy,
        devices, positions, verbs) are not included.
    """
    hi = len(text) if end is None else min(end, len(text))
    if cache is None:
        return _lateral_mentions(text, start, hi, terms, sentences, None)
    # The sentences are part of the key by identity; the entry keeps them alive.
    key = (terms.digest, text, start, hi, id(sentences))
    cached = cache.sides.get(key)
    if isinstance(cached, tuple) and cached[0] is sentences:
        return cached[1]  # type: ignore[no-any-return]
    found = _lateral_mentions(text, start, hi, terms, sentences, cache)
    cache.sides[key] = (sentences, found)
    return found


def _lateral_mentions(
    text: str, start: int, hi: int, terms: Terms, sentences: tuple[Span, ...] | None, cache: TextCache | None
) -> tuple[LateralMention, ...]:
    lat = terms.laterality
    matches = (
        terms.scan(lat.side_scanner, text, start, hi, cache.walks if cache is not None else None)
        if lat.side_scanner is not None
        else list(lat.side_re.finditer(text, start, hi))
    )
    if not matches:
        return ()
    sents = sentences if sentences is not None else split_sentences(text, start, hi, cache=cache)
    # With the report's cache, an ASCII text is lowered once and the anatomy
    # patterns run as their case-sensitive twins (listener/text/casefold.py):
    # the same offsets and groups at a fraction of the cost. Without a cache
    # the originals run (lowering the whole text per region would make the
    # cost grow with the number of regions times the text's length).
    twins = lat.lowered
    low = lowered_text(text, cache) if twins is not None and cache is not None else None
    if low is not None and twins is not None:
        src, after_re, before_re = low, twins.after_re, twins.before_re
        device_after_re, anatomy_re = twins.device_after_re, twins.anatomy_re
    else:
        src, after_re, before_re = text, lat.after_re, lat.before_re
        device_after_re, anatomy_re = lat.device_after_re, lat.anatomy_re
    out: list[LateralMention] = []
    si = 0
    for m in matches:
        group = m.lastgroup
        if group == "x" or group is None:
            continue
        while si < len(sents) and sents[si].end <= m.start():
            si += 1
        if si == len(sents) or sents[si].start > m.start():
            continue  # outside every sentence (punctuation-only debris)
        sent = sents[si]
        abbreviated = group.startswith("abbr_")
        side = group[5:] if abbreviated else group
        after = after_re.match(src, m.end(), sent.end)
        anatomy, a_start, a_end = "", m.start(), m.start()
        if after is not None:
            head = after.lastgroup
            if head in ("np", "dev"):
                if not _finding_before(text, m.end(), after.start(head), terms):
                    continue
                # "bilateral effusion consistent with ... cardiac failure": the
                # side word names the finding it precedes, not the heart beyond it.
                head = None
            if head is not None:
                head_start = after.start(head)
                if abbreviated and text[m.end() : head_start].strip(" -"):
                    continue  # "L" must touch its anatomy
                if device_after_re.match(src, after.end(), sent.end):
                    continue  # "left subclavian catheter": the device's side
                anatomy, a_start, a_end = lat.anatomy_groups[head], head_start, after.end(head)
        if not anatomy and side == "bilateral":
            word = m.group()
            # "bibasilar", "bi-apical", "bitemporal": the side word names its anatomy.
            if word[:2].lower() == "bi" and anatomy_re is not None:
                inner = anatomy_re.fullmatch(src, m.start() + 2 + (word[2:3] == "-"), m.end())
                if inner is not None and inner.lastgroup is not None:
                    anatomy, a_start, a_end = lat.anatomy_groups[inner.lastgroup], inner.start(), inner.end()
        if not anatomy:
            if abbreviated:
                continue
            before = before_re.search(src, _lookback_start(sent, m.start()), m.start())
            if before is not None and before.lastgroup is not None:
                g = before.lastgroup
                anatomy, a_start, a_end = lat.anatomy_groups[g], before.start(g), before.end(g)
        out.append(LateralMention(side, m.start(), m.end(), anatomy, a_start, a_end, sent.start, sent.end))
    return tuple(out)


def _finding_before(text: str, start: int, end: int, terms: Terms) -> bool:
    """True when a finding concept lies wholly in ``text[start:end]``: between a side word and the anatomy it skipped to."""
    if end - start < 2:
        return False
    return any(m.end() <= end for m in terms.concept_scanner.scan(text, start, end))


def sides_in(mentions: tuple[LateralMention, ...], *, anatomy_only: bool = True) -> frozenset[str]:
    """The set of sides named, optionally only those attached to anatomy."""
    return frozenset(lm.side for lm in mentions if lm.anatomy or not anatomy_only)
