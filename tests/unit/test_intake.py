"""listener.intake: one Outcome -> the stored record, its routing messages and the answer, for both transports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from listener import intake
from listener.destinations import DestinationSettings
from listener.fhir.decode import DEFAULT_CLIENT
from listener.hl7v2.segments import read_header
from listener.intake import (
    QUARANTINE_TEXT,
    ack_builder,
    answer_from_stored,
    http_record,
    internal_error,
    internal_error_outcome,
    mllp_record,
    quarantine_record,
    report_records,
)
from listener.pipeline import Pipeline, process, process_fhir

NOW = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DESTINATIONS = (DestinationSettings("ris", "tcp:host=a:port=1"),)


def _ack() -> intake.AckBuilder:
    return ack_builder(lambda: NOW, lambda: "ACK1")


def _hl7(pipeline: Pipeline, name: str = "xr-chest-2v-normal.hl7") -> tuple[bytes, Any, Any]:
    raw = (SAMPLES / "hl7" / name).read_bytes()
    header = read_header(raw)
    assert header is not None
    return raw, header, process(raw, pipeline, received_at=NOW)


def _fhir(pipeline: Pipeline) -> tuple[bytes, Any, Any]:
    body = (SAMPLES / "fhir" / "xr-chest-2v-normal.json").read_bytes()
    client = DEFAULT_CLIENT
    outcome = process_fhir(body, pipeline, received_at=NOW, media_type="application/fhir+json", client=client)
    return body, json.loads(body), outcome


def _broken_routing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("LYNN AMANDA 19470205")

    monkeypatch.setattr(intake, "outbox_items", broken)


def test_mllp_record_of_an_accepted_message_queues_its_routing(pipeline: Pipeline) -> None:
    raw, header, outcome = _hl7(pipeline)
    record, stored = mllp_record(
        raw, header, outcome, report_records(outcome), ack=_ack(), destinations=DESTINATIONS, received=NOW
    )
    # The sample asks for enhanced acknowledgment (MSH-15/16): CA, not AA.
    assert (record.ack_code, record.state, record.error_code, record.transport) == ("CA", "processed", "", "mllp")
    assert [o.destination for o in record.outbox] == ["ris"]
    assert stored is outcome
    assert b"MSA|CA|" in record.ack


def test_mllp_record_answers_ae_207_when_routing_cannot_be_built(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, header, outcome = _hl7(pipeline)
    _broken_routing(monkeypatch)
    record, stored = mllp_record(
        raw, header, outcome, report_records(outcome), ack=_ack(), destinations=DESTINATIONS, received=NOW
    )
    assert (record.ack_code, record.state, record.outbox) == ("CE", "rejected", ())
    assert b"|207^Routing message could not be built" in record.ack and b"LYNN" not in record.ack
    assert (stored.disposition, stored.error_type) == ("rejected", "RuntimeError")


def test_http_record_answers_500_under_a_fresh_key_when_routing_cannot_be_built(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, doc, outcome = _fhir(pipeline)
    assert outcome.error is None
    ok, answer, error = http_record(
        body,
        doc,
        DEFAULT_CLIENT,
        outcome,
        (),
        ["id1"],
        key_accepted="K",
        key_refused="R",
        key_failed=lambda: "F",
        destinations=DESTINATIONS,
        received=NOW,
        replaces="OLD",
    )
    assert (answer.status, ok.control_id, ok.state, ok.replaces, error) == (201, "K", "processed", "OLD", "")
    assert len(ok.outbox) == 1 and answer_from_stored(ok.ack) == answer
    _broken_routing(monkeypatch)
    failed, answer, error = http_record(
        body,
        doc,
        DEFAULT_CLIENT,
        outcome,
        (),
        ["id1"],
        key_accepted="K",
        key_refused="R",
        key_failed=lambda: "F",
        destinations=DESTINATIONS,
        received=NOW,
        replaces="OLD",
    )
    assert (answer.status, failed.control_id, failed.state, failed.replaces, error) == (
        500,
        "F",
        "rejected",
        "",
        "RuntimeError",
    )
    assert failed.outbox == () and b"LYNN" not in failed.ack


def test_internal_error_outcome_is_answered_207_on_both_transports(pipeline: Pipeline) -> None:
    raw, header, _ = _hl7(pipeline)
    outcome = internal_error_outcome(header, "default", "OSError", "message")
    record, _ = mllp_record(raw, header, outcome, (), ack=_ack(), destinations=DESTINATIONS, received=NOW)
    assert (record.ack_code, record.state, record.error_code, record.outbox) == ("CE", "rejected", "207", ())
    assert b"internal error while processing the message" in record.ack
    body, doc, _ = _fhir(pipeline)
    outcome = internal_error_outcome(None, "default", "OSError", "resource")
    record, answer, _ = http_record(
        body,
        doc,
        DEFAULT_CLIENT,
        outcome,
        (),
        (),
        key_accepted="K",
        key_refused="R",
        key_failed=lambda: "F",
        destinations=DESTINATIONS,
        received=NOW,
    )
    assert (answer.status, record.control_id, record.state, record.error_code) == (500, "F", "rejected", "207")


def test_quarantine_record_keeps_the_body_and_the_answer(pipeline: Pipeline) -> None:
    raw, header, _ = _hl7(pipeline)
    code, ack = _ack()(header, "AE", internal_error(QUARANTINE_TEXT))
    record = quarantine_record("mllp", ("APP", "FAC"), "C1", raw, NOW, code, ack)
    assert (record.state, record.error_code, record.ack_code, record.raw, record.feed) == (
        "quarantined",
        "207",
        "CE",
        raw,
        "",
    )
    assert b"Message quarantined" in record.ack
