"""Compact storage (docs/store.md, "Compact storage"): what is saved reads back exactly as written.

The contract tests run on every store (SQLite, PostgreSQL, memory) with the
records the daemon itself makes (``listener.intake.report_records`` of a real
pipeline outcome: the route with its explanation, the report with its text).
The migration tests build a store of the version before compaction with plain
SQL, rows in the old form, and open it with today's store.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.intake import report_records
from listener.pipeline import Outcome, Pipeline, process
from listener.store import MessageRecord, ReportRecord, SQLiteStore, Store
from listener.store import schema as store_schema
from listener.store.base import ReportRow
from listener.store.compact import (
    PACK_MIN,
    SMALL,
    join_route,
    pack_json,
    pack_raw,
    split_route,
    unpack_json,
    unpack_raw,
)
from listener.store.rows import with_forms

from .records import CHEST, CHEST_PNEUMOTHORAX, T0, record, report

# A control id, raw bytes that are no valid zlib stream nor JSON, and a NUL.
ODD_RAW = b"x\x9c\x00\xffMSH|not zlib"


def _outcome(pipeline: Pipeline, raw: bytes) -> Outcome:
    outcome = process(raw, pipeline, received_at=T0)
    assert outcome.reports and outcome.reports[0].route is not None, "the sample decodes and is routed"
    return outcome


def _daemon_record(pipeline: Pipeline, raw: bytes, control_id: str) -> MessageRecord:
    """The record the daemon stores for ``raw``: its reports as ``report_records`` writes them."""
    return record(control_id, raw=raw, reports=report_records(_outcome(pipeline, raw)))


def _as_rows(reports: tuple[ReportRecord, ...]) -> list[tuple[str, str, str, str]]:
    return [(r.accession, r.report_json, r.findings_json, r.route_json) for r in reports]


def _read_rows(rows: tuple[ReportRow, ...]) -> list[tuple[str, str, str, str]]:
    return [(r.accession, r.report_json, r.findings_json, r.route_json) for r in rows]


def test_daemon_records_read_back_exactly_on_every_path(store: Store, pipeline: Pipeline) -> None:
    """Raw bytes, report, findings and route (explanation included) come back byte for byte from
    the message detail, the raw read, the report searches and the accession history."""
    chest = _daemon_record(pipeline, CHEST, "C1")
    pneumo = _daemon_record(pipeline, CHEST_PNEUMOTHORAX.replace(b"A2611170088", b"A2611170099"), "C2")
    odd = record("C3", raw=ODD_RAW, reports=(report("ACC9"),))
    purged = record("C4", raw=None, reports=())
    assert json.loads(chest.reports[0].route_json)["explanation"], "the daemon's route carries its explanation"
    assert len(chest.reports[0].report_json) >= PACK_MIN
    saved = {rec.control_id: store.save(rec).message_pk for rec in (chest, pneumo, odd, purged)}
    for rec in (chest, pneumo, odd, purged):
        detail = store.message_detail(saved[rec.control_id])
        assert detail is not None
        assert detail.raw == rec.raw
        assert store.message_raw(saved[rec.control_id]) == rec.raw
        assert _read_rows(detail.reports) == _as_rows(rec.reports)
    written = {r.accession: r for rec in (chest, pneumo, odd) for r in rec.reports}
    routed = store.reports.routed(pool=None, limit=10)
    assert routed and all(
        (s.report_json, s.findings_json, s.route_json)
        == (written[s.accession].report_json, written[s.accession].findings_json, written[s.accession].route_json)
        for s in routed
    )
    pool = json.loads(chest.reports[0].route_json)["pool"]
    assert {s.accession for s in store.reports.routed(pool=pool, limit=10)} >= {chest.reports[0].accession}
    with_findings = [s for r in written.values() for s in store.reports.with_findings(accession=r.accession, limit=10)]
    assert {s.accession for s in with_findings} == {r.accession for r in written.values() if r.findings_json != "[]"}
    for r in chest.reports + pneumo.reports:
        (entry,) = store.report_history(r.accession)
        assert (entry.report_json, entry.findings_json) == (r.report_json, r.findings_json)


def test_a_reprocessing_keeps_the_earlier_raw_and_reports_exactly(store: Store, pipeline: Pipeline) -> None:
    """The kept processing holds the first raw bytes and reports as written; the new one reads back too."""
    first = _daemon_record(pipeline, CHEST, "C1")
    pk = store.save(first).message_pk
    again = _daemon_record(pipeline, CHEST_PNEUMOTHORAX, "C1")
    store.replace_processing(pk, again, now=T0 + timedelta(hours=1), superseded_by="test", expected_processing=1)
    detail = store.message_detail(pk)
    assert detail is not None
    assert detail.raw == again.raw and _read_rows(detail.reports) == _as_rows(again.reports)
    (kept,) = detail.processings
    assert kept.raw == first.raw and _read_rows(kept.reports) == _as_rows(first.reports)


def test_explanation_read_back_is_the_one_computed_at_processing(store: Store, pipeline: Pipeline) -> None:
    """The stored route's explanation and policy version are those the routing computed for this message."""
    outcome = _outcome(pipeline, CHEST)
    route = outcome.reports[0].route
    assert route is not None
    pk = store.save(record("C1", raw=CHEST, reports=report_records(outcome))).message_pk
    detail = store.message_detail(pk)
    assert detail is not None
    stored = json.loads(detail.reports[0].route_json)
    assert stored["policy_version"] == route.policy_version == pipeline.routing_version
    assert stored["explanation"] == list(route.explanation)
    (searched,) = store.reports.routed(pool=route.pool, limit=1)
    assert json.loads(searched.route_json)["explanation"] == list(route.explanation)


def test_records_with_their_forms_made_ahead_read_back_exactly(store: Store, pipeline: Pipeline) -> None:
    """A record whose reports carry their stored forms (as a worker process sends them, with and
    without the SQLite JSON forms) reads back byte for byte, as one without them does."""
    for n, packed in enumerate((True, False)):
        rec = _daemon_record(pipeline, CHEST_PNEUMOTHORAX, f"F{n}")
        ahead = replace(rec, reports=with_forms(rec.reports, packed=packed), packed_raw=pack_raw(rec.raw))
        assert ahead.reports == rec.reports  # every field kept (equality ignores the forms)
        assert all(r.forms is not None and (r.forms.report_json is not None) == packed for r in ahead.reports)
        pk = store.save(ahead).message_pk
        detail = store.message_detail(pk)
        assert detail is not None
        assert _read_rows(detail.reports) == _as_rows(rec.reports)
        assert detail.raw == rec.raw and store.message_raw(pk) == rec.raw
        (entry,) = store.report_history(rec.reports[0].accession)[-1:]
        assert (entry.report_json, entry.findings_json) == (rec.reports[0].report_json, rec.reports[0].findings_json)


def test_sqlite_report_rows_are_the_same_whoever_made_their_forms(
    sqlite_store: SQLiteStore, db_path: Path, pipeline: Pipeline
) -> None:
    """SQLite: every column of a report row (compressed JSON, explanation, version summary) and the
    compressed raw bytes are the same whether the writer made them or the record came with them."""
    plain = _daemon_record(pipeline, CHEST_PNEUMOTHORAX, "P1")
    sqlite_store.save(plain)
    for n, packed in enumerate((True, False)):
        ahead = replace(
            plain,
            control_id=f"P{n + 2}",
            reports=with_forms(plain.reports, packed=packed),
            packed_raw=pack_raw(plain.raw) if packed else None,
        )
        sqlite_store.save(ahead)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT r.accession, r.bucket, r.report_json, r.findings_json, r.route_json, r.explanation,"
            " r.patient_id, r.patient_authority, r.received, r.stage, r.clinical_at, r.prelim_minutes, r.summary"
            " FROM reports r JOIN messages m ON m.id = r.message_id ORDER BY m.control_id, r.seq"
        ).fetchall()
        raws = [r for (r,) in conn.execute("SELECT raw FROM messages ORDER BY control_id")]
    assert len(rows) == 3 * len(plain.reports) and isinstance(rows[0][2], bytes) and rows[0][12]
    per_message = [rows[i : i + len(plain.reports)] for i in range(0, len(rows), len(plain.reports))]
    assert per_message[0] == per_message[1] == per_message[2]
    assert raws[0] == raws[1] == raws[2] == pack_raw(plain.raw)


def test_values_are_plain_zlib_streams_no_larger_than_zlibs_default(pipeline: Pipeline) -> None:
    """Short values are compressed with a state sized to them: a zlib stream any reader decodes, of
    the bytes zlib's default state gives on the daemon's records; values in the default form (an
    earlier version's) read back too, and a long value round-trips."""
    (rec,) = report_records(_outcome(pipeline, CHEST))
    essentials, explanation = split_route(rec.route_json)
    assert explanation is not None
    long_text = json.dumps([f"finding {i}" for i in range(2 * SMALL)])
    values = [
        (CHEST, pack_raw(CHEST)),
        (rec.report_json.encode(), pack_json(rec.report_json)),
        (long_text.encode(), pack_json(long_text)),
        (rec.route_json[len(essentials) - 1 : -1].encode(), explanation),
    ]
    for plain, stored in values:
        assert isinstance(stored, bytes) and zlib.decompress(stored) == plain
        assert len(stored) <= len(zlib.compress(plain, 6)) + 2
    small = [stored for plain, stored in values if len(plain) <= SMALL]
    assert len(small) == 3 and all(s[0] == 0x58 for s in small)  # zlib header: an 8 KiB window
    assert unpack_raw(zlib.compress(CHEST, 6)) == unpack_raw(memoryview(zlib.compress(CHEST, 6))) == CHEST
    assert unpack_json(zlib.compress(rec.report_json.encode(), 6)) == rec.report_json
    assert join_route(essentials, zlib.compress(zlib.decompress(explanation), 6)) == rec.route_json
    assert join_route(essentials, explanation) == rec.route_json


def test_split_route_gives_back_the_exact_text_and_keeps_odd_routes_whole() -> None:
    """A route in route_dict's form splits into plain essentials and a compressed explanation that join
    back to the same string; any other text is stored whole."""
    text = json.dumps({"bucket": "release", "pool": "p", "explanation": ['a [x] no match - NO: "quoted"']})
    essentials, explanation = split_route(text)
    assert explanation is not None and json.loads(essentials) == {"bucket": "release", "pool": "p"}
    assert join_route(essentials, explanation) == text
    for whole in (
        "null",
        '{"bucket": "release"}',
        json.dumps({"explanation": ["x"], "bucket": "b"}),  # not last
        '{"bucket": "b", "explanation": ["x"], "bucket": "c"}',  # essentials would differ
        '{"a": ", \\"explanation\\": "}',
    ):
        assert split_route(whole) == (whole, None)
        assert join_route(whole, None) == whole
    assert unpack_json(pack_json("[]")) == "[]" and pack_json("[]") == "[]"
    long = json.dumps({"text": "é" * PACK_MIN})
    assert isinstance(pack_json(long), bytes) and unpack_json(pack_json(long)) == long


# ---------------------------------------------------------- migration, SQLite


def _old_rows(pipeline: Pipeline) -> list[MessageRecord]:
    """Messages as a pre-compaction store held them: daemon reports, raw kept, purged and odd."""
    return [
        _daemon_record(pipeline, CHEST, "M1"),
        _daemon_record(pipeline, CHEST_PNEUMOTHORAX.replace(b"A2611170088", b"A2611170077"), "M2"),
        replace(_daemon_record(pipeline, CHEST.replace(b"A2611170088", b"A2611170066"), "M3"), raw=None),
        record("M4", raw=ODD_RAW, reports=(report("ACC4"),)),
        record("M5", reports=()),
    ]


def _insert_old(conn: Any, rows: list[MessageRecord], mark: str) -> None:
    """Write ``rows`` with plain SQL in the old form on a sqlite3 or psycopg connection (``mark``: its placeholder)."""
    execute = conn.execute
    p = ",".join([mark] * 11)
    for n, rec in enumerate(rows):
        pk = execute(
            "INSERT INTO messages (sender_application, sender_facility, control_id, feed, received, transport,"
            f" state, ack_code, error_code, ack, raw) VALUES ({p}) RETURNING id",
            (
                rec.sender_application,
                rec.sender_facility,
                rec.control_id,
                rec.feed,
                "2024-05-01T12:00:00.000000Z" if mark == "?" else T0,
                rec.transport,
                rec.state,
                rec.ack_code,
                rec.error_code,
                rec.ack,
                rec.raw,
            ),
        ).fetchone()[0]
        for seq, r in enumerate(rec.reports):
            q = ",".join([mark] * 8)
            execute(
                "INSERT INTO reports (message_id, seq, accession, bucket, report_json, findings_json, route_json,"
                f" patient_id) VALUES ({q})",
                (pk, seq, r.accession, r.bucket, r.report_json, r.findings_json, r.route_json, r.patient_id),
            )
        if n == 0:  # an earlier processing, its raw kept
            q = ",".join([mark] * 12)
            execute(
                "INSERT INTO processings (message_id, number, processed, superseded, superseded_by, feed, state,"
                f" ack_code, error_code, ack, raw, reports_json) VALUES ({q})",
                (
                    pk,
                    1,
                    *(("2024-05-01T11:00:00.000000Z",) * 2 if mark == "?" else (T0, T0)),
                    "test",
                    "default",
                    "processed",
                    "AA",
                    "",
                    b"ACK",
                    b"MSH|first bytes",
                    "[]",
                ),
            )


def _assert_reads_back(store: Store, rows: list[MessageRecord]) -> None:
    for summary, rec in zip(store.messages(), rows, strict=True):
        detail = store.message_detail(summary.message_pk)
        assert detail is not None and summary.control_id == rec.control_id
        assert detail.raw == rec.raw and store.message_raw(summary.message_pk) == rec.raw
        assert _read_rows(detail.reports) == _as_rows(rec.reports)
        if rec.control_id == "M1":
            assert [p.raw for p in detail.processings] == [b"MSH|first bytes"]
    routed = {s.accession: s.route_json for s in store.reports.routed(pool=None, limit=20)}
    assert routed == {r.accession: r.route_json for rec in rows for r in rec.reports if r.route_json != "null"}


def test_a_pre_compaction_sqlite_store_is_converted_on_open(
    tmp_path: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: opening a store of the version before compaction converts every row (in batches, here of
    two rows), and every read gives what was stored before; the columns now hold the compact forms."""
    monkeypatch.setattr(store_schema, "COMPACT_BATCH", 2)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = state / "overread.db"
    rows = _old_rows(pipeline)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        store_schema.migrate(conn, target=store_schema.COMPACT_VERSION - 1)
        _insert_old(conn, rows, "?")
    finally:
        conn.close()
    store = SQLiteStore.in_state_dir(state)
    try:
        assert [m.version for m in store.migrations_run][-1] == store_schema.SCHEMA_VERSION
        assert store_schema.COMPACT_VERSION in [m.version for m in store.migrations_run]
        _assert_reads_back(store, rows)
    finally:
        store.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = dict(conn.execute("SELECT control_id, raw FROM messages").fetchall())
        assert zlib.decompress(stored["M1"]) == rows[0].raw and stored["M3"] is None
        for route, explanation in conn.execute("SELECT route_json, explanation FROM reports").fetchall():
            assert "explanation" not in route and (explanation is not None) == (route != '{"bucket": "release"}')
        assert conn.execute("SELECT count(*) FROM reports WHERE typeof(report_json) = 'blob'").fetchone()[0] == 3
    finally:
        conn.close()


# ------------------------------------------------------ migration, PostgreSQL


@pytest.mark.postgresql
def test_a_pre_compaction_postgresql_store_is_converted_on_open(
    pg_dsn: str, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the same old rows, the same reads after the daemon's open upgrades the store."""
    psycopg = pytest.importorskip("psycopg")
    from listener.store import pg_schema
    from listener.store.postgresql import PostgresStore

    monkeypatch.setattr(pg_schema, "COMPACT_BATCH", 2)
    rows = _old_rows(pipeline)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        pg_schema.migrate(conn, target=pg_schema.PG_COMPACT_VERSION - 1)
        _insert_old(conn, rows, "%s")
    store = PostgresStore(pg_dsn)
    try:
        assert pg_schema.PG_COMPACT_VERSION in [m.version for m in store.migrations_run]
        _assert_reads_back(store, rows)
    finally:
        store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        stored = dict(conn.execute("SELECT control_id, raw FROM messages").fetchall())
        assert zlib.decompress(stored["M1"]) == rows[0].raw and stored["M3"] is None
        assert conn.execute("SELECT count(*) FROM reports WHERE route_json LIKE '%explanation%'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM reports WHERE explanation IS NOT NULL").fetchone()[0] == 3
