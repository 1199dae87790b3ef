"""One FHIR POST body -> a stored message and its HTTP answer (the HTTP twin of ``mllp.Intake``).

Layer: reactor code around pure parts. The body is decoded, checked and routed
on the reactor thread (pure CPU, a few ms, as MLLP does); the duplicate lookup
runs on a thread; the record goes to the store's group-commit writer; the
answer is released only once the commit is durable.

Promises:

* 2xx only after the message, its reports and findings are committed.
* A duplicate POST (same client, and same resource id + ``meta.versionId``, or
  same identifier + status: see :func:`message_key`) gets the first answer
  again, status, Location and body byte for byte, and is not processed again.
* A refused body (4xx) is stored ``rejected`` under a key made from its bytes.
  It was never accepted, so any resend is processed again under the current
  configuration: refused again for the same reason, it gets the stored answer;
  accepted now, its result replaces the rejection as the message's next
  processing (docs/operations.md, "Reprocessing"). Unparseable bodies, wrong media types, oversize bodies
  and auth failures are not stored (logged by size only).
* Answers and log lines never quote a value from the body: OperationOutcome
  issues carry a code, a FHIRPath and our own words.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure

from listener.errors import APPLICATION_INTERNAL_ERROR, DecodeError, FhirDecodeError, FhirUnsupportedMediaType, StoreError
from listener.fhir import models
from listener.fhir.decode import DEFAULT_CLIENT, FhirClient
from listener.fhir.encode import (
    EntryResult,
    Issue,
    bundle_response,
    operation_outcome,
    outcome_for_error,
    outcome_for_routes,
)
from listener.destinations import DestinationSettings
from listener.fhir.resolve import JSON, obj_of, objs, str_of, walk_entries
from listener.logs import keyed_hash
from listener.model import Disposition
from listener.outbox import outbox_items
from listener.pipeline import Outcome, Pipeline, process_fhir, unchecked_outcome, version_fields
from listener.server.journal import Journal, journal_key
from listener.server.records import report_records
from listener.server.metrics import Metrics
from listener.server.mllp import QUARANTINE_TEXT, deferred_from_future
from listener.store.base import MessageRecord, MessageState, OutboxItem, ReportRecord, SaveResult, Store

from listener.server.runner import run_journaled

if TYPE_CHECKING:
    from listener.server.runner import PipelineRunner

__all__ = [
    "FHIR_JSON",
    "HttpAnswer",
    "HttpIntake",
    "answer_from_stored",
    "message_key",
    "outcome_answer",
    "status_for_error",
]

FHIR_JSON = "application/fhir+json; charset=utf-8"

#: Issue codes of bodies that are well-formed FHIR but break our rules (422);
#: other decode failures are bodies that fail parsing or basic validation (400).
_UNPROCESSABLE = frozenset({"not-supported", "business-rule", "invariant", "too-costly", "processing", "code-invalid"})

#: DiagnosticReport ids we assign (FHIR create: the server chooses the id).
_ID_BYTES = 16


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


def _identifier_key(resource: JSON) -> str:
    parts = sorted(f"{str_of(i, 'system')}|{str_of(i, 'value')}" for i in objs(resource, "identifier") if str_of(i, "value"))
    return ",".join(parts)


def _report_key(dr: JSON) -> str | None:
    rid, vid = str_of(dr, "id"), str_of(obj_of(dr, "meta"), "versionId")
    if rid and vid:
        return f"DiagnosticReport/{rid}/_history/{vid}"
    status = str_of(dr, "status")
    idents = _identifier_key(dr)
    if idents:
        return f"DiagnosticReport?identifier={idents}&status={status}"
    if rid:
        return f"DiagnosticReport/{rid}?status={status}"
    return None


def message_key(doc: JSON) -> str | None:
    """What makes two POSTs of one client "the same message" (None: nothing identifies it).

    A DiagnosticReport: its id and ``meta.versionId``; without a version, its
    identifiers and status (a preliminary and a final of one accession differ);
    without identifiers, its id and status. A Bundle: its id and version, or
    its identifier, or else the keys of all its DiagnosticReports.
    """
    kind = str_of(doc, "resourceType")
    if kind == "DiagnosticReport":
        return _report_key(doc)
    if kind != "Bundle":
        return None
    bid, vid = str_of(doc, "id"), str_of(obj_of(doc, "meta"), "versionId")
    if bid and vid:
        return f"Bundle/{bid}/_history/{vid}"
    ident = obj_of(doc, "identifier")
    if str_of(ident, "value"):
        return f"Bundle?identifier={str_of(ident, 'system')}|{str_of(ident, 'value')}"
    keys = [_report_key(r) for _, _, r in walk_entries(doc) if str_of(r, "resourceType") == "DiagnosticReport"]
    if keys and all(keys):
        return "Bundle[" + ";".join(k for k in keys if k) + "]"
    return None


def parse_body(body: bytes) -> JSON | None:
    """The body as a JSON object, or None (the decoder then says precisely why)."""
    try:
        doc = json.loads(body.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class HttpIntake:
    """Turns a POSTed FHIR body into a stored message and its answer (shared by all HTTP requests).

    Args:
        pipeline: a callable giving the current Pipeline (the MLLP intake's, so a
            SIGHUP swap applies to both transports at once).
        store: the durable store.
        hash_key: the installation key (log hashes, and message keys: a key built
            from identifiers must not be reversible from ``overread messages``).
        call_from_thread: ``reactor.callFromThread``.
        run_in_thread: ``threads.deferToThread`` (tests pass a direct call).
        metrics: counters to bump, or None.
        now: the clock (aware UTC).
        keep_raw: store raw bodies.
        destinations: where routing messages go (the MLLP intake's list): an
            accepted body's outbox rows are committed with it, as over MLLP.
        on_outbox: called on the reactor thread after a commit that stored
            outbox rows (wakes the outbound workers).
    """

    def __init__(
        self,
        pipeline: Callable[[], Pipeline],
        store: Store,
        *,
        hash_key: bytes,
        call_from_thread: Callable[..., object],
        run_in_thread: Callable[..., defer.Deferred[Any]],
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        keep_raw: bool = True,
        destinations: Callable[[], Sequence[DestinationSettings]] = lambda: (),
        on_outbox: Callable[[], object] | None = None,
        runner: PipelineRunner | None = None,
        journal: Journal | None = None,
    ) -> None:
        #: Worker threads and the time budget (None: the pipeline runs inline).
        self.runner = runner
        #: The receipt journal (None: none kept).
        self.journal = journal
        self.pipeline = pipeline
        self.store = store
        self.hash_key = hash_key
        self.call_from_thread = call_from_thread
        self.run_in_thread = run_in_thread
        self.metrics = metrics
        self.now = now
        self.keep_raw = keep_raw
        self.destinations = destinations
        self.on_outbox = on_outbox
        self.closing = False
        self.in_flight: set[defer.Deferred[HttpAnswer]] = set()

    def _control_id(self, prefix: str, text: bytes) -> str:
        return prefix + hmac.new(self.hash_key, text, hashlib.sha256).hexdigest()[:32]

    def _count(self, feed: str, answer: HttpAnswer, started: float | None = None, outcome: Outcome | None = None,
               *, duplicate: bool = False, client: FhirClient | None = None) -> None:
        if self.metrics is not None:
            seconds = time.perf_counter() - started if started is not None else None
            # A DiagnosticReport is answered 201, an accepted transaction or batch
            # Bundle 200: both were processed, and every report in them counts.
            reports = outcome.reports if outcome is not None and answer.status in (200, 201) else ()
            sender = (client.name, client.facility) if client is not None else None
            self.metrics.message_answered("http", feed, str(answer.status), seconds, reports, duplicate=duplicate,
                                          sender=sender)

    def receive(self, body: bytes, content_type: str | None, expected: str, client: FhirClient, log: Any) -> defer.Deferred[HttpAnswer]:
        """Process, store and answer one POST.

        Args:
            body: the request body (already capped in size).
            content_type: the Content-Type header.
            expected: "DiagnosticReport" (``POST /fhir/DiagnosticReport``) or "Bundle" (``POST /fhir``).
            client: the authenticated client's FHIR settings.
            log: the request's bound logger.

        Returns:
            A Deferred firing with the answer; it never fails.
        """
        started = time.perf_counter()
        received = self.now()
        pipeline = self.pipeline()
        feed = pipeline.mappings.for_sender(client.name, client.facility).name
        client = dataclasses.replace(client, feed=feed)
        mlog = log.bind(sender_app=client.name, sender_facility=client.facility, feed=feed)
        try:
            models.parse_media_type(content_type)
        except FhirDecodeError as exc:
            answer = outcome_answer(415, (Issue("error", exc.issue_code, exc.message),))
            mlog.warning("message_rejected", reason="unsupported_media_type", bytes=len(body), status=415)
            self._count(feed, answer, client=client)
            return defer.succeed(answer)
        doc = parse_body(body)
        if doc is None:
            # Not a JSON object: garbage, answered but not stored (docs/http-api.md).
            answer = self._refusal(body, content_type, client, pipeline, received)
            mlog.warning("frame_rejected", reason="unreadable", bytes=len(body), status=answer.status)
            self._count(feed, answer, client=client)
            return defer.succeed(answer)
        kind = str_of(doc, "resourceType")
        if kind != expected:
            where = "POST /fhir/DiagnosticReport" if expected == "DiagnosticReport" else "POST /fhir"
            answer = outcome_answer(400, (Issue("error", "not-supported", f"{where} takes a {expected}", "resourceType"),))
            mlog.warning("message_rejected", reason="wrong_resource_type", bytes=len(body), status=400)
            self._count(feed, answer, client=client)
            return defer.succeed(answer)
        key = message_key(doc)
        identity = self._control_id("fhir-", key.encode("utf-8")) if key else ""
        by_body = self._control_id("fhir-body-", body)
        mlog = mlog.bind(control_id=identity or by_body)

        def lookup() -> tuple[str, SaveResult] | None:
            for control_id in (identity, by_body):
                if control_id:
                    found = self.store.find_duplicate(client.name, client.facility, control_id)
                    if found is not None:
                        return control_id, found
            return None

        def looked_up(dup: tuple[str, SaveResult] | None) -> defer.Deferred[HttpAnswer]:
            if dup is not None and dup[1].state != "rejected":
                answer = answer_from_stored(dup[1].ack)
                mlog.info("message_duplicate", ack_code=dup[1].ack_code)
                self._count(feed, answer, started, duplicate=True, client=client)
                return defer.succeed(answer)
            # New, or rejected before: a rejected body was never accepted, so it
            # is processed again under the current configuration, and an
            # accepted result replaces the stored rejection (docs/operations.md).
            replaces = dup[0] if dup is not None else ""
            return self._process(body, content_type, doc, client, pipeline, received, started, identity, by_body, mlog,
                                 replaces)

        def lookup_failed(failure: Failure) -> defer.Deferred[HttpAnswer]:
            # The save below fails too (503), or catches the duplicate itself.
            return self._process(body, content_type, doc, client, pipeline, received, started, identity, by_body, mlog)

        d: defer.Deferred[HttpAnswer] = self.run_in_thread(lookup).addCallbacks(looked_up, lookup_failed)
        self.in_flight.add(d)

        def forget(answer: HttpAnswer) -> HttpAnswer:
            self.in_flight.discard(d)
            return answer

        return d.addBoth(forget)

    def _refusal(self, body: bytes, content_type: str | None, client: FhirClient, pipeline: Pipeline, received: datetime) -> HttpAnswer:
        outcome = process_fhir(body, pipeline, received_at=received, media_type=content_type, client=client)
        error = outcome.error or FhirDecodeError("the body is not a FHIR resource", issue_code="structure")
        return HttpAnswer(status_for_error(error), _json(outcome_for_error(error)))

    def _process(
        self,
        body: bytes,
        content_type: str | None,
        doc: JSON,
        client: FhirClient,
        pipeline: Pipeline,
        received: datetime,
        started: float,
        identity: str,
        by_body: str,
        mlog: Any,
        replaces: str = "",
    ) -> defer.Deferred[HttpAnswer]:
        jkey = journal_key("http", client.name, client.facility, identity or by_body)
        journal = self.journal
        meta = json.dumps([client.name, client.facility, identity or by_body])

        def serialize(outcome: Outcome) -> tuple[Outcome, tuple[ReportRecord, ...], tuple[str, ...]]:
            server_ids = tuple(uuid.uuid4().hex[:_ID_BYTES * 2] for _ in outcome.reports)
            # fhir_id: the id in Location; GET /fhir/DetectedIssue?implicated= finds it.
            return outcome, report_records(outcome, server_ids), server_ids

        processed, _ = run_journaled(
            self.runner, journal, (jkey, "http", body, meta),
            lambda interrupt: process_fhir(body, pipeline, received_at=received, media_type=content_type,
                                           client=client, interrupt=interrupt),
            lambda decoded: unchecked_outcome(decoded, pipeline, received_at=received),
            serialize,
            lambda: mlog.warning("pipeline_overrun", duration_ms=round((time.perf_counter() - started) * 1000, 3)),
        )

        def bug(failure: Failure) -> tuple[Outcome, tuple[ReportRecord, ...], tuple[str, ...]]:
            error = DecodeError("internal error while processing the resource", hl7_code=APPLICATION_INTERNAL_ERROR)
            outcome = Outcome(None, Disposition.REJECTED, error=error, feed=client.feed or "default",
                              error_type=failure.type.__name__ if failure.type else "Exception")
            return outcome, (), ()

        def save(result: tuple[Outcome, tuple[ReportRecord, ...], tuple[str, ...]]) -> defer.Deferred[HttpAnswer]:
            outcome, records, server_ids = result
            return self._save(body, doc, client, pipeline, received, started, identity, by_body, mlog,
                              outcome, records, server_ids, replaces)

        def forget(answer: Any) -> Any:
            if journal is not None:
                journal.end(jkey)
            return answer

        return processed.addErrback(bug).addCallback(save).addBoth(forget)

    def _save(
        self,
        body: bytes,
        doc: JSON,
        client: FhirClient,
        pipeline: Pipeline,
        received: datetime,
        started: float,
        identity: str,
        by_body: str,
        mlog: Any,
        outcome: Outcome,
        records: tuple[ReportRecord, ...],
        server_ids: tuple[str, ...],
        replaces: str = "",
    ) -> defer.Deferred[HttpAnswer]:
        record, answer, routing_error = http_record(
            body if self.keep_raw else None, doc, client, outcome, records, server_ids,
            key_accepted=identity or by_body, key_refused=by_body, replaces=replaces,
            key_failed=lambda: self._control_id("fhir-error-", uuid.uuid4().bytes),
            destinations=tuple(self.destinations()), received=received)
        if routing_error:
            mlog.error("message_rejected", reason="internal_error", error_type=routing_error)
        fields = _log_fields(outcome, pipeline, self.hash_key)
        try:
            future = self.store.submit(record)
        except StoreError:
            saved: defer.Deferred[SaveResult] = defer.fail(StoreError("store closed"))
        else:
            saved = deferred_from_future(future, self.call_from_thread)

        def stored(result: SaveResult) -> HttpAnswer:
            if result.duplicate:
                first = answer_from_stored(result.ack)
                mlog.info("message_duplicate", ack_code=result.ack_code)
                self._count(outcome.feed, first, started, duplicate=True, client=client)
                return first
            extra = {"processing": result.processing, "reason": "resend_after_rejection"} if result.processing > 1 else {}
            mlog.info("message_processed", ack_code=str(answer.status), status=answer.status,
                      duration_ms=round((time.perf_counter() - started) * 1000, 3), **fields, **extra)
            if record.outbox and self.on_outbox is not None:
                self.on_outbox()
            self._count(outcome.feed, answer, started, outcome, client=client)
            return answer

        def failed(failure: Failure) -> HttpAnswer:
            error_type = failure.type.__name__ if failure.type else "Exception"
            busy = outcome_answer(503, (Issue("error", "transient", "message store unavailable; retry later"),),
                                  (("Retry-After", "5"),))
            mlog.error("store_unavailable", error_type=error_type)
            mlog.info("message_processed", ack_code="503", status=503,
                      duration_ms=round((time.perf_counter() - started) * 1000, 3),
                      **{**fields, "error_code": APPLICATION_INTERNAL_ERROR, "error_type": error_type})
            self._count(outcome.feed, busy, started, client=client)
            return busy

        return saved.addCallbacks(stored, failed)

    def quarantine(self, body: bytes, meta: str, crashes: int, log: Any) -> defer.Deferred[HttpAnswer]:
        """Store a body that crashed the daemon ``crashes`` times, unprocessed, answered 500.

        ``meta`` is what :meth:`_process` journaled: the client's name, facility
        and the message's key, so a resend finds the stored answer.
        """
        name, facility, control_id = (str(v) for v in json.loads(meta))
        answer = outcome_answer(500, (Issue("error", "exception", QUARANTINE_TEXT),))
        record = MessageRecord(
            control_id=control_id, sender_application=name, sender_facility=facility, feed="",
            received=self.now(), raw=body, transport="http", state="quarantined", ack_code=str(answer.status),
            ack=answer.envelope(), error_code=APPLICATION_INTERNAL_ERROR,
        )
        mlog = log.bind(control_id=control_id, sender_app=name, sender_facility=facility)
        try:
            saved = deferred_from_future(self.store.submit(record), self.call_from_thread)
        except StoreError as exc:
            saved = defer.fail(exc)

        def stored(_: SaveResult) -> HttpAnswer:
            mlog.info("message_quarantined", status=answer.status, state="quarantined", count=crashes)
            return answer

        return saved.addCallback(stored)

    def drain(self) -> defer.Deferred[None]:
        """Fire once every POST being stored has its answer."""
        pending = list(self.in_flight)
        if not pending:
            return defer.succeed(None)
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)


def _bundle_answer(doc: JSON, routed: Sequence[tuple[str, Any]], server_ids: Sequence[str]) -> JSON:
    """The transaction-response / batch-response: one entry per request entry, in order.

    A DiagnosticReport entry: ``201 Created``, its Location and its route as the
    outcome. Any other entry (Patient, ServiceRequest, ...): ``200 OK`` with an
    outcome saying it was read to resolve references and not kept as a resource.
    """
    by_where = {w: (route, server_id) for (w, route), server_id in zip(routed, server_ids)}
    results = []
    for i, _entry in enumerate(objs(doc, "entry")):
        where = f"Bundle.entry[{i}].resource"
        if where in by_where:
            route, server_id = by_where[where]
            results.append(EntryResult("201 Created", f"DiagnosticReport/{server_id}", outcome_for_routes([(where, route)])))
        else:
            note = Issue("information", "informational", "read to resolve the reports' references; not kept as a resource", where)
            results.append(EntryResult("200 OK", "", operation_outcome((note,))))
    return bundle_response(str_of(doc, "type"), results)


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

    Pure: shared by the intake and ``overread reprocess``.

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
    state: MessageState
    if outcome.error is not None:
        answer = HttpAnswer(status_for_error(outcome.error), _json(outcome_for_error(outcome.error)))
        control_id = key_failed() if answer.status >= 500 else key_refused
        state = "rejected"
    else:
        where = _report_expressions(doc, len(outcome.reports))
        routed = [(w, r.route) for w, r in zip(where, outcome.reports)]
        if str_of(doc, "type") in ("transaction", "batch") and str_of(doc, "resourceType") == "Bundle":
            answer = HttpAnswer(200, _json(_bundle_answer(doc, routed, server_ids)))
        else:
            location = f"/fhir/DiagnosticReport/{server_ids[0]}"
            answer = HttpAnswer(201, _json(outcome_for_routes(routed)), (("Location", location),))
        control_id = key_accepted
        state = "processed"
    outbox: tuple[OutboxItem, ...] = ()
    if state == "processed" and destinations:
        # Routing messages are committed with the message, and only for a body we accept.
        try:
            outbox = outbox_items(outcome.reports, destinations, now=received, sender_application=client.name,
                                  sender_facility=client.facility, control_id=control_id, processing=processing,
                                  only=only)
        except Exception as exc:  # noqa: BLE001 - never answer 201 for a body whose routing cannot be queued
            routing_error = type(exc).__name__
            answer = outcome_answer(500, (Issue("error", "exception", "routing message could not be built"),))
            control_id = key_failed()
            state = "rejected"
    error = outcome.error
    record = MessageRecord(
        control_id=control_id,
        sender_application=client.name,
        sender_facility=client.facility,
        feed=outcome.feed,
        received=received,
        raw=raw,
        transport="http",
        state=state,
        ack_code=str(answer.status),
        ack=answer.envelope(),
        error_code=error.hl7_code if error is not None else "",
        reports=records,
        outbox=outbox,
        replaces=replaces if state == "processed" else "",
    )
    return record, answer, routing_error


def _report_expressions(doc: JSON, count: int) -> list[str]:
    """FHIRPath of each DiagnosticReport, in the decoder's (body) order."""
    if str_of(doc, "resourceType") == "DiagnosticReport":
        return ["DiagnosticReport"] * count
    found = [f"Bundle.entry[{i}].resource" for i, _, r in walk_entries(doc) if str_of(r, "resourceType") == "DiagnosticReport"]
    return found if len(found) == count else ["Bundle"] * count


def _log_fields(outcome: Outcome, pipeline: Pipeline, hash_key: bytes) -> dict[str, Any]:
    first = outcome.reports[0] if outcome.reports else None
    error = outcome.error
    fields: dict[str, Any] = {
        "message_type": "DiagnosticReport" if len(outcome.reports) <= 1 else "Bundle",
        "bucket": first.route.bucket if first is not None and first.route is not None else "",
        "finding_count": sum(len(r.findings) for r in outcome.reports),
        "count": len(outcome.reports),
        "error_code": getattr(error, "issue_code", "") or (error.hl7_code if error is not None else ""),
        **version_fields(pipeline),
    }
    if outcome.error_type:
        fields["error_type"] = outcome.error_type
    if error is not None and error.location:
        fields["location"] = error.location
    if first is not None:
        report = first.report
        fields["accession_h"] = keyed_hash(report.accession, hash_key) if report.accession else ""
        fields["patient_h"] = keyed_hash(report.patient.id, hash_key) if report.patient.id else ""
    return fields


# Re-exported for the resource layer: the anonymous client when no http_clients are configured.
ANONYMOUS = DEFAULT_CLIENT
