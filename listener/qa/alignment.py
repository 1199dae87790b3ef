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
    "impression_refers_to_findings",
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
_OPACITY_SIGNS = (r"opacit\w*", r"opacifi\w*", r"infiltrat\w*", r"air-?\s?space", r"alveolar", r"consolidat\w*")

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
        # lucent lungs (emphysema) are no sign of a fracture (docs/qa-rules.md "Round 5")
        r"(?<!lung )(?<!lungs )(?<!pulmonary )lucen(t|cy|cies)",
        r"irregularit(y|ies)",
        r"step-?off",
        r"discontinuit(y|ies)",
        r"cortical (\w+ ){0,3}(disruption|break)",
        r"deformit(y|ies)",
        r"wedg\w*",
        r"compression",
        r"height loss",
    ),
    "hemorrhage": (r"hemorrhag\w*", r"hematomas?", r"hyperdens\w*", r"high (attenuation|density)"),
    "pleural_effusion": (
        r"blunt\w*",
        r"costophrenic",
        r"meniscus",
        r"layering",
        r"(pleural )?fluid",
        r"obscur\w*",
        # an interstitial pattern at the bases is no pleural fluid (docs/qa-rules.md "Round 5")
        r"(bi)?(basilar|basal|base|bases|lower lobe) ((?!interstitial\b)\w+ ){0,2}opacit\w*",
    ),
    "hernia": (r"hernia\w*", r"(air-?)?fluid levels?", r"retrocardiac (\w+ ){0,2}(densit\w*|opacit\w*|lucenc\w*|air)"),
}

#: What the impression may state without the findings describing it: the
#: patient's known history ("known tumor", "history of fracture"), not what
#: the images show now. An old healed fracture or a stable nodule named in the
#: impression is on the images and belongs in the findings too.
_KNOWN_RE = folded(
    re.compile(
        r"\b(known|history of|h/o|previously (seen|noted|described|demonstrated|treated|resected)|"
        r"status post|s/p|post-?operative|post-?surgical)\b",
        re.IGNORECASE,
    )
)
# A sentence after the finding that hedges *about it*: it points back ("This may
# represent ...", "Findings could be ...") or attributes ("... likely related to ...").
_REFERS_BACK_RE = folded(
    re.compile(
        r"^\W*(\d+[.)]\s*)?(this|these|that|those|it|they|which|findings?|appearance|the (latter|former|finding|"
        r"findings|appearance|abnormality|opacity|opacities|density|densities|lesion|lesions))\b",
        re.IGNORECASE,
    )
)

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
#: Minor, frequent findings (atelectasis, mild cardiomegaly, trace effusions)
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
    "pleural_effusion",
    "hernia",
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
        r"note that|cannot|can not|can be seen|seen with|suggest\w*|possib\w*|probabl\w*|likely|if|or)\b|\?",
        re.IGNORECASE,
    )
)

# A sentence that explains the finding away (benign, artifact) or is about a
# device or surgery ("catheter fracture", "fixation of the fracture").
_EXPLAINED_RE = folded(
    re.compile(
        r"\b(granulom\w*|calcifi\w*|dense|benign|artifact\w*|nipple shadows?|overlying|projecting|scar(s|ring)?|"
        r"catheter|lines?|leads?|wires?|tubes?|stents?|hardware|fixation|orif|repair\w*|post-?surgical|"
        r"post-?operative|surgery|not well|attributed|overlap\w*|superimpos\w*|confluence|summation)\b",
        re.IGNORECASE,
    )
)
# Words of _EXPLAINED_RE that also only place a measured nodule ("an 8 mm nodule ... overlying the
# posterior 7th rib", "partially superimposed upon the right second rib").
_PLACE_WORDS = ("overlying", "projecting", "superimpos")
# A finding given a size ("1.4 cm nodule", "8mm nodule"): measured, it is a real lesion to report.
_MEASURED_RE = folded(re.compile(r"\b\d+(\.\d+)?\s?(mm|cm)\b", re.IGNORECASE))
_MEASURED_CONCEPTS = frozenset({"lung_nodule", "mass"})
# Findings that overlapping shadows do not make: "projecting" or "overlying" only places them.
_PLACED_CONCEPTS = frozenset({"hernia", "fracture", "dislocation"})
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

# A next sentence that hedges what the finding may cause ("This may produce a partial obstruction"), not what
# it is: the finding stands (docs/qa-rules.md "Round 5").
_CONSEQUENCE_RE = folded(
    re.compile(
        r"\b(may|might|could|can|likely|possibly) (also )?(produc\w*|caus\w*|lead\w* to|result\w* in|contribut\w*)\b",
        re.IGNORECASE,
    )
)

# An impression that sends the reader back to the findings.
_REFERS_RE = folded(
    re.compile(
        r"\b(see (the )?(findings|above|body|report|description)|as (described|detailed|noted|discussed|stated|above)|"
        r"described above|detailed above|noted above|discussed above|findings above|per findings)\b",
        re.IGNORECASE,
    )
)


# Historical cues that only date a finding still on the images ("old healed rib fracture").
_AGE_CUE_RE = folded(re.compile(r"^(old|remote|healed|healing)$", re.IGNORECASE))


def _on_images(text: str, m: Mention) -> bool:
    """Stated as present on the images: affirmed, or only dated by "old", "remote", "healed".

    Critical concepts are acute by name: an "old infarct" is not one.
    """
    if m.affirmed:
        return True
    if m.critical or m.negated or m.uncertain or m.hypothetical or m.experiencer != "patient" or not m.historical:
        return False
    return all(
        _AGE_CUE_RE.match(text[c.start : c.end].strip()) is not None for c in m.cues if c.category == "historical"
    )


def related_concepts(concept: str, related: Mapping[str, Iterable[str]] = DEFAULT_RELATED) -> frozenset[str]:
    """Concepts that describe the same finding as ``concept`` (itself included).

    With the default clusters the answer is looked up in an index built once
    (the laterality rules ask once per located finding; walking every cluster
    each time cost as much as the rest of QA in a long report,
    docs/hardening.md "Linear text analysis").
    """
    if related is DEFAULT_RELATED:
        return _DEFAULT_RELATED_INDEX.get(concept) or frozenset((concept,))
    return _cluster_of(concept, related)


def _cluster_of(concept: str, related: Mapping[str, Iterable[str]]) -> frozenset[str]:
    out = {concept}
    for members in related.values():
        group = tuple(members)
        if concept in group:
            out.update(group)
    return frozenset(out)


_DEFAULT_RELATED_INDEX: dict[str, frozenset[str]] = {
    c: _cluster_of(c, DEFAULT_RELATED) for members in DEFAULT_RELATED.values() for c in members
}


def refers_to_findings(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` points back to the findings ("as above")."""
    return _REFERS_RE.search(text, start, end) is not None


def impression_refers_to_findings(data: RuleInput) -> bool:
    """True when an impression section of the report points back to the findings (:func:`refers_to_findings`),
    worked out once per report: three rules ask (docs/benchmarks.md, "Worker CPU, round 9")."""
    text = data.report.text
    found: bool = data.analysis.shared(
        impression_refers_to_findings,
        lambda: any(
            refers_to_findings(text, s.start, s.end) for s in data.analysis.sections_of(SectionKind.IMPRESSION)
        ),
    )
    return found


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
    nxt = data.analysis.next_sentence(m)
    return m.sentence_end if nxt is None else nxt.end


def _minor(text: str, m: Mention) -> bool:
    """A non-critical finding called mild, minimal, small, subsegmental...

    Lesions (nodule, mass, cancer) and fractures or dislocations are never
    minor: a small nodule matters, and "mildly displaced fracture" grades the
    displacement, not the fracture.
    """
    if m.critical or m.concept in ("lung_nodule", "mass", "cancer", "fracture", "dislocation"):
        return False
    hit = _MINOR_RE.search(text, max(m.sentence_start, m.start - 60), m.start)
    if hit is not None and m.concept in _SMALL_STILL_REPORTED and hit.group(1).lower() == "small":
        return False
    return hit is not None


# Findings whose "small" grade still belongs in the impression: a small pleural effusion is a new fluid
# collection the reader of the impression needs; trace, minimal or tiny ones stay minor
# (docs/qa-rules.md "Round 4").
_SMALL_STILL_REPORTED = frozenset({"pleural_effusion"})


def _measured_and_placed(data: RuleInput, m: Mention) -> bool:
    """A finding no shadow can mimic whose sentence only places it ("overlying the 7th rib"), explaining nothing away.

    Such findings are a measured nodule or mass, and a hernia, fracture or
    dislocation ("a hiatal hernia with soft tissue projecting behind the
    mediastinum"): docs/qa-rules.md "Round 4".
    """
    measured = m.concept in _MEASURED_CONCEPTS and data.analysis.in_sentence(_MEASURED_RE, m)
    if not measured and m.concept not in _PLACED_CONCEPTS:
        return False
    text = data.report.text
    for hit in _EXPLAINED_RE.finditer(text, m.sentence_start, m.sentence_end):
        if not hit.group(0).lower().startswith(_PLACE_WORDS):
            return False
        if not measured and hit.start() < m.start:
            return False  # "Radiodensity overlying the heart, ... representing a hiatal hernia": the shadow placed
    return True


# "There appears to be a ...": how radiologists state what they see, not a hedge (a hedge names an
# alternative or a likelihood: "may", "possible", "appears to represent").
_APPEARS_TO_BE_RE = folded(re.compile(r"^appears? to be$", re.IGNORECASE))


def _appears_to_be(text: str, m: Mention) -> bool:
    """True when ``m`` is uncertain only through "appears to be" ("There appears to be a displaced fracture")."""
    if not m.uncertain or m.negated or m.hypothetical or m.historical or m.experiencer != "patient":
        return False
    cues = [c for c in m.cues if c.category == "uncertain"]
    return bool(cues) and all(_APPEARS_TO_BE_RE.match(text[c.start : c.end].strip()) for c in cues)


def _stands_alone(data: RuleInput, m: Mention) -> bool:
    """A fracture, a dislocation, or a measured nodule or mass: only a next sentence about *it* explains it away.

    "There is a 1 cm nodule ... There is a calcified right hilar lymph node and
    right granuloma.": the granuloma is another finding, not what the nodule
    is (docs/qa-rules.md "Round 4").
    """
    if m.concept in ("fracture", "dislocation"):
        return True
    return m.concept in _MEASURED_CONCEPTS and data.analysis.in_sentence(_MEASURED_RE, m)


def _related_param(data: RuleInput) -> Mapping[str, Any]:
    value = data.param("related", DEFAULT_RELATED)
    return value if value else DEFAULT_RELATED


def _sign_re(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(f"(?:{p})" for p in patterns) + r")\b", re.IGNORECASE)


# Bones a fracture or its sign may be placed in: a sign in a sentence naming other bones only is at another
# site ("deformities of T12 and L1" for a humerus fracture; docs/qa-rules.md "Round 5").
_BONES: Mapping[str, re.Pattern[str]] = {
    "rib": re.compile(r"\bribs?\b", re.IGNORECASE),
    "clavicle": re.compile(r"\bclavic\w*", re.IGNORECASE),
    "scapula": re.compile(r"\bscapul\w*|\bglen\w*|\bacromi\w*|\bcoracoid", re.IGNORECASE),
    "sternum": re.compile(r"\bstern(um|al)\b", re.IGNORECASE),
    "humerus": re.compile(r"\bhumer\w*", re.IGNORECASE),
    "spine": re.compile(r"\b(spin\w*|vertebr\w*|[ctl]\d{1,2}|sacr\w*|coccy\w*)\b", re.IGNORECASE),
    "pelvis": re.compile(r"\b(pelvi\w*|acetabul\w*|ilia\w*|ischi\w*|pubi\w*)\b", re.IGNORECASE),
    "femur": re.compile(r"\b(femor\w*|femur|hip)\b", re.IGNORECASE),
    "skull": re.compile(r"\b(skull|calvari\w*|orbit\w*|nasal|maxill\w*|mandib\w*|zygom\w*)\b", re.IGNORECASE),
}
_BONE_CONCEPTS = frozenset({"fracture", "dislocation"})


def _bones(text: str, start: int, end: int) -> frozenset[str]:
    """The bones ``text[start:end]`` names (keys of ``_BONES``)."""
    return frozenset(name for name, regex in _BONES.items() if regex.search(text, start, end))


# A denial earlier in the sign's clause ("Negative for retrosternal density"): the sign is not there.
_SIGN_DENIED_RE = folded(re.compile(r"\b(no|without|negative for)\b[^,;:]*$", re.IGNORECASE))


def _signs_in(
    data: RuleInput,
    concepts: Iterable[str],
    kind: SectionKind,
    side: str,
    bones: frozenset[str] = frozenset(),
    *,
    stated: bool = False,
) -> bool:
    """True when section ``kind`` shows a sign of any of ``concepts`` (``signs`` param).

    With ``side`` left or right, a sign in a sentence that names only the
    other side does not count; with ``bones``, nor does one in a sentence
    that names only other bones; with ``stated``, nor does a denied one
    (docs/qa-rules.md "Round 5").
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
    for sec in data.analysis.sections_of(kind):
        for hit in regex.finditer(text, sec.start, sec.end):
            if other is None and not bones and not stated:
                return True
            span = next(
                (s for s in data.analysis.sentences(sec.start, sec.end) if s.start <= hit.start() < s.end), None
            )
            lo, hi = (span.start, span.end) if span is not None else (hit.start(), hit.end())
            if stated and _SIGN_DENIED_RE.search(text, lo, hit.start()):
                continue
            named = _bones(text, lo, hi) if bones else frozenset()
            if named and not named & bones:
                continue
            if other is None or _SIDE_WORD[side].search(text, lo, hi) or not _SIDE_WORD[other].search(text, lo, hi):
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
    mild, minimal, small or subsegmental (a small pleural effusion still
    counts). "There appears to be ..." states a finding. Also left out: a finding the
    impression names by one of its ``signs`` (on the same side), one the
    sentence or the next explains away (granuloma, artifact, overlapping
    shadows), one described as seen on another examination ("better
    appreciated on the comparison", "on a previous outside scan"), and
    non-critical findings when the impression sums the findings up
    ("Findings consistent with ...").
    """
    report = data.report
    imps = data.analysis.sections_of(SectionKind.IMPRESSION)
    if not imps or not data.analysis.sections_of(SectionKind.FINDINGS):
        return
    text = report.text
    if not any(text[s.start : s.end].strip() for s in imps):
        return  # an empty impression is completeness' business
    if impression_refers_to_findings(data):
        return
    related = _related_param(data)
    imp_mentions = data.analysis.section_mentions(SectionKind.IMPRESSION)
    in_impression = _closed_families(data.terms, imp_mentions)
    # A related finding the impression only denies, conditions or recalls ("if high risk for malignancy,
    # consider CT", "to exclude malignancy") does not name this one (docs/qa-rules.md "Round 5").
    stated_in_impression = _closed_families(
        data.terms, (m for m in imp_mentions if m.affirmed or (m.uncertain and not (m.negated or m.hypothetical)))
    )
    ignore_stable = bool(data.param("ignore_stable", True))
    ignore_minor = bool(data.param("ignore_minor", True))
    summed_up = any(_SUMMARY_RE.search(text, s.start, s.end) for s in imps)
    reported: set[str] = set()
    for m in data.analysis.section_mentions(SectionKind.FINDINGS):
        if not (m.affirmed or _appears_to_be(text, m)) or not _wanted(data, m):
            continue
        fam = _family(data.terms, m.concept)
        expanded = _expand(data.terms, m.concept, related)
        if fam in reported or fam in in_impression or m.concept in in_impression or expanded & stated_in_impression:
            continue
        if ignore_stable and data.analysis.in_sentence(STABLE_RE, m):
            continue
        if ignore_minor and _minor(text, m):
            continue
        if data.analysis.in_sentence(_EXPLAINED_RE, m) and not _measured_and_placed(data, m):
            continue
        next_end = _next_sentence_end(data, m)
        if _HEDGED_SENTENCE_RE.search(text, m.sentence_start, m.sentence_end):
            continue
        # A hedge in the next sentence about a fracture or a measured nodule ("This appears dense and may
        # contain calcium") characterises it; only a benign cause explains it away (docs/qa-rules.md "Round 5").
        if (
            next_end > m.sentence_end
            and not _stands_alone(data, m)
            and _REFERS_BACK_RE.match(text[m.sentence_end : next_end].lstrip())
            and _HEDGED_SENTENCE_RE.search(text, m.sentence_end, next_end)
            and not _CONSEQUENCE_RE.search(text, m.sentence_end, next_end)
        ):
            continue  # "Nodules are seen. These may be nipple shadows."
        if _EXPLAINED_NEXT_RE.search(text, m.sentence_end, next_end) and (
            not _stands_alone(data, m) or _REFERS_BACK_RE.match(text[m.sentence_end : next_end].lstrip())
        ):
            continue
        if data.analysis.in_sentence(_OTHER_EXAM_RE, m) and not data.analysis.in_sentence(_NEW_RE, m):
            continue
        if summed_up and not m.critical:
            continue
        bones = _bones(text, m.sentence_start, m.sentence_end) if m.concept in _BONE_CONCEPTS else frozenset()
        if _signs_in(data, expanded, SectionKind.IMPRESSION, m.laterality, bones):
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
        "min_findings_words": 8,
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
    finds = data.analysis.sections_of(SectionKind.FINDINGS)
    if not finds or not data.analysis.sections_of(SectionKind.IMPRESSION):
        return
    text = report.text
    if sum(len(text[s.start : s.end].split()) for s in finds) < int(data.param("min_findings_words", 8)):
        return  # no real findings section: completeness' business
    related = _related_param(data)
    in_findings = _closed_families(data.terms, data.analysis.section_mentions(SectionKind.FINDINGS))
    reported: set[str] = set()
    for m in data.analysis.section_mentions(SectionKind.IMPRESSION):
        if not _on_images(text, m) or not _wanted(data, m):
            continue
        fam = _family(data.terms, m.concept)
        expanded = _expand(data.terms, m.concept, related)
        if fam in reported or expanded & in_findings:
            continue
        if _signs_in(data, expanded, SectionKind.FINDINGS, m.laterality, stated=True):
            continue
        if data.analysis.in_sentence(_HEDGED_SENTENCE_RE, m):
            continue
        if data.analysis.in_sentence(_EXPLAINED_RE, m):
            continue
        if data.analysis.in_sentence(_KNOWN_RE, m):
            continue  # "known tumor", "history of fracture": history, not what the images show
        reported.add(fam)
        yield data.emit(
            f"The impression states {fam.replace('_', ' ')}; the findings never describe it.",
            [data.analysis.evidence(m.start, m.end)],
            suggestion="Describe the finding in the findings section, or correct the impression.",
        )
