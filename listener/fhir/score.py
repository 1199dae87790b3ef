"""A RADPEER score posted as a FHIR Observation or QuestionnaireResponse -> :class:`FhirScore`.

Pure: no I/O, no clock, no logging. The body goes through the decoder's steps
(media type, JSON, shape, the chosen FHIR version, fhir.resources validation),
then the score is read from it (docs/outcomes.md, "Explicit scores"):

* **Observation**: ``code`` one of the feed mapping's ``peer_review_fhir.codes``;
  the grade in ``valueCodeableConcept`` (a coding's code, else its text),
  ``valueString`` or ``valueInteger``; the accession from the identifier of
  the ServiceRequest in ``basedOn``, or of the DiagnosticReport (or
  ImagingStudy) in ``focus`` or ``derivedFrom``; the scorer from
  ``performer``; the time from ``effectiveDateTime`` (or
  ``effectiveInstant``), else ``issued``; the note from ``note[].text``.
* **QuestionnaireResponse**: the items whose linkIds the mapping names
  (``grade``, ``accession``, ``note`` by default), at any depth; the
  accession item, else ``basedOn`` as above; the scorer from ``author``; the
  time from ``authored``.

A reference gives an accession through its logical ``identifier`` (typed
``ACSN`` or ``FILL``, or untyped), or through the resource it names in
``contained`` (its ``ACSN`` identifier, else ``FILL``, else its only one).
References naming two different accessions are refused.

Every failure is a :class:`FhirDecodeError` naming a FHIRPath, never a value;
valid FHIR that carries no usable score is a :class:`ScoreRefused` (HTTP 422).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from listener.errors import FhirDecodeError
from listener.fhir import models

# The decoder's own JSON and vendor-field steps: a score body is read exactly as a report body.
from listener.fhir.decode import DEFAULT_CLIENT, FhirClient, _parse_json, _strip_extras
from listener.fhir.peer_review import (
    GRADE_TEXT,
    OBSERVATION_TIMES,
    ScoreRefused,
    first_time,
    is_score_code,
    observation_grade,
    parse_grade,
    unknown_grade,
    who,
)
from listener.fhir.resolve import JSON, codings, contained_map, identifier_of_type, obj_of, objs, str_of, strs
from listener.fhir.shape import check_shape
from listener.hl7v2.mapping import PeerReviewFhir

__all__ = ["RESOURCE_TYPES", "FhirScore", "ScoreRefused", "parse_grade", "score_from_fhir"]

#: The resource types that carry a score, each with its own endpoint (``POST /fhir/<type>``).
RESOURCE_TYPES = ("Observation", "QuestionnaireResponse")

#: Observation statuses (R4 and R5), and those that carry no score to keep (nothing observed yet, or withdrawn).
_OBSERVATION_STATUSES = frozenset(
    {
        "registered",
        "specimen-in-process",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
_OBSERVATION_REFUSED = frozenset({"registered", "specimen-in-process", "cancelled", "entered-in-error"})
#: QuestionnaireResponse statuses of a finished answer.
_QR_ACCEPTED = frozenset({"completed", "amended"})
#: Resource types a reference may name to give the accession.
_ACCESSION_TYPES = frozenset({"ServiceRequest", "DiagnosticReport", "ImagingStudy"})
#: Identifier types that are the accession (v2-0203).
_ACCESSION_IDENTIFIER_TYPES = ("ACSN", "FILL")


@dataclass(frozen=True, slots=True)
class FhirScore:
    """A score read from a FHIR resource.

    Attributes:
        resource_type: ``Observation`` or ``QuestionnaireResponse``.
        accession: the scored accession.
        grade: a RADPEER grade (``1``, ``2a``, ``2b``, ``3a``, ``3b``).
        scored_at: when it was scored (aware).
        scorer: who scored ("" when the resource does not say).
        note: free text ("" when none).
        read_from: (what, FHIRPath) of each value read: where the grade,
            accession, time and scorer came from, for the answer.
    """

    resource_type: str
    accession: str
    grade: str
    scored_at: datetime
    scorer: str = ""
    note: str = ""
    read_from: tuple[tuple[str, str], ...] = ()


def score_from_fhir(
    body: bytes,
    expected: str,
    *,
    settings: PeerReviewFhir,
    media_type: str | None = None,
    client: FhirClient = DEFAULT_CLIENT,
) -> FhirScore:
    """Read one score from a posted body.

    Args:
        body: the request body.
        expected: ``Observation`` or ``QuestionnaireResponse`` (the endpoint posted to).
        settings: the client's feed mapping's ``peer_review_fhir``.
        media_type: the Content-Type header (None: FHIR JSON).
        client: the client's FHIR settings (version, extra fields).

    Raises:
        FhirUnsupportedMediaType: not FHIR JSON (415).
        ScoreRefused: valid FHIR without a usable score (422).
        FhirDecodeError: anything else: not JSON, the wrong resource type, invalid FHIR (400); a FHIR
            version the client may not send (422).
    """
    media = models.parse_media_type(media_type)
    doc = _parse_json(body)
    root = str_of(doc, "resourceType")
    if root != expected:
        raise FhirDecodeError(
            f"POST /fhir/{expected} takes a{'n' if expected[0] in 'AEIOU' else ''} {expected}",
            issue_code="invalid",
            expression="resourceType",
        )
    check_shape(doc, root)
    version = models.choose_version(
        configured=client.version,
        media=media,
        profiles=strs(obj_of(doc, "meta"), "profile"),
        default=client.default_version,
        allowed=client.versions,
    )
    if client.accept_extra_fields:
        _strip_extras(version, doc)
    models.validate(version, doc)
    if root == "Observation":
        return _from_observation(doc, settings)
    return _from_questionnaire_response(doc, settings)


# ------------------------------------------------------------------ Observation


def _from_observation(doc: JSON, settings: PeerReviewFhir) -> FhirScore:
    if str_of(doc, "status") not in _OBSERVATION_STATUSES:
        raise ScoreRefused(
            "Observation.status is not an Observation status",
            issue_code="code-invalid",
            expression="Observation.status",
        )
    if str_of(doc, "status") in _OBSERVATION_REFUSED:
        raise ScoreRefused(
            "Observation.status says there is no score (registered, cancelled or entered-in-error)",
            issue_code="business-rule",
            expression="Observation.status",
        )
    if not is_score_code(obj_of(doc, "code"), settings):
        raise ScoreRefused(
            "Observation.code is not a peer-review score code (the feed mapping's peer_review_fhir.codes)",
            issue_code="code-invalid",
            expression="Observation.code",
        )
    grade, grade_at = observation_grade(doc, "Observation")
    contained = contained_map(doc)
    accession, accession_at = _accession_from_references(
        doc, "Observation", ("basedOn", "focus", "derivedFrom"), contained
    )
    if not accession:
        raise ScoreRefused(
            "no accession: Observation.basedOn (the ServiceRequest), focus or derivedFrom (the DiagnosticReport)"
            " needs a reference with an accession identifier",
            issue_code="required",
            expression="Observation.basedOn",
        )
    scored_at, time_at = first_time(doc, "Observation", OBSERVATION_TIMES)
    if scored_at is None:
        raise ScoreRefused(
            "no time: Observation.effectiveDateTime or issued needs a date, time and UTC offset",
            issue_code="required",
            expression="Observation.effectiveDateTime",
        )
    scorer, scorer_at = who(doc, "Observation", "performer", _in(contained))
    note = "\n".join(str_of(n, "text") for n in objs(doc, "note") if str_of(n, "text"))
    read = [("grade", grade_at), ("accession", accession_at), ("scored_at", time_at)]
    if scorer:
        read.append(("scorer", scorer_at))
    return FhirScore("Observation", accession, grade, scored_at, scorer, note, tuple(read))


# -------------------------------------------------------- QuestionnaireResponse


def _from_questionnaire_response(doc: JSON, settings: PeerReviewFhir) -> FhirScore:
    root = "QuestionnaireResponse"
    if str_of(doc, "status") not in _QR_ACCEPTED:
        raise ScoreRefused(
            "QuestionnaireResponse.status must be completed or amended (a finished form)",
            issue_code="business-rule",
            expression="QuestionnaireResponse.status",
        )
    items = _items_by_link_id(doc, root)
    grade_item = items.get(settings.grade)
    if grade_item is None or not objs(grade_item[0], "answer"):
        raise ScoreRefused(
            f"no grade: an item with linkId {settings.grade!r} and an answer holds the RADPEER grade ({GRADE_TEXT})",
            issue_code="required",
            expression=f"{root}.item.where(linkId='{settings.grade}')",
        )
    grade_text, grade_at = _answer_text(grade_item)
    grade = parse_grade(grade_text)
    if grade is None:
        raise unknown_grade(grade_at)
    contained = contained_map(doc)
    accession, accession_at = "", ""
    accession_item = items.get(settings.accession)
    if accession_item is not None:
        accession, accession_at = _answer_text(accession_item)
    if not accession:
        accession, accession_at = _accession_from_references(doc, root, ("basedOn",), contained)
    if not accession:
        raise ScoreRefused(
            f"no accession: an item with linkId {settings.accession!r} and an answer, or basedOn naming the"
            " ServiceRequest by its accession identifier, is needed",
            issue_code="required",
            expression=f"{root}.item.where(linkId='{settings.accession}')",
        )
    scored_at, time_at = first_time(doc, root, ("authored",))
    if scored_at is None:
        raise ScoreRefused(
            "no time: QuestionnaireResponse.authored needs a date, time and UTC offset",
            issue_code="required",
            expression="QuestionnaireResponse.authored",
        )
    scorer, scorer_at = who(doc, root, "author", _in(contained))
    note = ""
    note_item = items.get(settings.note)
    if note_item is not None:
        note = "\n".join(_answer_strings(note_item[0]))
    read = [("grade", grade_at), ("accession", accession_at), ("scored_at", time_at)]
    if scorer:
        read.append(("scorer", scorer_at))
    return FhirScore(root, accession, grade, scored_at, scorer, note, tuple(read))


def _items_by_link_id(doc: JSON, root: str) -> dict[str, tuple[JSON, str]]:
    """Every item (in groups and under answers too) by linkId, the first of each, with its FHIRPath."""
    found: dict[str, tuple[JSON, str]] = {}
    stack = [(item, f"{root}.item[{i}]") for i, item in reversed(list(enumerate(objs(doc, "item"))))]
    while stack:
        item, path = stack.pop()
        found.setdefault(str_of(item, "linkId"), (item, path))
        children = [(c, f"{path}.item[{i}]") for i, c in enumerate(objs(item, "item"))]
        for a, answer in enumerate(objs(item, "answer")):
            children += [(c, f"{path}.answer[{a}].item[{i}]") for i, c in enumerate(objs(answer, "item"))]
        stack.extend(reversed(children))
    return found


def _answer_value(answer: JSON) -> tuple[str, str]:
    """(value as text, its element) of an answer: a string, an integer, a coding's code, a reference's identifier."""
    for key in ("valueString", "valueInteger"):
        if str_of(answer, key):
            return str_of(answer, key), key
    coding = obj_of(answer, "valueCoding")
    if str_of(coding, "code"):
        return str_of(coding, "code"), "valueCoding.code"
    if str_of(coding, "display"):
        return str_of(coding, "display"), "valueCoding.display"
    value = str_of(obj_of(obj_of(answer, "valueReference"), "identifier"), "value")
    if value:
        return value, "valueReference.identifier"
    return "", ""


def _answer_text(item: tuple[JSON, str]) -> tuple[str, str]:
    """(value, FHIRPath) of an item's first answer that has one; ("", path of answer[0]) when none does."""
    node, path = item
    for i, answer in enumerate(objs(node, "answer")):
        value, element = _answer_value(answer)
        if value:
            return value, f"{path}.answer[{i}].{element}"
    return "", f"{path}.answer[0]"


def _answer_strings(item: JSON) -> list[str]:
    return [v for v, _ in (_answer_value(a) for a in objs(item, "answer")) if v]


# ---------------------------------------------------------------------- shared


def _accession_from_references(
    doc: JSON, root: str, keys: tuple[str, ...], contained: dict[str, JSON]
) -> tuple[str, str]:
    """(accession, FHIRPath) from the references under ``keys``, in that order; ("", "") when none names one.

    Raises:
        ScoreRefused: two references name different accessions.
    """
    found: list[tuple[str, str]] = []
    for key in keys:
        for i, ref in enumerate(objs(doc, key)):
            value, where = _accession_of(ref, f"{root}.{key}[{i}]", contained)
            if value:
                found.append((value, where))
    if len({value for value, _ in found}) > 1:
        raise ScoreRefused(
            "the references name two different accessions: a score is of one accession",
            issue_code="business-rule",
            expression=found[1][1],
        )
    return found[0] if found else ("", "")


def _accession_of(ref: JSON, path: str, contained: dict[str, JSON]) -> tuple[str, str]:
    target = str_of(ref, "reference")
    kind = str_of(ref, "type") or target.partition("/")[0]
    resource = contained.get(target[1:]) if target.startswith("#") else None
    if resource is not None:
        kind = str_of(resource, "resourceType")
    if kind and kind not in _ACCESSION_TYPES:
        return "", ""
    ident = obj_of(ref, "identifier")
    if str_of(ident, "value"):
        types = {str_of(c, "code").upper() for c in codings(obj_of(ident, "type"))}
        if not types or types & set(_ACCESSION_IDENTIFIER_TYPES):
            return str_of(ident, "value"), f"{path}.identifier"
    if resource is not None:
        idents = objs(resource, "identifier")
        for type_code in _ACCESSION_IDENTIFIER_TYPES:
            chosen = identifier_of_type(idents, type_code)
            if chosen is not None:
                return str_of(chosen, "value"), f"{path}.reference"
        with_value = [i for i in idents if str_of(i, "value")]
        if len(with_value) == 1:
            return str_of(with_value[0], "value"), f"{path}.reference"
    return "", ""


def _in(contained: dict[str, JSON]) -> Callable[[JSON, str], JSON | None]:
    """A resolver of ``#id`` references into ``contained`` (a posted score is read alone: nothing else is)."""

    def resolve(ref: JSON, _path: str) -> JSON | None:
        target = str_of(ref, "reference")
        return contained.get(target[1:]) if target.startswith("#") else None

    return resolve
