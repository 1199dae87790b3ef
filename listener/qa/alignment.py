"""Alignment rules: what the findings describe reaches the impression, and back.

Pure: no I/O, no clock. Both rules compare finding *concepts*
(policies/terms/*.yaml), not words: a concept counts as present in the other
section when that section mentions the concept itself, its broader concept
or a related concept (``related`` clusters below: "right lower lobe
consolidation" in the findings supports "pneumonia" in the impression).
A mention in any status counts as addressing it ("no pneumothorax" is not an
omission; whether it contradicts is the contradiction rules' business).

What is left out, because radiologists legitimately leave it out:
findings described as stable, unchanged, chronic, old or healed; findings
the impression points back to ("see findings above", "as described");
hedged and historical mentions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from listener.model import Finding, SectionKind, Severity
from listener.qa.engine import RuleInput, folded, rule
from listener.text import Mention, Terms

__all__ = [
    "DEFAULT_CONCEPTS",
    "DEFAULT_RELATED",
    "DEFAULT_SIGNS",
    "STABLE_RE",
    "finding_missing_from_impression",
    "impression_not_in_findings",
    "refers_to_findings",
    "related_concepts",
]

#: Clusters of concepts that describe the same finding at different levels
#: (a sign and its diagnosis, a finding and its cause). Tunable per rule in
#: policies/qa.yaml (``related``).
DEFAULT_RELATED: Mapping[str, tuple[str, ...]] = {
    "lung_opacity": ("airspace_opacity", "consolidation", "pneumonia", "atelectasis", "volume_loss"),
    "edema": ("pulmonary_edema", "vascular_congestion"),
    "lesion": ("lung_nodule", "mass", "cancer", "granuloma", "abscess"),
    "scar": ("scarring", "fibrosis", "pleural_thickening", "granuloma"),
    "pleural": ("pleural_effusion", "pleural_thickening"),
    "copd": ("emphysema", "hyperinflation"),
    "heart": ("cardiomegaly", "pericardial_effusion"),
    "bone": ("fracture", "dislocation", "depressed_skull_fracture", "unstable_spine_fracture"),
    "bleed": ("hemorrhage", "intracranial_hemorrhage", "retroperitoneal_hemorrhage"),
    "aorta": ("aneurysm", "ruptured_aneurysm", "aortic_dissection"),
    "clot": ("thrombosis", "deep_vein_thrombosis", "pulmonary_embolism"),
    "bowel": ("bowel_obstruction", "volvulus", "bowel_ischemia"),
    "stroke": ("acute_infarct", "large_vessel_occlusion", "brain_herniation", "midline_shift"),
    "twist": ("torsion", "testicular_torsion", "ovarian_torsion"),
    "air": ("pneumothorax", "tension_pneumothorax", "pneumomediastinum", "subcutaneous_emphysema"),
}

_LESION_SIGNS = (
    r"nodul\w*",
    r"densit(y|ies)",
    r"opacit(y|ies)",
    r"lesions?",
    r"mass-?like",
    r"foc(us|i)",
    r"hypermetabolic",
    r"fdg-?avid",
    r"spiculated",
)
_OPACITY_SIGNS = (r"opacit\w*", r"infiltrat\w*", r"air-?\s?space", r"alveolar", r"consolidat\w*")

#: What the other section may call a finding instead of naming it: its
#: radiographic signs ("right upper lobe opacity" for "pneumonia", "2 cm
#: density" for "nodule", "dilated loops of small bowel" for "small bowel
#: obstruction"). Regexes (whole words, case-insensitive) per concept;
#: tunable per rule in policies/qa.yaml (``signs``). A sign in a sentence
#: naming only the other side does not count.
DEFAULT_SIGNS: Mapping[str, tuple[str, ...]] = {
    "lung_nodule": _LESION_SIGNS,
    "mass": _LESION_SIGNS,
    "cancer": _LESION_SIGNS,
    "pneumonia": _OPACITY_SIGNS,
    "consolidation": _OPACITY_SIGNS,
    "airspace_opacity": _OPACITY_SIGNS,
    "atelectasis": _OPACITY_SIGNS,
    "pneumothorax": (r"pleural air", r"air collection", r"(visceral )?pleural (line|edge)", r"pneumothora\w*"),
    "bowel_obstruction": (r"dilat\w* (\w+ ){0,4}(loops?|bowel)", r"air-fluid levels?", r"transition point"),
    "brain_herniation": (r"shift", r"effacement", r"herniat\w*"),
    "fracture": (
        r"fractur\w*",
        r"lucen(t|cy|cies)",
        r"irregularit(y|ies)",
        r"step-?off",
        r"discontinuit(y|ies)",
        r"cortical (\w+ ){0,3}(disruption|break)",
    ),
    "hemorrhage": (r"hemorrhag\w*", r"hematomas?", r"hyperdens\w*", r"high (attenuation|density)"),
}

#: Findings the author may leave out of the impression: still there, known.
STABLE_RE = folded(
    re.compile(
        r"\b(stable|unchanged|chronic|old|healed|healing|remote|again (seen|noted|demonstrated)|"
        r"redemonstrat\w*|persistent|persists|no (significant |interval )?change|similar|longstanding|"
        r"long-standing|known|previously (seen|noted|described|demonstrated)|degenerative)\b",
        re.IGNORECASE,
    )
)

#: Concepts the alignment rules check by default, besides every critical one:
#: findings that change management when they are left out of the impression.
#: Minor, frequent findings (atelectasis, mild cardiomegaly, small effusions)
#: are routinely and legitimately left out, so they are not on the list.
DEFAULT_CONCEPTS: tuple[str, ...] = (
    "lung_nodule",
    "mass",
    "cancer",
    "fracture",
    "dislocation",
    "pneumonia",
    "consolidation",
    "hemorrhage",
    "aneurysm",
    "thrombosis",
    "abscess",
    "hydronephrosis",
)

# Words before a finding that make it minor ("minimal atelectasis").
_MINOR_RE = folded(
    re.compile(
        r"\b(mild(ly)?|minimal|minor|trace|tiny|slight(ly)?|subtle|subsegmental|borderline|dependent|small|"
        r"scattered|few|punctate|faint)\W+(\w+\W+){0,3}$",
        re.IGNORECASE,
    )
)

# An impression sentence that is a differential, a caveat or a recommendation.
_HEDGED_SENTENCE_RE = folded(
    re.compile(
        r"\b(differential|may|might|could|versus|vs|question|questionable|consider|recommend\w*|correlat\w*|"
        r"note that|cannot|can not|suggest\w*|possib\w*|probabl\w*|likely|if|or)\b|\?",
        re.IGNORECASE,
    )
)

# A sentence that explains the finding away (benign, artifact) or is about a
# device or surgery ("catheter fracture", "fixation of the fracture").
_EXPLAINED_RE = folded(
    re.compile(
        r"\b(granulom\w*|calcifi\w*|dense|benign|artifact\w*|nipple shadows?|overlying|projecting|"
        r"catheter|lines?|leads?|wires?|tubes?|stents?|hardware|fixation|orif|repair\w*|post-?surgical|"
        r"post-?operative|surgery|not well|attributed|overlap\w*|superimpos\w*|confluence|summation)\b",
        re.IGNORECASE,
    )
)
# The sentence after a finding may explain it away too ("Small nodular opacity. ... more likely
# represents a granuloma."); devices are left out here: a tube in the next sentence explains nothing.
_EXPLAINED_NEXT_RE = folded(
    re.compile(
        r"\b(granulom\w*|calcifi\w*|benign|artifact\w*|nipple shadows?|overlap\w*|superimpos\w*|confluence|"
        r"summation)\b",
        re.IGNORECASE,
    )
)
# A findings sentence about what another (earlier) examination showed.
_OTHER_EXAM_RE = folded(
    re.compile(
        r"\b(on|from|at) (a |an |the )?(\w+ ){0,2}(previous|prior|outside|earlier|old)\b|"
        r"\b(seen|appreciated|visible|visualized|described|shown|demonstrated) (better )?(on|at) (the |a |an )?(\w+ ){0,3}"
        r"(ct|mri?|ultrasound|pet|comparison|prior|previous|outside)\b",
        re.IGNORECASE,
    )
)
_NEW_RE = folded(
    re.compile(r"\b(new|newly|interval|increas\w*|develop\w*|worse\w*|enlarg\w*|progress\w*)\b", re.IGNORECASE)
)
# An impression that names what the findings as a whole amount to ("Findings consistent with
# widespread changes from cystic fibrosis"): the non-critical findings are summed up in it.
_SUMMARY_RE = folded(
    re.compile(
        r"\b(these |the above |above |the )?findings (are |is )?(most )?(consistent|compatible) with\b", re.IGNORECASE
    )
)
_SIDE_WORD = {
    "left": re.compile(r"\bleft\b|\blt\b", re.IGNORECASE),
    "right": re.compile(r"\bright\b|\brt\b", re.IGNORECASE),
}

# An impression that sends the reader back to the findings.
_REFERS_RE = folded(
    re.compile(
        r"\b(see (the )?(findings|above|body|report|description)|as (described|detailed|noted|discussed|stated|above)|"
        r"described above|detailed above|noted above|discussed above|findings above|per findings)\b",
        re.IGNORECASE,
    )
)


def related_concepts(concept: str, related: Mapping[str, Iterable[str]] = DEFAULT_RELATED) -> frozenset[str]:
    """Concepts that describe the same finding as ``concept`` (itself included)."""
    out = {concept}
    for members in related.values():
        group = tuple(members)
        if concept in group:
            out.update(group)
    return frozenset(out)


def refers_to_findings(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` points back to the findings ("as above")."""
    return _REFERS_RE.search(text, start, end) is not None


def _family(terms: Terms, concept: str) -> str:
    c = terms.concepts.get(concept)
    return c.broader if c is not None and c.broader else concept


def _expand(terms: Terms, concept: str, related: Mapping[str, Iterable[str]]) -> frozenset[str]:
    names = set(related_concepts(concept, related))
    names |= related_concepts(_family(terms, concept), related)
    names.add(_family(terms, concept))
    return frozenset(names)


def _closed_families(terms: Terms, mentions: Iterable[Mention]) -> set[str]:
    """Every concept and its broader family named in ``mentions``."""
    out: set[str] = set()
    for m in mentions:
        out.add(m.concept)
        out.add(_family(terms, m.concept))
    return out


def _wanted(data: RuleInput, m: Mention) -> bool:
    if m.critical and data.param("include_critical", True):
        return True
    names = frozenset(data.param("concepts", DEFAULT_CONCEPTS) or ())
    return m.concept in names or _family(data.terms, m.concept) in names


def _next_sentence_end(data: RuleInput, m: Mention) -> int:
    """End of the sentence after ``m``'s ("Nodules are seen. These may be nipples.")."""
    sec = data.analysis.section_at(m.start)
    if sec is None:
        return m.sentence_end
    for sent in data.analysis.sentences(sec.start, sec.end):
        if sent.start >= m.sentence_end:
            return sent.end
    return m.sentence_end


def _minor(text: str, m: Mention) -> bool:
    """A non-critical finding called mild, minimal, small, subsegmental...

    Lesions (nodule, mass, cancer) are never minor: a small nodule matters.
    """
    if m.critical or m.concept in ("lung_nodule", "mass", "cancer"):
        return False
    return _MINOR_RE.search(text, max(m.sentence_start, m.start - 60), m.start) is not None


def _related_param(data: RuleInput) -> Mapping[str, Any]:
    value = data.param("related", DEFAULT_RELATED)
    return value if value else DEFAULT_RELATED


def _sign_re(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(f"(?:{p})" for p in patterns) + r")\b", re.IGNORECASE)


def _signs_in(data: RuleInput, concepts: Iterable[str], kind: SectionKind, side: str) -> bool:
    """True when section ``kind`` shows a sign of any of ``concepts`` (``signs`` param).

    With ``side`` left or right, a sign in a sentence that names only the
    other side does not count.
    """
    signs: Mapping[str, Any] = data.param("signs", DEFAULT_SIGNS) or {}
    patterns: list[str] = []
    for c in sorted(set(concepts)):
        patterns.extend(signs.get(c, ()))
    if not patterns:
        return False
    regex = _sign_re(tuple(patterns))
    text = data.report.text
    other = {"left": "right", "right": "left"}.get(side)
    for sec in data.report.sections_of(kind):
        for hit in regex.finditer(text, sec.start, sec.end):
            if other is None:
                return True
            span = next(
                (s for s in data.analysis.sentences(sec.start, sec.end) if s.start <= hit.start() < s.end), None
            )
            lo, hi = (span.start, span.end) if span is not None else (hit.start(), hit.end())
            if _SIDE_WORD[side].search(text, lo, hi) or not _SIDE_WORD[other].search(text, lo, hi):
                return True
    return False


@rule(
    "alignment",
    severity=Severity.WARNING,
    params={
        "concepts": list(DEFAULT_CONCEPTS),
        "include_critical": True,
        "ignore_stable": True,
        "ignore_minor": True,
        "related": dict(DEFAULT_RELATED),
        "signs": {k: list(v) for k, v in DEFAULT_SIGNS.items()},
    },
)
def finding_missing_from_impression(data: RuleInput) -> Iterator[Finding]:
    """A significant finding affirmed in the findings is absent from the impression.

    ``concepts`` lists the concepts checked (plus every critical concept
    when ``include_critical``); ``related`` clusters count as the same
    finding; ``ignore_stable`` leaves out findings called stable, unchanged,
    chronic or old; ``ignore_minor`` leaves out non-critical findings called
    mild, minimal, small or subsegmental. Also left out: a finding the
    impression names by one of its ``signs`` (on the same side), one the
    sentence or the next explains away (granuloma, artifact, overlapping
    shadows), one described as seen on another examination ("better
    appreciated on the comparison", "on a previous outside scan"), and
    non-critical findings when the impression sums the findings up
    ("Findings consistent with ...").
    """
    report = data.report
    imps = report.sections_of(SectionKind.IMPRESSION)
    if not imps or not report.sections_of(SectionKind.FINDINGS):
        return
    text = report.text
    if not any(text[s.start : s.end].strip() for s in imps):
        return  # an empty impression is completeness' business
    if any(refers_to_findings(text, s.start, s.end) for s in imps):
        return
    related = _related_param(data)
    in_impression = _closed_families(data.terms, data.analysis.section_mentions(SectionKind.IMPRESSION))
    ignore_stable = bool(data.param("ignore_stable", True))
    ignore_minor = bool(data.param("ignore_minor", True))
    summed_up = any(_SUMMARY_RE.search(text, s.start, s.end) for s in imps)
    reported: set[str] = set()
    for m in data.analysis.section_mentions(SectionKind.FINDINGS):
        if not m.affirmed or not _wanted(data, m):
            continue
        fam = _family(data.terms, m.concept)
        expanded = _expand(data.terms, m.concept, related)
        if fam in reported or expanded & in_impression:
            continue
        if ignore_stable and data.analysis.in_sentence(STABLE_RE, m):
            continue
        if ignore_minor and _minor(text, m):
            continue
        if data.analysis.in_sentence(_EXPLAINED_RE, m):
            continue
        next_end = _next_sentence_end(data, m)
        if _HEDGED_SENTENCE_RE.search(text, m.sentence_start, next_end):
            continue
        if _EXPLAINED_NEXT_RE.search(text, m.sentence_end, next_end):
            continue
        if data.analysis.in_sentence(_OTHER_EXAM_RE, m) and not data.analysis.in_sentence(_NEW_RE, m):
            continue
        if summed_up and not m.critical:
            continue
        if _signs_in(data, expanded, SectionKind.IMPRESSION, m.laterality):
            continue
        reported.add(fam)
        yield data.emit(
            f"The findings describe {fam.replace('_', ' ')}; the impression does not mention it.",
            [data.analysis.evidence(m.start, m.end)],
            suggestion="Carry the finding into the impression, or say why it does not matter.",
        )


@rule(
    "alignment",
    severity=Severity.WARNING,
    params={
        "concepts": list(DEFAULT_CONCEPTS),
        "include_critical": True,
        "min_findings_words": 12,
        "related": dict(DEFAULT_RELATED),
        "signs": {k: list(v) for k, v in DEFAULT_SIGNS.items()},
    },
)
def impression_not_in_findings(data: RuleInput) -> Iterator[Finding]:
    """The impression affirms a significant finding the findings never describe.

    Any mention in the findings (even negated) of the concept, its broader
    concept or a ``related`` one counts as describing it. ``concepts`` and
    ``include_critical`` choose the concepts checked; impression sentences
    that hedge, list a differential or recommend are skipped; a findings
    section shorter than ``min_findings_words`` is not compared. An
    impression diagnosis whose ``signs`` the findings describe (on the same
    side) is described: "right upper lobe opacity" supports "right upper
    lobe pneumonia", "a 2.6 cm masslike density" supports "nodule".
    """
    report = data.report
    finds = report.sections_of(SectionKind.FINDINGS)
    if not finds or not report.sections_of(SectionKind.IMPRESSION):
        return
    text = report.text
    if sum(len(text[s.start : s.end].split()) for s in finds) < int(data.param("min_findings_words", 12)):
        return  # no real findings section: completeness' business
    related = _related_param(data)
    in_findings = _closed_families(data.terms, data.analysis.section_mentions(SectionKind.FINDINGS))
    reported: set[str] = set()
    for m in data.analysis.section_mentions(SectionKind.IMPRESSION):
        if not m.affirmed or not _wanted(data, m):
            continue
        fam = _family(data.terms, m.concept)
        expanded = _expand(data.terms, m.concept, related)
        if fam in reported or expanded & in_findings:
            continue
        if _signs_in(data, expanded, SectionKind.FINDINGS, m.laterality):
            continue
        if data.analysis.in_sentence(_HEDGED_SENTENCE_RE, m):
            continue
        if data.analysis.in_sentence(_EXPLAINED_RE, m):
            continue
        if data.analysis.in_sentence(STABLE_RE, m):
            continue  # "known tumor", "stable fractures": the findings may rightly skip them
        reported.add(fam)
        yield data.emit(
            f"The impression states {fam.replace('_', ' ')}; the findings never describe it.",
            [data.analysis.evidence(m.start, m.end)],
            suggestion="Describe the finding in the findings section, or correct the impression.",
        )
