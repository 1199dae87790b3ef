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
never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from listener.model import Finding, Report, Section, SectionKind, Severity
from listener.qa.alignment import related_concepts
from listener.qa.engine import RuleInput, rule
from listener.text import LateralMention, Mention, lateral_mentions

__all__ = [
    "impression_side_vs_findings_anatomy",
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
_ELSEWHERE = re.compile(
    r"\b(contra-?lateral|opposite|other side|compar\w*|prior|previous(ly)?|history|hx|s/p|status post|"
    r"post-?op\w*|remote|old|known|again|unchanged|stable)\b",
    re.IGNORECASE,
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
        out.extend(lateral_mentions(text, sec.start, sec.end, data.terms, sentences=data.analysis.sentences(sec.start, sec.end)))
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
    return (SectionKind.TECHNIQUE, SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.OTHER, SectionKind.ADDENDUM)


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
        "laterality.order_vs_report",
        f"The order is for the {ordered} side; the report describes only the {_OPPOSITE[ordered]} "
        f"{wrong[0].anatomy.replace('_', ' ')}.",
        evidence,
        suggestion="Check the side against the images and the order; correct the report or the order.",
    )


@rule("laterality", severity=Severity.WARNING)
def impression_vs_order(data: RuleInput) -> Iterator[Finding]:
    """The impression names only the side opposite to the order (the findings name the ordered side)."""
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
        "laterality.impression_vs_order",
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
        if lm.sentence_start == m.sentence_start and lm.side == m.laterality:
            if best is None or abs(lm.start - m.start) < abs(best.start - m.start):
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
    """(impression mention, findings mention, family) pairs whose sides disagree."""
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
        if anatomy and any(lm.anatomy == anatomy and lm.side == m.laterality for lm in find_lat):
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
            "laterality.impression_vs_findings",
            f"The impression puts {fam.replace('_', ' ')} on the {m.laterality}; "
            f"the findings put it on the {f.laterality}.",
            [data.analysis.evidence(*_side_span(m, imp_lat)), data.analysis.evidence(*_side_span(f, find_lat))],
            suggestion="Check the images and make the impression and findings name the same side.",
        )


@rule("laterality", severity=Severity.WARNING)
def impression_side_vs_findings_anatomy(data: RuleInput) -> Iterator[Finding]:
    """The impression names a side of paired anatomy that the findings describe only on the other side.

    For anatomy named in the impression with one side ("left lower lobe",
    "right kidney") when the findings name that anatomy, always on the other
    side, and never on this one. Findings that name a concept already compared
    by ``laterality.impression_vs_findings`` are left to that rule.
    """
    report = data.report
    find_secs = _sections(report, (SectionKind.FINDINGS,))
    imp_secs = _sections(report, (SectionKind.IMPRESSION,))
    if not find_secs or not imp_secs:
        return
    # Only sentences that state a finding present count: "left lung clear"
    # describes the left lung without locating anything there.
    present = {m.sentence_start for m in data.analysis.body_mentions() if not (m.negated or m.hypothetical)}
    imp_lat = [
        lm
        for lm in _one_sided_sentences(_lateral(data, imp_secs), report.text)
        if lm.anatomy and lm.sentence_start in present
    ]
    if not imp_lat:
        return
    find_lat = [lm for lm in _lateral(data, find_secs) if lm.anatomy and lm.sentence_start in present]
    sides: dict[str, set[str]] = {}
    first: dict[tuple[str, str], LateralMention] = {}
    for lm in find_lat:
        sides.setdefault(lm.anatomy, set()).add(lm.side)
        first.setdefault((lm.anatomy, lm.side), lm)
    # Sentences that impression_vs_findings already reports.
    reported = {m.sentence_start for m, _, _ in _concept_conflicts(data)}
    done: set[tuple[str, str]] = set()
    for lm in imp_lat:
        if lm.side not in _OPPOSITE or (lm.anatomy, lm.side) in done:
            continue
        other = _OPPOSITE[lm.side]
        if sides.get(lm.anatomy) != {other}:
            continue
        if lm.sentence_start in reported:
            continue
        done.add((lm.anatomy, lm.side))
        f = first[(lm.anatomy, other)]
        anatomy = lm.anatomy.replace("_", " ")
        yield data.emit(
            "laterality.impression_side_vs_findings_anatomy",
            f"The impression names the {lm.side} {anatomy}; the findings describe only the {other} {anatomy}.",
            [data.analysis.evidence(*_span(lm)), data.analysis.evidence(*_span(f))],
            suggestion="Check the side in the impression against the findings and the images.",
        )

