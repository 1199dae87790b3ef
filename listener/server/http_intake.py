"""One FHIR POST body -> a stored message and its HTTP answer (the HTTP twin of ``mllp.Intake``).

Layer: reactor code around pure parts. The body is decoded, checked and routed
as MLLP's messages are: on a worker process (``workers: N``) or thread
(``workers: 0``) within the budget, journaled first; the duplicate lookup
runs on a thread; the record goes to the store's group-commit writer; the
answer is released only once the commit is durable. The record and the
answer are built by :mod:`listener.intake` (pure, shared with MLLP and
``overread reprocess``); the save goes through :mod:`listener.server.bridge`.

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
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from listener.destinations import DestinationSettings
from listener.errors import APPLICATION_INTERNAL_ERROR, FhirDecodeError
from listener.fhir import models
from listener.fhir.decode import FhirClient
from listener.fhir.encode import Issue
from listener.fhir.resolve import JSON, obj_of, objs, str_of, walk_entries
from listener.intake import (
    FHIR_JSON,
    QUARANTINE_TEXT,
    FhirChecked,
    HttpAnswer,
    answer_from_stored,
    error_answer,
    fhir_records,
    http_record,
    internal_error_outcome,
    outcome_answer,
    parse_body,
    quarantine_record,
    status_for_error,
    tally,
)
from listener.logs import keyed_hash
from listener.pipeline import (
    Outcome,
    Pipeline,
    PriorsFor,
    decode_fhir_only,
    process_fhir,
    unchecked_outcome,
    version_fields,
    versions_of,
)
from listener.server.bridge import StoreShell, duration_ms, error_type, resend_fields
from listener.server.journal import Journal, journal_key
from listener.server.metrics import Metrics
from listener.server.runner import PipelineRunner, PipelineTask
from listener.sites import LiveFigures
from listener.store.base import ReportRecord, SaveResult, Store

__all__ = [
    "FHIR_JSON",
    "HttpAnswer",
    "HttpIntake",
    "answer_from_stored",
    "message_key",
    "outcome_answer",
    "parse_body",
    "status_for_error",
]


def _identifier_key(resource: JSON) -> str:
    parts = sorted(
        f"{str_of(i, 'system')}|{str_of(i, 'value')}" for i in objs(resource, "identifier") if str_of(i, "value")
    )
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


class HttpIntake(StoreShell):
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
        priors_for: looks up a decoded report's prior studies (on the worker
            thread); None: priors unknown.
        live_figures: the cached live peer-review figures for routing (the
            MLLP intake's, listener/server/live_rates.py); None: readers.yaml only.
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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        keep_raw: bool = True,
        destinations: Callable[[], Sequence[DestinationSettings]] = lambda: (),
        on_outbox: Callable[[], object] | None = None,
        runner: PipelineRunner | None = None,
        journal: Journal | None = None,
        priors_for: PriorsFor | None = None,
        live_figures: Callable[[], LiveFigures | None] = lambda: None,
    ) -> None:
        super().__init__(
            store,
            hash_key=hash_key,
            call_from_thread=call_from_thread,
            now=now,
            keep_raw=keep_raw,
            metrics=metrics,
            on_outbox=on_outbox,
            runner=runner,
            journal=journal,
        )
        self.priors_for = priors_for
        self.live_figures = live_figures
        self.pipeline = pipeline
        self.run_in_thread = run_in_thread
        self.destinations = destinations

    def _control_id(self, prefix: str, text: bytes) -> str:
        return prefix + hmac.new(self.hash_key, text, hashlib.sha256).hexdigest()[:32]

    def _count(
        self,
        feed: str,
        answer: HttpAnswer,
        started: float | None = None,
        outcome: Outcome | None = None,
        *,
        duplicate: bool = False,
        client: FhirClient | None = None,
    ) -> None:
        if self.metrics is not None:
            seconds = time.perf_counter() - started if started is not None else None
            # A DiagnosticReport is answered 201, an accepted transaction or batch
            # Bundle 200: both were processed, and every report in them counts.
            counted = tally(outcome.reports) if outcome is not None and answer.status in (200, 201) else None
            sender = (client.name, client.facility) if client is not None else None
            self.metrics.message_answered(
                "http", feed, str(answer.status), seconds, counted, duplicate=duplicate, sender=sender
            )

    def receive(
        self, body: bytes, content_type: str | None, expected: str, client: FhirClient, log: Any
    ) -> defer.Deferred[HttpAnswer]:
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
            answer = outcome_answer(
                400, (Issue("error", "not-supported", f"{where} takes a {expected}", "resourceType"),)
            )
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
            return self._process(
                body, content_type, doc, client, pipeline, received, started, identity, by_body, mlog, replaces
            )

        def lookup_failed(failure: Failure) -> defer.Deferred[HttpAnswer]:
            # The save below fails too (503), or catches the duplicate itself.
            return self._process(body, content_type, doc, client, pipeline, received, started, identity, by_body, mlog)

        d: defer.Deferred[HttpAnswer] = self.run_in_thread(lookup).addCallbacks(looked_up, lookup_failed)
        return self.in_flight.track(d)

    def _refusal(
        self, body: bytes, content_type: str | None, client: FhirClient, pipeline: Pipeline, received: datetime
    ) -> HttpAnswer:
        outcome = process_fhir(body, pipeline, received_at=received, media_type=content_type, client=client)
        error = outcome.error or FhirDecodeError("the body is not a FHIR resource", issue_code="structure")
        return error_answer(error)

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
        meta = json.dumps([client.name, client.facility, identity or by_body])
        figures = self.live_figures()

        def bug(failure: Failure) -> FhirChecked:
            return internal_error_outcome(None, client.feed or "default", error_type(failure), "resource"), (), ()

        def save(result: FhirChecked) -> defer.Deferred[HttpAnswer]:
            outcome, records, server_ids = result
            return self._save(
                body,
                doc,
                client,
                pipeline,
                received,
                started,
                identity,
                by_body,
                mlog,
                outcome,
                records,
                server_ids,
                replaces,
            )

        task = PipelineTask(
            body,
            received,
            figures,
            versions_of(pipeline),
            (jkey, "http", body, meta),
            lambda: decode_fhir_only(body, pipeline, received_at=received, media_type=content_type, client=client),
            kind="fhir",
            options=(content_type, client),
        )
        answered, _ = self.journaled(
            (jkey, "http", body, meta),
            lambda interrupt: process_fhir(
                body,
                pipeline,
                received_at=received,
                media_type=content_type,
                client=client,
                priors_for=self.priors_for,
                interrupt=interrupt,
                live_figures=figures,
            ),
            lambda decoded: unchecked_outcome(decoded, pipeline, received_at=received),
            fhir_records,
            lambda: mlog.warning("pipeline_overrun", duration_ms=duration_ms(started)),
            failed=bug,
            save=save,
            quarantined=lambda crashes: self.quarantine(body, meta, crashes, mlog),
            task=task,
        )
        return answered

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
            body if self.keep_raw else None,
            doc,
            client,
            outcome,
            records,
            server_ids,
            key_accepted=identity or by_body,
            key_refused=by_body,
            replaces=replaces,
            key_failed=lambda: self._control_id("fhir-error-", uuid.uuid4().bytes),
            destinations=tuple(self.destinations()),
            received=received,
        )
        if routing_error:
            mlog.error("message_rejected", reason="internal_error", error_type=routing_error)
        fields = _log_fields(outcome, pipeline, self.hash_key)

        def duplicate(result: SaveResult) -> HttpAnswer:
            first = answer_from_stored(result.ack)
            mlog.info("message_duplicate", ack_code=result.ack_code)
            self._count(outcome.feed, first, started, duplicate=True, client=client)
            return first

        def processed(result: SaveResult) -> HttpAnswer:
            mlog.info(
                "message_processed",
                ack_code=str(answer.status),
                status=answer.status,
                duration_ms=duration_ms(started),
                **fields,
                **resend_fields(result),
            )
            self._count(outcome.feed, answer, started, outcome, client=client)
            return answer

        def unavailable(failure_type: str) -> HttpAnswer:
            busy = outcome_answer(
                503, (Issue("error", "transient", "message store unavailable; retry later"),), (("Retry-After", "5"),)
            )
            mlog.error("store_unavailable", error_type=failure_type)
            mlog.info(
                "message_processed",
                ack_code="503",
                status=503,
                duration_ms=duration_ms(started),
                **{**fields, "error_code": APPLICATION_INTERNAL_ERROR, "error_type": failure_type},
            )
            self._count(outcome.feed, busy, started, client=client)
            return busy

        return self.commit(record, duplicate=duplicate, processed=processed, unavailable=unavailable)

    def quarantine(self, body: bytes, meta: str, crashes: int, log: Any) -> defer.Deferred[HttpAnswer]:
        """Store a body that crashed the daemon ``crashes`` times, unprocessed, answered 500.

        ``meta`` is what :meth:`_process` journaled: the client's name, facility
        and the message's key, so a resend finds the stored answer.
        """
        name, facility, control_id = (str(v) for v in json.loads(meta))
        answer = outcome_answer(500, (Issue("error", "exception", QUARANTINE_TEXT),))
        record = quarantine_record(
            "http", (name, facility), control_id, body, self.now(), str(answer.status), answer.envelope()
        )
        mlog = log.bind(control_id=control_id, sender_app=name, sender_facility=facility)
        saved = self.submit(record)

        def stored(_: SaveResult) -> HttpAnswer:
            mlog.info("message_quarantined", status=answer.status, state="quarantined", count=crashes)
            return answer

        return saved.addCallback(stored)


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
