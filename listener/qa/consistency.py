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

from listener.model import Finding, Report, SectionKind, Severity
from listener.qa.engine import RuleInput, rule
from listener.text import Mention

__all__ = ["AGE_STATEMENTS", "AgeStatement", "age_implausible", "age_years", "sex_anatomy"]

_SEX_OF_PATIENT: Mapping[str, str] = {"F": "female", "M": "male"}
# The sections other rules scan too (mentions are cached per section), so
# this rule adds no text analysis of its own.
_ANATOMY_KINDS = (SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.ADDENDUM, SectionKind.OTHER)
#: Terms of a sex-specific concept that also name something either sex has
#: (leiomyomas of the oesophagus or stomach; "fibroid" used loosely).
_DEFAULT_IGNORE = ("leiomyoma", "leiomyomas", "fibroid", "fibroids")


def _anatomy_mentions(data: RuleInput) -> Iterator[Mention]:
    for sec in data.report.sections:
        if sec.kind in _ANATOMY_KINDS:
            yield from data.analysis.mentions(sec.start, sec.end)


# The organ is not there: removed, absent, not seen.
_ABSENT_RE = re.compile(
    r"\b(absent|absence|removed|resected|surgically|not (seen|visualized|identified|imaged|demonstrated)|"
    r"nonvisuali[sz]ed|no longer)\b",
    re.IGNORECASE,
)
# ConText calls "the prostate is normal" negated: for a finding that means
# absent, for an organ it means present and normal.
_NORMAL_CUE_RE = re.compile(r"normal|unremarkable|within normal limits|intact", re.IGNORECASE)


def _organ_present(text: str, m: Mention) -> bool:
    """True when ``m`` describes the organ as there now, in this patient."""
    if m.historical or m.hypothetical or m.uncertain or m.experiencer != "patient":
        return False
    if m.text.lower().endswith("ectomy"):
        return False
    if _ABSENT_RE.search(text, m.sentence_start, m.sentence_end):
        return False
    if m.negated:
        negations = [c for c in m.cues if c.category == "negated"]
        return bool(negations) and all(_NORMAL_CUE_RE.search(text, c.start, c.end) for c in negations)
    return True


@rule("consistency", severity=Severity.ERROR, params={"ignore_terms": list(_DEFAULT_IGNORE)})
def sex_anatomy(data: RuleInput) -> Iterator[Finding]:
    """Anatomy of the other sex is described as present (patient sex F or M only).

    ``ignore_terms`` lists matched words that do not imply a sex (leiomyoma,
    fibroid). Mentions that are absent ("surgically absent", "no ovarian
    cyst"), removed (hysterectomy), historical, hypothetical, hedged or
    about somebody else never count; "the prostate is normal" does (the
    organ is there). Registered sex can differ from anatomy (transgender
    and intersex patients): lower the severity in policies/qa.yaml where
    this matters.
    """
    patient_sex = _SEX_OF_PATIENT.get(data.report.patient.sex.strip().upper())
    if patient_sex is None:
        return
    text = data.report.text
    ignore = frozenset(str(t).lower() for t in (data.param("ignore_terms", _DEFAULT_IGNORE) or ()))
    wrong = [
        m
        for m in _anatomy_mentions(data)
        if m.sex and m.sex != patient_sex and m.text.lower() not in ignore and _organ_present(text, m)
    ]
    if not wrong:
        return
    concepts = ", ".join(dict.fromkeys(m.concept.replace("_", " ") for m in wrong))
    yield data.emit(
        "consistency.sex_anatomy",
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
_ANY_AGE_WORD_RE = re.compile(r"menopaus|physe|physi[sa]|growth\s+plate|epiphyseal|skeletally|fontanel", re.IGNORECASE)
_NEGATED_BEFORE_RE = re.compile(r"\b(no|not|without|negative for|absence of)\b[^.;\n]{0,40}\Z", re.IGNORECASE)


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
            line_start = max(text.rfind("\n", 0, m.start()), text.rfind(".", 0, m.start())) + 1
            if _NEGATED_BEFORE_RE.search(text, line_start, m.start()):
                continue
            hits.append((statement.name, m.start(), m.end()))
            break
    if data.param("check_pregnancy", True) and _outside(age, *_PREGNANCY_AGES):
        for mention in _anatomy_mentions(data):
            if mention.concept == "pregnancy" and mention.affirmed:
                hits.append(("pregnancy", mention.start, mention.end))
                break
    if not hits:
        return
    names = ", ".join(dict.fromkeys(name for name, _, _ in hits))
    yield data.emit(
        "consistency.age_implausible",
        f"Statement implausible at the patient's age, computed from the birth date: {names}.",
        [data.analysis.evidence(s, e) for _, s, e in hits[:5]],
        suggestion="Check the patient and the template.",
    )
