"""An Outcome -> what the store keeps: the message record, its reports and routing messages.

Layer: pure (no I/O, no clock of its own). Both intakes and ``overread
reprocess`` build their records here, so a message reprocessed from the shell
is stored exactly as the daemon would store it on arrival (docs/operations.md,
"Reprocessing").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import datetime

from listener.destinations import DestinationSettings
from listener.errors import APPLICATION_INTERNAL_ERROR
from listener.hl7v2.ack import AckError
from listener.hl7v2.segments import MessageHeader
from listener.model import Disposition
from listener.outbox import outbox_items
from listener.pipeline import Outcome
from listener.serialize import finding_dict, report_dict, route_dict
from listener.store.base import MessageRecord, MessageState, OutboxItem, ReportRecord

__all__ = ["mllp_record", "message_state", "outcome_ack_code", "report_records"]

#: Table 0357 codes answered AR (the sender must not resend unchanged; 207 is
#: added separately for store failures, where it should resend).
REJECT_CODES = frozenset({"200", "201", "202", "203"})

_to_json = json.JSONEncoder(ensure_ascii=False).encode

#: Builds our ACK for a header: (original-mode code, errors) -> (code sent, ACK bytes).
AckBuilder = Callable[[MessageHeader, str, tuple[AckError, ...]], tuple[str, bytes]]


def outcome_ack_code(outcome: Outcome) -> str:
    """The original-mode code for an Outcome: AA, AE (content) or AR (unsupported)."""
    if outcome.error is None:
        return "AA"
    return "AR" if outcome.error.hl7_code in REJECT_CODES else "AE"


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
) -> tuple[MessageRecord, Outcome]:
    """The record of one HL7 v2 message and the outcome it was stored with.

    Routing messages are built only for a message we accept; one that cannot
    be built turns the answer into an AE 207 (never ACK a message whose
    routing cannot be queued) and the returned outcome says so.

    Args:
        raw: the bytes to keep (None: not kept).
        ack: builds our ACK (the caller's clock and control ids).
        processing: the processing number (1 on arrival; see
            :func:`listener.outbox.decision_id_for`).
        only: the report positions whose routing messages to queue (None: all).
    """
    errors = (AckError.from_decode_error(outcome.error),) if outcome.error else ()
    code, ack_bytes = ack(header, outcome_ack_code(outcome), errors)
    outbox: tuple[OutboxItem, ...] = ()
    if destinations and code in ("AA", "CA") and message_state(outcome) == "processed":
        try:
            outbox = outbox_items(outcome.reports, destinations, now=received,
                                  sender_application=header.sending_application,
                                  sender_facility=header.sending_facility, control_id=header.control_id,
                                  processing=processing, only=only)
        except Exception as exc:  # noqa: BLE001 - never ACK a message whose routing cannot be queued
            errors = (AckError(APPLICATION_INTERNAL_ERROR, text="Routing message could not be built"),)
            code, ack_bytes = ack(header, "AE", errors)
            outcome = dataclasses.replace(outcome, error_type=type(exc).__name__, disposition=Disposition.REJECTED)
    record = MessageRecord(
        control_id=header.control_id,
        sender_application=header.sending_application,
        sender_facility=header.sending_facility,
        feed=outcome.feed,
        received=received,
        raw=raw,
        transport="mllp",
        state=message_state(outcome),
        ack_code=code,
        ack=ack_bytes,
        error_code=outcome.error.hl7_code if outcome.error else "",
        reports=reports,
        outbox=outbox,
    )
    return record, outcome
