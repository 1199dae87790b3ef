"""``POST /fhir/Observation`` and ``POST /fhir/QuestionnaireResponse``: an explicit peer-review score.

Layer: shell, blocking (run on a thread, never on the reactor). The body is
read by the pure :func:`listener.fhir.score.score_from_fhir` with the client's
feed mapping (``peer_review_fhir``); the score is stored with source ``fhir``
(:meth:`listener.store.base.Store.record_scores`) and the call is recorded in
the audit log (action ``outcomes score``, via ``http``, the client's id as
actor), both committed before the answer is built (docs/outcomes.md,
"Explicit scores"; docs/http-api.md).

Answers: 201 stored; 200 the same score was stored already (nothing added);
400 not JSON or invalid FHIR, or the wrong resource type; 415 not FHIR JSON;
422 valid FHIR without a usable score (no grade, an unknown grade, no
accession, no time, another code). The body is an OperationOutcome whose
issues name where each value was read (or what is wrong) by FHIRPath, never a
value from the request. Nothing is stored for a refused body.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from listener.errors import FhirDecodeError
from listener.fhir.decode import FhirClient
from listener.fhir.encode import Issue, issues_for_error
from listener.fhir.score import FhirScore, ScoreRefused, score_from_fhir
from listener.hl7v2.mapping import PeerReviewFhir
from listener.intake import HttpAnswer, outcome_answer, status_for_error
from listener.store.base import ScoreGrade, ScoreRecord, Store

__all__ = ["AUDIT_ACTION", "record_fhir_score", "score_record"]

#: The audit action of a posted score: the one ``overread outcomes score`` records, with via ``http``.
AUDIT_ACTION = "outcomes score"


def score_record(score: FhirScore) -> ScoreRecord:
    """The store's record of a score read from FHIR (source ``fhir``)."""
    return ScoreRecord(
        accession=score.accession,
        grade=cast(ScoreGrade, score.grade),  # score_from_fhir keeps RADPEER grades only
        source="fhir",
        scored_at=score.scored_at,
        scorer=score.scorer,
        note=score.note,
    )


def refusal(error: FhirDecodeError) -> HttpAnswer:
    """The answer refusing a body: 422 for a :class:`ScoreRefused`, else 415 or 400."""
    status = 422 if isinstance(error, ScoreRefused) else status_for_error(error)
    return outcome_answer(status, issues_for_error(error))


def record_fhir_score(
    store: Store,
    body: bytes,
    content_type: str,
    expected: str,
    *,
    client: FhirClient,
    settings: PeerReviewFhir,
    now: datetime,
) -> HttpAnswer:
    """Read, store and audit one posted score; return the answer (blocking: call it on a thread).

    Args:
        store: the daemon's store.
        body: the request body (already capped in size).
        content_type: the Content-Type header.
        expected: ``Observation`` or ``QuestionnaireResponse`` (the endpoint posted to).
        client: the authenticated client's FHIR settings (its id is the audit actor).
        settings: the client's feed mapping's ``peer_review_fhir``.
        now: the audit time (aware).

    Raises:
        StoreError: the store cannot take the score (the caller answers 503).
    """
    try:
        score = score_from_fhir(body, expected, settings=settings, media_type=content_type, client=client)
    except FhirDecodeError as exc:
        return refusal(exc)
    new = store.record_scores((score_record(score),))
    store.record_audit(
        at=now,
        actor=client.name,
        via="http",
        action=AUDIT_ACTION,
        target={"accession": score.accession, "grade": score.grade, "source": "fhir", "resource": expected},
        rows=new,
    )
    state = "recorded" if new else "already recorded (nothing added)"
    issues = [Issue("information", "informational", f"score {state}: grade {score.grade}, source fhir")]
    issues += [Issue("information", "informational", f"{what} read here", where) for what, where in score.read_from]
    return outcome_answer(201 if new else 200, issues)
