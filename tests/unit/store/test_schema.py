"""Schema versions: every migration listed and described, upgrades keep every row,
a newer file is refused with both versions named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.store import SQLiteStore
from listener.store import schema as store_schema
from listener.store.compact import unpack_json
from listener.store.operations import version_texts

from .records import record, report
from .v1 import make_v1_store, table_rows, user_version


def test_migrations_are_numbered_in_order_and_described_in_one_line() -> None:
    """MIGRATIONS[n] produces version n + 1, SCHEMA_VERSION is the last one, and each
    step has a one-line description (it is printed and logged as "vN -> vN+1: ...")."""
    assert [m.version for m in store_schema.MIGRATIONS] == list(range(1, store_schema.SCHEMA_VERSION + 1))
    for step in store_schema.MIGRATIONS:
        assert step.description.strip() and "\n" not in step.description
        assert step.label == f"v{step.version - 1} -> v{step.version}: {step.description}"


def test_pending_migrations_are_the_steps_after_a_version() -> None:
    """A store at version 1 needs exactly the steps after 1; a current one needs none."""
    assert [m.version for m in store_schema.pending_migrations(1)] == list(range(2, store_schema.SCHEMA_VERSION + 1))
    assert tuple(store_schema.pending_migrations(store_schema.SCHEMA_VERSION)) == ()


def test_v1_store_is_upgraded_on_open_with_every_row_kept(tmp_path: Path) -> None:
    """Opening a file of the previous release migrates it, reports the steps it ran, and leaves
    every message, report and outbox row exactly as it was; the new state is then usable."""
    db = make_v1_store(tmp_path / "state")
    before = table_rows(db)
    store = SQLiteStore(db)
    try:
        assert [m.version for m in store.migrations_run] == list(range(2, store_schema.SCHEMA_VERSION + 1))
        assert [m.control_id for m in store.messages()] == ["M1", "M2", "M3", "M4"]
        store.save(record("Q1", state="quarantined", ack_code="AE", reports=()))
    finally:
        store.close()
    after = table_rows(db)
    assert user_version(db) == store_schema.SCHEMA_VERSION
    assert after == {
        "messages": before["messages"] + [after["messages"][-1]],
        "reports": before["reports"],
        "outbox": before["outbox"],
    }


def test_new_or_current_store_reports_no_migration(tmp_path: Path) -> None:
    """Creating a store is not an upgrade, and reopening a current one runs nothing."""
    db = tmp_path / "overread.db"
    store = SQLiteStore(db)
    assert store.migrations_run == ()
    store.close()
    store = SQLiteStore(db)
    assert store.migrations_run == ()
    store.close()


def test_newer_schema_refusal_names_the_file_both_versions_and_the_fix(tmp_path: Path) -> None:
    """A file from a newer program is refused with its path, its version, ours, and
    'upgrade overread'; nothing in it changes."""
    db = tmp_path / "overread.db"
    SQLiteStore(db).close()
    newer = store_schema.SCHEMA_VERSION + 1
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    with pytest.raises(StoreError) as info:
        SQLiteStore(db)
    text = str(info.value)
    assert str(db) in text
    assert f"version {newer}" in text and f"program's {store_schema.SCHEMA_VERSION}" in text
    assert "upgrade overread" in text
    assert user_version(db) == newer


def test_v3_fills_the_patient_columns_of_stored_reports(tmp_path: Path) -> None:
    """Reports stored before version 3 are found by patient after the upgrade: the
    migration copies the patient id and authority out of each report's JSON."""
    db = make_v1_store(tmp_path / "state")
    conn = sqlite3.connect(db)
    # Give the first report a patient, as the daemon's serializer writes it.
    conn.execute(
        "UPDATE reports SET report_json = json_set(report_json, '$.patient',"
        " json_object('id', 'P-1', 'id_authority', 'HOSP')) WHERE id = (SELECT min(id) FROM reports)"
    )
    conn.commit()
    wanted = conn.execute("SELECT json_extract(report_json, '$.patient.id') FROM reports ORDER BY id").fetchall()
    conn.close()
    store = SQLiteStore(db)
    try:
        ids = [w[0] for w in wanted if w[0]]
        assert ids, "the v1 fixture has reports with a patient"
        assert len(list(store.messages(patient_id="P-1", patient_authority="HOSP"))) == 1
        assert list(store.messages(patient_id="P-1", patient_authority="OTHER")) == []
    finally:
        store.close()
    conn = sqlite3.connect(db)
    got = conn.execute("SELECT patient_id FROM reports ORDER BY id").fetchall()
    conn.close()
    assert [g[0] for g in got] == [w[0] or "" for w in wanted]


def test_v1_store_gains_an_empty_scores_table(tmp_path: Path) -> None:
    """After the upgrade an older store records and lists explicit scores."""
    from datetime import UTC, datetime

    from listener.store import ScoreRecord

    db = make_v1_store(tmp_path / "state")
    store = SQLiteStore(db)
    try:
        assert 4 in [m.version for m in store.migrations_run]
        assert store.scores("A1") == ()
        score = ScoreRecord("A1", "2a", "csv", datetime(2024, 5, 1, tzinfo=UTC), "dr-x", "")
        assert store.record_scores([score]) == 1
        assert store.scores("A1")[0].score == score
    finally:
        store.close()


def test_v1_store_gains_an_empty_comparisons_cache(tmp_path: Path) -> None:
    """After the upgrade an older store keeps and reads cached comparisons."""
    from listener.store import CachedComparison

    from .records import T0

    db = make_v1_store(tmp_path / "state")
    store = SQLiteStore(db)
    try:
        assert 5 in [m.version for m in store.migrations_run]
        assert store.cached_comparisons(["k"]) == {}
        store.cache_comparisons([CachedComparison("k", "A1", T0, "{}")])
        assert store.cached_comparisons(["k"]) == {"k": "{}"}
    finally:
        store.close()


def test_v9_fills_the_version_summaries_of_stored_reports(tmp_path: Path) -> None:
    """Reports stored before version 9 get their version summary from their JSON and their
    message, as a save writes it; the store then counts them without reading the JSON."""
    db = make_v1_store(tmp_path / "state")
    store = SQLiteStore(db)
    try:
        store.save(record("N1", reports=(report("NEW1"),)))
    finally:
        store.close()
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT r.report_json, r.findings_json, m.received, m.state, r.received, r.stage, r.clinical_at,"
        " r.prelim_minutes, r.summary FROM reports r JOIN messages m ON m.id = r.message_id ORDER BY r.id"
    ).fetchall()
    conn.close()
    assert len(rows) >= 3 and all(row[8] for row in rows)
    for report_json, findings_json, received, state, *stored in rows:
        expected = version_texts(unpack_json(report_json), unpack_json(findings_json), received, state == "processed")
        assert tuple(stored) == expected
