"""prior_studies(): a patient's earlier studies, by identifier and authority, latest report per accession."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

from listener.errors import StoreError
from listener.server.priors import PriorSource
from listener.store import ReportRecord, SQLiteStore, Store, StoreLocation, postgres_prior_reader
from listener.store.base import PriorStudy
from listener.store.sqlite import PriorReader

from .records import T0, record


def _report(
    accession: str,
    *,
    patient: str = "MRN1",
    authority: str = "HOSP",
    status: str = "final",
    observation: str | None = "2024-03-02T09:15:00-05:00",
    modality: str = "CT",
    region: str = "chest",
    code: str = "71250",
    report_time: str | None = None,
) -> ReportRecord:
    doc = {
        "accession": accession,
        "status": status,
        "procedure": {"code": code},
        "modality": modality,
        "body_region": region,
        "times": {"observation": observation, "report": report_time},
    }
    return ReportRecord(
        accession=accession,
        report_json=json.dumps(doc),
        findings_json="[]",
        route_json="null",
        bucket="release",
        patient_id=patient,
        patient_authority=authority,
    )


def _save(store: Store, control_id: str, *reports: ReportRecord, minutes: int = 0, state: str = "processed") -> None:
    store.save(record(control_id, reports=reports, received=T0 + timedelta(minutes=minutes), state=state))


LATER = T0 + timedelta(days=1)


def test_priors_of_the_patient_only(store: SQLiteStore) -> None:
    """Same identifier and authority only: another patient, or the same number of another authority, is not."""
    _save(store, "C1", _report("A1"))
    _save(store, "C2", _report("B1", patient="MRN2"))
    _save(store, "C3", _report("X1", authority="OTHER"))
    assert store.prior_studies("MRN1", "HOSP", before=LATER) == (
        PriorStudy("A1", date(2024, 3, 2), "CT", "chest", "71250"),
    )
    assert [p.accession for p in store.prior_studies("MRN2", "HOSP", before=LATER)] == ["B1"]
    assert store.prior_studies("MRN9", "HOSP", before=LATER) == ()


def test_latest_report_per_accession_and_cancelled_dropped(store: SQLiteStore) -> None:
    """A preliminary then a final of one accession is one prior (the final's facts); a cancelled one is none."""
    _save(store, "C1", _report("A1", status="preliminary", region="abdomen"), minutes=1)
    _save(store, "C2", _report("A1", status="final", region="chest"), minutes=2)
    _save(store, "C3", _report("A2", status="final"), minutes=3)
    _save(store, "C4", _report("A2", status="cancelled"), minutes=4)
    assert [(p.accession, p.body_region) for p in store.prior_studies("MRN1", "HOSP", before=LATER)] == [
        ("A1", "chest")
    ]


def test_before_exclude_limit_and_order(store: SQLiteStore) -> None:
    """Only messages received before ``before``; the current accession is left out; newest first, bounded."""
    for n in range(5):
        _save(store, f"C{n}", _report(f"A{n}"), minutes=n)
    _save(store, "R1", _report("REJ"), minutes=1, state="rejected")
    assert [p.accession for p in store.prior_studies("MRN1", "HOSP", before=T0 + timedelta(minutes=3))] == [
        "A2",
        "A1",
        "A0",
    ]
    assert [
        p.accession for p in store.prior_studies("MRN1", "HOSP", before=LATER, exclude_accession="A4", limit=2)
    ] == ["A3", "A2"]
    assert store.prior_studies("MRN1", "HOSP", before=LATER, limit=0) == ()


def test_study_date_falls_back_to_report_then_received_time(store: SQLiteStore) -> None:
    """No observation time: the report time's date, else the receive date; the sender's local date as given."""
    _save(store, "C1", _report("A1", observation=None, report_time="2024-02-10T23:30:00"), minutes=1)
    _save(store, "C2", _report("A2", observation=None), minutes=2)
    _save(store, "C3", _report("A3", observation="2024-01-05T23:30:00-05:00"), minutes=3)
    dates = {p.accession: p.study_date for p in store.prior_studies("MRN1", "HOSP", before=LATER)}
    assert dates == {"A1": date(2024, 2, 10), "A2": T0.date(), "A3": date(2024, 1, 5)}


def test_report_without_accession_is_no_prior(store: SQLiteStore) -> None:
    _save(store, "C1", _report(""))
    assert store.prior_studies("MRN1", "HOSP", before=LATER) == ()


def test_refuses_empty_patient_and_naive_time(store: SQLiteStore) -> None:
    with pytest.raises(ValueError):
        store.prior_studies("", "HOSP", before=LATER)
    with pytest.raises(ValueError):
        store.prior_studies("MRN1", "HOSP", before=datetime(2024, 5, 2))


def test_query_uses_the_patient_index(sqlite_store: SQLiteStore) -> None:
    """SQLite only: the statement prior_studies() runs is served by reports_patient, never a scan of every report."""
    store = sqlite_store
    seen: list[str] = []
    reader = store._reader
    reader.set_trace_callback(seen.append)
    try:
        store.prior_studies("MRN1", "HOSP", before=LATER)
    finally:
        reader.set_trace_callback(None)
    (statement,) = [s for s in seen if "reports" in s]
    plan = reader.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
    details = " / ".join(str(row[-1]) for row in plan)
    assert "reports_patient" in details
    assert "SCAN r0" not in details and "SCAN reports" not in details


def test_a_worker_processs_reader_answers_as_the_store(tmp_path: Path) -> None:
    """PriorReader (a worker process's own read-only connection): the store's answers, commits made
    after it opened included (listener/server/procworker.py)."""
    store = SQLiteStore.in_state_dir(tmp_path)
    try:
        _reader_answers_as(store, PriorReader(store.path))
    finally:
        store.close()


@pytest.mark.postgresql
def test_a_worker_processs_postgresql_reader_answers_as_the_store(pg_dsn: str) -> None:
    """The PostgreSQL PriorReader (a worker process's own session, opened at its first look-up):
    the store's answers, commits made after it opened included."""
    from listener.store.postgresql import PostgresStore
    from listener.store.postgresql import PriorReader as PgPriorReader

    store = PostgresStore(pg_dsn)
    try:
        _reader_answers_as(store, PgPriorReader(pg_dsn))
    finally:
        store.close()


def test_a_postgresql_reader_needs_a_postgresql_store_and_a_server(tmp_path: Path) -> None:
    """``postgres_prior_reader`` refuses settings that name no PostgreSQL store (a SQLite store's
    worker reads its file); a server that cannot be reached fails the look-up, not the opening,
    as a StoreError that names neither the URL nor the server's text (the worker then asks the
    daemon: listener/server/procworker.py)."""
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="no PostgreSQL store"):
        postgres_prior_reader(StoreLocation(tmp_path))
    missing = tmp_path / "no-server"
    reader = postgres_prior_reader(StoreLocation(tmp_path, url=f"postgresql://overread@/overread?host={missing}"))
    try:
        with pytest.raises(StoreError) as caught:
            reader.prior_studies("MRN1", "HOSP", before=LATER)
        assert str(missing) not in str(caught.value)
    finally:
        reader.close()
    unreadable = StoreLocation(tmp_path, url="postgresql://overread@/overread", password_file=tmp_path / "absent")
    with pytest.raises(StoreError, match="store_password_file"):
        postgres_prior_reader(unreadable)


class _Reader(PriorSource, Protocol):
    def close(self) -> None: ...


def _reader_answers_as(store: Store, reader: _Reader) -> None:
    _save(store, "C1", _report("A1"), minutes=1)
    _save(store, "C2", _report("A2", region="abdomen"), minutes=2)
    try:
        assert reader.prior_studies("MRN1", "HOSP", before=LATER) == store.prior_studies("MRN1", "HOSP", before=LATER)
        _save(store, "C3", _report("A3"), minutes=3)
        mine = reader.prior_studies("MRN1", "HOSP", before=LATER, exclude_accession="A1", limit=5)
        assert [p.accession for p in mine] == ["A3", "A2"]
        assert mine == store.prior_studies("MRN1", "HOSP", before=LATER, exclude_accession="A1", limit=5)
        with pytest.raises(ValueError):
            reader.prior_studies("", "HOSP", before=LATER)
    finally:
        reader.close()
    with pytest.raises(StoreError):
        reader.prior_studies("MRN1", "HOSP", before=LATER)  # closed: a StoreError, as a failed read


def test_a_reader_needs_the_store_file(tmp_path: Path) -> None:
    """No file: refused (a worker process then asks the daemon), and none is created."""
    with pytest.raises(StoreError):
        PriorReader(tmp_path / "overread.db")
    assert not (tmp_path / "overread.db").exists()
