"""Laterality rules: the side of the order vs the report, impression vs findings.

Pure: no I/O, no clock. Sides come from ``listener.text``: a side word counts
only when it qualifies paired anatomy (``lateral_mentions``) or a finding
(``Mention.laterality``), so "left ventricle", "right PICC" and "left lateral
decubitus" never take part.

Strategy (a tool that cries wolf is switched off): a rule fires only when one
side is named *and the other side is never named* for the same thing, and
sentences that name both sides ("right greater than left", "compared with
the left") or point elsewhere ("contralateral", "prior", "history") are left
out. A bilateral order, or a bilateral exam described on one side only, is
never an error. The impression-vs-findings anatomy rule compares sides per
organ system (the chest: lungs, lobes, pleura, bronchi) and ignores sides the
findings only deny ("the left lung is clear").
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping

from listener.model import Finding, Report, Section, SectionKind, Severity
from listener.qa.alignment import related_concepts
from listener.qa.engine import Folded, RuleInput, folded, rule
from listener.text import LateralMention, Mention, lateral_mentions

__all__ = [
    "impression_side_vs_findings_anatomy",
    "located_finding_side_mismatch",
    "impression_vs_findings",
    "impression_vs_order",
    "order_vs_report",
]

_OPPOSITE = {"left": "right", "right": "left"}

# Paired anatomy (policies/terms/laterality.yaml groups) that belongs to a body
# region of the CPT table. Regions not listed accept any paired anatomy.
_REGION_ANATOMY: dict[str, frozenset[str]] = {
    "upper_extremity": frozenset({"shoulder", "elbow", "wrist", "hand", "arm", "rib"}),
    "upper_extremity_joint": frozenset({"shoulder", "elbow", "wrist", "hand", "arm", "rib"}),
    "lower_extremity": frozenset({"hip", "knee", "ankle", "foot", "leg"}),
    "lower_extremity_joint": frozenset({"hip", "knee", "ankle", "foot", "leg"}),
    "breast": frozenset({"breast"}),
    "extremity_veins": frozenset({"vessel", "leg", "arm", "knee"}),
}

# A sentence with one of these words talks about something other than the
# side examined now: the other side on purpose, the past, a comparison.
_ELSEWHERE = folded(
    re.compile(
        r"\b(contra-?lateral|opposite|other side|compar(e|ed|es|ing|ison|isons)|prior|previous(ly)?|history|hx|s/p|status post|"
        r"post-?op\w*|remote|old|known|again|unchanged|stable)\b",
        re.IGNORECASE,
    )
)
_MODIFIER_SIDE = {"LT": "left", "RT": "right", "50": "bilateral"}
_TEXT_SIDE = re.compile(r"\b(LEFT|LT|RIGHT|RT|BILAT(?:ERAL)?|BOTH)\b", re.IGNORECASE)


def _order_side(report: Report) -> str:
    """The order's side: the decoder's value, else RT/LT/-50, else procedure text."""
    if report.order_laterality:
        return report.order_laterality
    for mod in report.procedure.modifiers:
        side = _MODIFIER_SIDE.get(mod.strip().upper())
        if side:
            return side
    sides = {w.upper()[:1] for w in _TEXT_SIDE.findall(report.procedure.text)}
    if sides == {"L"}:
        return "left"
    if sides == {"R"}:
        return "right"
    return "bilateral" if sides else ""


def _sections(report: Report, kinds: Iterable[SectionKind]) -> list[Section]:
    wanted = set(kinds)
    return [s for s in report.sections if s.kind in wanted]


def _lateral(data: RuleInput, sections: Iterable[Section]) -> list[LateralMention]:
    out: list[LateralMention] = []
    text = data.report.text
    for sec in sections:
        out.extend(
            lateral_mentions(
                text,
                sec.start,
                sec.end,
                data.terms,
                sentences=data.analysis.sentences(sec.start, sec.end),
                cache=data.analysis.text_cache,
            )
        )
    return out


def _one_sided_sentences(mentions: list[LateralMention], text: str) -> list[LateralMention]:
    """Mentions whose sentence names a single side and points nowhere else."""
    by_sentence: dict[int, set[str]] = {}
    for lm in mentions:
        by_sentence.setdefault(lm.sentence_start, set()).add(lm.side)
    keep: list[LateralMention] = []
    for lm in mentions:
        sides = by_sentence[lm.sentence_start]
        if len(sides) != 1 or "bilateral" in sides:
            continue
        if _ELSEWHERE.search(text, lm.sentence_start, lm.sentence_end):
            continue
        keep.append(lm)
    return keep


def _relevant(report: Report, mentions: list[LateralMention]) -> list[LateralMention]:
    allowed = _REGION_ANATOMY.get(report.body_region)
    return [lm for lm in mentions if lm.anatomy and (allowed is None or lm.anatomy in allowed)]


def _body_kinds() -> tuple[SectionKind, ...]:
    return (
        SectionKind.TECHNIQUE,
        SectionKind.FINDINGS,
        SectionKind.IMPRESSION,
        SectionKind.OTHER,
        SectionKind.ADDENDUM,
    )


def _span(lm: LateralMention) -> tuple[int, int]:
    return min(lm.start, lm.anatomy_start), max(lm.end, lm.anatomy_end)


@rule("laterality", severity=Severity.ERROR)
def order_vs_report(data: RuleInput) -> Iterator[Finding]:
    """The order is for one side and the report describes only the other side.

    Only paired anatomy of the ordered body region counts (a left knee order
    vs "right knee"); sentences naming both sides, the contralateral side or
    a prior are left out. A bilateral order never fires.
    """
    report = data.report
    ordered = _order_side(report)
    if ordered not in _OPPOSITE:
        return
    all_sides = _relevant(report, _lateral(data, _sections(report, _body_kinds())))
    if any(lm.side in (ordered, "bilateral") for lm in all_sides):
        return
    wrong = [lm for lm in _one_sided_sentences(all_sides, report.text) if lm.side == _OPPOSITE[ordered]]
    if not wrong:
        return
    evidence = [data.analysis.evidence(*_span(lm)) for lm in wrong[:3]]
    yield data.emit(
        f"The order is for the {ordered} side; the report describes only the {_OPPOSITE[ordered]} "
        f"{wrong[0].anatomy.replace('_', ' ')}.",
        evidence,
        suggestion="Check the side against the images and the order; correct the report or the order.",
    )


@rule("laterality", severity=Severity.ERROR)
def impression_vs_order(data: RuleInput) -> Iterator[Finding]:
    """The impression names only the side opposite to the order (the findings name the ordered side).

    An error: the order and the findings agree, so the conclusion (the part
    most read) has the wrong side.
    """
    report = data.report
    ordered = _order_side(report)
    if ordered not in _OPPOSITE:
        return
    body = _relevant(report, _lateral(data, _sections(report, (SectionKind.TECHNIQUE, SectionKind.FINDINGS))))
    if not any(lm.side == ordered for lm in body):
        return  # either order_vs_report's case, or the findings say nothing about sides
    imp = _relevant(report, _lateral(data, _sections(report, (SectionKind.IMPRESSION,))))
    if any(lm.side in (ordered, "bilateral") for lm in imp):
        return
    wrong = [lm for lm in _one_sided_sentences(imp, report.text) if lm.side == _OPPOSITE[ordered]]
    if not wrong:
        return
    evidence = [data.analysis.evidence(*_span(lm)) for lm in wrong[:2]]
    evidence.append(data.analysis.evidence(*_span(next(lm for lm in body if lm.side == ordered))))
    yield data.emit(
        f"The impression names the {_OPPOSITE[ordered]} {wrong[0].anatomy.replace('_', ' ')}; "
        f"the order and the findings are for the {ordered} side.",
        evidence,
        suggestion="Correct the side in the impression.",
    )


def _family(data: RuleInput, concept: str) -> str:
    """A concept's family name: its broader concept when it has one."""
    c = data.terms.concepts.get(concept)
    return c.broader if c is not None and c.broader else concept


def _sided(mentions: Iterable[Mention]) -> list[Mention]:
    return [m for m in mentions if not (m.negated or m.hypothetical or m.historical) and m.experiencer == "patient"]


def _sentence_sides(sec_mentions: list[LateralMention]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for lm in sec_mentions:
        out.setdefault(lm.sentence_start, set()).add(lm.side)
    return out


def _side_word(m: Mention, laterals: list[LateralMention]) -> LateralMention | None:
    """The side word of ``m``'s side nearest to it in its sentence."""
    best: LateralMention | None = None
    for lm in laterals:
        same = lm.sentence_start == m.sentence_start and lm.side == m.laterality
        if same and (best is None or abs(lm.start - m.start) < abs(best.start - m.start)):
            best = lm
    return best


def _anatomy_of(m: Mention, laterals: list[LateralMention]) -> str:
    lm = _side_word(m, laterals)
    return lm.anatomy if lm is not None else ""


def _side_span(m: Mention, laterals: list[LateralMention]) -> tuple[int, int]:
    """The finding with the side word that qualifies it (nearest one of its side)."""
    best = _side_word(m, laterals)
    if best is None:
        return m.start, m.end
    return min(best.start, m.start), max(best.end, m.end)


def _concept_conflicts(data: RuleInput) -> list[tuple[Mention, Mention, str]]:
    """(impression mention, findings mention, family) pairs whose sides disagree; computed once per report."""
    return data.analysis.shared(_concept_conflicts, lambda: _find_concept_conflicts(data))  # type: ignore[no-any-return]


def _find_concept_conflicts(data: RuleInput) -> list[tuple[Mention, Mention, str]]:
    report = data.report
    find_secs = _sections(report, (SectionKind.FINDINGS,))
    imp_secs = _sections(report, (SectionKind.IMPRESSION,))
    if not find_secs or not imp_secs:
        return []
    imp_mentions = _sided(data.analysis.section_mentions(SectionKind.IMPRESSION))
    if not any(m.laterality in _OPPOSITE for m in imp_mentions):
        return []
    find_lat = _lateral(data, find_secs)
    imp_lat = _lateral(data, imp_secs)
    find_sent = _sentence_sides(find_lat)
    imp_sent = _sentence_sides(imp_lat)
    find_sides: dict[str, set[str]] = {}
    find_first: dict[tuple[str, str], Mention] = {}
    for m in _sided(data.analysis.section_mentions(SectionKind.FINDINGS)):
        fam = _family(data, m.concept)
        side = m.laterality or "none"
        if len(find_sent.get(m.sentence_start, set()) - {"bilateral"}) > 1:
            side = "both"
        find_sides.setdefault(fam, set()).add(side)
        find_first.setdefault((fam, side), m)
    out: list[tuple[Mention, Mention, str]] = []
    done: set[tuple[str, str]] = set()
    for m in imp_mentions:
        if m.laterality not in _OPPOSITE:
            continue
        sides_here = imp_sent.get(m.sentence_start, set())
        if _OPPOSITE[m.laterality] in sides_here or "bilateral" in sides_here:
            continue
        fam = _family(data, m.concept)
        other = _OPPOSITE[m.laterality]
        if find_sides.get(fam) != {other} or (fam, m.laterality) in done:
            continue
        # A related finding ("left basal opacity" for "left base atelectasis"),
        # or the same anatomy ("left apex"), on this side in the findings:
        # the findings do describe this side.
        if any(m.laterality in find_sides.get(r, ()) for r in related_concepts(fam)):
            continue
        anatomy = _anatomy_of(m, imp_lat)
        if anatomy and any(_cluster(lm.anatomy) == _cluster(anatomy) and lm.side == m.laterality for lm in find_lat):
            continue
        done.add((fam, m.laterality))
        out.append((m, find_first[(fam, other)], fam))
    return out


@rule("laterality", severity=Severity.ERROR)
def impression_vs_findings(data: RuleInput) -> Iterator[Finding]:
    """The impression gives a finding the opposite side to the one the findings give it.

    Same finding concept (or its broader family), not negated, on one side in
    the impression and only on the other side in the findings; sentences that
    name both sides are ignored.
    """
    conflicts = _concept_conflicts(data)
    if not conflicts:
        return
    report = data.report
    find_lat = _lateral(data, _sections(report, (SectionKind.FINDINGS,)))
    imp_lat = _lateral(data, _sections(report, (SectionKind.IMPRESSION,)))
    for m, f, fam in conflicts:
        yield data.emit(
            f"The impression puts {fam.replace('_', ' ')} on the {m.laterality}; "
            f"the findings put it on the {f.laterality}.",
            [data.analysis.evidence(*_side_span(m, imp_lat)), data.analysis.evidence(*_side_span(f, find_lat))],
            suggestion="Check the images and make the impression and findings name the same side.",
        )


# Paired anatomy groups that describe one organ system: a side named for any of
# them counts as naming that side of the system ("left lower lobe" and "left
# pleural effusion" both speak about the left chest).
_CLUSTER: dict[str, str] = {"lung": "chest", "lung_lobe": "chest", "pleura": "chest", "bronchus": "chest"}
# A sentence that points at the other side on purpose.
_CONTRA_RE = folded(re.compile(r"\b(contra-?lateral|opposite|other side)\b", re.IGNORECASE))
# A sentence about the past ("status post left lobectomy"): its side is
# compared only with findings sentences about the past too.
_PAST_RE = folded(
    re.compile(
        r"\b(history|hx|s/p|status post|post-?op\w*|post-?surgical|surg\w*|resect\w*|\w+ectomy|\w+otomy|remote|"
        r"previous(ly)?|prior)\b",
        re.IGNORECASE,
    )
)
# Sentences that set the sides against each other ("left larger than right").
_SIDE_COMPARE_RE = folded(re.compile(r"\b(compar\w*|than|versus|vs|relative|symmetric\w*)\b", re.IGNORECASE))
_SIDE_WORD_RE = folded(re.compile(r"\b(left|right)\b", re.IGNORECASE))
# A comparison with an earlier study ("compared with the prior study, there is increased ..."): it dates
# what the sentence states now; it neither sets the sides against each other nor speaks about the past
# (docs/qa-rules.md "Round 5").
_PRIOR_STUDY_RE = folded(
    re.compile(
        r"\b(compared (with|to)|in comparison (with|to)) (the |a |an )?(most recent )?"
        r"(prior|previous|earlier)( (study|studies|exam\w*|films?|radiographs?|images?|ct|x-?rays?|chest))?\b|"
        r"\bno (prior|previous|earlier) (\w+ ){0,2}(scans?|stud(y|ies)|exam\w*|films?|images?)( (are |is )?"
        r"(available )?for comparison)?",
        re.IGNORECASE,
    )
)


def _prior_refs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The spans of ``text[start:end]`` that compare with an earlier study (``_PRIOR_STUDY_RE``)."""
    return [(h.start(), h.end()) for h in _PRIOR_STUDY_RE.finditer(text, start, end)]


def _outside_prior_study(pattern: Folded, text: str, start: int, end: int, refs: list[tuple[int, int]]) -> bool:
    """True when ``pattern`` matches ``text[start:end]`` outside every comparison with an earlier study
    (``refs``: :func:`_prior_refs` of the same stretch)."""
    return any(not any(lo <= hit.start() < hi for lo, hi in refs) for hit in pattern.finditer(text, start, end))


def _sides_set_against(
    text: str, start: int, end: int, raw: list[tuple[str, int, int, list[str]]], refs: list[tuple[int, int]]
) -> bool:
    """A comparison word between a side word and the opposite one ("left greater than right", "the right base
    compared to the left"); "... left basilar airspace disease, atelectasis versus infiltrate" sets none
    (docs/qa-rules.md "Round 5"). ``raw`` and ``refs``: :func:`_raw_sides` and :func:`_prior_refs` of the
    same stretch (the caller has them already)."""
    # (offset, side, the place its following words name or "") for each side word
    # a de-identified word stands for a modifier: "right XXXX fissure" names the fissure (docs/qa-rules.md "Round 6")
    sides = [
        (at, side, _key_of(named) if named and named[0] not in _RAW_SKIP else "")
        for side, at, _, words in raw
        for named in ([w for w in words if w != "xxxx"],)
    ]
    for hit in _SIDE_COMPARE_RE.finditer(text, start, end):
        if any(lo <= hit.start() < hi for lo, hi in refs):
            continue
        before = [(side, key) for at, side, key in sides if at < hit.start()]
        after = [(side, key) for at, side, key in sides if at > hit.start()]
        # two places offered as alternatives ("left midlung ... versus ... right fissure") are no side comparison
        if any(b != a and not (bk and ak and bk != ak) for b, bk in before for a, ak in after):
            return True
    return False


# A side denied or called normal right before or after it ("no left effusion", "left lung is clear").
# A negation earlier in the side word's clause ("no lesion seen in the left
# lung"), or "clear/normal" right before it ("clear left lung").
_DENIED_BEFORE_RE = folded(
    re.compile(
        r"(?:\b(?:no|without|negative for)\b(?:(?!\b(?:and|with|but|or)\b)[^,;:.]){0,50}|\b(?:clear|normal|unremarkable)\s+)$",
        re.IGNORECASE,
    )
)
_DENIED_AFTER_RE = folded(re.compile(r"[^,;:.]*?\b(clear|normal|unremarkable|intact|negative)\b", re.IGNORECASE))
# Parts of the chest that are on the left without a side word.
_LINGULA_RE = folded(re.compile(r"\b(lingula|retrocardiac)", re.IGNORECASE))
# Raw side words, device sides included ("left-sided chest tube"), for the fallback comparison.
_RAW_SIDE_RE = folded(re.compile(r"\b(left|right)(?:[ -]sided)?\b(?=((?:[\s,-]+\w+){0,3}))", re.IGNORECASE))
_BOTH_RE = folded(re.compile(r"\b(bilateral\w*|both|bi-?(basilar|basal|apical|hilar|lateral))\b", re.IGNORECASE))
_WORD_RE = re.compile(r"[A-Za-z0-9]{3,}")
# Words after a side word that name nothing paired ("left ventricle", "right heart").
_RAW_SKIP = frozenset(
    "and or the with without greater more larger smaller worse than side ventricle ventricular atrium atrial "
    "heart cardiac hepatic liver colon colonic lateral decubitus oblique shift xxxx position positions".split()
)
# One place under several words ("left base", "left basal", "left lung base"): the word the keyed
# comparison uses. Places stay apart as written ("lower lobe" is not "base"): a finer key leaves fewer
# reports whose findings name both sides of it.
_KEY_WORDS: dict[str, tuple[str, ...]] = {
    "base": ("base", "bases", "basal", "basilar"),
    "apex": ("apex", "apices", "apical"),
    "hilum": ("hilum", "hila", "hilar", "perihilar"),
    "midlung": ("mid", "middle", "midlung"),
    "lung": ("lung", "lungs"),
    "kidney": ("kidney", "kidneys", "renal"),
    "ovary": ("ovary", "ovaries", "ovarian"),
    "breast": ("breast", "breasts"),
}
_KEY_WORD = {word: key for key, words in _KEY_WORDS.items() for word in words}


def _cluster(anatomy: str) -> str:
    return _CLUSTER.get(anatomy, anatomy)


def _cluster_sides(mentions: Iterable[LateralMention]) -> dict[str, set[str]]:
    """Sides named per anatomy cluster; a side word with no anatomy counts under "*"."""
    out: dict[str, set[str]] = {}
    for lm in mentions:
        out.setdefault(_cluster(lm.anatomy) if lm.anatomy else "*", set()).add(lm.side)
    return out


def _denied(text: str, lm: LateralMention) -> bool:
    """The side is denied or called normal in its clause ("no left effusion", "left lung clear")."""
    if _DENIED_BEFORE_RE.search(text, max(lm.sentence_start, lm.start - 40), lm.start):
        return True
    return _DENIED_AFTER_RE.match(text, max(lm.end, lm.anatomy_end), min(lm.sentence_end, lm.end + 40)) is not None


def _raw_sides(text: str, start: int, end: int) -> list[tuple[str, int, int, list[str]]]:
    """(side, start, end, up to 3 following words) for every plain left/right word in ``text[start:end]``."""
    return _with_words(text, _raw_side_spans(text, start, end), end)


def _raw_side_spans(text: str, start: int, end: int) -> list[tuple[str, int, int, int, int]]:
    """(side, start, end, start and end of its following words) for every match of ``_RAW_SIDE_RE`` in
    ``text[start:end]``."""
    return [
        (m.group(1).lower(), m.start(1), m.end(1), m.start(2), m.end(2))
        for m in _RAW_SIDE_RE.finditer(text, start, end)
    ]


def _with_words(
    text: str, spans: Iterable[tuple[str, int, int, int, int]], end: int
) -> list[tuple[str, int, int, list[str]]]:
    """:func:`_raw_sides` tuples of ``spans``, their following words cut at ``end``."""
    return [
        (side, start, stop, [w.lower() for w in _WORD_RE.findall(text, after, min(after_end, end))])
        for side, start, stop, after, after_end in spans
    ]


def _cuts_word(text: str, at: int) -> bool:
    """Whether offset ``at`` falls between two word characters (as ``\\w`` and ``\\b`` read them)."""
    if at <= 0 or at >= len(text):
        return False
    before, after = text[at - 1], text[at]
    return (before.isalnum() or before == "_") and (after.isalnum() or after == "_")


def _raw_sides_within(
    text: str, spans: list[tuple[str, int, int, int, int]], starts: list[int], start: int, end: int
) -> list[tuple[str, int, int, list[str]]]:
    """:func:`_raw_sides` of ``text[start:end]``, a stretch of a section whose :func:`_raw_side_spans` are
    ``spans`` (``starts``: their start offsets).

    Strategy: the section's matches that start in the stretch, their following words cut at its end:
    a search of the stretch finds exactly those, since a side word, ``[ -]sided`` and the ``\\b`` after
    them read the same characters, and its following words are those of the section cut at ``end``
    (docs/benchmarks.md, "Worker CPU, round 9"). That holds unless a bound of the stretch cuts a
    word: then the stretch is searched.
    """
    if _cuts_word(text, start) or _cuts_word(text, end):
        return _raw_sides(text, start, end)
    return _with_words(text, spans[bisect_left(starts, start) : bisect_left(starts, end)], end)


def _section_side_spans(data: RuleInput, sec: Section) -> tuple[list[tuple[str, int, int, int, int]], list[int]]:
    """:func:`_raw_side_spans` of a whole section and their start offsets, once per report."""
    text = data.report.text

    def compute() -> tuple[list[tuple[str, int, int, int, int]], list[int]]:
        spans = _raw_side_spans(text, sec.start, sec.end)
        return spans, [s[1] for s in spans]

    found: tuple[list[tuple[str, int, int, int, int]], list[int]] = data.analysis.shared(
        (_raw_side_spans, sec.start, sec.end), compute
    )
    return found


def _section_raw_sides(data: RuleInput, sec: Section) -> list[tuple[str, int, int, list[str]]]:
    """:func:`_raw_sides` of a whole section, once per report (three comparisons read them; callers
    do not change the list)."""
    text = data.report.text

    def compute() -> list[tuple[str, int, int, list[str]]]:
        return _with_words(text, _section_side_spans(data, sec)[0], sec.end)

    found: list[tuple[str, int, int, list[str]]] = data.analysis.shared((_raw_sides, sec.start, sec.end), compute)
    return found


def _raw_word_swaps(
    data: RuleInput, imp_secs: list[Section], find_secs: list[Section]
) -> list[tuple[tuple[int, int], tuple[int, int], str, str]]:
    """Fallback on plain words: the impression says "left X" only, the findings "right ... X" only.

    Catches what the anatomy vocabulary does not know ("right costophrenic
    XXXX", "left lobe", device sides such as "right-sided chest tube"), but
    only when the impression names a single side, the findings only the
    other one, neither says "bilateral", and the word after the impression's
    side word follows a side word of the findings.
    """
    text = data.report.text
    imp = [r for sec in imp_secs for r in _section_raw_sides(data, sec) if r[3] and r[3][0] not in _RAW_SKIP]
    find = [r for sec in find_secs for r in _section_raw_sides(data, sec) if r[3] and r[3][0] not in _RAW_SKIP]
    imp_sides = {r[0] for r in imp}
    find_sides = {r[0] for r in find}
    if len(imp_sides) != 1 or len(find_sides) != 1 or imp_sides == find_sides:
        return []
    if any(_BOTH_RE.search(text, sec.start, sec.end) for sec in (*imp_secs, *find_secs)):
        return []
    out = []
    for side, start, end, words in imp:
        sec = data.analysis.section_at(start)
        if sec is not None:
            for sent in data.analysis.sentences(sec.start, sec.end):
                if sent.start <= start < sent.end and _CONTRA_RE.search(text, sent.start, sent.end):
                    words = []
        for f_side, f_start, f_end, f_words in find:
            if words and words[0] in f_words:
                out.append(((start, end), (f_start, f_end), side, f_side))
                return out
    return out


# A side word whose clause is denied or called normal ("no left effusion", "right lung clear").
_RAW_DENIED_BEFORE_RE = folded(re.compile(r"\b(no|without|negative for|clear|normal)\b[^,;:.]{0,40}$", re.IGNORECASE))


# Both sides of the whole chest named in a sentence ("both lungs", "bilaterally").
_BOTH_LUNGS_RE = folded(
    re.compile(r"\b(bilaterally|(both|bilateral) (lungs|hemithora\w+|sides)|diffuse\w*)\b", re.IGNORECASE)
)


def _key_of(words: list[str]) -> str:
    """The place or organ a side word's following words name ("lung base" -> lower lung), else the first word."""
    first = words[0]
    if first in ("lung", "lungs") and len(words) > 1 and words[1] in _KEY_WORD:
        first = words[1]
    return _KEY_WORD.get(first, first)


def _keyed_sides(
    data: RuleInput, secs: list[Section], key_words: set[str] | None
) -> dict[str, list[tuple[str, int, int, int, int]]]:
    """word -> [(side, start, end, sentence start, sentence end)] for each plain side word and the word after it.

    Only sentences that set no side against the other ("left greater than
    right", "compared to the left"), name no finding in both lungs, point at no contralateral side and no
    past event, and do not deny the side word's clause count. A sentence may
    name both sides ("right midlung and left basilar opacity"): each side
    word is read with the word right after it. ``key_words`` keeps only those words (None: every word).
    """
    text = data.report.text
    out: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for sec in secs:
        spans, starts = _section_side_spans(data, sec)
        for sent in data.analysis.sentences(sec.start, sec.end):
            found = _raw_sides_within(text, spans, starts, sent.start, sent.end)
            raw = [r for r in found if r[3] and r[3][0] not in _RAW_SKIP]
            if not raw:
                continue
            refs = _prior_refs(text, sent.start, sent.end)
            if _sides_set_against(text, sent.start, sent.end, found, refs) or _BOTH_LUNGS_RE.search(
                text, sent.start, sent.end
            ):
                continue
            if _CONTRA_RE.search(text, sent.start, sent.end) or _outside_prior_study(
                _PAST_RE, text, sent.start, sent.end, refs
            ):
                continue
            for side, start, end, words in raw:
                key = _key_of(words)
                if key_words is not None and key not in key_words:
                    continue
                if _RAW_DENIED_BEFORE_RE.search(text, sent.start, start) or _DENIED_AFTER_RE.match(
                    text, end, min(sent.end, end + 40)
                ):
                    continue
                out.setdefault(key, []).append((side, start, end, sent.start, sent.end))
    return out


def _keyed_word_swaps(
    data: RuleInput, imp_secs: list[Section], find_secs: list[Section]
) -> list[tuple[int, tuple[tuple[int, int], tuple[int, int], str, str]]]:
    """Plain side words compared per following word: "right lower ..." in the impression, only "left lower ..." in the findings.

    For reports whose findings name both sides of the chest ("left lower lobe
    airspace disease ... right mid lung atelectasis"), where the comparison
    per organ system cannot decide, and for device sides ("right internal
    jugular catheter", "left chest tube"), which name no paired anatomy. The
    word after the side word (lower, basilar, midlung, internal, subclavian,
    chest, paratracheal...) must be named with one side in the impression and
    only with the other in the findings, never with both sides, and never in
    a bilateral phrase ("bibasilar", "both lower lobes") in either section.
    """
    text = data.report.text
    imp = _keyed_sides(data, imp_secs, None)
    if not imp:
        return []
    find = _keyed_sides(data, find_secs, set(imp))
    out = []
    for word, here in imp.items():
        there = find.get(word)
        if not there:
            continue
        sides_here = {h[0] for h in here}
        sides_there = {t[0] for t in there}
        if len(sides_here) != 1 or len(sides_there) != 1 or sides_here == sides_there:
            continue
        spellings = "|".join(re.escape(w) for w in sorted(_KEY_WORDS.get(word, (word,))))
        both = re.compile(rf"\b(bi-?({spellings})|(bilateral\w*|both)\s+(\w+\s+){{0,2}}({spellings}))\b", re.I)
        if any(both.search(text, sec.start, sec.end) for sec in (*imp_secs, *find_secs)):
            continue
        # every mention of the word in the findings, one side or not: none on the impression's side
        if any(
            r[0] == here[0][0] and r[3] and _key_of(r[3]) == word
            for sec in find_secs
            for r in _section_raw_sides(data, sec)
        ):
            continue
        h, t = here[0], there[0]
        out.append((h[3], ((h[1], h[2]), (t[1], t[2]), h[0], t[0])))
    return out


# What ends a clause: "with" or a semicolon (a comma may close an introductory "On the prior scan,"). A
# past event named after it ("scarring in the right upper lobe with partial resection of the posterior
# fourth rib") is about another part (docs/qa-rules.md "Round 6").
_CLAUSE_END_RE = re.compile(r";|\bwith\b", re.IGNORECASE)


def _past_clause(text: str, lm: LateralMention) -> bool:
    """Whether the clause of ``lm``'s side word speaks about the past (``_PAST_RE``)."""
    start = lm.sentence_start
    for hit in _CLAUSE_END_RE.finditer(text, lm.sentence_start, lm.start):
        start = hit.end()
    end_hit = _CLAUSE_END_RE.search(text, max(lm.end, lm.anatomy_end), lm.sentence_end)
    end = end_hit.start() if end_hit is not None else lm.sentence_end
    return _PAST_RE.search(text, start, end) is not None


# "Identified both on PA and lateral views": "both" counts the views, it names no side (docs/qa-rules.md
# "Round 6").
_VIEWS_AFTER_RE = folded(re.compile(r"\W+(on |in )?(the )?(\w+ ){0,3}views?\b", re.IGNORECASE))


def _names_views(text: str, lm: LateralMention) -> bool:
    """A side word with no anatomy that counts views ("both on PA and lateral views")."""
    return (
        lm.side == "bilateral" and not lm.anatomy and _VIEWS_AFTER_RE.match(text, lm.end, lm.sentence_end) is not None
    )


def _anatomy_swaps(
    text: str, imp_all: list[LateralMention], find_all: list[LateralMention], lingula: tuple[bool, bool]
) -> list[tuple[LateralMention, LateralMention]]:
    """(impression side word, findings side word) pairs whose sides disagree for the same anatomy.

    ``lingula``: whether the impression / the findings name the lingula (a
    left chest mention without a side word).
    """
    imp_sides = _cluster_sides(imp_all)
    # What the findings locate on a side; "the left lung is clear" locates nothing.
    find_stated = [f for f in find_all if not _denied(text, f)]
    find_sides = _cluster_sides(find_all)
    stated_sides = _cluster_sides(find_stated)
    if lingula[0]:
        imp_sides.setdefault("chest", set()).add("left")
    if lingula[1]:
        find_sides.setdefault("chest", set()).add("left")
        stated_sides.setdefault("chest", set()).add("left")
    by_sentence: dict[int, set[str]] = {}
    for lm in imp_all:
        by_sentence.setdefault(lm.sentence_start, set()).add(lm.side)
    out: list[tuple[LateralMention, LateralMention]] = []
    done: set[tuple[str, str]] = set()
    for lm in imp_all:
        if not lm.anatomy or lm.side not in _OPPOSITE:
            continue
        group = _cluster(lm.anatomy)
        other = _OPPOSITE[lm.side]
        if (group, lm.side) in done:
            continue
        # A side stated in the impression is compared with what the findings
        # locate; a side denied there ("left lung clear") with every side named.
        denied = _denied(text, lm)
        named = find_sides if denied else stated_sides
        if named.get(group, set()) | named.get("*", set()) != {other}:
            continue  # the findings name this side too (or bilateral), or not this anatomy at all
        if _CONTRA_RE.search(text, lm.sentence_start, lm.sentence_end):
            continue
        pool = find_all if denied else find_stated
        candidates = [f for f in pool if f.anatomy and _cluster(f.anatomy) == group]
        if _past_clause(text, lm):
            # "Status post left mastectomy": the findings must speak about the same past event.
            candidates = [f for f in candidates if _PAST_RE.search(text, f.sentence_start, f.sentence_end)]
        one_sided = imp_sides.get(group, set()) | imp_sides.get("*", set()) == {lm.side}
        if not one_sided:
            # The impression names both sides: only a plain statement of this
            # anatomy on this side, not set against the other side, counts.
            if "bilateral" in by_sentence[lm.sentence_start] or denied:
                continue
            same = [o for o in imp_all if o.sentence_start == lm.sentence_start]
            if len({o.side for o in same}) > 1 and _SIDE_COMPARE_RE.search(
                text, min(o.start for o in same), max(o.end for o in same)
            ):
                continue
            candidates = [f for f in candidates if f.anatomy == lm.anatomy]
        if not candidates:
            continue
        done.add((group, lm.side))
        out.append((lm, candidates[0]))
    return out


# The left lung has no middle lobe (its counterpart is the lingula): "left middle lobe" is a side written
# wrong, and with a right middle lobe in the findings it is the findings' lobe on the other side, whatever
# else the findings place on the left (docs/qa-rules.md "Round 6").
_LEFT_MIDDLE_LOBE_RE = folded(re.compile(r"\bleft (lung )?middle lobe\b", re.IGNORECASE))
_RIGHT_MIDDLE_LOBE_RE = folded(re.compile(r"\b(right (lung )?middle lobe|rml)\b", re.IGNORECASE))


def _lobe_on_wrong_side(
    text: str, imp_secs: Iterable[Section], find_secs: Iterable[Section]
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(impression span, findings span) of a "left middle lobe" in the impression over a right middle lobe in the findings."""
    here = next((h for sec in imp_secs if (h := _LEFT_MIDDLE_LOBE_RE.search(text, sec.start, sec.end))), None)
    if here is None:
        return None
    there = next((h for sec in find_secs if (h := _RIGHT_MIDDLE_LOBE_RE.search(text, sec.start, sec.end))), None)
    if there is None:
        return None
    return here.span(), there.span()


# "Left greater than left": a side compared with itself, one side word written wrong (docs/qa-rules.md "Round 6").
_SIDE_AGAINST_SIDE_RE = folded(
    re.compile(
        r"\b(left|right)\s+(greater|worse|larger|bigger|more|less|smaller|higher|lower)\s+than\s+(the\s+)?"
        r"(left|right)\b",
        re.IGNORECASE,
    )
)


def _side_against_itself(text: str, secs: Iterable[Section]) -> tuple[int, int] | None:
    """The span of a comparison of a side with the same side ("left greater than left") in ``secs``."""
    for sec in secs:
        for hit in _SIDE_AGAINST_SIDE_RE.finditer(text, sec.start, sec.end):
            if hit.group(1).lower() == hit.group(4).lower():
                return hit.span()
    return None


# A rib named by side and number ("right lateral 8th rib", "left 9th and 10th ribs": the last number).
# A numbered rib is one place: the findings may name other ribs on both sides, and the impression's
# "right 8th rib" still has to be a rib the findings put on the right (docs/qa-rules.md "Round 6").
_NUMBERED_RIB_RE = folded(
    re.compile(r"\b(left|right)\b((?!\b(left|right)\b)[^.;:]){0,40}?\b(\d{1,2})(st|nd|rd|th)\s+ribs?\b", re.IGNORECASE)
)


def _numbered_ribs(text: str, secs: Iterable[Section]) -> list[tuple[str, str, int, int]]:
    """(side, number, start, end) of each side-and-number rib phrase in ``secs``, denied ones left out."""
    out = []
    for sec in secs:
        for hit in _NUMBERED_RIB_RE.finditer(text, sec.start, sec.end):
            if _RAW_DENIED_BEFORE_RE.search(text, max(sec.start, hit.start() - 40), hit.start()):
                continue  # "no right 8th rib fracture"
            out.append((hit.group(1).lower(), hit.group(4) + hit.group(5).lower(), hit.start(), hit.end()))
    return out


def _numbered_rib_swap(
    text: str, imp_secs: Iterable[Section], find_secs: Iterable[Section]
) -> tuple[tuple[int, int], tuple[int, int], str, str] | None:
    """(impression span, findings span, side, number): the impression's numbered rib is on the side opposite
    to every mention of that rib in the findings."""
    imp = _numbered_ribs(text, imp_secs)
    if not imp:
        return None
    find = _numbered_ribs(text, find_secs)
    for side, number, start, end in imp:
        there = [f for f in find if f[1] == number]
        if there and all(f[0] == _OPPOSITE[side] for f in there):
            if any(i[1] == number and i[0] != side for i in imp):
                continue  # the impression names this rib on both sides
            return (start, end), (there[0][2], there[0][3]), side, number
    return None


@rule("laterality", severity=Severity.WARNING)
def impression_side_vs_findings_anatomy(data: RuleInput) -> Iterator[Finding]:
    """The impression names one side of paired anatomy that the findings describe only on the other side.

    "Left middle lobe opacity" in the impression when the findings describe
    the right middle lobe. Anatomy is compared by organ system ("chest":
    lungs, lobes, pleura, bronchi; otherwise the paired-anatomy group: rib,
    hip, kidney, breast...). The findings must name that system only on the
    other side, never on the impression's side, never "bilateral" and never
    a side with no anatomy. When the impression itself names both sides of
    the system, only a plain statement of the very same anatomy counts (not
    a denial, "left lung clear", nor "left larger than right"). Sentences
    about the contralateral side are left out, and sentences about the past
    ("status post left lobectomy") are compared only with findings about the
    past. When no anatomy matches, plain side words are compared ("right
    costophrenic XXXX", "left lobe", "right-sided chest tube"): the
    impression must name a single side, the findings only the other, neither
    "bilateral", and the word after the impression's side word must follow a
    side word in the findings. Sentences already reported by
    ``laterality.impression_vs_findings`` or by
    ``laterality.located_finding_side_mismatch`` (which compares the finding
    and its place together, an error) are left to those rules. Three side
    errors need no comparison by organ system (docs/qa-rules.md "Round 6"):
    a "left middle lobe" in the impression when the findings describe the
    right middle lobe, a numbered rib ("right 8th rib") the findings name
    only on the other side, and a side set against itself ("left greater
    than left"). "Both on PA and lateral views" names no side, and a past
    event after "with" ("... right upper lobe with partial resection of the
    posterior fourth rib") does not make the side word before it past.
    """
    report = data.report
    find_secs = _sections(report, (SectionKind.FINDINGS,))
    imp_secs = _sections(report, (SectionKind.IMPRESSION,))
    if not find_secs or not imp_secs:
        return
    text = report.text
    if not any(_RAW_SIDE_RE.search(text, sec.start, sec.end) for sec in imp_secs):
        return
    missing = _lobe_on_wrong_side(text, imp_secs, find_secs)
    if missing is not None:
        lobe_here, lobe_there = missing
        yield data.emit(
            "The impression names the left middle lobe, which does not exist; the findings describe the right "
            "middle lobe.",
            [data.analysis.evidence(*lobe_here), data.analysis.evidence(*lobe_there)],
            suggestion="Check the side in the impression against the findings and the images.",
        )
        return
    self_compared = _side_against_itself(text, imp_secs)
    if self_compared is not None:
        yield data.emit(
            "The impression sets a side against itself; one of the two side words is wrong.",
            [data.analysis.evidence(*self_compared)],
            suggestion="Check the side in the impression against the findings and the images.",
        )
        return
    rib = _numbered_rib_swap(text, imp_secs, find_secs)
    if rib is not None:
        rib_here, rib_there, rib_side, number = rib
        yield data.emit(
            f"The impression names the {rib_side} {number} rib; the findings describe only the "
            f"{_OPPOSITE[rib_side]} {number} rib.",
            [data.analysis.evidence(*rib_here), data.analysis.evidence(*rib_there)],
            suggestion="Check the side in the impression against the findings and the images.",
        )
        return
    imp_all = _lateral(data, imp_secs)
    find_all = [lm for lm in _lateral(data, find_secs) if not _names_views(text, lm)]
    lingula = (
        any(_LINGULA_RE.search(text, sec.start, sec.end) for sec in imp_secs),
        any(_LINGULA_RE.search(text, sec.start, sec.end) for sec in find_secs),
    )
    pairs = _anatomy_swaps(text, imp_all, find_all, lingula)
    if not pairs:
        swaps = _raw_word_swaps(data, imp_secs, find_secs)
        if not swaps:
            reported = {m.sentence_start for m, _, _ in _concept_conflicts(data)}
            reported.update(i.mention.sentence_start for i, _ in _located_conflicts(data))
            swaps = [sw for sentence, sw in _keyed_word_swaps(data, imp_secs, find_secs) if sentence not in reported][
                :1
            ]
        for here_span, there_span, side, other in swaps:
            yield data.emit(
                f"The impression names the {side} side; the findings name only the {other} side for the same part.",
                [data.analysis.evidence(*here_span), data.analysis.evidence(*there_span)],
                suggestion="Check the side in the impression against the findings and the images.",
            )
        return
    reported = {m.sentence_start for m, _, _ in _concept_conflicts(data)}
    reported.update(i.mention.sentence_start for i, _ in _located_conflicts(data))
    for lm, match in pairs:
        if lm.sentence_start in reported:
            continue
        here = lm.anatomy.replace("_", " ")
        there = match.anatomy.replace("_", " ")
        yield data.emit(
            f"The impression names the {lm.side} {here}; the findings describe only the {match.side} {there}.",
            [data.analysis.evidence(*_span(lm)), data.analysis.evidence(*_span(match))],
            suggestion="Check the side in the impression against the findings and the images.",
        )


# --- Located findings (docs/qa-rules.md, "Located findings")

#: Located anatomy: per body region, the places a finding is put on one side
#: ("right lower lobe", "left lung base", "left kidney"). Regexes (whole
#: phrase, case-insensitive) over the paired-anatomy phrase a side word is
#: attached to (policies/terms/laterality.yaml). The place ``any`` is the
#: whole region ("left hemithorax", "left lung"): it matches every place of
#: its region. Tunable in policies/qa.yaml (``places``).
DEFAULT_PLACES: dict[str, dict[str, list[str]]] = {
    "chest": {
        "upper": [r"upper (lung )?(lobes?|zones?|fields?)", r"ap(ex|ices|ical)"],
        "middle": [
            r"middle (lung )?(lobes?|zones?|fields?)",
            r"mid ?lung",
            r"lingula(r)?",
            r"(peri|supra)?hil(um|a|ar)",
        ],
        "lower": [
            r"lower (lung )?(lobes?|zones?|fields?)",
            r"(lung )?bases?",
            r"basilar",
            r"basal",
            r"infrahilar",
            r"retrocardiac",
            r"costophrenic (angles?|sulcus|sulci|recess)",
            r"cp angle",
            r"hemidiaphragms?",
        ],
        "any": [r"lungs?", r"hemithora(x|ces)", r"chest", r"pleura(l)?", r"pleural space"],
    },
    "kidney": {"any": [r"kidneys?", r"renal", r"collecting system", r"perinephric", r"perirenal"]},
    "ureter": {"any": [r"ureters?", r"ureteral", r"ureteropelvic junction", r"upj", r"uvj"]},
    "adrenal": {"any": [r"adrenal( gland)?"]},
    "ovary": {"any": [r"ovar(y|ies|ian)", r"adnex(a|al)", r"adnexal region"]},
    "testis": {"any": [r"test(is|es|icle|icles|icular)", r"scrot(um|al)", r"hemiscrotum", r"epididym(is|al)"]},
    "breast": {"any": [r"breasts?", r"axilla(e|ry)?"]},
    "upper_limb": {
        "shoulder": [r"shoulders?", r"glenohumeral", r"glenoid", r"acromioclavicular( joint)?", r"ac joint"],
        "arm": [r"arms?", r"humer(us|al)", r"upper (extremity|limb)"],
        "elbow": [r"elbows?", r"olecranon", r"radial head"],
        "forearm": [r"forearm", r"radius", r"ulna(r)?"],
        "wrist": [r"wrists?", r"scaphoid", r"carpal", r"distal radius"],
        "hand": [r"hands?", r"fingers?", r"thumb", r"metacarpals?", r"phalan(x|ges)"],
    },
    "lower_limb": {
        "hip": [r"hips?", r"acetabul(um|ar)", r"femoral (head|neck)"],
        "thigh": [r"thigh", r"femur", r"femoral"],
        "knee": [r"knees?", r"patella(r)?", r"tibial plateau"],
        "leg": [r"legs?", r"calf", r"tibia(l)?", r"fibula(r)?", r"lower (extremity|limb)"],
        "ankle": [r"ankles?", r"malleol(us|i|ar)", r"talus"],
        "foot": [r"foot", r"feet", r"toes?", r"metatarsals?", r"calcane(us|al)", r"heel"],
    },
}

# A located finding and a side word further apart than this, or across a
# semicolon, are two statements ("right lower lobe is clear; there is ... ").
_LOCATED_REACH = 60
# A measurement between them ("6.0 x 3.5 x 3.7 cm") sizes the finding; it does not count toward the reach
# (docs/qa-rules.md "Round 5").
_MEASUREMENT_RE = re.compile(r"\d+(\.\d+)?(\s*(x|by)\s*\d+(\.\d+)?)*\s*(mm|cm)\b", re.IGNORECASE)


class _Located:
    """One finding placed on a side: family, region, place, side, and its spans."""

    __slots__ = ("family", "mention", "place", "region", "side", "side_word")

    def __init__(self, family: str, region: str, place: str, side: str, mention: Mention, side_word: LateralMention):
        self.family = family
        self.region = region
        self.place = place
        self.side = side
        self.mention = mention
        self.side_word = side_word


def _place_patterns(places: object) -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    """(region, place, compiled pattern) for the ``places`` parameter.

    The default's are compiled once, at import (:data:`_DEFAULT_PATTERNS`); a
    site's own ``places`` is compiled per call, not kept: the core holds no
    module-level cache (tests/unit/test_core_state.py).
    """
    if places is DEFAULT_PLACES or places == DEFAULT_PLACES:
        return _DEFAULT_PATTERNS
    return _compile_places(places)


def _compile_places(places: object) -> tuple[tuple[str, str, re.Pattern[str]], ...]:
    compiled: list[tuple[str, str, re.Pattern[str]]] = []
    if isinstance(places, Mapping):
        for region, by_place in places.items():
            if not isinstance(by_place, Mapping):
                continue  # a region needs places ({region: {place: [patterns]}})
            for place, patterns in by_place.items():
                words = [p for p in (patterns if isinstance(patterns, (list, tuple)) else ()) if isinstance(p, str)]
                if words:
                    joined = "|".join(f"(?:{p})" for p in words)
                    compiled.append((str(region), str(place), re.compile(joined, re.IGNORECASE)))
    return tuple(compiled)


_DEFAULT_PATTERNS = _compile_places(DEFAULT_PLACES)


def _place_of(text: str, lm: LateralMention, patterns: tuple[tuple[str, str, re.Pattern[str]], ...]) -> tuple[str, str]:
    """(region, place) of the anatomy phrase a side word qualifies, or ("", "")."""
    if not lm.anatomy:
        return "", ""
    phrase = " ".join(text[lm.anatomy_start : lm.anatomy_end].split())
    for region, place, pattern in patterns:
        if pattern.fullmatch(phrase):
            return region, place
    return "", ""


# "the mass", "this nodule": a finding already named, referred back to; the side words of the sentence
# that refers to it belong to the sentence's own finding (docs/qa-rules.md "Round 6").
_BACK_REFERENCE_RE = folded(re.compile(r"\b(the|this|that|these|those)\s+$", re.IGNORECASE))


def _located(data: RuleInput, kind: SectionKind) -> list[_Located]:
    """The findings of ``kind`` sections that are placed in located anatomy on a side."""
    report = data.report
    text = report.text
    secs = _sections(report, (kind,))
    if not secs:
        return []
    # Sex-specific anatomy ("ovary", "testis") is an organ, not a finding (policies/terms/sex_specific.yaml).
    mentions = [m for m in _sided(data.analysis.section_mentions(kind)) if not (m.sex and not m.significant)]
    if not mentions:
        return []
    laterals = [lm for lm in _lateral(data, secs) if lm.anatomy]
    if not laterals:
        return []
    patterns = _place_patterns(data.param("places", DEFAULT_PLACES))
    by_sentence: dict[int, list[LateralMention]] = {}
    for lm in laterals:
        by_sentence.setdefault(lm.sentence_start, []).append(lm)
    out: list[_Located] = []
    seen: set[str] = set()
    for m in mentions:
        named_before = m.concept in seen
        seen.add(m.concept)
        here = by_sentence.get(m.sentence_start)
        if not here:
            continue
        if _CONTRA_RE.search(text, m.sentence_start, m.sentence_end):
            continue
        if named_before and not m.laterality and _BACK_REFERENCE_RE.search(text, max(0, m.start - 12), m.start):
            continue  # "a hematoma posterior to the right kidney adjacent to the mass": the mass placed before
        # A sentence naming both sides ("haziness in the right lung and left
        # base") pairs findings and sides too loosely to say which is where:
        # its findings count as on both sides.
        two_sided = {"left", "right"} <= {lm.side for lm in here}
        best: LateralMention | None = None
        best_gap = _LOCATED_REACH + 1
        for lm in here:
            lo, hi = (lm.anatomy_end, m.start) if lm.anatomy_end <= m.start else (m.end, lm.start)
            gap = hi - lo
            if gap > _LOCATED_REACH:
                gap -= sum(len(x.group(0)) for x in _MEASUREMENT_RE.finditer(text, lo, hi))
            if gap > _LOCATED_REACH or ";" in text[max(lo, 0) : max(hi, lo)]:
                continue
            if m.laterality and lm.side != m.laterality:
                continue
            if gap < best_gap:
                best, best_gap = lm, gap
        if best is None:
            continue
        region, place = _place_of(text, best, patterns)
        if region:
            side = "both" if two_sided else best.side
            out.append(_Located(_family(data, m.concept), region, place, side, m, best))
    return out


class _Placed:
    """Located findings indexed by what the side tests ask of them.

    The tests ask, for one located finding ``i``: of the located findings of
    the same finding (its family or a related one, ``related_concepts``), in
    a region, at the same place (equal, or either is "any"), which is the
    first and which sides do they take? Comparing ``i`` with every other
    located finding made a long report cost the square of its findings
    (docs/hardening.md, "Linear text analysis"); here each answer is a few
    look-ups: by (family,), (family, region) and (family, region, place),
    each keeping the position of its first finding and the set of sides.
    """

    __slots__ = ("_at", "located")

    def __init__(self, located: list[_Located]) -> None:
        self.located = located
        self._at: dict[tuple[str, ...], tuple[int, set[str]]] = {}
        for k, x in enumerate(located):
            for key in ((x.family,), (x.family, x.region), (x.family, x.region, x.place)):
                entry = self._at.get(key)
                if entry is None:
                    self._at[key] = (k, {x.side})
                else:
                    entry[1].add(x.side)

    def find(
        self, family: str, region: str | None = None, place: str | None = None
    ) -> tuple[_Located | None, set[str]]:
        """The first located finding of the same finding as ``family`` (in ``region``, at ``place``) and every side."""
        first: int | None = None
        sides: set[str] = set()
        for fam in related_concepts(family):
            if region is None:
                keys: tuple[tuple[str, ...], ...] = ((fam,),)
            elif place is None or place == "any":
                keys = ((fam, region),)
            else:
                keys = ((fam, region, place), (fam, region, "any"))
            for key in keys:
                entry = self._at.get(key)
                if entry is not None:
                    first = entry[0] if first is None else min(first, entry[0])
                    sides |= entry[1]
        return (None if first is None else self.located[first]), sides


def _located_conflicts(data: RuleInput) -> list[tuple[_Located, _Located]]:
    """(impression, findings) located findings whose sides disagree; computed once per report."""
    key = (_located_conflicts, id(data.param("places", DEFAULT_PLACES)))
    return data.analysis.shared(key, lambda: _find_located_conflicts(data))  # type: ignore[no-any-return]


def _find_located_conflicts(data: RuleInput) -> list[tuple[_Located, _Located]]:
    if not data.analysis.sections_of(SectionKind.FINDINGS) or not data.analysis.sections_of(SectionKind.IMPRESSION):
        return []
    imp = _located(data, SectionKind.IMPRESSION)
    if not any(i.side in _OPPOSITE for i in imp):
        return []
    find = _located(data, SectionKind.FINDINGS)
    if not find:
        return []
    # Every side the findings give each finding family, located or not
    # ("small left pleural effusion" puts an effusion on the left).
    find_sides: dict[str, set[str]] = {}
    for m in _sided(data.analysis.section_mentions(SectionKind.FINDINGS)):
        if m.laterality:
            find_sides.setdefault(_family(data, m.concept), set()).add(m.laterality)
    out: list[tuple[_Located, _Located]] = []
    done: set[tuple[int, str]] = set()  # (sentence, region) reported: one finding per statement
    imp_placed, find_placed = _Placed(imp), _Placed(find)
    for i in imp:
        if i.side not in _OPPOSITE or (i.mention.sentence_start, i.region) in done:
            continue
        other = _OPPOSITE[i.side]
        # The impression also puts it on the other side, or on both: not a swap.
        if imp_placed.find(i.family, i.region, i.place)[1] & {other, "bilateral", "both"}:
            continue
        there, there_sides = find_placed.find(i.family, i.region, i.place)
        if there is None or there_sides != {other}:
            continue
        # The findings place this finding on the impression's side elsewhere in
        # the region ("left upper lobe ... hilar mass" for "left hilar mass"):
        # a different place, not a different side.
        if find_placed.find(i.family, i.region)[1] & {i.side, "bilateral", "both"}:
            continue
        if any(side in (i.side, "bilateral") for fam in related_concepts(i.family) for side in find_sides.get(fam, ())):
            continue
        done.add((i.mention.sentence_start, i.region))
        out.append((i, there))
    return out


# The located regions an order's body region (mappings/procedures.yaml) examines on one side.
_ORDER_REGIONS: dict[str, frozenset[str]] = {
    "upper_extremity": frozenset({"upper_limb"}),
    "upper_extremity_joint": frozenset({"upper_limb"}),
    "lower_extremity": frozenset({"lower_limb"}),
    "lower_extremity_joint": frozenset({"lower_limb"}),
    "breast": frozenset({"breast"}),
    "scrotum": frozenset({"testis"}),
    "retroperitoneum": frozenset({"kidney", "ureter", "adrenal"}),
}


def _order_conflicts(data: RuleInput) -> list[tuple[_Located, LateralMention]]:
    """(located finding, side word of the ordered side) where a one-sided order and a located finding disagree.

    The order is for one side, the report names that side for the ordered
    region, and a finding of that region is placed only on the other side in
    a sentence that names one side and points nowhere else (no
    "contralateral", prior or comparison). A report that names only the
    other side is ``order_vs_report``'s case, so it is left to that rule.
    """
    report = data.report
    ordered = _order_side(report)
    regions = _ORDER_REGIONS.get(report.body_region)
    if ordered not in _OPPOSITE or not regions:
        return []
    other = _OPPOSITE[ordered]
    text = report.text
    patterns = _place_patterns(data.param("places", DEFAULT_PLACES))
    body = _lateral(data, _sections(report, (SectionKind.FINDINGS, SectionKind.IMPRESSION)))
    ordered_words = [
        lm for lm in body if lm.side in (ordered, "bilateral") and _place_of(text, lm, patterns)[0] in regions
    ]
    if not ordered_words:
        return []
    sides_by_sentence = _sentence_sides(body)
    located = [*_located(data, SectionKind.FINDINGS), *_located(data, SectionKind.IMPRESSION)]
    out: list[tuple[_Located, LateralMention]] = []
    placed = _Placed(located)
    for loc in located:
        if loc.side != other or loc.region not in regions:
            continue
        if sides_by_sentence.get(loc.mention.sentence_start, set()) != {other}:
            continue
        if _ELSEWHERE.search(text, loc.mention.sentence_start, loc.mention.sentence_end):
            continue
        if placed.find(loc.family)[1] & {ordered, "bilateral", "both"}:
            continue
        out.append((loc, ordered_words[0]))
        break
    return out


def _located_words(loc: _Located) -> str:
    return loc.mention.concept.replace("_", " ")


# How a place is named in messages (canonical names, never the report's words).
_PLACE_LABELS = {
    ("chest", "upper"): "upper lung",
    ("chest", "middle"): "mid lung",
    ("chest", "lower"): "lower lung",
    ("chest", "any"): "hemithorax",
}


def _place_label(loc: _Located) -> str:
    label = _PLACE_LABELS.get((loc.region, loc.place))
    if label is None:
        label = loc.region if loc.place == "any" else loc.place
    return label.replace("_", " ")


@rule("laterality", severity=Severity.ERROR, params={"places": DEFAULT_PLACES})
def located_finding_side_mismatch(data: RuleInput) -> Iterator[Finding]:
    """A finding placed in located anatomy on one side in the findings and on the other in the impression.

    "Consolidation in the right lower lobe" (findings) vs "left lower lobe
    pneumonia" (impression). A located finding is a finding (or a related
    one: opacity, consolidation, pneumonia, atelectasis, volume loss are one
    family, see ``alignment.DEFAULT_RELATED``) whose side word qualifies a
    place of ``places`` in the same clause: lobes, zones, bases, apices,
    costophrenic angles and hemithoraces in the chest; kidneys, ureters,
    adrenals, ovaries, testes, breasts; limb segments. Places compare within
    their region (upper lobe with apex, base with lower lobe, a hemithorax
    with any place of the chest). It fires only when every located mention
    of that finding in the findings is on the other side, the findings never
    put that finding on the impression's side or on both sides, and the
    impression does not also put it on the other side; sentences about the
    contralateral side are left out, and so is a finding referred back to
    ("adjacent to the mass"), which the sentence does not place anew. Unlike ``impression_side_vs_findings_anatomy``
    it compares finding and place together, so a report whose findings also
    name the impression's side for something else (a left effusion beside a
    right lower lobe consolidation) is still checked. When the order has one
    side, the message says so. Against the order: a one-sided order of a
    limb, breast, scrotum or kidney region, a report that names the ordered
    side for that region, and a finding placed only on the other side there
    in a sentence naming one side and no prior or contralateral side.
    """
    for loc, ordered_word in _order_conflicts(data):
        yield data.emit(
            f"The order is for the {ordered_word.side} side; the report puts {_located_words(loc)} in the "
            f"{loc.side} {_place_label(loc)}.",
            [data.analysis.evidence(*_located_span(loc)), data.analysis.evidence(*_span(ordered_word))],
            suggestion="Check the side against the images and the order; correct the report or the order.",
        )
    conflicts = _located_conflicts(data)
    if not conflicts:
        return
    # A sentence that laterality.impression_vs_findings reports already is left to it.
    reported = {m.sentence_start for m, _, _ in _concept_conflicts(data)}
    ordered = _order_side(data.report)
    for i, f in conflicts:
        if i.mention.sentence_start in reported:
            continue
        order_note = f"; the order is for the {ordered} side" if ordered in _OPPOSITE else ""
        yield data.emit(
            f"The impression puts {_located_words(i)} in the {i.side} {_place_label(i)}; "
            f"the findings put {_located_words(f)} there only on the {f.side}{order_note}.",
            [
                data.analysis.evidence(*_located_span(i)),
                data.analysis.evidence(*_located_span(f)),
            ],
            suggestion="Check the images and make the impression and the findings name the same side.",
        )


def _located_span(loc: _Located) -> tuple[int, int]:
    lm, m = loc.side_word, loc.mention
    return min(lm.start, m.start), max(lm.anatomy_end, m.end)
