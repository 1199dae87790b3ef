"""A pipeline Outcome -> the record the store keeps and the answer the sender gets, for both transports.

Layer: pure (no I/O, no clock of its own, no Twisted, no store backend: of
``listener.store`` only the record types of :mod:`listener.store.base`). The
MLLP intake (:mod:`listener.server.mllp`), the HTTP intake
(:mod:`listener.server.http_intake`) and ``overread reprocess`` build their
records here, so a message reprocessed from the shell is stored exactly as the
daemon would store it on arrival (docs/operations.md, "Reprocessing").

What is built here, once for HL7 v2 and FHIR:

* the stored reports (:func:`report_records`) and the message's state
  (:func:`message_state`);
* the routing messages, committed with the message and only for one we
  accept; one that cannot be built turns the answer into an internal error
  (never answer success for a message whose routing cannot be queued);
* the answer: ACK/NACK bytes (:func:`mllp_record`) or an HTTP status with an
  OperationOutcome or transaction response (:func:`http_record`);
* the internal-error outcome for a processing that failed outside the
  pipeline (:func:`internal_error_outcome`), and the record of a quarantined
  message (:func:`quarantine_record`, docs/hardening.md);
* what the daemon does with an HL7 v2 message once checked, made wherever it was
  checked (a worker process or a thread of the daemon): the record, the
  ``message_processed`` line's fields and what the metrics count
  (:func:`mllp_checked`, :class:`Tally`; docs/hardening.md, "Worker processes").
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from listener.destinations import DestinationSettings
from listener.errors import APPLICATION_INTERNAL_ERROR, DecodeError, FhirDecodeError, FhirUnsupportedMediaType
from listener.fhir.decode import FhirClient
from listener.fhir.encode import (
    EntryResult,
    Issue,
    bundle_response,
    operation_outcome,
    outcome_for_error,
    outcome_for_routes,
)
from listener.fhir.resolve import JSON, objs, str_of, walk_entries
from listener.hl7v2.ack import AckErrorDetail, AckTemplates, ack_code_for, build_ack
from listener.hl7v2.segments import MessageHeader
from listener.model import Disposition
from listener.outbox import outbox_items
from listener.pipeline import QA_TIMEOUT, Outcome, ReportOutcome
from listener.serialize import finding_dict, report_dict, route_dict
from listener.store.base import MessageRecord, MessageState, OutboxItem, ReportRecord, ScoreGrade, ScoreRecord

__all__ = [
    "FHIR_JSON",
    "QUARANTINE_TEXT",
    "SERVER_ID_HEX",
    "AckBuilder",
    "FhirChecked",
    "HttpAnswer",
    "MllpChecked",
    "Recording",
    "Tally",
    "ack_builder",
    "ack_errors",
    "answer_from_stored",
    "error_answer",
    "fhir_records",
    "http_record",
    "internal_error",
    "internal_error_outcome",
    "message_state",
    "mllp_checked",
    "mllp_record",
    "new_control_id",
    "outcome_ack_code",
    "outcome_answer",
    "parse_body",
    "quarantine_record",
    "report_records",
    "status_for_error",
    "tally",
]

#: Table 0357 codes answered AR (the sender must not resend unchanged; 207 is
#: added separately for store failures, where it should resend).
REJECT_CODES = frozenset({"200", "201", "202", "203"})

#: The stable text of a quarantined message's answer (docs/hardening.md).
QUARANTINE_TEXT = "Message quarantined: its processing failed repeatedly; an operator must review it"

FHIR_JSON = "application/fhir+json; charset=utf-8"

#: Issue codes of bodies that are well-formed FHIR but break our rules (422);
#: other decode failures are bodies that fail parsing or basic validation (400).
_UNPROCESSABLE = frozenset({"not-supported", "business-rule", "invariant", "too-costly", "processing", "code-invalid"})

_to_json = json.JSONEncoder(ensure_ascii=False).encode

#: Builds our ACK for a header (None: an unreadable frame): (original-mode
#: code, errors) -> (code sent, ACK bytes).
AckBuilder = Callable[[MessageHeader | None, str, tuple[AckErrorDetail, ...]], tuple[str, bytes]]


# -- shared by both transports ---------------------------------------------


def message_state(outcome: Outcome) -> MessageState:
    """``rejected`` (an error or a rejecting disposition), ``ignored`` or ``processed``."""
    if outcome.error is not None or outcome.disposition == "rejected":
        return "rejected"
    return "ignored" if outcome.disposition == "ignored" else "processed"


def report_records(outcome: Outcome, server_ids: Sequence[str] | None = None) -> tuple[ReportRecord, ...]:
    """The stored form of each report: JSON with patient and text, findings, route, and the lookup keys.

    Args:
        server_ids: for FHIR, the DiagnosticReport id given in each Location
            (kept as ``fhir_id``, which the searches find).
    """
    out = []
    for n, result in enumerate(outcome.reports):
        report = result.report
        data = report_dict(report, include_patient=True, include_text=True)
        if server_ids is not None:
            data["fhir_id"] = server_ids[n]
        out.append(
            ReportRecord(
                accession=report.accession,
                report_json=_to_json(data),
                findings_json=_to_json([finding_dict(f) for f in result.findings]),
                route_json=_to_json(route_dict(result.route)),
                bucket=result.route.bucket if result.route else "",
                patient_id=report.patient.id,
                patient_authority=report.patient.id_authority,
            )
        )
    return tuple(out)


#: Hex digits of a DiagnosticReport id we assign (FHIR create: the server chooses the id).
SERVER_ID_HEX = 32

#: A checked FHIR body: its outcome, its reports' stored forms and the ids given in their Locations.
FhirChecked = tuple[Outcome, tuple[ReportRecord, ...], tuple[str, ...]]


def fhir_records(outcome: Outcome) -> FhirChecked:
    """A FHIR body's outcome with a new server id per report and the records that keep it.

    One function for the daemon's thread and the worker process (listener/server/procworker.py).
    """
    server_ids = tuple(uuid.uuid4().hex[:SERVER_ID_HEX] for _ in outcome.reports)
    # fhir_id: the id in Location; GET /fhir/DetectedIssue?implicated= finds it.
    return outcome, report_records(outcome, server_ids), server_ids


def explicit_scores(
    outcome: Outcome, transport: Literal["mllp", "http"], received: datetime
) -> tuple[ScoreRecord, ...]:
    """The explicit scores the reports carry (docs/outcomes.md, "Explicit scores").

    A score's time is the one it carries when that has a UTC offset, else the
    report's time when that has one, else the receive time.
    """
    out = []
    for result in outcome.reports:
        report, review = result.report, result.report.peer_review
        if review is None or not report.accession:
            continue
        when = next(
            (t for t in (review.scored_at, report.times.report) if t is not None and t.utcoffset() is not None),
            received,
        )
        out.append(
            ScoreRecord(
                accession=report.accession,
                grade=cast(ScoreGrade, review.grade),  # the decoder keeps RADPEER grades only
                source="obx" if transport == "mllp" else "fhir",
                scored_at=when,
                scorer=review.scorer,
            )
        )
    return tuple(out)


def internal_error_outcome(header: MessageHeader | None, feed: str, error_type: str, what: str) -> Outcome:
    """The rejected Outcome of a processing that failed outside the pipeline (answered as error 207).

    Args:
        feed: the feed to store it under.
        error_type: the failure's exception type name (logged, never its text).
        what: what was being processed ("message", "resource"), for the answer's text.
    """
    error = DecodeError(f"internal error while processing the {what}", hl7_code=APPLICATION_INTERNAL_ERROR)
    return Outcome(header, Disposition.REJECTED, error=error, feed=feed, error_type=error_type)


def _routing_messages(
    outcome: Outcome,
    destinations: Sequence[DestinationSettings],
    *,
    received: datetime,
    sender: tuple[str, str],
    control_id: str,
    processing: int,
    only: frozenset[int] | None,
) -> tuple[tuple[OutboxItem, ...], str]:
    """The routing messages of an accepted message, and "" (or the type name of the exception that stopped them)."""
    if not destinations:
        return (), ""
    try:
        items = outbox_items(
            outcome.reports,
            destinations,
            now=received,
            sender_application=sender[0],
            sender_facility=sender[1],
            control_id=control_id,
            processing=processing,
            only=only,
        )
    except Exception as exc:  # noqa: BLE001 - the caller answers an internal error instead of success
        return (), type(exc).__name__
    return items, ""


def _record(
    transport: Literal["mllp", "http"],
    sender: tuple[str, str],
    control_id: str,
    outcome: Outcome,
    *,
    raw: bytes | None,
    received: datetime,
    state: MessageState,
    code: str,
    answer: bytes,
    reports: tuple[ReportRecord, ...],
    outbox: tuple[OutboxItem, ...],
    replaces: str = "",
    packed_raw: bytes | None = None,
) -> MessageRecord:
    """The record of one processed message: its key, its answer (``code``, ``answer`` bytes) and what it stores
    (``packed_raw``: ``raw``'s stored form made ahead, see :class:`~listener.store.base.MessageRecord`)."""
    scores = explicit_scores(outcome, transport, received) if state == "processed" else ()
    return MessageRecord(
        control_id=control_id,
        sender_application=sender[0],
        sender_facility=sender[1],
        feed=outcome.feed,
        received=received,
        raw=raw,
        transport=transport,
        state=state,
        ack_code=code,
        ack=answer,
        error_code=outcome.error.hl7_code if outcome.error is not None else "",
        reports=reports,
        outbox=outbox,
        replaces=replaces,
        scores=scores,
        packed_raw=packed_raw if raw is not None else None,
    )


def quarantine_record(
    transport: Literal["mllp", "http"],
    sender: tuple[str, str],
    control_id: str,
    raw: bytes,
    received: datetime,
    code: str,
    answer: bytes,
) -> MessageRecord:
    """The record of a message that crashed the daemon repeatedly: unprocessed, its answer stored for every resend."""
    return MessageRecord(
        control_id=control_id,
        sender_application=sender[0],
        sender_facility=sender[1],
        feed="",
        received=received,
        raw=raw,
        transport=transport,
        state="quarantined",
        ack_code=code,
        ack=answer,
        error_code=APPLICATION_INTERNAL_ERROR,
    )


# -- HL7 v2: ACK/NACK --------------------------------------------------------


def new_control_id() -> str:
    """A unique MSH-10 for one of our ACKs (20 hex characters, 80 random bits: fits every version)."""
    return os.urandom(10).hex()


def ack_builder(now: Callable[[], datetime], control_id: Callable[[], str] = new_control_id) -> AckBuilder:
    """An :data:`AckBuilder` dating its ACKs with ``now()`` and numbering them with ``control_id()``.

    It keeps what its answers take from each sender's header (:class:`AckTemplates`).
    """
    templates = AckTemplates()

    def ack(header: MessageHeader | None, outcome_code: str, errors: tuple[AckErrorDetail, ...]) -> tuple[str, bytes]:
        code = ack_code_for(header, outcome_code)
        return code, build_ack(header, code, now=now(), control_id=control_id(), errors=errors, templates=templates)

    return ack


def outcome_ack_code(outcome: Outcome) -> str:
    """The original-mode code for an Outcome: AA, AE (content) or AR (unsupported)."""
    if outcome.error is None:
        return "AA"
    return "AR" if outcome.error.hl7_code in REJECT_CODES else "AE"


def ack_errors(outcome: Outcome) -> tuple[AckErrorDetail, ...]:
    """The ERR content of an Outcome's answer (none when it has no error)."""
    return (AckErrorDetail.from_decode_error(outcome.error),) if outcome.error else ()


def internal_error(text: str) -> tuple[AckErrorDetail, ...]:
    """The ERR content of an error 207 of ours (``text`` names no value from the message)."""
    return (AckErrorDetail(APPLICATION_INTERNAL_ERROR, text=text),)


def mllp_record(
    raw: bytes | None,
    header: MessageHeader,
    outcome: Outcome,
    reports: tuple[ReportRecord, ...],
    *,
    ack: AckBuilder,
    destinations: Sequence[DestinationSettings],
    received: datetime,
    processing: int = 1,
    only: frozenset[int] | None = None,
    packed_raw: bytes | None = None,
) -> tuple[MessageRecord, Outcome]:
    """The record of one HL7 v2 message (its ACK included) and the outcome it was stored with.

    A message whose routing messages cannot be built is answered AE 207, and
    the returned outcome says so (rejected, with the exception's type).

    Args:
        raw: the bytes to keep (None: not kept).
        packed_raw: their stored form, made ahead by a worker process (None: the writer makes it).
        ack: builds our ACK (the caller's clock and control ids).
        processing: the processing number (1 on arrival; see
            :func:`listener.outbox.decision_id_for`).
        only: the report positions whose routing messages to queue (None: all).
    """
    code, ack_bytes = ack(header, outcome_ack_code(outcome), ack_errors(outcome))
    outbox: tuple[OutboxItem, ...] = ()
    if code in ("AA", "CA") and message_state(outcome) == "processed":
        outbox, routing_error = _routing_messages(
            outcome,
            destinations,
            received=received,
            sender=(header.sending_application, header.sending_facility),
            control_id=header.control_id,
            processing=processing,
            only=only,
        )
        if routing_error:
            code, ack_bytes = ack(header, "AE", internal_error("Routing message could not be built"))
            outcome = dataclasses.replace(outcome, error_type=routing_error, disposition=Disposition.REJECTED)
    record = _record(
        "mllp",
        (header.sending_application, header.sending_facility),
        header.control_id,
        outcome,
        raw=raw,
        received=received,
        state=message_state(outcome),
        code=code,
        answer=ack_bytes,
        reports=reports,
        outbox=outbox,
        packed_raw=packed_raw,
    )
    return record, outcome


@dataclass(frozen=True, slots=True)
class Recording:
    """How the daemon records a checked message, besides the pipeline: the same in a worker process.

    Attributes:
        hash_key: the installation key of the log line's keyed hashes
            (``listener.logs.keyed_hash``).
        destinations: where routing messages go (an accepted message's outbox rows).
        keep_raw: store the raw bytes (retention purges them later).
    """

    hash_key: bytes
    destinations: tuple[DestinationSettings, ...] = ()
    keep_raw: bool = True


@dataclass(frozen=True, slots=True)
class Tally:
    """What the metrics count of a newly processed message's reports (``Metrics.message_answered``).

    Attributes:
        reports: how many reports it had.
        findings: each finding's (category, severity, rule).
        buckets: each routed report's bucket.
    """

    reports: int = 0
    findings: tuple[tuple[str, str, str], ...] = ()
    buckets: tuple[str, ...] = ()


def tally(reports: Iterable[ReportOutcome]) -> Tally:
    """The :class:`Tally` of ``reports``."""
    results = tuple(reports)
    return Tally(
        len(results),
        tuple((f.category, f.severity.value, f.rule) for r in results for f in r.findings),
        tuple(r.route.bucket for r in results if r.route is not None),
    )


#: A checked HL7 v2 message as the daemon stores, logs and counts it: its record (the ACK in it),
#: the ``message_processed`` line's fields (keyed hashes, never patient data) and its metrics.
MllpChecked = tuple[MessageRecord, dict[str, Any], Tally]


def mllp_checked(
    raw: bytes,
    header: MessageHeader,
    outcome: Outcome,
    reports: tuple[ReportRecord, ...],
    *,
    ack: AckBuilder,
    recording: Recording,
    received: datetime,
    versions: Mapping[str, str],
    hashed: Callable[[str], str],
    packed_raw: bytes | None = None,
) -> MllpChecked:
    """What the daemon stores, logs and counts of one checked HL7 v2 message, made from its Outcome.

    The one function for every place an outcome is made: a worker process, the daemon's thread
    (``workers: 0``, a message run inline, a worker's policy that differs from the daemon's),
    the overrun's unchecked outcome and an internal error (docs/hardening.md, "Worker processes").

    Args:
        reports: the outcome's report records (with their stored forms when a worker made them).
        ack: builds our ACK (the caller's clock and control ids).
        recording: the destinations, whether the raw bytes are kept, the hash key.
        versions: the pipeline's :func:`~listener.pipeline.version_fields`.
        hashed: the keyed hash of an accession or a patient id for the log line.
        packed_raw: ``raw``'s stored form made ahead (None: the store's writer makes it).
    """
    record, outcome = mllp_record(
        raw if recording.keep_raw else None,
        header,
        outcome,
        reports,
        ack=ack,
        destinations=recording.destinations,
        received=received,
        packed_raw=packed_raw,
    )
    results = outcome.reports
    first = results[0] if results else None
    fields: dict[str, Any] = {
        "feed": outcome.feed,
        "message_type": header.message_type,
        "bucket": first and first.route and first.route.bucket or "",
        "finding_count": sum(len(r.findings) for r in results),
        "error_code": record.error_code,
        "state": record.state,
        **versions,
    }
    if any(f.rule == QA_TIMEOUT for r in results for f in r.findings):
        fields["qa"] = "timeout"
    if outcome.error_type:
        fields["error_type"] = outcome.error_type
    if outcome.error is not None and outcome.error.location:
        fields["location"] = outcome.error.location
    if first is not None:
        report = first.report
        fields["accession_h"] = hashed(report.accession) if report.accession else ""
        fields["patient_h"] = hashed(report.patient.id) if report.patient.id else ""
    return record, fields, tally(results)


# -- FHIR: HTTP status and OperationOutcome ----------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """One HTTP response: status, body (JSON bytes), extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = FHIR_JSON

    def envelope(self) -> bytes:
        """The bytes the store keeps as the message's answer (status and headers on the first line)."""
        head = {"status": self.status, "headers": [list(h) for h in self.headers]}
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + self.body


def answer_from_stored(ack: bytes) -> HttpAnswer:
    """Rebuild the answer sent the first time from the store's ``ack`` bytes."""
    head, _, body = ack.partition(b"\n")
    meta = json.loads(head)
    return HttpAnswer(int(meta["status"]), body, tuple((str(k), str(v)) for k, v in meta.get("headers", ())))


def _json(resource: JSON) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def outcome_answer(status: int, issues: Sequence[Issue], headers: tuple[tuple[str, str], ...] = ()) -> HttpAnswer:
    """An answer whose body is an OperationOutcome of ``issues``."""
    return HttpAnswer(status, _json(operation_outcome(issues)), headers)


def status_for_error(error: DecodeError) -> int:
    """The HTTP status for a refused body: 415, 400 (unparseable/invalid), 422 (our rules), 500 (our bug)."""
    if isinstance(error, FhirUnsupportedMediaType):
        return 415
    if error.hl7_code == APPLICATION_INTERNAL_ERROR and not isinstance(error, FhirDecodeError):
        return 500
    code = getattr(error, "issue_code", "")
    return 422 if code in _UNPROCESSABLE else 400


def error_answer(error: DecodeError) -> HttpAnswer:
    """The answer refusing a body: :func:`status_for_error` and the OperationOutcome of ``error``."""
    return HttpAnswer(status_for_error(error), _json(outcome_for_error(error)))


def parse_body(body: bytes) -> JSON | None:
    """The body as a JSON object, or None (the decoder then says precisely why)."""
    try:
        doc = json.loads(body.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _bundle_answer(doc: JSON, routed: Sequence[tuple[str, Any]], server_ids: Sequence[str]) -> JSON:
    """The transaction-response / batch-response: one entry per request entry, in order.

    A DiagnosticReport entry: ``201 Created``, its Location and its route as the
    outcome. Any other entry (Patient, ServiceRequest, ...): ``200 OK`` with an
    outcome saying it was read to resolve references and not kept as a resource.
    """
    by_where = {w: (route, server_id) for (w, route), server_id in zip(routed, server_ids, strict=False)}
    results = []
    for i, _entry in enumerate(objs(doc, "entry")):
        where = f"Bundle.entry[{i}].resource"
        if where in by_where:
            route, server_id = by_where[where]
            results.append(
                EntryResult("201 Created", f"DiagnosticReport/{server_id}", outcome_for_routes([(where, route)]))
            )
        else:
            note = Issue(
                "information", "informational", "read to resolve the reports' references; not kept as a resource", where
            )
            results.append(EntryResult("200 OK", "", operation_outcome((note,), check=False)))
    return bundle_response(str_of(doc, "type"), results)


def _report_expressions(doc: JSON, count: int) -> list[str]:
    """FHIRPath of each DiagnosticReport, in the decoder's (body) order."""
    if str_of(doc, "resourceType") == "DiagnosticReport":
        return ["DiagnosticReport"] * count
    found = [
        f"Bundle.entry[{i}].resource"
        for i, _, r in walk_entries(doc)
        if str_of(r, "resourceType") == "DiagnosticReport"
    ]
    return found if len(found) == count else ["Bundle"] * count


def http_record(
    raw: bytes | None,
    doc: JSON,
    client: FhirClient,
    outcome: Outcome,
    records: tuple[ReportRecord, ...],
    server_ids: Sequence[str],
    *,
    key_accepted: str,
    key_refused: str,
    key_failed: Callable[[], str],
    destinations: Sequence[DestinationSettings],
    received: datetime,
    processing: int = 1,
    only: frozenset[int] | None = None,
    replaces: str = "",
) -> tuple[MessageRecord, HttpAnswer, str]:
    """The record of one FHIR body, the answer stored with it, and a routing failure's error type ("" when none).

    A body whose routing messages cannot be built is answered 500 and stored
    rejected under a fresh key.

    Args:
        raw: the body to keep (None: not kept).
        key_accepted: the control id an accepted body is stored under (the
            resource's identity, or the rejected row a resend replaces).
        key_refused: the control id a refused body is stored under (made from its bytes).
        key_failed: makes a fresh control id for an internal failure, so a
            retry is processed again instead of answered 500 forever.
        processing, only: as for :func:`listener.outbox.outbox_items`.
        replaces: the key of a stored refusal of this body that an accepted
            result replaces (its resend); "" when none.
    """
    routing_error = ""
    outbox: tuple[OutboxItem, ...] = ()
    state: MessageState
    if outcome.error is not None:
        answer = error_answer(outcome.error)
        control_id = key_failed() if answer.status >= 500 else key_refused
        state = "rejected"
    else:
        where = _report_expressions(doc, len(outcome.reports))
        routed = [(w, r.route) for w, r in zip(where, outcome.reports, strict=True)]
        if str_of(doc, "type") in ("transaction", "batch") and str_of(doc, "resourceType") == "Bundle":
            answer = HttpAnswer(200, _json(_bundle_answer(doc, routed, server_ids)))
        else:
            location = f"/fhir/DiagnosticReport/{server_ids[0]}"
            answer = HttpAnswer(201, _json(outcome_for_routes(routed)), (("Location", location),))
        control_id = key_accepted
        state = "processed"
        outbox, routing_error = _routing_messages(
            outcome,
            destinations,
            received=received,
            sender=(client.name, client.facility),
            control_id=control_id,
            processing=processing,
            only=only,
        )
        if routing_error:
            answer = outcome_answer(500, (Issue("error", "exception", "routing message could not be built"),))
            control_id = key_failed()
            state = "rejected"
    record = _record(
        "http",
        (client.name, client.facility),
        control_id,
        outcome,
        raw=raw,
        received=received,
        state=state,
        code=str(answer.status),
        answer=answer.envelope(),
        reports=records,
        outbox=outbox,
        replaces=replaces if state == "processed" else "",
    )
    return record, answer, routing_error
