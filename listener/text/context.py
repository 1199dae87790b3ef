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
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from listener.text.laterality import LateralMention, lateral_mentions
from listener.text.sentences import Memo, Span, split_sentences
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

_WORD = re.compile(r"\w+")
# Words that may sit between the findings of a list without opening a new
# clause ("pneumothorax, effusion, and consolidation are absent").
_LIST_WORDS = frozenset(
    """
    and or nor the a an is are was were be been both also all either any as well other no
    small large mild moderate significant focal acute left right bilateral
    """.split()
)
_MENTIONS = Memo()
# Modifier (ConText trigger) scans per region: find_mentions, hedge_count and
# definite_statements scan the same impression; the QA rules and the routing
# facts of one message ask for it several times.
_MODIFIERS = Memo(64)
# Words allowed between a side word and its finding ("left lower lobe").
_SIDE_WINDOW = 4
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
# A parenthetical aside of one sentence (no nested brackets).
_ASIDE = re.compile(r"\([^()]*\)")
_DATE_TAIL = re.compile(r",[ \t]*(?:\d{4}|XXXX)(?!\w)", re.IGNORECASE)


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
        return not (
            self.negated or self.uncertain or self.historical or self.hypothetical
        ) and self.experiencer == "patient"


@dataclass(frozen=True, slots=True)
class _Hit:
    trigger: Trigger
    start: int
    end: int


def _words_between(text: str, a: int, b: int) -> int:
    return len(_WORD.findall(text, a, b)) if b > a else 0


def _clause_break(text: str, lo: int, hi: int, spans: Sequence[tuple[int, int]]) -> bool:
    """True when a comma between ``lo`` and ``hi`` starts a clause of its own.

    "Pneumothorax, effusion, or consolidation is absent": each piece after a
    comma names another finding of the same list, so a backward trigger
    reaches back over it. "Heart size is enlarged, pulmonary vascularity
    within normal limits": the piece before the trigger names no finding but
    has words of its own (its subject), so the trigger stops at the comma.
    """
    comma = _next_comma(text, lo, hi)
    while comma >= 0:
        nxt = _next_comma(text, comma + 1, hi)
        seg_end = hi if nxt < 0 else nxt
        if not any(comma < s < seg_end for s, _ in spans):
            for w in _WORD.finditer(text, comma + 1, seg_end):
                if w.group().lower() not in _LIST_WORDS:
                    return True
        comma = nxt
    return False


def _next_comma(text: str, lo: int, hi: int) -> int:
    """The first comma of ``text[lo:hi]`` that separates clauses, or -1.

    The comma of a date ("dated March 3, 2020", de-identified "dated XXXX,
    XXXX") is part of the date, not a clause break.
    """
    comma = text.find(",", lo, hi)
    while (
        comma >= 0
        and _DATE_TAIL.match(text, comma) is not None
        and _DATE_HEAD.search(text, max(0, comma - _DATE_BEFORE), comma) is not None
    ):
        comma = text.find(",", comma + 1, hi)
    return comma


def _in_scope(
    text: str, hit: _Hit, m_start: int, m_end: int, terminators: list[_Hit], spans: Sequence[tuple[int, int]] = ()
) -> int | None:
    """Word distance from trigger to mention when in scope, else None.

    ``spans`` are the sentence's concept mentions: a backward trigger's scope
    stops at a comma unless only other findings of a list lie beyond it.
    """
    t = hit.trigger
    if hit.end <= m_start and t.direction != "backward":
        lo, hi = hit.end, m_start
    elif hit.start >= m_end and t.direction != "forward":
        lo, hi = m_end, hit.start
        if _clause_break(text, lo, hi, spans):
            return None
    else:
        return None
    for term in terminators:
        if term.start >= lo and term.end <= hi:
            return None
    gap = _words_between(text, lo, hi)
    if gap > t.window and "(" in text[lo:hi]:
        # A parenthetical aside does not count against the window: "Pneumonia
        # seen on CT dated XXXX, XXXX (not seen on prior chest x-XXXX) is not
        # seen either".
        gap -= sum(len(_WORD.findall(p.group())) for p in _ASIDE.finditer(text, lo, hi))
    return gap if gap <= t.window else None


def _side_for(text: str, start: int, end: int, sides: list[LateralMention], blockers: list[tuple[int, int]]) -> str:
    """The side word qualifying a finding: inside it, just before, or just after."""
    best_before: LateralMention | None = None
    best_after: LateralMention | None = None
    for lm in sides:
        if lm.start < end and lm.end > start:
            return lm.side  # inside the finding or overlapping it ("bi-basilar opacities")
        if lm.end <= start:
            if _words_between(text, lm.end, start) <= _SIDE_WINDOW and not any(
                lm.end <= b0 and b1 <= start for b0, b1 in blockers
            ):
                best_before = lm
        elif lm.start >= end and best_after is None:
            if _words_between(text, end, lm.start) <= _SIDE_WINDOW and not any(
                end <= b0 and b1 <= lm.start for b0, b1 in blockers
            ):
                best_after = lm
    chosen = best_before or best_after
    return chosen.side if chosen is not None else ""


def _bucket(spans: list[tuple[int, int]], starts: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, (s, _) in enumerate(spans):
        k = bisect_right(starts, s) - 1
        if k >= 0:
            out.setdefault(k, []).append(i)
    return out


def find_mentions(
    text: str,
    start: int,
    end: int | None,
    terms: Terms,
    *,
    sentences: tuple[Span, ...] | None = None,
    with_laterality: bool = True,
) -> tuple[Mention, ...]:
    """Find every concept mention in ``text[start:end]`` and classify it.

    Args:
        text: the full report text; offsets are into it.
        start, end: the region to scan (a section body; ``end=None``: to the end).
        terms: compiled vocabularies (:func:`listener.text.terms.load_terms`).
        sentences: the region's sentences when the caller already has them.
        with_laterality: attach a side to each mention (skip to save time).

    Returns:
        Mentions in text order.
    """
    hi = len(text) if end is None else min(end, len(text))
    sents = sentences if sentences is not None else split_sentences(text, start, hi)
    # The sentences are part of the key by identity: split_sentences returns
    # the same tuple for the same region, and the memo keeps it alive.
    key = (terms.digest, text, start, hi, with_laterality, id(sents))
    cached = _MENTIONS.get(key)
    if isinstance(cached, tuple) and cached[0] is sents:
        return cached[1]  # type: ignore[no-any-return]
    found = _find_mentions(text, start, hi, terms, sents, with_laterality)
    _MENTIONS.put(key, (sents, found))
    return found


def _find_mentions(
    text: str, start: int, hi: int, terms: Terms, sents: tuple[Span, ...], with_laterality: bool
) -> tuple[Mention, ...]:
    concept_matches = terms.concept_scanner.scan(text, start, hi)
    if not concept_matches or not sents:
        return ()
    starts = [s.start for s in sents]
    groups = terms.modifier_groups
    hits = [_Hit(groups[m.lastgroup or ""], m.start(), m.end()) for m in modifier_matches(text, start, hi, terms)]
    hit_buckets = _bucket([(h.start, h.end) for h in hits], starts)
    sides: tuple[LateralMention, ...] = ()
    if with_laterality:
        sides = lateral_mentions(text, start, hi, terms, sentences=sents)
    side_buckets = _bucket([(lm.start, lm.end) for lm in sides], starts)
    spans = [(m.start(), m.end()) for m in concept_matches]
    concept_buckets = _bucket(spans, starts)
    concept_groups = terms.concept_groups

    out: list[Mention] = []
    for k, idxs in sorted(concept_buckets.items()):
        sent = sents[k]
        sent_hits = [hits[i] for i in hit_buckets.get(k, ())]
        terminators = [h for h in sent_hits if h.trigger.category == "terminate"]
        scoped = [h for h in sent_hits if h.trigger.category not in ("pseudo", "terminate")]
        sent_sides = [sides[i] for i in side_buckets.get(k, ())]
        sent_spans = [spans[i] for i in idxs]
        for i in idxs:
            m = concept_matches[i]
            concept = concept_groups[m.lastgroup or ""]
            m_start, m_end = spans[i]
            if m_start >= sent.end:
                continue
            if concept.context_concept:
                concept = _in_context(text, concept, sent, terms)
            flags: dict[str, int] = {}
            cues: list[Cue] = []
            first_neg = first_unc = -1
            for h in scoped:
                d = _in_scope(text, h, m_start, m_end, terminators, sent_spans)
                if d is None:
                    continue
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
            if sent_sides:
                blockers = [sp for sp in sent_spans if sp != (m_start, m_end)]
                side = _side_for(text, m_start, m_end, sent_sides, blockers)
            out.append(
                Mention(
                    concept=concept.name,
                    text=m.group(),
                    start=m_start,
                    end=m_end,
                    sentence_start=sent.start,
                    sentence_end=sent.end,
                    negated=negated,
                    uncertain=uncertain,
                    historical="historical" in flags,
                    hypothetical="hypothetical" in flags,
                    experiencer="other" if "other_experiencer" in flags else "patient",
                    laterality=side,
                    critical=concept.critical,
                    significant=concept.significant,
                    sex=concept.sex,
                    cues=tuple(cues),
                )
            )
    return tuple(out)


def _in_context(text: str, concept: Concept, sent: Span, terms: Terms) -> Concept:
    """The concept a mention is read as: its ``in_context`` concept when the report fits."""
    report_re, not_re = concept.context_report, concept.context_not_sentence
    if report_re is None or report_re.search(text) is None:
        return concept
    if not_re is not None and not_re.search(text, sent.start, sent.end) is not None:
        return concept
    return terms.concepts[concept.context_concept]


def modifier_matches(text: str, start: int, hi: int, terms: Terms) -> tuple[re.Match[str], ...]:
    """``terms.modifier_scanner.scan(text, start, hi)``, remembered per region.

    ``hi`` must already be clipped to ``len(text)``. The matches are
    immutable; the memo holds the text, so a hit is always the same text.
    """
    key = (terms.digest, text, start, hi)
    cached = _MODIFIERS.get(key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    found = tuple(terms.modifier_scanner.scan(text, start, hi))
    _MODIFIERS.put(key, found)
    return found


def hedge_count(text: str, start: int, end: int | None, terms: Terms) -> int:
    """Number of hedging (uncertainty) phrases in ``text[start:end]``."""
    hi = len(text) if end is None else min(end, len(text))
    groups = terms.modifier_groups
    return sum(1 for m in modifier_matches(text, start, hi, terms) if groups[m.lastgroup or ""].category == "uncertain")


def hedge_density(
    text: str, start: int, end: int | None, terms: Terms, *, sentences: tuple[Span, ...] | None = None
) -> float:
    """Hedging phrases per sentence in ``text[start:end]`` (0.0 for no sentence).

    An impression of three sentences with "possibly", "cannot be excluded"
    and "may represent" scores 1.0; the clarity rule compares this with a
    threshold from policies/qa.yaml.
    """
    hi = len(text) if end is None else min(end, len(text))
    sents = sentences if sentences is not None else split_sentences(text, start, hi)
    if not sents:
        return 0.0
    return hedge_count(text, start, hi, terms) / len(sents)


def definite_statements(
    text: str, start: int, end: int | None, terms: Terms, *, sentences: tuple[Span, ...] | None = None
) -> tuple[Span, ...]:
    """Sentences of ``text[start:end]`` that state something plainly.

    A sentence is definite when it holds no hedge and either affirms or
    negates a finding ("Right lower lobe pneumonia.", "No pneumothorax.") or
    uses a definite phrase ("No acute cardiopulmonary abnormality.",
    "Normal chest.", "Stable.").
    """
    hi = len(text) if end is None else min(end, len(text))
    sents = sentences if sentences is not None else split_sentences(text, start, hi)
    groups = terms.modifier_groups
    out: list[Span] = []
    for s in sents:
        if any(groups[m.lastgroup or ""].category == "uncertain" for m in modifier_matches(text, s.start, s.end, terms)):
            continue
        if terms.definite_re.search(text, s.start, s.end):
            out.append(s)
            continue
        mentions = find_mentions(text, s.start, s.end, terms, sentences=(s,), with_laterality=False)
        if any(not (m.uncertain or m.hypothetical) for m in mentions):
            out.append(s)
    return tuple(out)


def has_definite_statement(text: str, start: int, end: int | None, terms: Terms) -> bool:
    """True when ``text[start:end]`` holds at least one definite sentence."""
    return bool(definite_statements(text, start, end, terms))
