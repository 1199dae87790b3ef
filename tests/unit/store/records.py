"""Builders for store test values: small, valid records with overridable parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from listener.pipeline import Pipeline, process
from listener.serialize import finding_dict, report_dict
from listener.store import MessageRecord, OutboxItem, ReportRecord, SQLiteStore, Store
from listener.store.base import SaveResult
from tests.conftest import REPO

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
#: The chest radiograph sample: a final of accession A2611170088, reported at 10:34 -06:00.
CHEST = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
#: Its preliminary, reported an hour earlier.
CHEST_PRELIM = (
    CHEST.replace(b"|CR|F||", b"|CR|P||")
    .replace(b"||||||F|||", b"||||||P|||")
    .replace(b"|20261117103400-0600||CR|", b"|20261117093400-0600||CR|")
)
#: A final that adds a large pneumothorax the preliminary denies: a critical finding added (a "b" grade).
CHEST_PNEUMOTHORAX = CHEST.replace(
    b"No focal consolidation, pleural effusion or pneumothorax.",
    b"No focal consolidation or pleural effusion. There is a large right pneumothorax.",
).replace(b"No acute cardiopulmonary abnormality.", b"Large right pneumothorax.")


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


def processed(
    pipeline: Pipeline,
    raw: bytes,
    control_id: str,
    received: datetime,
    *,
    app: str | None = "RIS",
    facility: str | None = "HOSP",
    feed: str | None = "default",
    keep_raw: bool = True,
) -> MessageRecord:
    """The record of a real message decoded by ``pipeline``: processed, acknowledged AA, each report released.

    ``app``, ``facility`` and ``feed`` set to None are taken from the decoded
    message (its MSH-3, MSH-4 and feed), as the daemon takes them. The reports
    are empty when nothing decodes; ``keep_raw`` False stores the message with
    its raw bytes purged.
    """
    outcome = process(raw, pipeline, received_at=received)
    return MessageRecord(
        control_id=control_id,
        sender_application=app if app is not None else outcome.header.sending_application if outcome.header else "",
        sender_facility=facility if facility is not None else outcome.header.sending_facility if outcome.header else "",
        feed=feed if feed is not None else outcome.feed,
        received=received,
        raw=raw if keep_raw else None,
        transport="mllp",
        state="processed",
        ack_code="AA",
        ack=b"MSH|ACK\r",
        reports=tuple(
            ReportRecord(
                accession=r.report.accession,
                report_json=json.dumps(report_dict(r.report, include_patient=True, include_text=True)),
                findings_json=json.dumps([finding_dict(f) for f in r.findings]),
                route_json="null",
                bucket="release",
                patient_id=r.report.patient.id,
            )
            for r in outcome.reports
        ),
    )


def save_processed(store: Store, rec: MessageRecord) -> SaveResult:
    """Save a :func:`processed` record; fails the test when no report decoded."""
    assert rec.reports, f"{rec.control_id}: the message decodes to a report"
    return store.save(rec)


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
