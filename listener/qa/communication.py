"""Communication rules: critical results reach a person, and the impression is clear.

Pure: no I/O, no clock.

A critical finding is a mention of a concept marked ``critical`` in
policies/terms/critical_findings.yaml, in the findings, impression, addendum
or an unheaded section (never the indication: "rule out PE" is a question).
ACR practice parameter (communication of diagnostic imaging findings): an
actionable finding needs a documented, timely, non-routine communication
that says *who* was told, *when*, and *how*.

- ``critical_not_communicated``: an affirmed critical finding and no
  communication statement anywhere in the report.
- ``suspected_critical_not_communicated``: a critical finding stated as
  suspected ("suspicious for appendicitis", "likely PE") without one. Weak
  hedges ("cannot exclude", "possible") are left out: they are the
  differential, not a result somebody must act on now.
- ``incomplete_communication``: a communication statement for a critical
  result lacks who, when or how.
- ``impression_hedging`` / ``impression_no_definite``: an impression that
  hedges too much, or states nothing plainly.

Known findings (stable, unchanged, improving, previously reported, chronic)
need no new call and are skipped.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter

from listener.model import Evidence, Finding, SectionKind, Severity
from listener.qa.engine import RuleInput, folded, rule
from listener.text import Mention, hedge_count
from listener.text.context import modifier_matches

__all__ = [
    "CommunicationStatement",
    "communication_statements",
    "critical_not_communicated",
    "impression_hedging",
    "impression_no_definite",
    "incomplete_communication",
    "missing_parts",
    "suspected_critical_not_communicated",
]

# A sentence that documents telling somebody.
_COMM_RE = folded(
    re.compile(
        r"\b(discuss(ed|ion)|communicat(ed|ion)|(?<!so-)called|call(ed)? (to|in)|telephon(ed|ically)|phoned|paged|"
        r"notified|notification|informed|relayed|conveyed|spoke|spoken|talked|conversation|contacted|d/w|"
        r"read[- ]?back|alerted|made aware|was (told|advised)|(faxed|e-?mailed|texted|messaged) (directly )?(to|via))\b",
        re.IGNORECASE,
    )
)
# Weaker verbs ("given to", "reported to") count only in a sentence about results.
_WEAK_COMM_RE = folded(re.compile(r"\b(given|provided|reported|sent|delivered) (directly )?(to|via)\b", re.IGNORECASE))
_RESULT_WORD_RE = folded(re.compile(r"\b(results?|findings?|report|impression|critical)\b", re.IGNORECASE))
# A critical-result notification system records who, when and how itself.
_SYSTEM_RE = folded(
    re.compile(
        r"\b(veriphy|primordial|perfectserve|vocera|tigertext|mpage|powerscribe|nuance|"
        r"(notification|communication|alert(ing)?|messaging|reporting|results?) (system|tool|software|application|pathway))\b",
        re.IGNORECASE,
    )
)
# Cross-references that look like a communication verb but are not one.
_NOT_COMM_RE = folded(
    re.compile(
        r"\b(as discussed|discussed (above|below|in|previously)|see discussion|previously (reported|communicated|"
        r"discussed)|were reported previously|as (called|reported) (on|in)|reported on (the )?prior|"
        r"called (for (?!(the )?(results?|findings?|report))|a )|so-called|to be discussed|should be discussed|please (call|contact)|if (there are )?"
        r"(any )?questions|(call|contact) (me|us|the reading room|radiology))\b",
        re.IGNORECASE,
    )
)
_WHO_RE = re.compile(
    r"\b(Dr\.?|doctors?|nurses?|physicians?|providers?|clinicians?|practitioners?|residents?|fellows?|"
    r"attendings?|surgeons?|hospitalists?|intensivists?|midwife|oncologists?|cardiologists?|neurologists?|"
    r"(the )?(ordering|referring|treating|covering|primary|on-?call|admitting|consulting)|"
    r"teams?|service|patient|family|charge|technologists?|staff|house officer)\b"
    r"|\b(RN|NP|PA|PA-C|MD|DO|ED|ER|ICU|CCU|PICU|NICU|OR|APRN|CRNP)\b"
    r"|\b(with|to|informed|notified|paged|called) [A-Z][a-z]+ [A-Z][a-z'-]+",
)
_WHO_CI_RE = folded(re.compile(r"\b(dr|nurse|physician|provider|clinician|doctor)\b", re.IGNORECASE))
_WHEN_RE = folded(
    re.compile(
        r"\b\d{1,2}:\d{2}\b|\b\d{3,4} ?(hours|hrs|h)\b|\b\d{1,2}/\d{1,2}(/\d{2,4})?\b|\b\d{4}-\d{2}-\d{2}\b|"
        r"\b\d{1,2} ?(a\.?m\.?|p\.?m\.?)(?!\w)|"
        r"\bat the time of (the )?(dictation|interpretation|this (report|dictation|interpretation)|"
        r"(the )?(exam|examination|study|reading|scan)|initial interpretation|preliminary report)\b|"
        r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.? \d{1,2}\b|"
        r"\bon \d{1,2} (jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
        re.IGNORECASE,
    )
)
_HOW_RE = folded(
    re.compile(
        r"\b((tele)?phon\w*|call(ed|s)?|in person|face[- ]to[- ]face|directly|verbal(ly)?|spoke|spoken|talked|"
        r"conversation|pag(ed|er|e|ing)|secure (message|messaging|chat|text|e-?mail)|via|read[- ]?back|text(ed)?|"
        r"e-?mail(ed)?|fax(ed)?|at the bedside|voicemail|epic chat|perfectserve|tigertext|vocera)\b",
        re.IGNORECASE,
    )
)

# Findings already known: no new communication is due.
_KNOWN_RE = folded(
    re.compile(
        r"\b(stable|unchanged|again (seen|noted|demonstrated|identified|visualized)|redemonstrat\w*|known|"
        r"previously (seen|noted|described|reported|identified|communicated|discussed|demonstrated)|"
        r"(decreas|improv|resolv|evolv|regress)\w*|smaller|less (prominent|conspicuous|extensive)|"
        r"no (significant |interval |appreciable )?change|persistent|persists|residual|chronic|old|remote|"
        r"subacute|sequela\w*|healed|healing|similar|expected|post-?operative|post-?surgical|post-?procedur\w*|"
        r"(again|still) (present|evident|visible)|attributed to|recent (abdominal |thoracic )?(surgery|procedure)|"
        r"ago|(in|since) (19|20)\d\d|suffered|hospital course|denie[sd])\b",
        re.IGNORECASE,
    )
)
# Somebody else's finding (family history in notes whose headings the mapping does not know).
_OTHER_PERSON_RE = folded(
    re.compile(
        r"\b(FHX|family history|father|mother|sister|brother|aunt|uncle|grand(mother|father|parent)s?|"
        r"paternal|maternal|sibling)\b",
        re.IGNORECASE,
    )
)
# Hedges strong enough that a suspected critical finding must be called.
_STRONG_HEDGE_RE = folded(
    re.compile(
        r"\b(suspicious|suspicion|suspect\w*|concern\w*|worrisome|likely|probabl[ey]|presum\w*|"
        r"compatible|consistent|favou?r\w*|suggest\w*)\b",
        re.IGNORECASE,
    )
)

# A clinical note (case history, operative note) filed in the radiology feed:
# its narrative is the history of the illness, not a result to call about.
_CLINICAL_NOTE_RE = folded(
    re.compile(
        r"^\W*(CC|HX|HPI|CHIEF COMPLAINT|HISTORY OF PRESENT ILLNESS|PRE-?OPERATIVE DIAGNOSIS|OPERATIVE PROCEDURE)\s*:",
        re.IGNORECASE,
    )
)
# A sentence that goes on about the previous one ("This is likely postprocedural.").
_ANAPHORA_RE = folded(re.compile(r"\W*(this|these|it|which|that)\b", re.IGNORECASE))

_BODY_KINDS = (
    SectionKind.FINDINGS,
    SectionKind.IMPRESSION,
    SectionKind.ADDENDUM,
    SectionKind.OTHER,
    SectionKind.COMMUNICATION,
)


@dataclass(frozen=True, slots=True)
class CommunicationStatement:
    """Sentences that document telling somebody, with what they say."""

    spans: tuple[tuple[int, int], ...]
    who: bool
    when: bool
    how: bool


def missing_parts(statement: CommunicationStatement) -> tuple[str, ...]:
    """The parts (who, when, how) the statement does not give."""
    return tuple(
        name for name, ok in (("who", statement.who), ("when", statement.when), ("how", statement.how)) if not ok
    )


def _sentence_spans(data: RuleInput) -> Iterator[tuple[int, int, SectionKind]]:
    for sec in data.report.sections:
        if sec.kind in (SectionKind.INDICATION, SectionKind.TECHNIQUE, SectionKind.COMPARISON):
            continue
        for s in data.analysis.sentences(sec.start, sec.end):
            yield s.start, s.end, sec.kind


def communication_statements(data: RuleInput) -> CommunicationStatement | None:
    """All communication sentences of the report, taken together (None: there are none).

    Computed once per report (three rules ask).

    A statement often spans two sentences ("Discussed with Dr. Lee. Read
    back at 14:10."), and a communication section is one statement as a
    whole; who/when/how are judged over all of them, plus the sentence that
    follows each communication sentence. A notification system (Veriphy,
    PerfectServe, "critical result notification system") records who, when
    and how itself.
    """
    found: CommunicationStatement | None = data.analysis.shared(_STATEMENTS_KEY, lambda: _statements(data))
    return found


_STATEMENTS_KEY = "communication.statements"


def _statements(data: RuleInput) -> CommunicationStatement | None:
    text = data.report.text
    if (
        _COMM_RE.search(text) is None
        and _WEAK_COMM_RE.search(text) is None
        and not data.analysis.sections_of(SectionKind.COMMUNICATION)
    ):
        return None  # the common case, in one pass
    spans: list[tuple[int, int]] = []
    sentences = list(_sentence_spans(data))
    for i, (s, e, kind) in enumerate(sentences):
        if kind is SectionKind.COMMUNICATION and text[s:e].strip():
            spans.append((s, e))
            continue
        strong = _COMM_RE.search(text, s, e) is not None
        weak = _WEAK_COMM_RE.search(text, s, e) is not None and _RESULT_WORD_RE.search(text, s, e) is not None
        if not (strong or weak) or _NOT_COMM_RE.search(text, s, e) is not None:
            continue
        spans.append((s, e))
        if i + 1 < len(sentences):
            ns, ne, _ = sentences[i + 1]
            if _WHEN_RE.search(text, ns, ne) or _HOW_RE.search(text, ns, ne):
                spans.append((ns, ne))
    if not spans:
        return None
    joined = " ".join(text[s:e] for s, e in spans)
    system = _SYSTEM_RE.search(joined) is not None
    return CommunicationStatement(
        spans=tuple(sorted(set(spans))),
        who=system or bool(_WHO_RE.search(joined) or _WHO_CI_RE.search(joined)),
        when=system or bool(_WHEN_RE.search(joined)),
        how=system or bool(_HOW_RE.search(joined)),
    )


def _critical_mentions(data: RuleInput, *, suspected: bool) -> list[Mention]:
    """Critical mentions that need a call (computed once per report, setting and kind; do not modify)."""
    ignore_known = bool(data.param("ignore_known", True))
    key = (_CRITICAL_KEY, suspected, ignore_known)
    found: list[Mention] = data.analysis.shared(key, lambda: _find_critical(data, suspected, ignore_known))
    return found


_CRITICAL_KEY = "communication.critical_mentions"


def _find_critical(data: RuleInput, suspected: bool, ignore_known: bool) -> list[Mention]:
    text = data.report.text
    out: list[Mention] = []
    # Text outside any findings/impression heading is the body only when the
    # report has no such headings (free text); otherwise it is a title block.
    structured = any(s.kind in (SectionKind.FINDINGS, SectionKind.IMPRESSION) for s in data.report.sections)
    if _CLINICAL_NOTE_RE.match(text):
        return out
    known_concepts: set[str] = set()
    candidates: list[Mention] = []
    for sec in data.report.sections:
        if sec.kind not in _BODY_KINDS or (structured and sec.kind is SectionKind.OTHER):
            continue
        for m in data.analysis.mentions(sec.start, sec.end):
            if not m.critical or m.negated or m.historical or m.hypothetical or m.experiencer != "patient":
                continue
            if data.analysis.in_sentence(_OTHER_PERSON_RE, m):
                continue
            if suspected:
                if not m.uncertain or not any(
                    c.category == "uncertain" and _STRONG_HEDGE_RE.search(text, c.start, c.end) for c in m.cues
                ):
                    continue
            elif m.uncertain:
                continue
            if ignore_known and (data.analysis.in_sentence(_KNOWN_RE, m) or _known_next(data, sec.start, sec.end, m)):
                known_concepts.add(m.concept)
                continue
            candidates.append(m)
    # One finding, described twice: "lucency consistent with pneumoperitoneum" in the findings is
    # the "pneumoperitoneum, postoperative" of the impression.
    out.extend(m for m in candidates if m.concept not in known_concepts)
    return out


def _known_next(data: RuleInput, start: int, end: int, m: Mention) -> bool:
    """The sentence after the mention's says the finding is known ("This is likely postprocedural.").

    That sentence is read up to its first period, and never past its end: read up to the next
    period of the section, a section of critical findings each followed by a sentence ending
    otherwise ("Large pneumothorax! This is new! ...") was searched to its end for each of them.
    """
    text = data.report.text
    nxt = m.sentence_end
    while nxt < end and not text[nxt].isalnum():
        nxt += 1
    if nxt >= end or not _ANAPHORA_RE.match(text, nxt):
        return False
    spans = data.analysis.sentences(start, end)
    k = bisect_right(spans, nxt, key=attrgetter("start")) - 1  # the sentence that holds nxt
    limit = spans[k].end if k >= 0 and spans[k].end > nxt else end
    stop = text.find(".", nxt, limit)
    return _KNOWN_RE.search(text, nxt, stop if stop >= 0 else limit) is not None


def _concepts(mentions: Sequence[Mention]) -> str:
    names = list(dict.fromkeys(m.concept.replace("_", " ") for m in mentions))
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _evidence(data: RuleInput, mentions: Sequence[Mention]) -> list[Evidence]:
    out: list[Evidence] = []
    seen: set[str] = set()
    for m in mentions:
        if m.concept not in seen:
            seen.add(m.concept)
            out.append(data.analysis.evidence(m.start, m.end))
    return out[:5]


_KNOWN_PARAM = {"ignore_known": True}


@rule("communication", severity=Severity.ERROR, params=_KNOWN_PARAM)
def critical_not_communicated(data: RuleInput) -> Iterator[Finding]:
    """A critical finding is affirmed and no communication to a person is documented.

    ``ignore_known``: findings called stable, unchanged, improving, known or
    previously reported need no new call.
    """
    mentions = _critical_mentions(data, suspected=False)
    if not mentions or communication_statements(data) is not None:
        return
    yield data.emit(
        f"Critical finding ({_concepts(mentions)}) without documented communication.",
        _evidence(data, mentions),
        suggestion="Document who was told, when and how (e.g. by telephone with read-back).",
    )


@rule("communication", severity=Severity.WARNING, params=_KNOWN_PARAM)
def suspected_critical_not_communicated(data: RuleInput) -> Iterator[Finding]:
    """A critical finding is suspected ("suspicious for", "likely") and no communication is documented.

    Weak hedges ("cannot exclude", "possible", "may represent") do not count.
    """
    if _critical_mentions(data, suspected=False):
        return  # critical_not_communicated speaks for the report
    mentions = _critical_mentions(data, suspected=True)
    if not mentions or communication_statements(data) is not None:
        return
    yield data.emit(
        f"Suspected critical finding ({_concepts(mentions)}) without documented communication.",
        _evidence(data, mentions),
        suggestion="Suspected critical results are communicated like confirmed ones: document who, when and how.",
    )


_CRITICAL_WORD_RE = folded(re.compile(r"\b(critical|urgent|emergent|actionable|stat)\b", re.IGNORECASE))


@rule("communication", severity=Severity.WARNING, params={"ignore_known": True, "require": ["who", "when", "how"]})
def incomplete_communication(data: RuleInput) -> Iterator[Finding]:
    """A critical result's communication does not say who was told, when, or how.

    Checked when the report has a critical finding (affirmed or suspected)
    or calls its own result critical. ``require`` lists the parts checked.
    """
    text = data.report.text
    has_critical = bool(_critical_mentions(data, suspected=False) or _critical_mentions(data, suspected=True))
    if not has_critical and _CRITICAL_WORD_RE.search(text) is None:
        return
    statement = communication_statements(data)
    if statement is None:
        return
    if not (has_critical or any(_CRITICAL_WORD_RE.search(text, s, e) for s, e in statement.spans)):
        return
    required = {str(p) for p in (data.param("require", ("who", "when", "how")) or ())}
    missing = [p for p in missing_parts(statement) if p in required]
    if not missing:
        return
    yield data.emit(
        f"Critical result communication does not say {', '.join(missing)}.",
        [data.analysis.evidence(s, e) for s, e in statement.spans[:3]],
        suggestion="Name the person told, the time, and the method (e.g. 'discussed with Dr. X by telephone at 14:10').",
    )


# ---------------------------------------------------------------- impression clarity


def _impression_sections(data: RuleInput) -> list[tuple[int, int]]:
    return [(s.start, s.end) for s in data.analysis.sections_of(SectionKind.IMPRESSION) if s.text.strip()]


@rule("communication", severity=Severity.WARNING, params={"max_density": 1.0, "min_hedges": 3})
def impression_hedging(data: RuleInput) -> Iterator[Finding]:
    """The impression hedges too much: hedges per sentence above ``max_density``.

    Fires only when the impression holds at least ``min_hedges`` hedging
    phrases: one "likely" in a one-line impression is judgement, not a
    defect.
    """
    regions = _impression_sections(data)
    if not regions:
        return
    text = data.report.text
    hedges = sum(hedge_count(text, s, e, data.terms, cache=data.analysis.text_cache) for s, e in regions)
    sentences = sum(len(data.analysis.sentences(s, e)) for s, e in regions)
    if sentences == 0 or hedges < int(data.param("min_hedges", 3)):
        return
    density = hedges / sentences
    if density <= float(data.param("max_density", 1.0)):
        return
    yield data.emit(
        f"The impression hedges heavily ({hedges} hedging phrases in {sentences} sentence(s)).",
        [data.analysis.evidence(s, e) for s, e in regions[:1]],
        suggestion="State the most likely diagnosis plainly and keep the differential short.",
    )


# Impression sentences that are neither a statement nor a hedge: advice,
# communication, references ("CT recommended", "Correlate clinically").
_NEUTRAL_SENTENCE_RE = folded(
    re.compile(
        r"\b(recommend\w*|advis\w*|suggest(ed)? (that|a|an|further|follow)|consider\w*|correlat\w*|follow[- ]?up|"
        r"further (evaluation|characterization|imaging|assessment)|(would|may|might|could) be (helpful|useful|obtained|"
        r"considered|indicated|performed)|if (clinically|there|symptoms|the)|helpful|indicated|discuss\w*|"
        r"communicat\w*|notif\w*|called|see (above|findings)|as above|comparison)\b",
        re.IGNORECASE,
    )
)


# Hedge words that grade a finding rather than doubt it ("borderline cardiomegaly",
# "age-indeterminate deformity"): the finding itself is stated.
_DEGREE_HEDGE_RE = folded(re.compile(r"^(borderline|(age[- ])?indeterminate)$", re.IGNORECASE))
# Words that do not make an observation on their own ("This may represent ...", "Findings could be ...").
_NOT_OBSERVATION = frozenset(
    "this these that those it they there is are was were which who whose finding findings appearance appearances "
    "the a an and or with in of at on to be been also overall otherwise xxxx "
    "may might could would can possibly probably perhaps".split()
)
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _states_observation_first(data: RuleInput, start: int, end: int) -> bool | None:
    """Whether a sentence is hedged, plainly stated, or states an observation before hedging its meaning.

    Returns None when the sentence holds no hedge (other than degree words),
    True when it opens with a plain observation and only then hedges what it
    means ("Vague opacity at the left lung base, which may represent
    pneumonia", "Right paratracheal density possibly reactive
    lymphadenopathy"), False when the hedge governs the statement
    ("Probable small effusions.", "Pneumonia is suspected.").
    """
    text = data.report.text
    hedges = _hedges(data, start, end)
    if not hedges:
        return None
    first = hedges[0]
    if data.terms.modifier_groups[first.lastgroup or ""].direction == "backward":
        return False  # "pneumonia is suspected": the hedge reaches back over the finding
    lead = re.sub(r"^\W*\d+[.)]\s*", "", text[start : first.start()])
    return any(w.lower() not in _NOT_OBSERVATION for w in _WORDS_RE.findall(lead))


def _hedges(data: RuleInput, start: int, end: int) -> list[re.Match[str]]:
    """The hedging phrases of ``text[start:end]`` in text order, degree words ("borderline") left out."""
    groups = data.terms.modifier_groups
    found = [
        m
        for m in modifier_matches(data.report.text, start, end, data.terms, data.analysis.text_cache)
        if groups[m.lastgroup or ""].category == "uncertain" and not _DEGREE_HEDGE_RE.match(m.group(0).strip())
    ]
    return sorted(found, key=lambda m: m.start())


@rule("communication", severity=Severity.WARNING, params={"min_hedged": 2, "min_hedges": 2})
def impression_no_definite(data: RuleInput) -> Iterator[Finding]:
    """The impression states nothing plainly: every statement in it is hedged.

    Recommendations and communication sentences are neither statements nor
    hedges and are skipped. Fires only when at least ``min_hedged`` hedged
    sentences remain ("Possible early pneumonia." alone is a legitimate
    answer). Measured on clean reports, the text layer's
    ``has_definite_statement`` calls many plain sentences indefinite ("Low
    lung volumes.", "No evidence of active disease."), so this rule counts
    hedges per sentence instead. One hedged sentence is enough when it
    holds at least ``min_hedges`` hedging phrases: "Findings could represent
    X; other etiologies cannot be excluded." and "Questionable X, possibly
    related to technique." commit to nothing, while "Possible early
    pneumonia." (one hedge) is still a legitimate answer. A sentence that states an observation
    and then hedges what it means ("Patchy right upper lobe opacities,
    concerning for pneumonia") states the observation plainly; degree words
    ("borderline cardiomegaly", "age-indeterminate deformity") are no hedge.
    """
    regions = _impression_sections(data)
    if not regions:
        return
    text = data.report.text
    hedged = hedges = 0
    for s, e in regions:
        for sent in data.analysis.sentences(s, e):
            if not any(ch.isalpha() for ch in text[sent.start : sent.end]):
                continue
            observation_first = _states_observation_first(data, sent.start, sent.end)
            if observation_first is False:
                if _NEUTRAL_SENTENCE_RE.search(text, sent.start, sent.end) is None:
                    hedged += 1
                    hedges += len(_hedges(data, sent.start, sent.end))
                continue
            # A plain observation, unless it is advice: the part before any hedge decides
            # ("Left lower lobe opacity, which may represent pneumonia, although aspiration could
            # be considered" states the opacity; "Follow-up CT may be helpful" is advice).
            plain_end = sent.end if observation_first is None else _hedges(data, sent.start, sent.end)[0].start()
            if _NEUTRAL_SENTENCE_RE.search(text, sent.start, plain_end) is None:
                return  # a plain statement
    if hedged == 0 or (hedged < int(data.param("min_hedged", 2)) and hedges < int(data.param("min_hedges", 2))):
        return
    yield data.emit(
        f"The impression has no definite statement: all {hedged} of its statements are hedged.",
        [data.analysis.evidence(s, e) for s, e in regions[:1]],
        suggestion="Add a plain conclusion (what is, and what is not, present).",
    )
