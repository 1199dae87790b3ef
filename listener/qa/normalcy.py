"""A normal impression over abnormal findings: the forms ``contradiction.normal_impression`` leaves out.

Pure: no I/O, no clock. ``contradiction.normal_impression`` (listener/qa/contradiction.py)
reports the clear cases and, to stay quiet on clean reports, skips every
finding called small, mild, stable or old. That leaves two contradictions a
radiologist reads at once (docs/qa-rules.md, docs/qa-evaluation.md):

- a *plain* normal impression ("Normal chest radiograph.", "Negative chest.",
  "Unremarkable examination.") over any significant finding the findings
  state, whatever its size or age on the images (minimal, small, old,
  healed, healing), or with a de-identified word in its sentence: stable
  cardiomegaly or a healing rib fracture is not a normal chest. Hedged,
  benign, device, history and resolving findings do not count;
- a "no acute ..." impression over a finding that is acute by nature (an
  effusion, edema, consolidation, a fracture not called old or healed), of any
  size, or over any significant finding the findings call new, increased or
  worse ("marked interval increase in heart size").

A "no acute" impression over chronic findings (stable cardiomegaly, an old
healed fracture, a calcified granuloma) is no contradiction when the impression
says more, and this rule leaves it alone. An impression that says *only* that
nothing is acute ("No acute cardiopulmonary process.") over a finding of
``stated`` (cardiomegaly by default), stable or not, reads as a normal study:
an impression names an enlarged heart (of the 223 clean corpus reports whose
findings affirm cardiomegaly, 171 name it in the impression and 14 have an
impression made only of "no acute ..."), so one that leaves it out under
"no acute" misstates the study (docs/qa-rules.md, "Round 3"). Where ``contradiction.normal_impression`` already reports a
report, this rule stays silent, so one defect gives one finding.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from listener.model import Finding, SectionKind, Severity
from listener.qa.alignment import _BONE_CONCEPTS, _appears_to_be, impression_refers_to_findings
from listener.qa.contradiction import _family, _not_acute_here, normal_impression
from listener.qa.engine import RuleInput, folded, rule
from listener.text import Cue, Mention

__all__ = ["DEFAULT_ACUTE", "normal_over_findings"]

#: Concepts that are acute by nature: a "no acute" impression denies them at
#: any size unless the findings call them old, chronic or stable. Tunable in
#: policies/qa.yaml (``acute``).
DEFAULT_ACUTE: tuple[str, ...] = (
    "pneumonia",
    "consolidation",
    "pleural_effusion",
    "pericardial_effusion",
    "pneumothorax",
    "pulmonary_edema",
    "fracture",
    "dislocation",
    "hemorrhage",
    "abscess",
    "thrombosis",
    "hydronephrosis",
)

#: Significant findings that an impression made only of "no acute ..." still has
#: to name, whatever their age (a chronic enlarged heart is still the study's
#: main finding). Tunable in policies/qa.yaml (``stated``).
DEFAULT_STATED: tuple[str, ...] = ("cardiomegaly",)

# A finding at the edge of normal ("borderline cardiomegaly", "upper limits of normal").
_BORDERLINE_RE = folded(re.compile(r"\b(borderline|upper limits? of normal|top normal|accentuated)\b", re.IGNORECASE))

# A sentence that states normality and nothing else ("Normal chest radiograph.", "Negative chest.",
# "Unremarkable examination.", "No abnormality.").
_PLAIN_NORMAL_RE = folded(
    re.compile(
        r"^\W*(\d+[.)]\s*)?(the |this )?((chest|study|exam\w*|radiograph\w*|ct|mri?|ultrasound|sonogram|"
        r"x-?rays?|films?|images?|head|abdomen|pelvis|brain|spine|findings?) )?(is |are |appears? )?"
        r"(normal|negative|unremarkable|within normal limits)( (\w+ ){0,3}(chest|study|exam\w*|radiograph\w*|"
        r"ct|mri?|ultrasound|sonogram|x-?rays?|films?|series|findings?|appearance))?\W*$|"
        r"^\W*(\d+[.)]\s*)?no ((?!acute\b|active\b)\w+ ){0,2}(abnormalit(y|ies)|pathology)( (is |are )?(seen|identified|demonstrated))?\W*$",
        re.IGNORECASE,
    )
)
# "No acute cardiopulmonary process", "without acute abnormality": a denial of acute disease in general.
_NO_ACUTE_RE = folded(
    re.compile(
        r"\b(no|without|negative for)( (radiographic )?evidence of)? (\w+ ){0,2}(acute|active)( \w+){0,2} "
        r"(disease|abnormalit(y|ies)|process(es)?|findings?|pathology|changes?)\b",
        re.IGNORECASE,
    )
)
# The impression says more than "normal": it qualifies or lists something.
_QUALIFIED_RE = folded(
    re.compile(
        r"\b(otherwise|except|apart from|aside from|besides|other than|but|however|although|stable|unchanged|"
        r"known|chronic|again|post-?operative|post-?surgical)\b",
        re.IGNORECASE,
    )
)
# Sentences that state no finding plainly, or name a device or a benign thing.
_SOFT_RE = folded(
    re.compile(
        r"\b(may|might|could|possib\w*|probab\w*|likely|versus|vs|question\w*|suggest\w*|cannot|can not|"
        r"suspect\w*|concern\w*|granulom\w*|calcified|benign|artifact\w*|nipple|overlying|projecting|catheter|"
        r"lines?|leads?|wires?|tubes?|stents?|hardware|fixation|orif|repair\w*|surgery|post-?surgical|"
        r"post-?operative|not well|trace|tiny|minimal)\b|\?",
        re.IGNORECASE,
    )
)
# A de-identified word that may be the finding's own modifier ("XXXX pleural effusion" could be
# "chronic", "which are XXXX" could be "stable"): right before the finding or after it in its sentence.
_XXXX_BEFORE_RE = folded(re.compile(r"\bxxxx\W+(\w+\W+){0,2}$", re.IGNORECASE))
_XXXX_RE = folded(re.compile(r"\bxxxx\b", re.IGNORECASE))
# ... or where it may be a hedge ("XXXX reflects scar or fluid": "likely reflects").
_XXXX_HEDGE_RE = folded(re.compile(r"\bxxxx\s+(reflect|represent|indicat|suggest|relat|due)\w*", re.IGNORECASE))


def _masked_modifier(text: str, m: Mention) -> bool:
    """True when a de-identified word stands where it may qualify ``m``: up to 3 words before it, after it, or as a hedge."""
    if _XXXX_RE.search(text, m.end, m.sentence_end) is not None:
        return True
    if _XXXX_HEDGE_RE.search(text, m.sentence_start, m.sentence_end) is not None:
        return True
    return _XXXX_BEFORE_RE.search(text, max(m.sentence_start, m.start - 40), m.start) is not None


# The finding as written is chronic: "no acute" does not deny it.
_CHRONIC_RE = folded(
    re.compile(
        r"\b(stable|unchanged|chronic|old|healed|healing|remote|again (seen|noted|demonstrated)|redemonstrat\w*|"
        r"persistent|persists|no (significant |interval )?change|similar|longstanding|long-standing|known|"
        r"previously (seen|noted|described|demonstrated)|degenerative|prior|previous)\b",
        re.IGNORECASE,
    )
)
# The finding is new or growing: "no acute" denies it whatever it is.
_NEW_RE = folded(
    re.compile(
        r"\b(new|newly|interval (increase|enlargement|development|worsening|appearance)|increas(ed|ing)|"
        r"enlarging|worse\w*|develop(ed|ing|ment)|progress(ed|ing|ion))\b",
        re.IGNORECASE,
    )
)


def _impression_kind(data: RuleInput) -> tuple[str, tuple[int, int]] | None:
    """("normal" | "no_acute", span) for an impression that reads as normal, else None.

    "normal": every sentence of the impression is a plain normal statement.
    "no_acute": some sentence denies acute disease in general.
    """
    text = data.report.text
    imps = data.analysis.sections_of(SectionKind.IMPRESSION)
    sentences = [
        (s.start, s.end)
        for sec in imps
        for s in data.analysis.sentences(sec.start, sec.end)
        if any(ch.isalpha() for ch in text[s.start : s.end])
    ]
    if not sentences:
        return None
    if not any(_QUALIFIED_RE.search(text, s, e) for s, e in sentences) and all(
        _PLAIN_NORMAL_RE.match(text[s:e].strip()) for s, e in sentences
    ):
        return "normal", sentences[0]
    only = all(
        _NO_ACUTE_RE.search(text, s, e) or _PLAIN_NORMAL_RE.match(text[s:e].strip()) for s, e in sentences
    ) and not any(_QUALIFIED_RE.search(text, s, e) for s, e in sentences)
    for s, e in sentences:
        hit = _NO_ACUTE_RE.search(text, s, e)
        if hit is not None:
            return ("no_acute_only" if only else "no_acute"), hit.span()
    return None


# What keeps a finding out of a plain normal impression's way: a hedge, a benign or explained thing, a
# device or surgery, a history not on the images. Size ("minimal", "small"), age on the images ("old",
# "healed") and de-identified words do not: a normal study has none of them.
_PLAIN_SOFT_RE = folded(
    re.compile(
        r"\b(may|might|could|possib\w*|probab\w*|likely|versus|vs|question\w*|suggest\w*|cannot|can not|"
        r"suspect\w*|concern\w*|appear\w*|granulom\w*|calcified|benign|artifact\w*|nipple|overlying|projecting|"
        r"catheter|lines?|leads?|wires?|tubes?|stents?|hardware|fixation|orif|repair\w*|surgery|post-?surgical|"
        r"post-?operative|history|hx|status post|s/p|prior|previous(ly)?|removal|removed|resol\w*|clear(ed|ing)|"
        r"improv\w*|decreas\w*|not well)\b|\?",
        re.IGNORECASE,
    )
)
# A mention's "historical" cues that are about the images (an old, healed or healing fracture), not the chart.
_AGE_ON_IMAGES = frozenset({"old", "healed", "healing", "remote", "chronic"})


# Findings that are not significant enough for the other forms but still are not a normal study.
_NOT_NORMAL = frozenset({"airspace_opacity"})


def _age_only(text: str, cue: Cue) -> bool:
    """An "indeterminate" cue that hedges the finding's age only ("age-indeterminate rib fractures")."""
    word = text[cue.start : cue.end].lower()
    if word != "indeterminate":
        return False
    before = text[max(0, cue.start - 4) : cue.start].lower()
    after = text[cue.end : cue.end + 4].lower()
    return before in ("age-", "age ") or after == " age"


def _plain_normal_counts(data: RuleInput, m: Mention) -> bool:
    """Whether a findings mention contradicts a plain normal impression, whatever its size or age."""
    if m.negated or m.hypothetical or m.experiencer != "patient":
        return False
    if not (m.significant or m.critical or _family(data.terms, m.concept) in _NOT_NORMAL):
        return False
    text = data.report.text
    if m.uncertain and not all(_age_only(text, c) for c in m.cues if c.category == "uncertain"):
        return False
    if data.analysis.in_sentence(_PLAIN_SOFT_RE, m):
        return False
    if m.historical and not all(
        text[c.start : c.end].lower() in _AGE_ON_IMAGES for c in m.cues if c.category == "historical"
    ):
        return False
    return m.critical or not _not_acute_here(data, m, False)


# Size words that grade a fracture's displacement, not the fracture ("very minimal displacement of the
# fragments"): they do not soften a fracture or dislocation (docs/qa-rules.md "Round 5").
_SIZE_WORDS = frozenset({"trace", "tiny", "minimal"})


def _soft(data: RuleInput, m: Mention) -> bool:
    """Whether ``m``'s sentence states no finding plainly (``_SOFT_RE``); size words never soften a fracture."""
    if not data.analysis.in_sentence(_SOFT_RE, m):
        return False
    if m.concept not in _BONE_CONCEPTS and _family(data.terms, m.concept) not in _BONE_CONCEPTS:
        return True
    text = data.report.text
    return any(h.group(0).lower() not in _SIZE_WORDS for h in _SOFT_RE.finditer(text, m.sentence_start, m.sentence_end))


def _counts(data: RuleInput, m: Mention, kind: str, acute: frozenset[str], stated: frozenset[str]) -> bool:
    """Whether the affirmed findings mention ``m`` contradicts an impression of ``kind``."""
    if not (m.significant or m.critical):
        return False
    if _soft(data, m) or _masked_modifier(data.report.text, m):
        return False
    if not m.critical and _not_acute_here(data, m, False):
        return False
    if kind == "normal":
        return True
    if kind == "no_acute_only" and (m.concept in stated or _family(data.terms, m.concept) in stated):
        return not data.analysis.in_sentence(_BORDERLINE_RE, m)
    if data.analysis.in_sentence(_NEW_RE, m):
        return True
    if m.critical:
        return not data.analysis.in_sentence(_CHRONIC_RE, m)
    if m.concept not in acute and _family(data.terms, m.concept) not in acute:
        return False
    return not data.analysis.in_sentence(_CHRONIC_RE, m)


@rule("contradiction", severity=Severity.WARNING, params={"acute": list(DEFAULT_ACUTE), "stated": list(DEFAULT_STATED)})
def normal_over_findings(data: RuleInput) -> Iterator[Finding]:
    """A normal or "no acute" impression over a finding the findings affirm, small or stable ones included.

    A plain normal impression ("Normal chest radiograph.") is contradicted
    by any significant finding, whatever its size or age. A "no acute ..."
    impression is contradicted by a finding of ``acute`` (any size)
    the findings do not call old, stable or chronic, and by any significant
    finding called new, increased or worse. An impression made only of
    "no acute ..." is also contradicted by a finding of ``stated``
    (cardiomegaly), stable or not, unless called borderline. Findings the impression names,
    hedged ones, devices and benign calcifications never count; neither
    does a report ``contradiction.normal_impression`` already flags.
    """
    report = data.report
    imps = data.analysis.sections_of(SectionKind.IMPRESSION)
    if not imps or not data.analysis.sections_of(SectionKind.FINDINGS):
        return
    text = report.text
    if impression_refers_to_findings(data):
        return
    found = _impression_kind(data)
    if found is None:
        return
    kind, span = found
    imp_mentions = data.analysis.section_mentions(SectionKind.IMPRESSION)
    if kind == "normal" and any(not m.negated for m in imp_mentions):
        return
    addressed = {m.concept for m in imp_mentions} | {_family(data.terms, m.concept) for m in imp_mentions}
    acute = frozenset(data.param("acute", DEFAULT_ACUTE) or ())
    stated = frozenset(data.param("stated", DEFAULT_STATED) or ())
    for m in data.analysis.section_mentions(SectionKind.FINDINGS):
        if m.concept in addressed or _family(data.terms, m.concept) in addressed:
            continue
        # "There appears to be ..." states a finding (docs/qa-rules.md "Round 5").
        counts = (m.affirmed or _appears_to_be(text, m)) and _counts(data, m, kind, acute, stated)
        if not counts and not (kind == "normal" and _plain_normal_counts(data, m)):
            continue
        if next(iter(normal_impression(data)), None) is not None:
            return  # the general rule reports this impression already
        label = "normal" if kind == "normal" else "no acute findings"
        yield data.emit(
            f"The impression reads as {label}; the findings affirm {_family(data.terms, m.concept).replace('_', ' ')}.",
            [data.analysis.evidence(*span), data.analysis.evidence(m.sentence_start, m.sentence_end)],
            suggestion="Put the finding in the impression, or correct the findings.",
        )
        return
