"""Reading a RADPEER score from FHIR elements: the grade, the time, the scorer, the score code.

Pure: no I/O, no clock. Shared by :mod:`listener.fhir.score` (an Observation or
QuestionnaireResponse posted on its own) and the report decoder (a score
Observation among a DiagnosticReport's ``result``: :func:`review_of_results`).
Messages name FHIRPaths, never values (docs/outcomes.md, "Explicit scores").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from listener.errors import FhirDecodeError
from listener.fhir.resolve import JSON, codings, obj_of, objs, str_of
from listener.hl7v2.mapping import PeerReviewFhir
from listener.model import RADPEER_GRADES, PeerReview

__all__ = [
    "GRADE_TEXT",
    "OBSERVATION_TIMES",
    "ScoreRefused",
    "first_time",
    "is_score_code",
    "observation_grade",
    "parse_grade",
    "review_of_results",
    "unknown_grade",
    "who",
]

GRADE_TEXT = ", ".join(RADPEER_GRADES)
#: Where an Observation says when it was scored, in order.
OBSERVATION_TIMES = ("effectiveDateTime", "effectiveInstant", "issued")

#: Finds the resource a Reference names (contained or in the body), or None.
Resolver = Callable[[JSON, str], JSON | None]


class ScoreRefused(FhirDecodeError):
    """Valid FHIR that carries no usable score: no grade, an unknown grade, no accession, no time (HTTP 422)."""


def parse_grade(text: str) -> str | None:
    """A RADPEER grade from text (``2b``, ``2B``, `` 1 ``), or None when it is none."""
    grade = text.strip().lower()
    return grade if grade in RADPEER_GRADES else None


def is_score_code(concept: JSON, settings: PeerReviewFhir) -> bool:
    """True when a CodeableConcept has one of the configured score codings (system exact, code without case)."""
    wanted = {(system, code.lower()) for system, code in settings.codes}
    return any((str_of(c, "system"), str_of(c, "code").lower()) in wanted for c in codings(concept))


def unknown_grade(where: str) -> ScoreRefused:
    """The refusal of a value that is no RADPEER grade, at ``where``."""
    return ScoreRefused(f"{where} is not a RADPEER grade ({GRADE_TEXT})", issue_code="code-invalid", expression=where)


def observation_grade(obs: JSON, where: str) -> tuple[str, str]:
    """(grade, FHIRPath) of an Observation's ``value[x]``: a coding's code, else the concept's text;
    ``valueString``; ``valueInteger``.

    Raises:
        ScoreRefused: no value (``required``), or a value that is no grade (``code-invalid``).
    """
    if "valueCodeableConcept" in obs:
        concept = obj_of(obs, "valueCodeableConcept")
        for i, coding in enumerate(codings(concept)):
            grade = parse_grade(str_of(coding, "code"))
            if grade is not None:
                return grade, f"{where}.valueCodeableConcept.coding[{i}].code"
        grade = parse_grade(str_of(concept, "text"))
        if grade is not None:
            return grade, f"{where}.valueCodeableConcept.text"
        raise unknown_grade(f"{where}.valueCodeableConcept")
    for key in ("valueString", "valueInteger"):
        if key in obs:
            grade = parse_grade(str_of(obs, key))
            if grade is None:
                raise unknown_grade(f"{where}.{key}")
            return grade, f"{where}.{key}"
    raise ScoreRefused(
        f"no grade: {where}.valueCodeableConcept or valueString holds the RADPEER grade ({GRADE_TEXT})",
        issue_code="required",
        expression=f"{where}.value[x]",
    )


def first_time(doc: JSON, root: str, keys: tuple[str, ...]) -> tuple[datetime | None, str]:
    """(time, FHIRPath) of the first of ``keys`` holding a date and time with a UTC offset (a bare date
    is no time of a score); (None, "") when none does."""
    for key in keys:
        text = str_of(doc, key)
        if "T" not in text:
            continue
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            continue
        if value.utcoffset() is not None:
            return value, f"{root}.{key}"
    return None, ""


def who(doc: JSON, root: str, key: str, resolve: Resolver) -> tuple[str, str]:
    """(scorer, FHIRPath) from the first reference under ``key`` that names one: its identifier, its
    display, else the first identifier of the resource it names; ("", "") when none does."""
    many = isinstance(doc.get(key), list)
    for i, ref in enumerate(objs(doc, key)):
        path = f"{root}.{key}[{i}]" if many else f"{root}.{key}"
        value = str_of(obj_of(ref, "identifier"), "value")
        if value:
            return value, f"{path}.identifier"
        if str_of(ref, "display"):
            return str_of(ref, "display"), f"{path}.display"
        for ident in objs(resolve(ref, path), "identifier"):
            if str_of(ident, "value"):
                return str_of(ident, "value"), f"{path}.reference"
    return "", ""


def review_of_results(
    dr: JSON, where: str, resolve: Resolver, settings: PeerReviewFhir, warnings: list[str]
) -> PeerReview | None:
    """The explicit score a DiagnosticReport carries: the last ``result`` Observation with a score code.

    Its value is the grade, ``performer`` the scorer, ``effectiveDateTime`` (or
    ``issued``) the time. A value that is no grade is ignored with a warning
    naming the location only, as for the HL7 score OBX.
    """
    found: PeerReview | None = None
    # Per Observation object: its review, None (no score code), or "refused". n references to one
    # Observation read it once, not n times its codings; the last score still wins, as without repeats.
    read: dict[int, PeerReview | str | None] = {}
    for i, ref in enumerate(objs(dr, "result")):
        path = f"{where}.result[{i}]"
        obs = resolve(ref, path)
        if obs is None or str_of(obs, "resourceType") != "Observation":
            continue
        if id(obs) not in read:
            read[id(obs)] = _review_of(obs, path, resolve, settings)
        review = read[id(obs)]
        if review == "refused":
            warnings.append(f"{path}: the peer-review score Observation holds no RADPEER grade; ignored")
        elif isinstance(review, PeerReview):
            found = review
    return found


def _review_of(obs: JSON, path: str, resolve: Resolver, settings: PeerReviewFhir) -> PeerReview | str | None:
    """One result Observation's score: a PeerReview, None when it has no score code, "refused" when no grade."""
    if not is_score_code(obj_of(obs, "code"), settings):
        return None
    try:
        grade, _ = observation_grade(obs, path)
    except ScoreRefused:
        return "refused"
    scorer, _ = who(obs, path, "performer", resolve)
    scored_at, _ = first_time(obs, path, OBSERVATION_TIMES)
    return PeerReview(grade, scorer, scored_at)
