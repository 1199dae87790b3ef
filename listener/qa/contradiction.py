"""Contradiction rules: the report says a finding is there and is not there.

Pure: no I/O, no clock. Works on the ConText mentions of ``listener.text``.

Strategy: a contradiction needs the *same* claim both ways, so everything
that makes two statements about different things is left out:

- different sides ("no pneumothorax on the left" / "small right pneumothorax");
- a negation narrowed by a qualifier ("no *new*", "no *large*", "no *acute*",
  "no *displaced* fracture"), unless the affirmation carries it too; "no *focal*"
  and "no *acute*" consolidation or infiltrate deny any not called patchy,
  diffuse, chronic or old (docs/qa-rules.md "Contradictions");
- negations that describe change ("resolved", "removed", "decreased") and
  negations placed at a location ("no fracture *of the* clavicle");
- hedged, historical and hypothetical mentions; both in one sentence;
- addenda (they exist to correct the report).

A "normal" impression contradicts the findings only when the findings affirm
a finding that is neither stable/chronic, minor, explained away (granuloma,
artifact, device) nor hedged; a "no acute ..." impression is contradicted
only by findings that are acute by nature (critical ones, pneumonia,
fracture...).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from operator import attrgetter

from listener.model import Finding, SectionKind, Severity
from listener.qa.alignment import STABLE_RE, _on_images, impression_refers_to_findings
from listener.qa.engine import Folded, RuleInput, folded, lowered_ascii, rule
from listener.text import Mention, Terms, lateral_mentions
from listener.text.scope import inside_any

__all__ = ["affirmed_and_negated", "normal_impression"]

# Words between a negation and its finding that narrow what is denied.
_QUALIFIER_RE = folded(
    re.compile(
        r"\b(new|newly|additional|other|another|further|more|large|larger|sizable|sizeable|significant|"
        r"substantial|appreciable|displaced|acute|definite|definitive|obvious|frank|gross|focal|discrete|dominant|"
        r"suspicious|recurrent|recurrence|residual|active|visible|developing|worsening|increas\w*|expand\w*|"
        r"enlarging|underlying|superimposed|convincing|dense|lobar|confluent|tension|free|moderate|severe|"
        r"stable|xxxx)\b",
        re.IGNORECASE,
    )
)
# A negated sentence that describes change over time, not the state now.
_CHANGE_RE = folded(
    re.compile(
        r"\b(resol\w*|remov\w*|no longer|clear(ed|ing)|partial(ly)?|nearly|almost|mostly|largely|decreas\w*|"
        r"improv\w*|interval|previous(ly)?|prior|since)\b",
        re.IGNORECASE,
    )
)
# A device event right after the denied finding ("no pneumothorax following removal of the chest
# tube", "after chest tube removal"): it dates the denial, it neither places it nor says the finding
# changed (docs/qa-rules.md "Round 4").
_DEVICE_EVENT_RE = folded(
    re.compile(
        r"\s*,?\s*(after|following|post|since)\s+(the\s+|interval\s+)*((removal|placement|insertion|withdrawal|"
        r"repositioning|pulling)\s+of\s+(the\s+|an?\s+)?([\w-]+\s+){0,3}?|([\w-]+\s+){0,2}?)"
        r"(chest\s+tubes?|tubes?|catheters?|drains?|pigtails?|lines?)(\s+(removal|placement|insertion|withdrawal))?\b",
        re.IGNORECASE,
    )
)
_EVENT_SIDE_RE = folded(re.compile(r"\b(left|right)\b", re.IGNORECASE))
# Marks the side of a device event among a denial's qualifiers; compared with the affirmation's side.
_SIDE_MARK = "side:"
# A place named after the denied finding ("no fracture of the clavicle").
_LOCATION_AFTER_RE = folded(
    re.compile(r"^[^.;]*?\b(of|in|within|involving|at|along|near|over|overlying|from|on)\b", re.IGNORECASE)
)

_NORMAL_RE = folded(
    re.compile(
        r"\b(normal|unremarkable|negative|within normal limits|"
        r"no (\w+ ){0,3}(abnormalit(y|ies)|findings?|disease|process|pathology|changes?))\b",
        re.IGNORECASE,
    )
)
_NOT_ONLY_NORMAL_RE = folded(
    re.compile(
        r"\b(otherwise|except|apart from|aside from|besides|other than|but|however|although|"
        r"stable|unchanged|known|chronic|again|postoperative|post-?surgical)\b",
        re.IGNORECASE,
    )
)
_HEDGE_RE = folded(
    re.compile(
        r"\b(may|might|could|possib\w*|probab\w*|likely|versus|vs|question\w*|suggest\w*|cannot|can not|"
        r"catheter|lines?|tubes?|old|healed|remote)\b|\?",
        re.IGNORECASE,
    )
)
# "No acute cardiopulmonary abnormality", "without acute disease": denies acute disease only.
_NO_ACUTE_RE = folded(
    re.compile(r"\b(no|without|negative for)( evidence of)? (\w+ ){0,1}(acute|active)\b[^.;]*", re.IGNORECASE)
)
# ... and it must deny disease in general, not one thing ("without an active marrow stress
# phenomenon", "no active denervation" say nothing about the rest of the findings).
_GENERIC_RE = folded(
    re.compile(
        r"\b(disease|abnormalit\w*|process|findings?|pathology|changes?|complications?|features|inability)\b",
        re.IGNORECASE,
    )
)
# A nonspecific finding (an opacity, a blunted angle) the report explains as something not acute.
_EXPLAINED_RE = folded(
    re.compile(
        r"\b(atelecta\w*|scar(s|ring|red)?|fibros\w*|fibrotic|bronchiectasis|emphysema\w*|granulom\w*|"
        r"pleural thickening|pleural-?parenchymal)\b",
        re.IGNORECASE,
    )
)
_EXPLAINED_CONCEPTS = frozenset({"atelectasis", "scarring", "fibrosis", "emphysema", "granuloma", "pleural_thickening"})
_NONSPECIFIC_CONCEPTS = frozenset({"airspace_opacity", "pleural_effusion"})
_NONSPECIFIC_TEXT_RE = folded(re.compile(r"\b(opacit\w*|blunting|infiltrat\w*|densit\w*|markings?)\b", re.IGNORECASE))
# Interstitial/reticular opacities are a pattern of chronic disease, not acute airspace disease.
_CHRONIC_PATTERN_RE = folded(re.compile(r"^(interstitial|reticular)\b", re.IGNORECASE))
# The finding is going away: "clearing of left base airspace opacities".
_CLEARING_RE = folded(re.compile(r"\b(clear(ing|ed)|resol(ved|ving|ution)|improv\w*)\b", re.IGNORECASE))
# Edema named at a site outside the lungs is not pulmonary edema ("interstitial edema" of a ligament).
_NON_LUNG_EDEMA_RE = folded(
    re.compile(
        r"\b(marrow|bone|soft tissue|subcutaneous|ligament\w*|tendon\w*|muscle|muscular|cerebral|vasogenic|"
        r"cytotoxic|brain|scrotal|pedal|peripheral|extremity|leg|ankle|knee|foot|hand|wrist|facial|periorbital|"
        r"mucosal|bowel|wall|pancrea\w*|perinephric|periportal|gallbladder|synovi\w*|joint)\b",
        re.IGNORECASE,
    )
)
# Sentences the normal-impression rule leaves alone: hedged, benign, devices.
_SOFT_SENTENCE_RE = folded(
    re.compile(
        r"\b(may|might|could|possib\w*|probab\w*|likely|versus|vs|question\w*|suggest\w*|cannot|can not|"
        r"granulom\w*|calcifi\w*|benign|artifact\w*|nipple|overlying|projecting|catheter|lines?|leads?|"
        r"wires?|tubes?|stents?|hardware|fixation|orif|repair\w*|surgery|post-?surgical|post-?operative|"
        r"not well|mild(ly)?|minimal|minor|trace|tiny|slight(ly)?|subtle|subsegmental|borderline|dependent|"
        r"small|old|healed|healing|remote|degenerative|prior|previous(ly)?)\b|\?",
        re.IGNORECASE,
    )
)


def _family(terms: Terms, concept: str) -> str:
    c = terms.concepts.get(concept)
    return c.broader if c is not None and c.broader else concept


# Words that may stand between a negation and its finding without narrowing
# it ("no evidence of a pneumothorax", "there is no definite pneumothorax").
_NEUTRAL = frozenset(
    "a an the any evidence of for signs sign is are was were there seen identified to suggest suggesting "
    "or and nor definite findings finding radiographic visible demonstrated noted".split()
)
_WORD_RE = re.compile(r"[A-Za-z]+")
_SIDE_WORDS = frozenset("left right bilateral bilaterally both".split())
# Qualifiers relative to something else ("no new", "no other"): never matched by an affirmation.
_RELATIVE = frozenset("new newly additional other another further more".split())
# Concepts found at many sites: a denial only contradicts when it is bare and short.
_SITE_VARIABLE = frozenset(
    {"mass", "cancer", "fracture", "dislocation", "hemorrhage", "abscess", "thrombosis", "aneurysm", "lung_nodule"}
)
# An affirmed sentence that does not plainly state the finding now: a hedge, an alternative, a device
# (these words), or a question mark (_soft). The two are tested apart: as one pattern, ``\b(...)\b|\?``,
# Folded could not take off its ``\b``, and ``re`` tried it at every position of the sentence
# (docs/benchmarks.md, "Worker CPU, round 8").
_SOFT_WORDS = (
    r"may|might|could|would|possib\w*|probab\w*|likely|versus|vs|or|question\w*|suggest\w*|cannot|"
    r"can not|can be|if|recommend\w*|evaluat\w*|follow-?up|artifact\w*|catheter|lines?|leads?|wires?|"
    r"tubes?|stents?|screws?|plates?|hardware|fixation|prosthe\w*|blunting|xxxx"
)
_SOFT_WORD_RE = folded(re.compile(rf"\b({_SOFT_WORDS})\b", re.IGNORECASE))
# ... the same without "or": what still makes a list of findings joined by "or" a soft statement.
_SOFT_WORD_NOT_OR_RE = folded(re.compile(rf"\b({_SOFT_WORDS.replace('|vs|or|', '|vs|')})\b", re.IGNORECASE))
# An affirmation characterized as benign or known ("calcified nodule", "granuloma", "as on the prior"):
# the finding is there, so only a bare denial of it ("No nodule.") contradicts it.
_CHARACTERIZED_RE = folded(re.compile(r"\b(prior|previous(ly)?|granulom\w*|calcifi\w*|benign)\b", re.IGNORECASE))
# Words a bare list of findings may hold besides the findings ("There is X, Y, or Z.").
_LIST_WORDS = _NEUTRAL | {"or", "nor", "and", "no"}
# Words a sentence that does nothing but deny may hold besides its findings ("3. There is no
# pleural effusion.", "Negative for hernia.", "Atelectasis is not seen.").
_DENIAL_WORDS = _LIST_WORDS | frozenset("not negative present appreciated detected observed".split())
# A hedged statement that is no claim about the images now: a condition, advice, a device, the prior.
_NOT_A_CLAIM_RE = folded(
    re.compile(
        r"\b(if|recommend\w*|evaluat\w*|follow-?up|exclu\w*|cannot|can not|rul(e|ed) out|correlat\w*|previous(ly)?|"
        r"prior|catheter|lines?|leads?|wires?|tubes?|stents?|screws?|plates?|hardware|fixation|prosthe\w*|"
        r"blunting)\b",
        re.IGNORECASE,
    )
)
# The device words of _SOFT_WORD_RE: they soften only a finding in their own clause.
_DEVICE_WORD_RE = folded(
    re.compile(
        r"\b(catheter|lines?|leads?|wires?|tubes?|stents?|screws?|plates?|hardware|fixation|prosthe\w*)\b",
        re.IGNORECASE,
    )
)


def _device_in_other_clause(text: str, m: Mention) -> bool:
    """True when every word that softens the sentence of ``m`` is a device word outside its clause.

    "Interval removal of right chest tube, a small pneumothorax": the device
    is the first clause's, and the pneumothorax after the comma is stated
    plainly. A device in the finding's own clause ("chest tube in the
    pneumothorax", "catheter fracture") keeps it soft (docs/qa-rules.md,
    "Round 7").
    """
    cut = max(text.rfind(ch, m.sentence_start, m.start) for ch in ",;:")
    lo = cut + 1 if cut >= 0 else m.sentence_start
    stops = [i for i in (text.find(ch, m.end, m.sentence_end) for ch in ",;:") if i >= 0]
    hi = min(stops, default=m.sentence_end)
    if text.find("?", m.sentence_start, m.sentence_end) >= 0:
        return False  # a question mark softens the whole sentence
    for hit in _SOFT_WORD_RE.finditer(text, m.sentence_start, m.sentence_end):
        if _DEVICE_WORD_RE.pattern.fullmatch(hit.group(0)) is None or lo <= hit.start() < hi:
            return False
    return True


def _soft(data: RuleInput, words: Folded, m: Mention) -> bool:
    """Whether the sentence of ``m`` holds one of ``words`` (_SOFT_WORD_RE or its twin) or a question mark."""
    if data.report.text.find("?", m.sentence_start, m.sentence_end) >= 0:
        return True
    return data.analysis.in_sentence(words, m)


# A finding offered as one of alternatives, in its own clause ("scar or loculated fluid", "atelectasis/
# scarring", "atelectasis versus pneumonia"): a differential that a denial may settle.
_ALTERNATIVE_BEFORE_RE = folded(re.compile(r"(\b(or|versus|vs)\b\.?|/)\s*([\w-]+\s+){0,5}$", re.IGNORECASE))
_ALTERNATIVE_AFTER_RE = folded(re.compile(r"\s*([\w-]+\s+){0,1}(\b(or|versus|vs)\b|/)", re.IGNORECASE))


# The word "nodule" in an affirmation the vocabulary reads as a granuloma ("calcified pulmonary nodules").
_NODULE_WORD_RE = folded(re.compile(r"\bnodul", re.IGNORECASE))


def _nodules_denied(text: str, a: Mention, n: Mention, outright: bool) -> bool:
    """Calcified nodules (a granuloma by the vocabulary) meet a sentence that does nothing but deny nodules.

    "Scattered calcified pulmonary nodules." and "No nodules." contradict each
    other: the report names nodules and then denies any. A qualified denial
    ("No suspicious nodules.") and a granuloma not called a nodule do not
    (docs/qa-rules.md "Round 5").
    """
    return (
        outright
        and n.concept == "lung_nodule"
        and a.concept == "granuloma"
        and _NODULE_WORD_RE.search(text, a.start, a.end) is not None
    )


def _alternative(text: str, m: Mention) -> bool:
    """True when the clause of ``m`` offers it as one of alternatives, right before or after it."""
    lo = max(m.sentence_start, m.start - 60)
    cut = max(text.rfind(ch, lo, m.start) for ch in ",;:")
    if _ALTERNATIVE_BEFORE_RE.search(text, max(lo, cut + 1), m.start) is not None:
        return True
    hi = min(m.sentence_end, m.end + 30)
    stops = [i for i in (text.find(ch, m.end, hi) for ch in ",;:") if i >= 0]
    return _ALTERNATIVE_AFTER_RE.match(text, m.end, min(stops, default=hi)) is not None


# Qualifiers that only say what an airspace finding usually is: "no *focal* consolidation" and "no
# *acute* infiltrate" deny any consolidation or infiltrate not called otherwise. An affirmation
# without the qualifier ("mild consolidation", "a small infiltrate") contradicts them unless its
# sentence gives it the other pattern or age (docs/qa-rules.md "Round 4").
_LOOSE_CONCEPTS = frozenset({"consolidation", "airspace_opacity", "pneumonia"})
_NOT_LOOSE_RE = {
    "focal": folded(
        re.compile(
            r"\b(diffuse\w*|patchy|multi-?focal|scattered|bilateral\w*|bibasilar|bi-?apical|both|interstitial|"
            r"reticul\w*|streaky|linear|band-?like|subsegmental|plate-?like|hazy|ground-?glass|widespread|"
            r"extensive|multiple|atelecta\w*|scar\w*|fibro\w*)\b",
            re.IGNORECASE,
        )
    ),
    "acute": folded(
        re.compile(
            r"\b(chronic\w*|old|healed|healing|remote|stable|unchanged|persist\w*|known|prior|previous\w*|"
            r"again|redemonstrat\w*|longstanding|long-standing|residual|resolv\w*|improv\w*|atelecta\w*|scar\w*|"
            r"fibro\w*|interstitial|reticul\w*)\b",
            re.IGNORECASE,
        )
    ),
}


def _loose_qualifiers_hold(data: RuleInput, a: Mention, missing: frozenset[str]) -> bool:
    """True when every qualifier of a denial that the affirmation lacks is one it implies.

    Only "focal" and "acute", and only for airspace findings: a consolidation
    or infiltrate stated plainly is focal and acute unless its sentence says
    it is patchy, diffuse, chronic or old (``_NOT_LOOSE_RE``).
    """
    if a.concept not in _LOOSE_CONCEPTS or not missing <= _NOT_LOOSE_RE.keys():
        return False
    return not any(data.analysis.in_sentence(_NOT_LOOSE_RE[q], a) for q in missing)


# Words that make a denial less than outright ("no definite infiltrate").
_GUARDED = frozenset("definite definitive convincing obvious frank gross".split())


def _outright_denial(text: str, m: Mention, sentence_mentions: list[Mention]) -> bool:
    """True when the sentence of ``m`` only denies findings: its other words are negation and neutral words.

    Such a sentence ("No atelectasis.", "3. There is no pleural effusion.")
    denies the finding outright, so it contradicts every statement of the
    finding elsewhere in the report, a hedged or characterized one included
    ("subsegmental atelectasis versus scarring", "known hiatal hernia"):
    docs/qa-rules.md "Contradictions".
    """
    others = [o for o in sentence_mentions if o is not m]
    if any(not o.negated for o in others):
        return False
    # Whether a word starts inside a mention: one bisection, not a test against every mention.
    in_mention = inside_any((o.start, o.end) for o in sentence_mentions)
    for w in _WORD_RE.finditer(text, m.sentence_start, m.sentence_end):
        if in_mention(w.start()):
            continue
        word = w.group(0).lower()
        if m.laterality and word in _SIDE_WORDS:
            continue  # "No bilateral effusions": the side is compared on its own
        if word not in _DENIAL_WORDS or word in _GUARDED:
            return False
    return True


def _only_list_words(text: str, start: int, end: int, sentence_mentions: list[Mention]) -> bool:
    """Whether every word of ``text[start:end]`` outside the mentions is a list word or a qualifier.

    With another concept in the sentence, that is the sentence being a list of findings joined by
    commas and "or" ("Effusion or pneumothorax."). "Or" usually offers alternatives ("atelectasis
    or pneumonia"), which affirm neither. A sentence that is nothing but a list of different
    findings joined by "or", with no hedge, is the form of a denial list whose "no" is missing; it
    affirms each finding (docs/qa-rules.md "Contradictions"). Whether a word starts inside a mention is bisected in the mentions' sorted starts (with the
    furthest end so far), not tested against every mention for each word.
    """
    in_mention = inside_any((o.start, o.end) for o in sentence_mentions)
    for w in _WORD_RE.finditer(text, start, end):
        if in_mention(w.start()):
            continue
        word = w.group(0).lower()
        if word not in _LIST_WORDS and _QUALIFIER_RE.pattern.fullmatch(word) is None:
            return False
    return True


# What separates the items of a denial list ("no infiltrate, effusion or pneumothorax").
_ITEM_SEPARATOR_RE = folded(re.compile(r"[,;]|\b(or|and|nor)\b", re.IGNORECASE))


def _bare_negation(data: RuleInput, text: str, m: Mention, sentence_mentions: list[Mention]) -> frozenset[str] | None:
    """The qualifier words of a negation that denies the concept plainly, or None when it does not.

    An empty set is a bare denial: nothing narrows it.

    Between the negation cue and the finding only neutral words and other
    findings of a list may stand ("no consolidation, effusion or
    pneumothorax"); "no *new*", "no *pelvic* fracture", "no XXXX
    infiltrates" are narrower. A denial describing change ("resolved") or
    placed somewhere ("no fracture of the clavicle") is not bare either.
    Qualifier words ("no *focal* consolidation", "no *displaced* fractures")
    are returned: such a denial still contradicts an affirmation that
    carries the same qualifiers ("focal consolidation", "displaced rib
    fractures"), since it then denies exactly what is affirmed
    (docs/qa-rules.md "Contradictions").
    """
    cues = [c for c in m.cues if c.category == "negated"]
    before = [c for c in cues if c.end <= m.start]
    if not before:
        # backward cue ("... is not seen"): only when nothing separates them
        after = [c for c in cues if c.start >= m.end]
        if not after or any(ch in text[m.end : after[0].start] for ch in ",;("):
            return None
        between_start, between_end = m.sentence_start, m.start
        for o in sentence_mentions:
            if o.end <= m.start:
                between_start = max(between_start, o.end)
    else:
        between_start, between_end = max(c.end for c in before), m.start
    listed = [o for o in sentence_mentions if o is not m and between_start <= o.start and o.end <= between_end]
    qualifiers: set[str] = set()
    for w in _WORD_RE.finditer(text, between_start, between_end):
        if any(o.start <= w.start() < o.end for o in listed):
            continue  # another finding of the list
        word = w.group(0).lower()
        if word in _RELATIVE:
            return None
        item = min((o.start for o in listed if o.start >= w.end()), default=None)
        if item is not None and _ITEM_SEPARATOR_RE.search(text, w.end(), item) is None:
            continue  # a word of an earlier item ("no *air space* infiltrate, effusion or pneumothorax")
        if word in _NEUTRAL or (m.laterality and word in _SIDE_WORDS):
            continue  # a side is compared on its own ("no bilateral opacities" / "bilateral opacities")
        if _QUALIFIER_RE.pattern.fullmatch(word) is None or word in _RELATIVE:
            return None
        # "no acute infiltrate, effusion or pneumothorax": "acute" narrows the first item only
        if not any(o.start >= w.end() for o in listed):
            qualifiers.add(word)
    for hit in _QUALIFIER_RE.finditer(m.text):
        word = hit.group(0).lower()
        if word in _RELATIVE:
            return None
        qualifiers.add(word)
    event = _DEVICE_EVENT_RE.match(text, m.end, m.sentence_end)
    if event is None:
        if data.analysis.in_sentence(_CHANGE_RE, m):
            return None
        after_text = text[m.end : m.sentence_end]
    else:
        # "No pneumothorax following removal of the chest tube": the change is the device's
        if _CHANGE_RE.search(text, m.sentence_start, m.start) or _CHANGE_RE.search(text, event.end(), m.sentence_end):
            return None
        after_text = text[event.end() : m.sentence_end]
        side = _EVENT_SIDE_RE.search(event.group(0))
        if side is not None and not m.laterality:
            qualifiers.add(_SIDE_MARK + side.group(0).lower())  # "removal of the right chest tube": that side
    if _LOCATION_AFTER_RE.search(after_text) is not None:
        return None
    if m.concept in _SITE_VARIABLE:
        # "Knee: no fracture", "The kidneys show no mass": a denial at one site.
        if len(_WORD_RE.findall(text, m.sentence_start, m.sentence_end)) > 8:
            return None
        # What precedes the negation cue (or the finding, for a backward cue):
        # "Knee: no fracture" names a place; "2. No fracture" does not.
        lead = text[m.sentence_start : min(c.start for c in before) if before else m.start]
        if any(w.lower() not in _NEUTRAL for w in _WORD_RE.findall(lead)):
            return None
    return frozenset(qualifiers)


#: The denials of its finding one affirmation is weighed against, the first in text order. A report
#: names a finding a few times; a long list of the same denial ("1. Left wrist ... 2. Right knee. No
#: fracture. 3. ...") would otherwise cost every affirmation times every denial (docs/hardening.md,
#: "Linear text analysis"), as ConText weighs at most 32 triggers on each side of a mention.
_MAX_DENIALS = 64


# Paired-anatomy groups of one organ system (policies/terms/laterality.yaml): the chest counts once.
_SYSTEM = {"lung": "chest", "lung_lobe": "chest", "pleura": "chest", "bronchus": "chest", "rib": "chest"}


def _multi_site(data: RuleInput, kind: SectionKind) -> bool:
    """True when sections of ``kind`` describe more than one body part by side ("left hip", "left knee").

    A bare denial of a finding found at many sites ("No fracture is seen.")
    in such a section speaks about one of its parts only, as an organ
    heading would ("Knee: no fracture"). Worked out once per report and
    section kind: the pair loop of :func:`affirmed_and_negated` asks for
    every pair, and walking the section's side words each time made a long
    report cost the cube of its findings (docs/hardening.md, "Linear text
    analysis").
    """
    return bool(data.analysis.shared((_multi_site, kind), lambda: _body_systems(data, kind) > 1))


def _body_systems(data: RuleInput, kind: SectionKind) -> int:
    """How many body parts (the chest counted once) sections of ``kind`` name by side."""
    systems: set[str] = set()
    text = data.report.text
    for sec in data.analysis.sections_of(kind):
        for lm in lateral_mentions(
            text,
            sec.start,
            sec.end,
            data.terms,
            sentences=data.analysis.sentences(sec.start, sec.end),
            cache=data.analysis.text_cache,
        ):
            if lm.anatomy:
                systems.add(_SYSTEM.get(lm.anatomy, lm.anatomy))
    return len(systems)


#: Analysis.shared's key of a sentence's concepts (with its section kind and start).
_SENTENCE_CONCEPTS = "contradiction.sentence_concepts"

_ITEM_RE = re.compile(r"\W*\d{1,2}[.)]\s")
_WORDS_RE = re.compile(r"[A-Za-z]+")
_STATEMENT_RE = folded(re.compile(r"\b(negative|normal|unremarkable|intact|clear|no|without)\b", re.IGNORECASE))


def _own_item(data: RuleInput, n: Mention) -> bool:
    """A denial that is a numbered item of its own, not under a site heading ("3. Right humerus negative. 4. No
    fracture."; not "Left knee. 1. No fracture."): it denies at every site (docs/qa-rules.md "Round 5").

    Worked out once per denial (``Analysis.shared``): the pair loop of :func:`affirmed_and_negated`
    asks for every affirmation it meets.
    """
    return bool(data.analysis.shared((_own_item, id(n)), lambda: _item_of_its_own(data, n)))


def _item_of_its_own(data: RuleInput, n: Mention) -> bool:
    """:func:`_own_item`, worked out."""
    text = data.report.text
    if _ITEM_RE.match(text, n.sentence_start) is None:
        return False
    sec = data.analysis.section_at(n.start)
    if sec is None:
        return False
    spans = data.analysis.sentences(sec.start, sec.end)
    # The sentences before the denial's are a prefix of the section's (they are in order, apart).
    k = bisect_right(spans, n.sentence_start, key=attrgetter("end"))
    if k == 0:
        return True
    prev = spans[k - 1]
    if not _bare_heading(data, prev.start, prev.end):
        return True
    # "2. Right shoulder. Scapular fracture. 3. Clavicle. Acromioclavicular separation. 4. No fracture.": the
    # item before opens with its own site heading, so the short sentence after that heading is the item's
    # content, not a heading over the denial (docs/qa-rules.md "Round 6").
    j = next((j for j in range(k - 1, -1, -1) if _ITEM_RE.match(text, spans[j].start) is not None), None)
    if j is None or j == k - 1:
        return False
    opener = spans[j]
    heading_start = _ITEM_RE.match(text, opener.start)
    assert heading_start is not None
    return _bare_heading(data, heading_start.end(), opener.end) and k - j == 2


def _bare_heading(data: RuleInput, start: int, end: int) -> bool:
    """A short sentence that names no finding and states nothing ("Right shoulder.", "3. Clavicle."): a site heading."""
    text = data.report.text
    return (
        len(_WORDS_RE.findall(text, start, end)) <= 4
        and not data.analysis.mentions(start, end)
        and _STATEMENT_RE.search(text, start, end) is None
    )


def _sections_checked() -> tuple[SectionKind, ...]:
    return (SectionKind.FINDINGS, SectionKind.IMPRESSION)


@rule(
    "contradiction",
    severity=Severity.ERROR,
    params={"within_findings": True, "within_impression": True, "all_concepts": True, "concepts": []},
)
def affirmed_and_negated(data: RuleInput) -> Iterator[Finding]:
    """The same finding is affirmed in one place and denied in another ("right pneumothorax" / "no pneumothorax").

    Every finding concept is compared (``all_concepts``; false: only
    significant ones), or only the ``concepts`` listed. Pairs are compared
    across findings and impression, inside the findings (``within_findings``)
    and inside the impression (``within_impression``: "1. Left lower lobe
    pneumonia. 2. No pneumonia."). A plural or bilateral finding ("small
    effusions", "bilateral effusions") is contradicted by a bare denial
    ("no pleural effusion"). A side on both that differs, a qualified
    negation ("no new", "no large", "no displaced"), a negation of change
    ("has resolved"), or a denial at a named place are not contradictions.
    Signs are their own concepts (a midline shift is not herniation,
    docs/qa-rules.md "Signs and diagnoses"), so a sign never contradicts
    the denial of a diagnosis.
    """
    report = data.report
    text = report.text
    by_kind: dict[SectionKind, tuple[Mention, ...]] = {
        k: data.analysis.section_mentions(k) for k in _sections_checked()
    }
    names = frozenset(data.param("concepts", []) or ())
    every = bool(data.param("all_concepts", True))
    # Candidates first (attribute tests only); the text tests below only
    # drop candidates, so without both kinds there is nothing to find.
    negated_candidates: list[tuple[SectionKind, Mention]] = []
    affirmed_candidates: list[tuple[SectionKind, Mention]] = []
    stated_candidates: list[tuple[SectionKind, Mention]] = []
    for kind, mentions in by_kind.items():
        for m in mentions:
            if not (
                m.concept in names or _family(data.terms, m.concept) in names
                if names
                else (every and not m.sex) or m.significant
            ):
                continue
            if m.negated and not (m.hypothetical or m.historical) and m.experiencer == "patient":
                negated_candidates.append((kind, m))
            elif m.affirmed:
                affirmed_candidates.append((kind, m))
            elif not (m.negated or m.hypothetical or m.historical) and m.experiencer == "patient":
                stated_candidates.append((kind, m))  # hedged: "probable atelectasis"
            elif not m.uncertain and _on_images(text, m):
                stated_candidates.append((kind, m))  # dated only: "healing rib fractures" (docs/qa-rules.md "Round 4")
    # a bare "No opacities." is no mention: the opacity check runs whenever the report names one
    opacity_named = _OPACITY_WORD_RE.search(text) is not None
    if not opacity_named and (not negated_candidates or not (affirmed_candidates or stated_candidates)):
        return
    by_sentence: dict[tuple[SectionKind, int], list[Mention]] = {}
    for kind, mentions in by_kind.items():
        for m in mentions:
            by_sentence.setdefault((kind, m.sentence_start), []).append(m)
    negated: list[tuple[SectionKind, Mention, frozenset[str]]] = []
    for k, m in negated_candidates:
        quals = _bare_negation(data, text, m, by_sentence[(k, m.sentence_start)])
        if quals is not None:
            negated.append((k, m, quals))
    # (kind, mention, characterized, soft): a soft statement (hedged, XXXX) meets outright denials only
    # A sentence's concepts and whether its other words are only list words, once per sentence
    # (Analysis.shared): asked per affirmed mention, a long sentence of findings read its words for
    # each of them.
    shared = data.analysis.shared

    def finding_list(k: SectionKind, m: Mention) -> bool:
        """Whether ``m``'s sentence is a list of different findings (``_only_list_words``)."""
        key = (k, m.sentence_start)
        mentions = by_sentence[key]
        concepts: frozenset[str] = shared((_SENTENCE_CONCEPTS, key), lambda: frozenset(o.concept for o in mentions))
        if not concepts - {m.concept}:
            return False
        return bool(
            shared(
                (_only_list_words, key),
                lambda: _only_list_words(text, m.sentence_start, m.sentence_end, mentions),
            )
        )

    affirmed = [
        (
            k,
            m,
            data.analysis.in_sentence(_CHARACTERIZED_RE, m),
            _soft(data, _SOFT_WORD_RE, m)
            and (_soft(data, _SOFT_WORD_NOT_OR_RE, m) or not finding_list(k, m))
            and not _device_in_other_clause(text, m),
        )
        for k, m in affirmed_candidates
    ]

    # A denial's answer depends on its sentence, on whether it is negated and on whether it names
    # a side: asked once per such key, not once per denial (a long sentence of denials asked it
    # for each of them, each time reading the sentence's words).
    def is_outright(k: SectionKind, n: Mention) -> bool:
        key = (_outright_denial, k, n.sentence_start, n.negated, bool(n.laterality))
        return bool(shared(key, lambda: _outright_denial(text, n, by_sentence[(k, n.sentence_start)])))

    outright = {id(n) for k, n, quals in negated if not quals and is_outright(k, n)}
    if outright:
        affirmed.extend(
            (k, m, True, True) for k, m in stated_candidates if not data.analysis.in_sentence(_NOT_A_CLAIM_RE, m)
        )
    affirmed = [a for a in affirmed if not a[3] or (outright and not data.analysis.in_sentence(_NOT_A_CLAIM_RE, a[1]))]
    # soft statements offering the finding as one of alternatives: only an impression's own denial counts
    alternatives = {id(m) for _, m, _, soft in affirmed if soft and _alternative(text, m)}
    if not affirmed and not opacity_named:
        return
    within = {
        SectionKind.FINDINGS: bool(data.param("within_findings", True)),
        SectionKind.IMPRESSION: bool(data.param("within_impression", True)),
    }
    # The denials each affirmation may meet, by concept, in text order: an affirmation looks only at
    # the denials of its own concept, its family, and (a granuloma) of nodules, not at every denial,
    # and at the first _MAX_DENIALS of them (docs/hardening.md, "Linear text analysis").
    denials_of: dict[str, list[int]] = {}
    for pos, (_, n, _) in enumerate(negated):
        denials_of.setdefault(n.concept, []).append(pos)
    candidates: dict[tuple[str, str], list[tuple[SectionKind, Mention, frozenset[str]]]] = {}
    # (section kind, sentence, family) of every denial: the affirmed sentence that also denies its finding
    denied_in: set[tuple[SectionKind, int, str]] = {
        (k, o.sentence_start, _family(data.terms, o.concept)) for k, ms in by_kind.items() for o in ms if o.negated
    }
    done: set[str] = set()
    for a_kind, a, characterized, soft in affirmed:
        fam = _family(data.terms, a.concept)
        if fam in done:
            continue
        key = (a.concept, fam)
        met = candidates.get(key)
        if met is None:
            nodules = denials_of.get("lung_nodule", []) if a.concept == "granuloma" else []
            picked = {*denials_of.get(a.concept, ()), *denials_of.get(fam, ()), *nodules}
            met = candidates[key] = [negated[pos] for pos in sorted(picked)[:_MAX_DENIALS]]
        a_words: frozenset[str] | None = None
        for n_kind, n, quals in met:
            if n.concept not in (a.concept, fam) and not _nodules_denied(text, a, n, id(n) in outright):
                continue
            if soft and id(n) not in outright:
                continue  # "probable atelectasis" / "no focal atelectasis": only an outright denial counts
            if id(a) in alternatives and not (a_kind == n_kind == SectionKind.IMPRESSION):
                continue  # findings "scar or loculated fluid" / impression "no effusion": the differential settled
            sides = {q for q in quals if q.startswith(_SIDE_MARK)}
            if sides:
                if a.laterality and _SIDE_MARK + a.laterality not in sides:
                    continue  # "no pneumothorax after removal of the right chest tube" / "left pneumothorax"
                quals = quals - sides
            if quals:
                if characterized:
                    continue  # "calcified nodule" / "no suspicious nodule": only a bare denial counts
                if a_words is None:
                    a_words = frozenset(w.lower() for w in _WORD_RE.findall(text, a.sentence_start, a.sentence_end))
                if not quals <= a_words and not _loose_qualifiers_hold(data, a, quals - a_words):
                    continue  # "no focal consolidation" / "patchy consolidation": a narrower denial
            if n.sentence_start == a.sentence_start:
                continue
            if a_kind == n_kind and not within[a_kind]:
                continue
            if a_kind == n_kind == SectionKind.FINDINGS and fam in _SITE_VARIABLE:
                continue  # "fracture of the hip" ... "knee: no fracture": two places (organ by organ)
            if fam in _SITE_VARIABLE and _multi_site(data, n_kind) and not _own_item(data, n):
                continue  # "Pelvis and left hip ... Left knee ... No fracture is seen": a denial at one of the sites
            if n.laterality and n.laterality != a.laterality:
                continue
            # the affirmed sentence also denies it ("no pneumothorax on the left; small right one")
            if (a_kind, a.sentence_start, fam) in denied_in:
                continue
            done.add(fam)
            where = "findings and impression" if a_kind is not n_kind else a_kind.value
            first, second = sorted((a, n), key=lambda m: m.start)
            yield data.emit(
                f"The {where} both affirm and deny {fam.replace('_', ' ')}.",
                [
                    data.analysis.evidence(first.sentence_start, first.sentence_end),
                    data.analysis.evidence(second.sentence_start, second.sentence_end),
                ],
                suggestion="Check the images; correct the statement that is wrong.",
            )
            break
    if "airspace_opacity" not in done and opacity_named:
        yield from _bare_opacity_denied(data, [(k, m) for k, m, _, soft in affirmed if not soft], within)


# A whole sentence that denies any opacity, bare ("No opacities.", "No evidence of opacity.",
# "Opacity is not seen."). The vocabulary reads only named opacities ("patchy opacity") as findings,
# so other rules never see a bare "opacity"; this rule compares such a denial with every affirmed
# airspace opacity (docs/qa-rules.md "Contradictions").
_BARE_OPACITY_DENIED_RE = folded(
    re.compile(
        r"\W*(\d+\W+)?((there (is|are) )?(no|negative for) (evidence of |definite |radiographic )?(an? )?"
        r"((?P<side>bilateral|left|right)(-sided)? )?opacit(y|ies)"
        r"( (is|are) (seen|identified|present|noted))?|opacit(y|ies) (is|are) not (seen|identified|present))\W*$",
        re.IGNORECASE,
    )
)


_OPACITY_WORD_RE = folded(re.compile(r"\bopacit(y|ies)\b", re.IGNORECASE))
# The side a denial of any opacity names ("No bilateral opacities."): the affirmed opacity's sentence must
# name it too (docs/qa-rules.md "Round 5").
_OPACITY_SIDE_RE = {
    "bilateral": folded(re.compile(r"\b(bilateral\w*|both|bi(basilar|basal|apical|hilar))\b", re.IGNORECASE)),
    "left": folded(re.compile(r"\bleft\b", re.IGNORECASE)),
    "right": folded(re.compile(r"\bright\b", re.IGNORECASE)),
}
# A sentence whose opacity is denied, gone, hedged or not real.
_NOT_PLAIN_OPACITY_RE = folded(
    re.compile(
        r"\b(no|not|without|negative|resol\w*|clear(ed|ing)|may|might|could|possib\w*|question\w*|"
        r"artifact\w*|projecting|overlying|nipple|calcifi\w*|granulom\w*)\b|\?",
        re.IGNORECASE,
    )
)


# Words of _NOT_PLAIN_OPACITY_RE that only place an opacity on the radiograph ("opacity projecting over the
# left midlung"): an impression that states such an opacity and then denies any contradicts itself
# (docs/qa-rules.md "Round 5").
_PLACE_ONLY = ("projecting", "overlying")


def _only_placed(text: str, start: int, end: int) -> bool:
    """Whether every hit of ``_NOT_PLAIN_OPACITY_RE`` in ``text[start:end]`` is a place word."""
    return all(h.group(0).lower() in _PLACE_ONLY for h in _NOT_PLAIN_OPACITY_RE.finditer(text, start, end))


def _bare_opacity_denied(
    data: RuleInput, affirmed: list[tuple[SectionKind, Mention]], within: dict[SectionKind, bool]
) -> Iterator[Finding]:
    """A bare denial of any opacity against an affirmed airspace opacity in another sentence."""
    text = data.report.text
    # (kind, sentence start, sentence end) of each denial and each affirmed opacity
    denials: list[tuple[SectionKind, int, int, str]] = []
    opacities = [
        (k, m.sentence_start, m.sentence_end)
        for k, m in affirmed
        if _family(data.terms, m.concept) == "airspace_opacity"
    ]
    # Both patterns below need "opacit": in an ASCII report, a sentence without it is passed over
    # with one substring test instead of two pattern calls (docs/benchmarks.md, "Worker CPU, round 8").
    low = lowered_ascii(text)
    for kind in _sections_checked():
        for sec in data.analysis.sections_of(kind):
            for span in data.analysis.sentences(sec.start, sec.end):
                if low is not None and low.find("opacit", span.start, span.end) < 0:
                    continue
                bare = _BARE_OPACITY_DENIED_RE.match(text, span.start, span.end)
                if bare is not None:
                    denials.append((kind, span.start, span.end, (bare.group("side") or "").lower()))
                elif _OPACITY_WORD_RE.search(text, span.start, span.end) is not None and (
                    _NOT_PLAIN_OPACITY_RE.search(text, span.start, span.end) is None
                    or (kind is SectionKind.IMPRESSION and _only_placed(text, span.start, span.end))
                ):
                    # an opacity without a vocabulary modifier ("Bandlike opacities are present")
                    opacities.append((kind, span.start, span.end))
    if not denials or not opacities:
        return
    for n_kind, n_start, n_end, side in denials:
        for a_kind, a_start, a_end in opacities:
            if a_start == n_start or (a_kind == n_kind and not within[a_kind]):
                continue
            if side and _OPACITY_SIDE_RE[side].search(text, a_start, a_end) is None:
                continue  # "No left opacity." / "right basilar opacity": another side
            first, second = sorted(((a_start, a_end), (n_start, n_end)))
            where = "findings and impression" if a_kind is not n_kind else a_kind.value
            yield data.emit(
                f"The {where} both affirm and deny airspace opacity.",
                [data.analysis.evidence(*first), data.analysis.evidence(*second)],
                suggestion="Check the images; correct the statement that is wrong.",
            )
            return


def _not_acute_here(data: RuleInput, m: Mention, explained_in_impression: bool) -> bool:
    """The finding as written is not an acute one.

    A nonspecific finding (opacity, blunting) explained as atelectasis,
    scarring, fibrosis... after it in its sentence, in the next sentence
    ("This was present previously and is most compatible with
    bronchiectasis") or in the impression; an interstitial or reticular
    pattern; a finding that is clearing; edema named at a site outside the
    lungs.
    """
    text = data.report.text
    if (
        m.concept == "pulmonary_edema"
        and not re.search(r"\b(pulmonary|lungs?|alveolar|perihilar)\b", m.text, re.I)
        and data.analysis.in_sentence(_NON_LUNG_EDEMA_RE, m)
    ):
        return True
    if data.analysis.in_sentence(_CLEARING_RE, m):
        return True
    nonspecific = m.concept in _NONSPECIFIC_CONCEPTS and _NONSPECIFIC_TEXT_RE.search(m.text) is not None
    if not nonspecific:
        return False
    if m.concept == "airspace_opacity" and _CHRONIC_PATTERN_RE.search(m.text):
        return True
    if explained_in_impression or _EXPLAINED_RE.search(text, m.end, m.sentence_end):
        return True
    nxt = data.analysis.next_sentence(m)
    return nxt is not None and _EXPLAINED_RE.search(text, nxt.start, nxt.end) is not None


_ACUTE_DEFAULT = [
    "pneumonia",
    "consolidation",
    "airspace_opacity",
    "pleural_effusion",
    "pneumothorax",
    "pulmonary_edema",
    "fracture",
    "dislocation",
    "hemorrhage",
    "abscess",
    "thrombosis",
]


@rule(
    "contradiction",
    severity=Severity.ERROR,
    params={"acute_concepts": list(_ACUTE_DEFAULT)},
)
def normal_impression(data: RuleInput) -> Iterator[Finding]:
    """A "normal"/"unremarkable"/"no acute findings" impression over a significant finding affirmed in the findings.

    A plain "normal" impression (normal, unremarkable, negative, "no
    abnormality", affirming nothing, no "otherwise"/"except"/"stable") is
    contradicted by any significant or critical finding. A "no acute ..."
    statement (even beside other impression items) is contradicted by a
    critical finding or one of ``acute_concepts`` that the impression does
    not mention at all.
    Findings called stable, chronic, old, mild, small, hedged, benign or
    device-related never count.
    """
    report = data.report
    imps = data.analysis.sections_of(SectionKind.IMPRESSION)
    if not imps or not data.analysis.sections_of(SectionKind.FINDINGS):
        return
    text = report.text
    if impression_refers_to_findings(data):
        return
    imp_mentions = data.analysis.section_mentions(SectionKind.IMPRESSION)
    normal_span: tuple[int, int] | None = None
    acute_only = False
    for sec in imps:
        for acute_hit in _NO_ACUTE_RE.finditer(text, sec.start, sec.end):
            if _GENERIC_RE.search(acute_hit.group(0)) is not None:
                normal_span, acute_only = acute_hit.span(), True
                break
        if normal_span is not None:
            break
    if normal_span is None:
        # A plain "normal" impression: it must say nothing else.
        for sec in imps:
            if _NOT_ONLY_NORMAL_RE.search(text, sec.start, sec.end):
                return
            hit = _NORMAL_RE.search(text, sec.start, sec.end)
            if hit is not None and normal_span is None:
                normal_span = hit.span()
        if normal_span is None or any(not m.negated for m in imp_mentions):
            return
    # What the impression talks about (in any status) is addressed there.
    addressed = {_family(data.terms, m.concept) for m in imp_mentions} | {m.concept for m in imp_mentions}
    # An impression that names atelectasis, scarring... has explained the findings' opacities.
    explained_in_impression = bool(addressed & _EXPLAINED_CONCEPTS) or any(
        _EXPLAINED_RE.search(text, sec.start, sec.end) for sec in imps
    )
    acute = frozenset(data.param("acute_concepts", _ACUTE_DEFAULT) or ())
    for m in data.analysis.section_mentions(SectionKind.FINDINGS):
        if not m.affirmed:
            continue
        if not m.critical and _not_acute_here(data, m, explained_in_impression):
            continue
        if acute_only:
            # Listed concepts count even when not flagged significant ("airspace disease").
            if not (m.critical or m.concept in acute or _family(data.terms, m.concept) in acute):
                continue
        elif not (m.significant or m.critical):
            continue
        if m.concept in addressed or _family(data.terms, m.concept) in addressed:
            continue
        if data.analysis.in_sentence(STABLE_RE, m):
            continue
        if not m.critical and data.analysis.in_sentence(_SOFT_SENTENCE_RE, m):
            continue
        if m.critical and data.analysis.in_sentence(_HEDGE_RE, m):
            continue  # "possible small pneumothorax": hedged before the finding
        kind = "no acute findings" if acute_only else "normal"
        yield data.emit(
            f"The impression reads as {kind}; the findings affirm {_family(data.terms, m.concept).replace('_', ' ')}.",
            [data.analysis.evidence(*normal_span), data.analysis.evidence(m.sentence_start, m.sentence_end)],
            suggestion="Put the finding in the impression, or correct the findings.",
        )
        return
