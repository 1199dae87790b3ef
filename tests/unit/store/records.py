"""Builders for store test values: small, valid records with overridable parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from listener.store import MessageRecord, OutboxItem, ReportRecord, SQLiteStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def report(accession: str = "ACC1", *, text: str = "no acute findings") -> ReportRecord:
    """A report record whose JSON parts are valid."""
    return ReportRecord(
        accession=accession,
        report_json=json.dumps({"accession": accession, "text": text}),
        findings_json="[]",
        route_json=json.dumps({"bucket": "release"}),
        bucket="release",
    )


def item(accession: str = "ACC1", control_id: str = "OUT1", destination: str = "ris") -> OutboxItem:
    """An outbox item whose payload names its control id."""
    return OutboxItem(destination, accession, control_id, f"ORM|{control_id}".encode())


def record(
    control_id: str = "C1",
    *,
    app: str = "RIS",
    facility: str = "HOSP",
    ack: bytes = b"MSH|ACK\rMSA|AA|C1\r",
    ack_code: str = "AA",
    received: datetime = T0,
    raw: bytes | None = b"MSH|^~\\&|RIS|HOSP\r",
    reports: tuple[ReportRecord, ...] | None = None,
    outbox: tuple[OutboxItem, ...] = (),
    state: str = "processed",
) -> MessageRecord:
    """A processed MLLP message with one report unless told otherwise."""
    return MessageRecord(
        control_id=control_id,
        sender_application=app,
        sender_facility=facility,
        feed="default",
        received=received,
        raw=raw,
        transport="mllp",
        state=state,  # type: ignore[arg-type]
        ack_code=ack_code,
        ack=ack,
        reports=(report(),) if reports is None else reports,
        outbox=outbox,
    )


def minutes(n: float) -> timedelta:
    """A timedelta of ``n`` minutes."""
    return timedelta(minutes=n)


POISON = "POISON"


def poison_reports(store: SQLiteStore, message: str = "poisoned") -> None:
    """Make the writer fail any report whose accession is POISON, with SQLite error ``message``.

    A TEMP trigger on the writer's own connection: it fails a save half-way
    (after its message row and earlier reports are written), as a real
    constraint or I/O error would, without a test-only path in the store.
    """
    sql = (
        "CREATE TEMP TRIGGER poison BEFORE INSERT ON reports"
        f" WHEN NEW.accession = '{POISON}' BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )
    store.writer.execute(lambda conn: conn.execute(sql)).result()
