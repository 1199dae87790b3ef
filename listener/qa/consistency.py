"""Consistency rules: the report fits the patient it is filed under.

Pure: no I/O, no clock (age is computed from the birth date and the exam
time carried by the report).

- ``sex_anatomy``: sex-specific anatomy (policies/terms/sex_specific.yaml:
  prostate, testes, uterus, ovaries, pregnancy...) described as present in a
  patient registered as the other sex: a wrong-patient or wrong-template
  report. Only affirmed mentions count: "the uterus is surgically absent",
  "status post prostatectomy" or "no adnexal mass" describe no organ that is
  there. Unknown, other or empty sex never fires.
- ``age_implausible``: a statement that cannot be true at the patient's age
  ("postmenopausal" at 20, open growth plates at 60, a pregnancy at 75).
  Deliberately narrow: only a few statements with wide safety margins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from listener.model import Finding, Report, SectionKind, Severity
from listener.qa.engine import RuleInput, folded, rule
from listener.text import Mention

__all__ = ["AGE_STATEMENTS", "AgeStatement", "age_implausible", "age_years", "sex_anatomy"]

_SEX_OF_PATIENT: Mapping[str, str] = {"F": "female", "M": "male"}
# The sections other rules scan too (mentions are cached per section), so
# the age rule adds no text analysis of its own.
_ANATOMY_KINDS = (SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.ADDENDUM, SectionKind.OTHER)
# Sex-specific anatomy counts wherever the report talks about this patient:
# the indication ("recent diagnosis of prostate cancer") and the technique
# ("transvaginal images") as well as the body. Comparison text names other
# studies and is left out.
_SEX_KINDS = _ANATOMY_KINDS + (SectionKind.INDICATION, SectionKind.TECHNIQUE, SectionKind.COMMUNICATION)
# Sections that ask a question rather than describe: a hedged mention there
# ("rule out ovarian torsion") is the question, not an observation.
_QUESTION_KINDS = (SectionKind.INDICATION,)
#: Terms of a sex-specific concept that also name something either sex has
#: (leiomyomas of the oesophagus or stomach; "fibroid" used loosely).
_DEFAULT_IGNORE = ("leiomyoma", "leiomyomas", "fibroid", "fibroids")


def _anatomy_mentions(
    data: RuleInput, kinds: tuple[SectionKind, ...] = _ANATOMY_KINDS
) -> Iterator[tuple[SectionKind, Mention]]:
    for sec in data.report.sections:
        if sec.kind in kinds:
            for m in data.analysis.mentions(sec.start, sec.end):
                yield sec.kind, m


# The organ was taken out (a transgender patient's history reads like this
# too, so removal never counts as anatomy of the other sex).
# "status post" alone is not a removal: "testicular cancer status post bone
# marrow transplant" still describes a testis ("s/p orchiectomy" is caught by -ectomy).
_REMOVED_RE = folded(
    re.compile(
        r"\b(absent|absence|removed|resected|surgically|no longer|\w+ectomy|post-?(surgical|operative))\b",
        re.IGNORECASE,
    )
)
# The organ was looked for and not seen: in a patient of the other sex that
# is a template written for the other sex, unless the report says it was removed.
_NOT_SEEN_RE = folded(
    re.compile(
        r"\b(not (well )?(seen|visuali[sz]ed|identified|imaged|demonstrated|evaluated)|non-?visuali[sz]ed)\b",
        re.IGNORECASE,
    )
)
# ConText calls "the prostate is normal" negated: for a finding that means
# absent, for an organ it means present and normal.
_NORMAL_CUE_RE = folded(re.compile(r"normal|unremarkable|within normal limits|intact", re.IGNORECASE))


def _removal_described(text: str, mentions: list[tuple[SectionKind, Mention]], sex: str) -> bool:
    """True when the report says an organ of ``sex`` was removed (hysterectomy, "surgically absent")."""
    for _, m in mentions:
        if m.sex != sex:
            continue
        if m.text.lower().endswith("ectomy") or _REMOVED_RE.search(text, m.sentence_start, m.sentence_end):
            return True
    return False


def _organ_described(text: str, kind: SectionKind, m: Mention, *, removal: bool) -> bool:
    """True when ``m`` says the organ belongs to this patient.

    Present ("the prostate is normal"), suspected ("may represent an ovary"),
    diseased in the past ("history of prostate cancer") or looked for and
    not seen ("the uterus is not visualized") all do, unless ``removal``
    (the report describes the organ taken out). A removed organ
    ("hysterectomy", "surgically absent"), a negated finding ("no ovarian
    cyst"), a hypothetical one and somebody else's never do; in the
    indication a hedged mention is the clinical question.
    """
    if m.hypothetical or m.experiencer != "patient":
        return False
    if m.uncertain and kind in _QUESTION_KINDS:
        return False
    if m.text.lower().endswith("ectomy"):
        return False
    negations = [c for c in m.cues if c.category == "negated"] if m.negated else []
    if _REMOVED_RE.search(text, m.sentence_start, m.sentence_end):
        return False
    if negations:
        if all(_NORMAL_CUE_RE.search(text, c.start, c.end) for c in negations):
            return True
        return not removal and all(_NOT_SEEN_RE.search(text, c.start, c.end) for c in negations)
    return True


def _ignored_terms(params: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(t).lower() for t in (params.get("ignore_terms", _DEFAULT_IGNORE) or ()))


@rule("consistency", severity=Severity.ERROR, params={"ignore_terms": list(_DEFAULT_IGNORE)}, prepare=_ignored_terms)
def sex_anatomy(data: RuleInput) -> Iterator[Finding]:
    """Anatomy of the other sex is described in the patient (patient sex F or M only).

    Read in the indication, technique, findings and impression. An organ
    counts when the report describes it as there ("the prostate is
    normal"), suspects it ("may represent an ovary"), gives it a history
    ("history of prostate cancer") or looks for it and does not see it ("the
    uterus is not visualized": a template of the other sex). It does not
    count when removed ("surgically absent", "status post hysterectomy"; a
    not-seen organ does not count either when the report describes a
    removal), as a negated finding ("no ovarian cyst"), hypothetically,
    about somebody else, or hedged in the indication ("rule out ovarian
    torsion" is the question). ``ignore_terms`` lists matched words that do
    not imply a sex (leiomyoma, fibroid). Registered sex can differ from
    anatomy (transgender and intersex patients): lower the severity in
    policies/qa.yaml where this matters.
    """
    patient_sex = _SEX_OF_PATIENT.get(data.report.patient.sex.strip().upper())
    if patient_sex is None:
        return
    text = data.report.text
    ignore: frozenset[str] = data.prepared
    mentions = [(k, m) for k, m in _anatomy_mentions(data, _SEX_KINDS) if m.sex and m.text.lower() not in ignore]
    other = [(k, m) for k, m in mentions if m.sex != patient_sex]
    if not other:
        return
    removal = _removal_described(text, other, other[0][1].sex)
    wrong = [m for k, m in other if _organ_described(text, k, m, removal=removal)]
    if not wrong:
        return
    concepts = ", ".join(dict.fromkeys(m.concept.replace("_", " ") for m in wrong))
    yield data.emit(
        f"{wrong[0].sex.capitalize()} anatomy ({concepts}) described in a patient registered as {patient_sex}.",
        [data.analysis.evidence(m.start, m.end) for m in wrong[:5]],
        suggestion="Check the patient, the template and the registered sex.",
    )


# ---------------------------------------------------------------- age


@dataclass(frozen=True, slots=True)
class AgeStatement:
    """A statement that is only true within an age range (years, inclusive)."""

    name: str
    pattern: re.Pattern[str]
    min_age: int | None
    max_age: int | None


#: The statements checked, with wide margins: each fires only far outside
#: the ages where it can be true.
AGE_STATEMENTS: tuple[AgeStatement, ...] = (
    AgeStatement("postmenopausal", re.compile(r"\bpost-?menopaus\w*", re.IGNORECASE), 30, None),
    AgeStatement("premenopausal", re.compile(r"\bpre-?menopaus\w*", re.IGNORECASE), None, 70),
    AgeStatement(
        "open growth plates",
        re.compile(
            r"\b(open|unfused|patent)\s+(growth\s+plates?|phys[ie]s|physeal\s+plates?|epiphyseal\s+plates?)\b|"
            r"\b(growth\s+plates?|phys[ie]s|epiphyseal\s+plates?)\s+(is|are|remain|remains)\s+(open|unfused|patent)\b|"
            r"\bskeletally\s+immature\b",
            re.IGNORECASE,
        ),
        None,
        30,
    ),
    AgeStatement(
        "open fontanelle",
        re.compile(
            r"\b(open|bulging|patent)\s+(anterior\s+|posterior\s+)?fontanell?es?\b|"
            r"\bfontanell?es?\s+(is|are)\s+(open|bulging|patent)\b",
            re.IGNORECASE,
        ),
        None,
        5,
    ),
)
_PREGNANCY_AGES = (9, 60)
# One cheap look before the statement patterns run.
_ANY_AGE_WORD_RE = folded(
    re.compile(r"menopaus|physe|physi[sa]|growth\s+plate|epiphyseal|skeletally|fontanel", re.IGNORECASE)
)
_NEGATED_BEFORE_RE = folded(re.compile(r"\b(no|not|without|negative for|absence of)\b[^.;\n]{0,40}\Z", re.IGNORECASE))
#: The longest match of _NEGATED_BEFORE_RE ("negative for" and 40 characters) is 52 characters:
#: a search that starts this far before its end finds what a search from the line start finds.
_NEGATION_REACH = 64


def age_years(birth: date, on: date) -> int:
    """Whole years from ``birth`` to ``on``."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _exam_date(report: Report) -> date | None:
    when = report.times.observation or report.times.report
    return when.date() if when is not None else None


def _outside(age: int, lo: int | None, hi: int | None) -> bool:
    return (lo is not None and age < lo) or (hi is not None and age > hi)


@rule("consistency", severity=Severity.WARNING, params={"check_pregnancy": True})
def age_implausible(data: RuleInput) -> Iterator[Finding]:
    """A statement that cannot be true at the patient's age ("postmenopausal" at 20).

    Age comes from the birth date and the exam date (observation, else
    report time); without both the rule is silent. Checked statements:
    post-/premenopausal, open growth plates, open fontanelle and (with
    ``check_pregnancy``) an affirmed pregnancy before 9 or after 60.
    """
    report = data.report
    birth = report.patient.birth_date
    on = _exam_date(report)
    if birth is None or on is None or on < birth:
        return
    age = age_years(birth, on)
    text = report.text
    hits: list[tuple[str, int, int]] = []
    statements = AGE_STATEMENTS if _ANY_AGE_WORD_RE.search(text) else ()
    for statement in statements:
        if not _outside(age, statement.min_age, statement.max_age):
            continue
        for m in statement.pattern.finditer(text):
            # The negation is looked for after the last line end or period before the statement,
            # and no further back than it can reach: read from the line's start, a run-on of
            # negated statements ("no open growth plates, no open growth plates, ...") cost the
            # square of its length.
            lo = max(0, m.start() - _NEGATION_REACH)
            line_start = max(text.rfind("\n", lo, m.start()), text.rfind(".", lo, m.start()), lo - 1) + 1
            if _NEGATED_BEFORE_RE.search(text, line_start, m.start()):
                continue
            hits.append((statement.name, m.start(), m.end()))
            break
    if data.param("check_pregnancy", True) and _outside(age, *_PREGNANCY_AGES):
        for _, mention in _anatomy_mentions(data):
            if mention.concept == "pregnancy" and mention.affirmed:
                hits.append(("pregnancy", mention.start, mention.end))
                break
    if not hits:
        return
    names = ", ".join(dict.fromkeys(name for name, _, _ in hits))
    yield data.emit(
        f"Statement implausible at the patient's age, computed from the birth date: {names}.",
        [data.analysis.evidence(s, e) for _, s, e in hits[:5]],
        suggestion="Check the patient and the template.",
    )
