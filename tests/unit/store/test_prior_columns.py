"""Prior look-ups from the report rows' own columns (docs/store.md, "Prior look-up columns"):
corrections, addenda, resends and cancellations on every Store; the same answers as the query that
read the report JSON (kept here as the reference); schema step 11's back-fill on SQLite and
PostgreSQL (and killed half way); `overread store copy` carries the columns."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.store import ReportRecord, SQLiteStore, Store
from listener.store.base import PriorStudy, prior_studies_of
from listener.store.compact import register_functions
from listener.store.operations import ts
from listener.store.rows import PRIOR_COLUMNS, prior_facts, prior_values
from listener.store.sqlite import DB_FILENAME
from tests.postgres import as_url
from tests.unit.cli.test_store import run

from .records import T0, record

#: The SQLite look-up before schema step 11: it read each accession's newest report JSON.
JSON_QUERY_SQLITE = (
    "WITH latest AS MATERIALIZED (SELECT r.id, r.accession, overread_json(r.report_json) AS j, m.received"
    " FROM (SELECT max(r0.id) AS id FROM reports r0 JOIN messages m0 ON m0.id = r0.message_id"
    " WHERE r0.id IN (SELECT id FROM reports WHERE patient_id = ? AND patient_authority = ?"
    " EXCEPT SELECT id FROM reports WHERE accession IN ('', ?))"
    " AND m0.state = 'processed' AND m0.received < ? GROUP BY r0.accession) ids"
    " JOIN reports r ON r.id = ids.id JOIN messages m ON m.id = r.message_id)"
    " SELECT accession,"
    " substr(coalesce(json_extract(j, '$.times.observation'), json_extract(j, '$.times.report'), received),"
    " 1, 10),"
    " coalesce(json_extract(j, '$.modality'), ''),"
    " coalesce(json_extract(j, '$.body_region'), ''),"
    " coalesce(json_extract(j, '$.procedure.code'), '')"
    " FROM latest WHERE coalesce(json_extract(j, '$.status'), '') != 'cancelled'"
    " ORDER BY id DESC LIMIT ?"
)
#: The PostgreSQL look-up before schema step 11.
JSON_QUERY_PG = (
    "SELECT r.accession,"
    " left(coalesce(j.doc #>> '{times,observation}', j.doc #>> '{times,report}',"
    " to_char(m.received AT TIME ZONE 'UTC', 'YYYY-MM-DD')), 10),"
    " coalesce(j.doc ->> 'modality', ''), coalesce(j.doc ->> 'body_region', ''),"
    " coalesce(j.doc #>> '{procedure,code}', '')"
    " FROM (SELECT max(r0.id) AS id FROM reports r0 JOIN messages m0 ON m0.id = r0.message_id"
    " WHERE r0.patient_id = %s AND r0.patient_authority = %s AND r0.accession NOT IN ('', %s)"
    " AND m0.state = 'processed' AND m0.received < %s GROUP BY r0.accession) latest"
    " JOIN reports r ON r.id = latest.id JOIN messages m ON m.id = r.message_id"
    " CROSS JOIN LATERAL (SELECT r.report_json::json AS doc) j"
    " WHERE coalesce(j.doc ->> 'status', '') != 'cancelled'"
    " ORDER BY r.id DESC LIMIT %s"
)


def _report(accession: str, patient: str = "MRN1", **doc: Any) -> ReportRecord:
    body = {"accession": accession, "status": "final", "modality": "CT", "body_region": "chest"}
    body["procedure"] = {"code": "71250"}
    body["times"] = {"observation": "2024-03-02T09:15:00-05:00", "report": None}
    body.update(doc)
    return ReportRecord(
        accession=accession,
        report_json=json.dumps(body),
        findings_json="[]",
        route_json="null",
        bucket="release",
        patient_id=patient,
        patient_authority="HOSP",
    )


LATER = T0 + timedelta(days=1)


def _at(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def test_corrections_addenda_resends_and_cancellations(store: Store) -> None:
    """Each accession's newest report among processed messages received before ``before`` decides:
    a correction's facts, an addendum, one prior for a resent final, a cancellation drops it and a
    later final brings it back; a correction received later or in a rejected message is not seen;
    the limit counts priors left after cancelled ones are dropped."""
    store.save(record("C1", reports=(_report("A1", body_region="abdomen"),), received=_at(1)))
    store.save(record("C2", reports=(_report("A1", status="corrected", body_region="pelvis"),), received=_at(2)))
    store.save(record("C3", reports=(_report("A2"),), received=_at(3)))
    addendum = _report("A2", sections=[{"kind": "addendum", "text": "see below"}], modality="MR")
    store.save(record("C4", reports=(addendum,), received=_at(4)))
    store.save(record("C5", reports=(_report("A3", modality="US"),), received=_at(5)))
    store.save(record("C6", reports=(_report("A3", modality="US"),), received=_at(6)))  # a resend
    store.save(record("C7", reports=(_report("A4"),), received=_at(7)))
    store.save(record("C8", reports=(_report("A4", status="cancelled"),), received=_at(8)))
    store.save(record("C9", reports=(_report("A5", status="cancelled"),), received=_at(9)))
    store.save(record("C10", reports=(_report("A5", procedure={"code": "74177"}),), received=_at(10)))
    store.save(record("C11", reports=(_report("A6", modality="XR"),), received=_at(11)))
    store.save(record("C12", reports=(_report("A6", status="corrected", modality="NM"),), received=_at(30)))
    bad = _report("A6", status="corrected", modality="PT")
    store.save(record("C13", reports=(bad,), received=_at(12), state="rejected", ack_code="AE"))
    for n in range(5):  # the report's own accession, resent: never a prior of itself
        store.save(record(f"OWN{n}", reports=(_report("OWN"),), received=_at(13 + n)))
    day = date(2024, 3, 2)
    expected = (
        PriorStudy("A6", day, "XR", "chest", "71250"),
        PriorStudy("A5", day, "CT", "chest", "74177"),
        PriorStudy("A3", day, "US", "chest", "71250"),
        PriorStudy("A2", day, "MR", "chest", "71250"),
        PriorStudy("A1", day, "CT", "pelvis", "71250"),
    )
    assert store.prior_studies("MRN1", "HOSP", before=_at(20), exclude_accession="OWN") == expected
    assert store.prior_studies("MRN1", "HOSP", before=_at(20), exclude_accession="OWN", limit=2) == expected[:2]
    assert store.prior_studies("MRN1", "HOSP", before=LATER, exclude_accession="OWN")[0].modality == "NM"
    assert [p.accession for p in store.prior_studies("MRN1", "HOSP", before=_at(8), exclude_accession="A1")] == [
        "A4",
        "A3",
        "A2",
    ]
    assert [p.accession for p in store.prior_studies("MRN1", "HOSP", before=_at(20))][:2] == ["OWN", "A6"]


def _corpus(seed: int) -> list[tuple[str, datetime, str, tuple[ReportRecord, ...]]]:
    """Messages (control id, received, state, reports) of a few patients: finals, corrections,
    cancellations, resends, odd times, rejected messages, reports without an accession."""
    rng = random.Random(seed)
    out = []
    for n in range(160):
        patient = rng.choice(("MRN1", "MRN2", "MRN3"))
        accession = rng.choice(["", *(f"A{k}" for k in range(12))])
        times = rng.choice(
            (
                {"observation": "2024-03-02T09:15:00-05:00", "report": None},
                {"observation": None, "report": "2024-02-10T23:30:00"},
                {"observation": None, "report": None},
                {"observation": "", "report": "2024-01-01"},
                {"observation": "garbled"},
                {},
            )
        )
        doc: dict[str, Any] = {
            "status": rng.choice(("final", "final", "corrected", "preliminary", "cancelled", None)),
            "modality": rng.choice(("CT", "MR", None, "")),
            "body_region": rng.choice(("chest", None)),
            "procedure": rng.choice(({"code": "71250"}, {"code": None}, {}, None)),
            "times": times,
        }
        reports = (_report(accession, patient, **doc),)
        if rng.random() < 0.1:
            reports += (_report(f"B{n}", patient),)
        state = "rejected" if rng.random() < 0.1 else "processed"
        out.append((f"M{n}", T0 + timedelta(minutes=rng.randrange(0, 600)), state, reports))
    return out


def _fill(store: Store, seed: int = 7) -> None:
    for control, received, state, reports in _corpus(seed):
        store.save(record(control, reports=reports, received=received, state=state, ack_code="AA"))


def _questions() -> Iterator[tuple[str, datetime, str, int]]:
    for patient in ("MRN1", "MRN2", "MRN3", "MRN9"):
        for minutes in (0, 100, 300, 601):
            for exclude in ("", "A1", "A5"):
                for limit in (1, 3, 50):
                    yield patient, T0 + timedelta(minutes=minutes), exclude, limit


def _answers(ask: Callable[[str, datetime, str, int], Sequence[PriorStudy]]) -> list[Sequence[PriorStudy]]:
    return [ask(*question) for question in _questions()]


def _store_answers(store: Store) -> list[Sequence[PriorStudy]]:
    return _answers(lambda p, b, e, n: store.prior_studies(p, "HOSP", before=b, exclude_accession=e, limit=n))


def _sqlite_json_answers(db: Path) -> list[Sequence[PriorStudy]]:
    conn = sqlite3.connect(db)
    register_functions(conn)
    try:
        return _answers(lambda p, b, e, n: prior_studies_of(conn.execute(JSON_QUERY_SQLITE, (p, "HOSP", e, ts(b), n))))
    finally:
        conn.close()


def _prior_rows_sqlite(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT id, {', '.join(PRIOR_COLUMNS)} FROM reports ORDER BY id").fetchall()
    finally:
        conn.close()


def _migrated_answers_as_before(
    json_answers: Callable[[], list[Sequence[PriorStudy]]],
    open_store: Callable[[], Any],
    prior_rows: Callable[[], list[tuple[Any, ...]]],
    answers: list[Sequence[PriorStudy]],
    written: list[tuple[Any, ...]],
) -> None:
    """A store turned back into version 10 still answers as before through the JSON query; opened,
    it runs step 11 alone, answers the same from the columns, and holds what the saves wrote."""
    assert json_answers() == answers
    store = open_store()
    try:
        assert [m.version for m in store.migrations_run] == [11]
        assert _store_answers(store) == answers
    finally:
        store.close()
    assert prior_rows() == written


def _to_v10_sqlite(db: Path) -> None:
    """Turn a current file into one as version 10 left it: no prior columns, the old patient index."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP INDEX reports_patient")
        for column in PRIOR_COLUMNS:
            conn.execute(f"ALTER TABLE reports DROP COLUMN {column}")
        conn.execute("CREATE INDEX reports_patient ON reports (patient_id, patient_authority)")
        conn.execute("PRAGMA user_version = 10")
    finally:
        conn.close()


def test_sqlite_answers_as_the_json_query_and_step_11_back_fills_them(tmp_path: Path) -> None:
    """SQLite: the look-up from columns gives the JSON query's answers; a store at version 10
    migrated to 11 holds the same column values a save writes, and gives the same answers."""
    state = tmp_path / "state"
    store = SQLiteStore.in_state_dir(state)
    try:
        _fill(store)
        answers = _store_answers(store)
    finally:
        store.close()
    db = state / DB_FILENAME
    assert answers == _sqlite_json_answers(db)
    assert sum(len(a) for a in answers) > 100
    written = _prior_rows_sqlite(db)
    _to_v10_sqlite(db)
    _migrated_answers_as_before(
        lambda: _sqlite_json_answers(db), lambda: SQLiteStore(db), lambda: _prior_rows_sqlite(db), answers, written
    )


def test_store_migrate_back_fills_a_version_10_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`overread store migrate` (a connection without the store's SQL functions) runs step 11 too."""
    state = tmp_path / "state"
    store = SQLiteStore.in_state_dir(state)
    try:
        _fill(store, seed=3)
    finally:
        store.close()
    db = state / DB_FILENAME
    written = _prior_rows_sqlite(db)
    _to_v10_sqlite(db)
    status, _, _ = run(capsys, "migrate", "--state-dir", str(state))
    assert status == 0
    assert _prior_rows_sqlite(db) == written


@pytest.mark.parametrize(
    "doc",
    [
        {"times": {"observation": "2024-03-02T09:15:00-05:00"}, "modality": "CT"},
        {"times": {"observation": None, "report": "2024-02-10T23:30:00"}, "status": "cancelled"},
        {"times": {"observation": "", "report": "2024-02-10"}, "procedure": {"code": "X1"}},
        {"times": {"observation": "short"}, "body_region": "chest", "procedure": "not an object"},
        {"times": "not an object", "modality": None, "body_region": "", "status": None},
        {"times": {"observation": 20240302}, "modality": 7, "procedure": {"code": 71250}},
        {},
    ],
)
def test_the_columns_a_save_writes_are_the_json_querys_values(doc: dict[str, Any]) -> None:
    """prior_values (what a save writes) against the JSON expressions step 11 back-fills with."""
    received = "2024-05-01T12:00:00.000000Z"
    conn = sqlite3.connect(":memory:")
    try:
        (row,) = conn.execute(
            "SELECT substr(coalesce(json_extract(?1, '$.times.observation'), json_extract(?1, '$.times.report'),"
            " ?2), 1, 10), coalesce(json_extract(?1, '$.modality'), ''), coalesce(json_extract(?1, '$.body_region'),"
            " ''), coalesce(json_extract(?1, '$.procedure.code'), ''), coalesce(json_extract(?1, '$.status'), '')"
            " = 'cancelled'",
            (json.dumps(doc), received),
        ).fetchall()
    finally:
        conn.close()
    assert prior_values(prior_facts(doc), received[:10]) == (*(str(v) for v in row[:4]), row[4])


def _pg_json_answers(dsn: str) -> list[Sequence[PriorStudy]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return _answers(lambda p, b, e, n: prior_studies_of(conn.execute(JSON_QUERY_PG, (p, "HOSP", e, b, n))))


def _prior_rows_pg(dsn: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            tuple(row)
            for row in conn.execute(f"SELECT id, {', '.join(PRIOR_COLUMNS)} FROM reports ORDER BY id").fetchall()
        ]


def _to_v10_pg(dsn: str) -> None:
    """Turn a current schema into one as version 10 left it: no prior columns, the old patient index."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX reports_patient")
        conn.execute(f"ALTER TABLE reports {', '.join(f'DROP COLUMN {c}' for c in PRIOR_COLUMNS)}")
        conn.execute("CREATE INDEX reports_patient ON reports (patient_id, patient_authority)")
        conn.execute("UPDATE overread_schema SET version = 10")


@pytest.mark.postgresql
def test_postgresql_answers_as_the_json_query_and_step_11_back_fills_them(pg_dsn: str) -> None:
    """PostgreSQL: as the SQLite test, the version 10 store made from a current one by dropping
    the columns and restoring the old patient index."""

    from listener.store.postgresql import PostgresStore

    store = PostgresStore(pg_dsn)
    try:
        _fill(store)
        answers = _store_answers(store)
    finally:
        store.close()
    assert answers == _pg_json_answers(pg_dsn)
    written = _prior_rows_pg(pg_dsn)
    _to_v10_pg(pg_dsn)
    _migrated_answers_as_before(
        lambda: _pg_json_answers(pg_dsn),
        lambda: PostgresStore(pg_dsn),
        lambda: _prior_rows_pg(pg_dsn),
        answers,
        written,
    )


def _filled(state: Path, seed: int) -> list[Sequence[PriorStudy]]:
    """A SQLite store in ``state`` filled by :func:`_fill` (then closed), and its look-up answers."""
    store = SQLiteStore.in_state_dir(state)
    try:
        _fill(store, seed=seed)
        return _store_answers(store)
    finally:
        store.close()


@pytest.mark.postgresql
def test_store_copy_carries_the_columns_both_ways(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite -> PostgreSQL -> SQLite: every prior column arrives, and the look-ups answer the same."""
    from listener.store.postgresql import PostgresStore

    source = tmp_path / "source"
    answers = _filled(source, seed=11)
    written = _prior_rows_sqlite(source / DB_FILENAME)
    url = as_url(pg_dsn)
    assert run(capsys, "copy", "--from", f"sqlite:{source}", "--to", url)[0] == 0
    assert _prior_rows_pg(pg_dsn) == written
    pg = PostgresStore(pg_dsn)
    try:
        assert _store_answers(pg) == answers
    finally:
        pg.close()
    back = tmp_path / "back"
    assert run(capsys, "copy", "--from", url, "--to", f"sqlite:{back}")[0] == 0
    assert _prior_rows_sqlite(back / DB_FILENAME) == written


def test_backup_and_restore_carry_the_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`overread store backup` then `restore`: the same prior columns, the same look-up answers."""
    state = tmp_path / "state"
    answers = _filled(state, seed=5)
    written = _prior_rows_sqlite(state / DB_FILENAME)
    assert run(capsys, "backup", str(tmp_path / "b"), "--state-dir", str(state))[0] == 0
    restored = tmp_path / "restored"
    assert run(capsys, "restore", str(tmp_path / "b"), "--state-dir", str(restored))[0] == 0
    assert _prior_rows_sqlite(restored / DB_FILENAME) == written
    store = SQLiteStore.in_state_dir(restored)
    try:
        assert _store_answers(store) == answers
    finally:
        store.close()


def test_a_reprocessed_message_counts_as_its_new_processing_says(store: Store) -> None:
    """A rejected message reprocessed into a processed one becomes a prior (its reports written again,
    with its first receive time); a processed one reprocessed into a rejection stops being one."""
    rejected = store.save(
        record("C1", reports=(_report("A1"),), received=_at(1), state="rejected", ack_code="AE")
    ).message_pk
    processed = store.save(record("C2", reports=(_report("A2"),), received=_at(2))).message_pk
    assert [p.accession for p in store.prior_studies("MRN1", "HOSP", before=LATER)] == ["A2"]
    store.replace_processing(
        rejected,
        record("C1", reports=(_report("A1", modality="MR"),)),
        now=_at(50),
        superseded_by="reprocess",
        expected_processing=1,
    )
    store.replace_processing(
        processed,
        record("C2", reports=(_report("A2"),), state="rejected", ack_code="AE"),
        now=_at(51),
        superseded_by="reprocess",
        expected_processing=1,
    )
    assert [(p.accession, p.modality) for p in store.prior_studies("MRN1", "HOSP", before=LATER)] == [("A1", "MR")]
    assert store.prior_studies("MRN1", "HOSP", before=_at(1)) == ()  # its receive time is still the first


#: Report documents at the edges of what step 11 reads: non-ASCII and mixed-case values (kept as
#: given), escapes, numbers, fields that are no objects, empty or missing times.
ODD_DOCS: tuple[dict[str, Any], ...] = (
    {"modality": "Üs", "body_region": "Thorax/Brustkorb", "procedure": {"code": "Ré-71250"}},
    {"modality": "mr", "body_region": "CHEST", "times": {"observation": "2024-03-02T23:59:59+14:00"}},
    {"modality": 'a"b\\c', "procedure": {"code": "日本"}, "status": "cancelled"},
    {"times": {"observation": None, "report": "2024-02-10T23:30:00"}},
    {"times": {"observation": "", "report": "2024-02-10"}, "procedure": {"code": "X1"}},
    {"times": "not an object", "modality": None, "body_region": "", "status": None, "procedure": "text"},
    {"times": {"observation": 20240302}, "modality": 7, "procedure": {"code": 71250}},
    {"times": {}, "procedure": None},
)


def _save_odd_docs(store: Store) -> None:
    for n, doc in enumerate(ODD_DOCS):
        store.save(record(f"ODD{n}", reports=(_report(f"O{n}", **doc),), received=_at(n)))


def test_step_11_back_fills_odd_documents_as_a_save_writes_them_sqlite(tmp_path: Path) -> None:
    """SQLite: the back-fill of each odd document gives the columns its save wrote."""
    state = tmp_path / "state"
    store = SQLiteStore.in_state_dir(state)
    try:
        _save_odd_docs(store)
    finally:
        store.close()
    db = state / DB_FILENAME
    written = _prior_rows_sqlite(db)
    assert ("Üs", "Thorax/Brustkorb", "Ré-71250") in [row[2:5] for row in written]
    _to_v10_sqlite(db)
    SQLiteStore(db).close()
    assert _prior_rows_sqlite(db) == written


@pytest.mark.postgresql
def test_step_11_back_fills_odd_documents_as_a_save_writes_them_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    """PostgreSQL: as on SQLite, and the same columns as SQLite writes for them (ids aside)."""

    from listener.store.postgresql import PostgresStore

    store = PostgresStore(pg_dsn)
    try:
        _save_odd_docs(store)
        answers = store.prior_studies("MRN1", "HOSP", before=LATER)
    finally:
        store.close()
    written = _prior_rows_pg(pg_dsn)
    _to_v10_pg(pg_dsn)
    PostgresStore(pg_dsn).close()
    assert _prior_rows_pg(pg_dsn) == written
    sqlite = SQLiteStore.in_state_dir(tmp_path / "sqlite")
    try:
        _save_odd_docs(sqlite)
        assert sqlite.prior_studies("MRN1", "HOSP", before=LATER) == answers
    finally:
        sqlite.close()
    assert [row[1:] for row in _prior_rows_sqlite(tmp_path / "sqlite" / DB_FILENAME)] == [row[1:] for row in written]


#: Runs step 11 on the file argv[1] and is killed (SIGKILL, no clean-up) once its back-fill has
#: written two batches: a daemon or `overread store migrate` killed half way through.
_KILLED_MID_FILL = """
import os, signal, sqlite3, sys
from listener.store.schema import migrate
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
batches = []
def trace(statement):
    if statement.startswith("UPDATE reports SET study_date"):
        batches.append(statement)
        if len(batches) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
conn.set_trace_callback(trace)
migrate(conn)
"""


def test_step_11_killed_half_way_through_its_back_fill_leaves_version_10(tmp_path: Path) -> None:
    """SIGKILL during the back-fill (two of its batches written): the file is still at version 10,
    no prior column; opened again, step 11 runs whole and the columns hold what the saves wrote."""
    state = tmp_path / "state"
    store = SQLiteStore.in_state_dir(state)
    try:
        for n in range(1600):  # more than three back-fill batches
            accession = f"K{n % 40}"
            modality = "CT" if n % 3 else "MR"
            store.save(record(f"K{n}", reports=(_report(accession, modality=modality),), received=_at(n)))
    finally:
        store.close()
    db = state / DB_FILENAME
    written = _prior_rows_sqlite(db)
    _to_v10_sqlite(db)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[3]), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", _KILLED_MID_FILL, str(db)], env=env, check=False, timeout=120)
    assert done.returncode == -9
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 10
        columns = {row[1] for row in conn.execute("PRAGMA table_info(reports)")}
        assert not columns & set(PRIOR_COLUMNS)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    store = SQLiteStore(db)
    try:
        assert [m.version for m in store.migrations_run] == [11]
    finally:
        store.close()
    assert _prior_rows_sqlite(db) == written
