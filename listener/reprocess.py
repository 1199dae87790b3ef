"""Run a stored message through the current configuration again (``overread reprocess``).

Layer: application logic over the store interface; no Twisted, no logging.
The new processing is built by the same record builders the intakes use
(:mod:`listener.intake`) and stored by :meth:`Store.replace_processing`, which keeps the one it
replaces as a numbered earlier processing. See docs/operations.md,
"Reprocessing".

Routing messages: by default only the reports whose decision (bucket, pool,
priority) changed get a new routing message; ``resend_routes`` queues every
routed report's. A new processing's routing messages carry new MSH-10s (the
processing number is part of the decision id), so a RIS that deduplicates on
MSH-10 applies them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from listener.destinations import DestinationSettings
from listener.fhir.decode import DEFAULT_CLIENT, FhirClient
from listener.hl7v2.keys import shown_key
from listener.hl7v2.segments import read_header
from listener.intake import ack_builder, http_record, mllp_record, parse_body, report_records
from listener.pipeline import Outcome, Pipeline, process, process_fhir
from listener.server.priors import PriorLookup
from listener.sites import LiveFigures
from listener.store.base import MessageDetail, MessageRecord, Store

__all__ = ["Change", "Snapshot", "reprocess_message", "snapshot_of_detail"]

_FHIR_MEDIA_TYPE = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one processing decided, for comparing two of them.

    Attributes:
        reports: per report: (accession, bucket, pool, priority, finding rules sorted).
    """

    state: str
    ack_code: str
    error_code: str
    feed: str
    reports: tuple[tuple[str, str, str, str, tuple[str, ...]], ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (no patient data: accessions, codes and rule names)."""
        return {
            "state": self.state,
            "ack_code": self.ack_code,
            "error_code": self.error_code,
            "feed": self.feed,
            "reports": [
                {"accession": a, "bucket": b, "pool": p, "priority": pr, "findings": list(f)}
                for a, b, p, pr, f in self.reports
            ],
        }


@dataclass(frozen=True, slots=True)
class Change:
    """The result of reprocessing one message.

    Attributes:
        changed_reports: positions of the reports whose decision changed (or is new).
        queued: routing messages queued (0 for a dry run).
        processing: the new processing's number (None: dry run or skipped).
        skipped: why the message was not reprocessed ("" when it was).
    """

    message_pk: int
    control_id: str
    transport: str
    before: Snapshot
    after: Snapshot | None
    changed_reports: tuple[int, ...]
    queued: int
    processing: int | None
    skipped: str = ""

    @property
    def changed(self) -> bool:
        """True when the new processing decided anything differently."""
        return self.after is not None and self.after != self.before

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``overread reprocess --format json`` prints per message."""
        return {
            "message_pk": self.message_pk,
            "message_id": shown_key(self.control_id),
            "transport": self.transport,
            "before": self.before.as_dict(),
            "after": self.after.as_dict() if self.after else None,
            "changed": self.changed,
            "changed_reports": list(self.changed_reports),
            "queued": self.queued,
            "processing": self.processing,
            "skipped": self.skipped,
        }


def _route_key(route_json: str) -> tuple[str, str, str]:
    data = json.loads(route_json) or {}
    return str(data.get("bucket", "")), str(data.get("pool", "")), str(data.get("priority", ""))


def _rules(findings_json: str) -> tuple[str, ...]:
    return tuple(sorted(str(f.get("rule", "")) for f in json.loads(findings_json)))


def snapshot_of_detail(detail: MessageDetail) -> Snapshot:
    """The stored current processing as a Snapshot."""
    head = detail.summary
    return Snapshot(
        head.state,
        head.ack_code,
        head.error_code,
        head.feed,
        tuple((r.accession, *_route_key(r.route_json), _rules(r.findings_json)) for r in detail.reports),
    )


def _snapshot_of_record(record: MessageRecord) -> Snapshot:
    return Snapshot(
        record.state,
        record.ack_code,
        record.error_code,
        record.feed,
        tuple((r.accession, *_route_key(r.route_json), _rules(r.findings_json)) for r in record.reports),
    )


def _changed_positions(detail: MessageDetail, outcome: Outcome) -> tuple[int, ...]:
    old = {r.seq: _route_key(r.route_json) for r in detail.reports}
    changed = []
    for seq, result in enumerate(outcome.reports):
        route = result.route
        new = (route.bucket, route.pool, route.priority) if route is not None else ("", "", "")
        if seq not in old or old[seq] != new:
            changed.append(seq)
    return tuple(changed)


def reprocess_message(
    store: Store,
    detail: MessageDetail,
    *,
    pipeline: Pipeline,
    destinations: Sequence[DestinationSettings],
    clients: Mapping[str, FhirClient],
    now: datetime,
    actor: str,
    dry_run: bool = False,
    resend_routes: bool = False,
    live_figures: LiveFigures | None = None,
) -> Change:
    """Process one stored message's raw bytes again and (unless ``dry_run``) store the result.

    The QA clock is the message's original receive time (a turnaround rule
    judges the message as it arrived); the new routing messages are dated ``now``.
    ``live_figures``: the discrepancy figures routing reads, as the daemon
    would use them now (docs/routing.md); None: readers.yaml's snapshot.

    Raises:
        StoreError: the store failed, or the message was processed again meanwhile.
    """
    head = detail.summary
    before = snapshot_of_detail(detail)

    def skip(reason: str) -> Change:
        return Change(head.message_pk, head.control_id, head.transport, before, None, (), 0, None, reason)

    raw = detail.raw
    if raw is None:
        return skip("raw body not kept (purged by retention, or keep_raw is off)")
    number = head.processing + 1
    # The priors the daemon would have found: what the store holds from before the original receipt.
    priors = PriorLookup(store)
    if head.transport == "mllp":
        header = read_header(raw)
        if header is None:
            return skip("the stored body has no readable MSH segment")
        outcome = process(raw, pipeline, received_at=head.received, priors_for=priors, live_figures=live_figures)
        changed = _changed_positions(detail, outcome)
        only = None if resend_routes else frozenset(changed)
        record, outcome = mllp_record(
            raw,
            header,
            outcome,
            report_records(outcome),
            ack=ack_builder(lambda: now),
            destinations=destinations,
            received=now,
            processing=number,
            only=only,
        )
    else:
        doc = parse_body(raw)
        if doc is None:
            return skip("the stored body is not a JSON object")
        known = clients.get(head.sender_application)
        client = dataclasses.replace(
            known or DEFAULT_CLIENT,
            name=head.sender_application or DEFAULT_CLIENT.name,
            facility=head.sender_facility,
            feed=pipeline.mappings.for_sender(head.sender_application, head.sender_facility).name,
        )
        outcome = process_fhir(
            raw,
            pipeline,
            received_at=head.received,
            media_type=_FHIR_MEDIA_TYPE,
            client=client,
            priors_for=priors,
            live_figures=live_figures,
        )
        changed = _changed_positions(detail, outcome)
        only = None if resend_routes else frozenset(changed)
        # Keep the DiagnosticReport ids the sender was given in Location.
        old_ids = [str(json.loads(r.report_json).get("fhir_id") or "") for r in detail.reports]
        server_ids = [
            old_ids[i] if i < len(old_ids) and old_ids[i] else os.urandom(16).hex() for i in range(len(outcome.reports))
        ]
        record, _answer, _error = http_record(
            raw,
            doc,
            client,
            outcome,
            report_records(outcome, server_ids),
            server_ids,
            key_accepted=head.control_id,
            key_refused=head.control_id,
            key_failed=lambda: head.control_id,
            destinations=destinations,
            received=now,
            processing=number,
            only=only,
        )
    after = _snapshot_of_record(record)
    if dry_run:
        return Change(head.message_pk, head.control_id, head.transport, before, after, changed, 0, None)
    result = store.replace_processing(
        head.message_pk, record, now=now, superseded_by=f"reprocess by {actor}", expected_processing=head.processing
    )
    return Change(
        head.message_pk, head.control_id, head.transport, before, after, changed, len(record.outbox), result.processing
    )
