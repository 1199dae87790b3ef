"""Finding mentions and their ConText status: negated, uncertain, historical...

Pure: no I/O, no clock. The compiled-rule member of the ConText/NegEx family
(Chapman et al.), chosen over medspacy after measuring both
(bench/context_compare.py): same vocabularies, a fraction of the time.

Strategy: one ``finditer`` over the region for concepts, one for triggers;
both lists are bucketed by sentence; each mention then looks only at the few
triggers of its own sentence. A trigger reaches a mention when:

- the direction fits (``forward``: trigger before the mention; ``backward``:
  after it; ``bidirectional``: either),
- both are in the same sentence (scope ends at the sentence end),
- no terminator ("but", "however", "which", ";"...) lies between them,
- at most ``window`` words lie between them.

Pseudo-triggers ("no change", "not only", "without change") sit first in the
trigger alternation, so they swallow the trigger word inside them. When a
negation and a hedge both reach a mention, the nearer one wins (a tie goes to
the negation: "no pneumothorax is suspected").
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from listener.model import frozen_builder
from listener.text.cache import TextCache
from listener.text.laterality import LateralMention, lateral_mentions
from listener.text.scope import RegionIndex
from listener.text.sentences import Span, split_sentences
from listener.text.terms import Concept, Terms, Trigger

__all__ = [
    "Cue",
    "Mention",
    "definite_statements",
    "find_mentions",
    "has_definite_statement",
    "hedge_count",
    "hedge_density",
]

# Words allowed between a side word and its finding ("left lower lobe").
_SIDE_WINDOW = 4
# At most this many triggers are weighed on each side of one mention. Within
# the largest window (a dozen words) a report has a handful; only an input
# built to attack the checker (thousands of "?" or triggers inside one
# parenthesis) has more, and without a bound its cost would grow with the
# square of its length.
_MAX_REACH = 32


@dataclass(frozen=True, slots=True)
class Cue:
    """A trigger that acted on a mention (evidence for explanations).

    Attributes:
        category: ``negated``, ``uncertain``, ``historical``, ``hypothetical``
            or ``other_experiencer``.
        start, end: offsets of the trigger text.
    """

    category: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Mention:
    """One mention of a finding concept and its context.

    Attributes:
        concept: concept name (``pneumothorax``).
        text: the matched text, as written.
        start, end: offsets of the mention in the full text.
        sentence_start, sentence_end: its sentence.
        negated: absent ("no", "without", "resolved", "is excluded"...).
        uncertain: hedged ("may represent", "cannot be excluded", "possible").
        historical: in the past ("history of", "s/p", "old", "healed").
        hypothetical: asked about, not found: indication or condition
            ("rule out", "r/o", "evaluate for", "if").
        experiencer: ``"patient"`` or ``"other"`` ("family history of").
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or ``""``.
        critical, significant, sex: copied from the concept.
        cues: the triggers that set the flags above.
    """

    concept: str
    text: str
    start: int
    end: int
    sentence_start: int
    sentence_end: int
    negated: bool = False
    uncertain: bool = False
    historical: bool = False
    hypothetical: bool = False
    experiencer: str = "patient"
    laterality: str = ""
    critical: bool = False
    significant: bool = False
    sex: str = ""
    cues: tuple[Cue, ...] = ()

    @property
    def affirmed(self) -> bool:
        """Present now, in this patient, stated without hedging."""
        return (
            not (self.negated or self.uncertain or self.historical or self.hypothetical)
            and self.experiencer == "patient"
        )


#: ``Mention(*values)``, all sixteen in field order, at half the cost (listener/model.py ``frozen_builder``).
_new_mention = frozen_builder(Mention)


@dataclass(frozen=True, slots=True)
class _Hit:
    trigger: Trigger
    start: int
    end: int


def _side_for(
    index: RegionIndex,
    m_start: int,
    m_end: int,
    sides: Sequence[LateralMention],
    side_ends: list[int],
    lo: int,
    hi: int,
    spans: list[tuple[int, int]],
    span_starts: list[int],
) -> str:
    """The side word qualifying a finding: inside it, just before, or just after.

    ``sides[lo:hi]`` are the side words of the finding's sentence. A side word
    before the finding wins over one after it; either must be within
    ``_SIDE_WINDOW`` words with no other finding between them. Only the
    nearest side word on each side can qualify: a farther one has at least as
    many words and findings in between.
    """
    j = bisect_right(side_ends, m_start, lo, hi)
    if j < hi and sides[j].start < m_end:
        return sides[j].side  # inside the finding or overlapping it ("bi-basilar opacities")
    if j > lo:
        lm = sides[j - 1]
        if index.words(lm.end, m_start) <= _SIDE_WINDOW and not _finding_within(spans, span_starts, lm.end, m_start):
            return lm.side
    if j < hi:
        lm = sides[j]
        if index.words(m_end, lm.start) <= _SIDE_WINDOW and not _finding_within(spans, span_starts, m_end, lm.start):
            return lm.side
    return ""


def _finding_within(spans: list[tuple[int, int]], span_starts: list[int], a: int, b: int) -> bool:
    """True when a finding lies wholly inside ``[a, b]`` (spans never overlap: the first one decides)."""
    i = bisect_left(span_starts, a)
    return i < len(spans) and spans[i][1] <= b


def _in_reach(
    index: RegionIndex,
    hits: list[_Hit],
    hit_starts: list[int],
    hit_ends: list[int],
    lo: int,
    hi: int,
    m_start: int,
    m_end: int,
    reach: int,
) -> list[tuple[_Hit, int]]:
    """The triggers of ``hits[lo:hi]`` (one sentence) whose scope covers a mention, in text order.

    A trigger reaches a mention when the direction fits, no terminator lies
    between them, a backward trigger crosses no clause comma, and at most its
    ``window`` words (asides discounted) lie between them. Returns each with
    its word distance.

    Strategy: walk outwards from the mention. A terminator stops the walk (it
    cuts every trigger beyond it too), and so does a trigger farther than
    ``reach`` (the largest window) in words outside asides, a count that
    never exceeds the distance and only grows with it. At most
    ``_MAX_REACH`` triggers are looked at on each side.
    """
    before: list[tuple[_Hit, int]] = []
    j = bisect_right(hit_ends, m_start, lo, hi) - 1
    stop = max(lo, j - _MAX_REACH + 1)
    while j >= stop:
        h = hits[j]
        j -= 1
        if index.bare_words(h.end, m_start) > reach:
            break
        t = h.trigger
        if t.category == "terminate":
            break
        if t.category == "pseudo" or t.direction == "backward":
            continue
        d = index.gap(h.end, m_start, t.window)
        if d <= t.window:
            before.append((h, d))
    before.reverse()
    j = bisect_left(hit_starts, m_end, lo, hi)
    stop = min(hi, j + _MAX_REACH)
    while j < stop:
        h = hits[j]
        j += 1
        if index.bare_words(m_end, h.start) > reach:
            break
        t = h.trigger
        if t.category == "terminate":
            break
        if t.category == "pseudo" or t.direction == "forward":
            continue
        if index.clause_break(m_end, h.start):
            continue
        d = index.gap(m_end, h.start, t.window)
        if d <= t.window:
            before.append((h, d))
    return before


def find_mentions(
    text: str,
    start: int,
    end: int | None,
    terms: Terms,
    *,
    sentences: tuple[Span, ...] | None = None,
    with_laterality: bool = True,
    cache: TextCache | None = None,
) -> tuple[Mention, ...]:
    """Find every concept mention in ``text[start:end]`` and classify it.

    Args:
        text: the full report text; offsets are into it.
        start, end: the region to scan (a section body; ``end=None``: to the end).
        terms: compiled vocabularies (:func:`listener.text.terms.build_terms`).
        sentences: the region's sentences when the caller already has them.
        with_laterality: attach a side to each mention (skip to save time).
        cache: the report's shared results (the same region is scanned once).

    Returns:
        Mentions in text order.
    """
    hi = len(text) if end is None else min(end, len(text))
    sents = sentences if sentences is not None else split_sentences(text, start, hi, cache=cache)
    if cache is None:
        return _find_mentions(text, start, hi, terms, sents, with_laterality, None)
    # The sentences are part of the key by identity: split_sentences returns
    # the same tuple for the same region, and the entry keeps it alive.
    key = (terms.digest, text, start, hi, with_laterality, id(sents))
    cached = cache.mentions.get(key)
    if isinstance(cached, tuple) and cached[0] is sents:
        return cached[1]  # type: ignore[no-any-return]
    found = _find_mentions(text, start, hi, terms, sents, with_laterality, cache)
    cache.mentions[key] = (sents, found)
    return found


def _find_mentions(
    text: str,
    start: int,
    hi: int,
    terms: Terms,
    sents: tuple[Span, ...],
    with_laterality: bool,
    cache: TextCache | None,
) -> tuple[Mention, ...]:
    concept_matches = terms.scan(terms.concept_scanner, text, start, hi, cache.walks if cache is not None else None)
    if not concept_matches or not sents:
        return ()
    # Strategy: every list below is sorted by offset; a sentence's share of
    # each is the slice between the starts of it and of the next sentence
    # (bisected), and every distance is a RegionIndex query, so the work per
    # mention does not grow with the length of its sentence.
    sent_starts = [s.start for s in sents]
    groups = terms.modifier_groups
    hits = [
        _Hit(groups[m.lastgroup or ""], m.start(), m.end()) for m in modifier_matches(text, start, hi, terms, cache)
    ]
    hit_starts = [h.start for h in hits]
    hit_ends = [h.end for h in hits]
    sides: tuple[LateralMention, ...] = ()
    if with_laterality:
        sides = lateral_mentions(text, start, hi, terms, sentences=sents, cache=cache)
    side_starts = [lm.start for lm in sides]
    side_ends = [lm.end for lm in sides]
    spans = [(m.start(), m.end()) for m in concept_matches]
    span_starts = [s for s, _ in spans]
    index = RegionIndex(text, start, hi, span_starts)
    reach = terms.max_window
    concept_groups = terms.concept_groups
    readings: dict[tuple[str, int], bool] = {}

    out: list[Mention] = []
    k = -1
    hit_lo = hit_hi = side_lo = side_hi = 0
    sent = sents[0]
    for i, m in enumerate(concept_matches):
        m_start, m_end = spans[i]
        if k + 1 < len(sents) and m_start >= sent_starts[k + 1]:
            k = bisect_right(sent_starts, m_start) - 1
            sent = sents[k]
            nxt = sent_starts[k + 1] if k + 1 < len(sents) else hi + 1
            hit_lo, hit_hi = bisect_left(hit_starts, sent.start), bisect_left(hit_starts, nxt)
            side_lo, side_hi = bisect_left(side_starts, sent.start), bisect_left(side_starts, nxt)
        if k < 0 or m_start >= sent.end:
            continue  # before the first sentence, or debris after its sentence's end
        concept = concept_groups[m.lastgroup or ""]
        if concept.context_concept:
            concept = _in_context(text, concept, sent, terms, readings)
        flags: dict[str, int] = {}
        cues: list[Cue] = []
        first_neg = first_unc = -1
        for h, d in _in_reach(index, hits, hit_starts, hit_ends, hit_lo, hit_hi, m_start, m_end, reach):
            cat = h.trigger.category
            if cat not in flags or d < flags[cat]:
                flags[cat] = d
            if cat == "negated" and h.end <= m_start and first_neg < 0:
                first_neg = h.start
            elif cat == "uncertain" and h.end <= m_start and first_unc < 0:
                first_unc = h.start
            cues.append(Cue(cat, h.start, h.end))
        negated = "negated" in flags
        uncertain = "uncertain" in flags
        if negated and uncertain:
            # "No consolidation, suspicious opacity, or pneumothorax": a
            # hedge inside a negated list stays negated; otherwise the
            # nearer trigger decides.
            if 0 <= first_neg < first_unc:
                uncertain = False
            elif flags["uncertain"] < flags["negated"]:
                negated = False
            else:
                uncertain = False
            drop = "uncertain" if negated else "negated"
            cues = [c for c in cues if c.category != drop]
        side = ""
        if side_hi > side_lo:
            side = _side_for(index, m_start, m_end, sides, side_ends, side_lo, side_hi, spans, span_starts)
        out.append(
            _new_mention(
                concept.name,  # concept
                m.group(),  # text
                m_start,  # start
                m_end,  # end
                sent.start,  # sentence_start
                sent.end,  # sentence_end
                negated,
                uncertain,
                "historical" in flags,  # historical
                "hypothetical" in flags,  # hypothetical
                "other" if "other_experiencer" in flags else "patient",  # experiencer
                side,  # laterality
                concept.critical,
                concept.significant,
                concept.sex,
                tuple(cues),  # cues
            )
        )
    return tuple(out)


def _in_context(
    text: str, concept: Concept, sent: Span, terms: Terms, readings: dict[tuple[str, int], bool]
) -> Concept:
    """The concept a mention is read as: its ``in_context`` concept when the report fits.

    ``readings`` remembers, for one scan, whether the report and each
    sentence fit: searching the whole report once per mention would make a
    report with many mentions quadratic.
    """
    report_re, not_re = concept.context_report, concept.context_not_sentence
    if report_re is None:
        return concept
    report_key = (concept.name, -1)
    report_fits = readings.get(report_key)
    if report_fits is None:
        report_fits = readings[report_key] = report_re.search(text) is not None
    if not report_fits:
        return concept
    if not_re is not None:
        sent_key = (concept.name, sent.start)
        excluded = readings.get(sent_key)
        if excluded is None:
            excluded = readings[sent_key] = not_re.search(text, sent.start, sent.end) is not None
        if excluded:
            return concept
    return terms.concepts[concept.context_concept]


def modifier_matches(
    text: str, start: int, hi: int, terms: Terms, cache: TextCache | None = None
) -> tuple[re.Match[str], ...]:
    """``terms.modifier_scanner.scan(text, start, hi)``, once per region and report.

    ``hi`` must already be clipped to ``len(text)``. Modifier (ConText
    trigger) scans repeat: find_mentions, hedge_count and definite_statements
    scan the same impression, for the QA rules and the routing facts alike.
    The matches are immutable; the key holds the text, so a hit in ``cache``
    is always the same text.
    """
    if cache is None:
        return tuple(terms.modifier_scanner.scan(text, start, hi))
    key = (terms.digest, text, start, hi)
    cached = cache.modifiers.get(key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    found = tuple(terms.scan(terms.modifier_scanner, text, start, hi, cache.walks))
    cache.modifiers[key] = found
    return found


def hedge_count(text: str, start: int, end: int | None, terms: Terms, *, cache: TextCache | None = None) -> int:
    """Number of hedging (uncertainty) phrases in ``text[start:end]``."""
    hi = len(text) if end is None else min(end, len(text))
    groups = terms.modifier_groups
    return sum(
        1 for m in modifier_matches(text, start, hi, terms, cache) if groups[m.lastgroup or ""].category == "uncertain"
    )


def hedge_density(
    text: str,
    start: int,
    end: int | None,
    terms: Terms,
    *,
    sentences: tuple[Span, ...] | None = None,
    cache: TextCache | None = None,
) -> float:
    """Hedging phrases per sentence in ``text[start:end]`` (0.0 for no sentence).

    An impression of three sentences with "possibly", "cannot be excluded"
    and "may represent" scores 1.0; the clarity rule compares this with a
    threshold from policies/qa.yaml.
    """
    hi = len(text) if end is None else min(end, len(text))
    sents = sentences if sentences is not None else split_sentences(text, start, hi, cache=cache)
    if not sents:
        return 0.0
    return hedge_count(text, start, hi, terms, cache=cache) / len(sents)


def definite_statements(
    text: str,
    start: int,
    end: int | None,
    terms: Terms,
    *,
    sentences: tuple[Span, ...] | None = None,
    cache: TextCache | None = None,
) -> tuple[Span, ...]:
    """Sentences of ``text[start:end]`` that state something plainly.

    A sentence is definite when it holds no hedge and either affirms or
    negates a finding ("Right lower lobe pneumonia.", "No pneumothorax.") or
    uses a definite phrase ("No acute cardiopulmonary abnormality.",
    "Normal chest.", "Stable.").
    """
    hi = len(text) if end is None else min(end, len(text))
    sents = sentences if sentences is not None else split_sentences(text, start, hi, cache=cache)
    groups = terms.modifier_groups
    out: list[Span] = []
    for s in sents:
        if any(
            groups[m.lastgroup or ""].category == "uncertain"
            for m in modifier_matches(text, s.start, s.end, terms, cache)
        ):
            continue
        if terms.definite_re.search(text, s.start, s.end):
            out.append(s)
            continue
        mentions = find_mentions(text, s.start, s.end, terms, sentences=(s,), with_laterality=False, cache=cache)
        if any(not (m.uncertain or m.hypothetical) for m in mentions):
            out.append(s)
    return tuple(out)


def has_definite_statement(
    text: str, start: int, end: int | None, terms: Terms, *, cache: TextCache | None = None
) -> bool:
    """True when ``text[start:end]`` holds at least one definite sentence."""
    return bool(definite_statements(text, start, end, terms, cache=cache))
