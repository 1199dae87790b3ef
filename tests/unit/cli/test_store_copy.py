"""`overread store copy` on real stores: SQLite files, and a real PostgreSQL server (tests marked
`postgresql`; docs/store.md, "Moving a store"). The running-daemon refusal on PostgreSQL is in
tests/integration/test_store_copy.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.errors import StoreError
from listener.store import CachedComparison, ScoreRecord, SQLiteStore, Store
from listener.store.copy import row_digest
from listener.store.schema import SCHEMA_VERSION
from tests.postgres import as_url, fresh_schema, server_dsn
from tests.unit.cli.test_store import daemon_lock, run
from tests.unit.store.records import T0, item, record, report
from tests.unit.store.v1 import make_v1_store

TABLES = {
    "messages",
    "reports",
    "outbox",
    "outbox_events",
    "processings",
    "destination_state",
    "audit",
    "scores",
    "comparisons",
    "health_probe",
}


def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def fill(store: Store) -> None:
    """Rows in every table, through the Store interface: reprocessed messages, delivered, failed and
    resent outbox rows with their events, a destination's state, audit, scores, comparisons, a probe."""
    try:
        first = store.save(
            record("M1", received=T0, reports=(report("ACC1"), report("ACC2")), outbox=(item("ACC1", "O1"),))
        )
        store.save(record("M2", received=T0 + _minutes(1), outbox=(item("ACC2", "O2"), item("ACC2", "O3"))))
        store.save(record("M3", ack_code="AE", state="rejected", received=T0 + _minutes(2), reports=(), raw=None))
        store.replace_processing(
            first.message_pk,
            record("M1", reports=(report("ACC1", text="corrected"),), outbox=(item("ACC1", "O4"),)),
            now=T0 + _minutes(3),
            superseded_by="reprocess by ann",
            expected_processing=1,
        )
        rows = store.outbox_list()
        store.outbox_delivered(rows[0].id, T0 + _minutes(4))
        store.outbox_failed(rows[1].id, T0 + _minutes(4), T0 + _minutes(9), "connection refused")
        store.outbox_dead(rows[2].id, T0 + _minutes(5), "rejected by the RIS")
        store.outbox_resend([rows[0].id], T0 + _minutes(6), note="asked again")
        store.destination_connect_failed("ris", T0 + _minutes(7), 2, "timeout", T0 + _minutes(8))
        store.record_audit(
            at=T0 + _minutes(8), actor="ann", via="cli", action="outbox.resend", target={"ids": [1]}, rows=1
        )
        store.record_scores([ScoreRecord("ACC1", "2a", "cli", T0 + _minutes(9), scorer="bob", note="missed nodule")])
        store.cache_comparisons([CachedComparison("k1", "ACC1", T0 + _minutes(9), '{"grade": "1"}')])
        store.probe(T0 + _minutes(10))
    finally:
        store.close()


def read_back(store: Store) -> dict[str, Any]:
    """Everything a caller can read of the filled store, as plain values (ids included)."""
    try:
        messages = list(store.messages())
        accessions = sorted({r.accession for m in messages for r in store.message_detail(m.message_pk).reports})  # type: ignore[union-attr]
        return {
            "messages": messages,
            "details": [store.message_detail(m.message_pk) for m in messages],
            "outbox": store.outbox_list(),
            "history": {a: store.report_history(a) for a in accessions},
            "audit": store.audit(),
            "scores": store.scores("ACC1"),
            "destinations": store.destination_states(),
            "comparisons": store.cached_comparisons(["k1"]),
            "newest": store.newest_message_pk(),
        }
    finally:
        store.close()


@pytest.fixture(name="source")
def fixture_source(tmp_path: Path) -> Path:
    """A filled SQLite state directory."""
    state = tmp_path / "source"
    fill(SQLiteStore.in_state_dir(state))
    return state


def _copy(capsys: pytest.CaptureFixture[str], src: str, dst: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    status, out, err = run(capsys, "copy", "--from", src, "--to", dst, "--format", "json", *extra)
    return status, (json.loads(out) if status == 0 else {}), err


def _counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def test_sqlite_to_sqlite_copies_every_table_and_reads_back_identically(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "target"
    status, out, err = _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")
    assert (status, err) == (0, "")
    assert set(out["tables"]) == TABLES
    assert {t: v["rows"] for t, v in out["tables"].items()} == _counts(target / "overread.db")
    assert out["tables"]["messages"]["rows"] == 3 and out["tables"]["outbox_events"]["rows"] > 0
    assert out["tables"]["processings"]["rows"] == 1 and out["verified"] is True
    assert out["rows"] == sum(v["rows"] for v in out["tables"].values())
    assert out["from"] == f"sqlite:{source / 'overread.db'}" and out["schema_version"] == SCHEMA_VERSION
    assert read_back(SQLiteStore.in_state_dir(target)) == read_back(SQLiteStore.in_state_dir(source))
    assert (target / "overread.db").stat().st_mode & 0o077 == 0


def test_ids_are_never_handed_out_twice_after_a_copy(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The AUTOINCREMENT high-water mark travels: ids the source gave (and purged) are not given again."""
    conn = sqlite3.connect(source / "overread.db")
    conn.execute("UPDATE sqlite_sequence SET seq = 100 WHERE name = 'messages'")
    conn.commit()
    conn.close()
    target = tmp_path / "target.db"
    assert _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")[0] == 0
    store = SQLiteStore(target)
    try:
        assert store.save(record("NEW")).message_pk == 101
    finally:
        store.close()


def test_text_output_names_each_table(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "copy", "--from", f"sqlite:{source}", "--to", f"sqlite:{tmp_path / 't'}")
    assert status == 0
    assert out.splitlines()[0].endswith(f"(schema v{SCHEMA_VERSION}), verified")
    assert any(line.split()[:3] == ["messages", "3", "rows"] for line in out.splitlines())


def test_a_target_holding_rows_is_refused_and_left_alone(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "target"
    store = SQLiteStore.in_state_dir(target)
    store.save(record("OTHER"))
    store.close()
    before = (target / "overread.db").read_bytes()
    status, _, err = _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")
    assert status == 2
    assert "is not empty (messages 1, reports 1 rows)" in err and "copy only into an empty store" in err
    assert (target / "overread.db").read_bytes() == before


def test_a_target_with_only_a_health_probe_row_is_empty(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store a daemon created and stopped holds its probe's timestamp: no data, replaced."""
    target = tmp_path / "target"
    store = SQLiteStore.in_state_dir(target)
    store.probe(T0)
    store.close()
    status, out, _ = _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")
    assert status == 0 and out["tables"]["health_probe"]["rows"] == 1


def test_a_source_at_an_older_schema_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old"
    make_v1_store(old)
    status, _, err = _copy(capsys, f"sqlite:{old}", f"sqlite:{tmp_path / 'target'}")
    assert status == 2
    assert "is at schema v1" in err and "run `overread store migrate` on it first" in err
    assert not (tmp_path / "target").exists()


def test_a_missing_source_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _copy(capsys, f"sqlite:{tmp_path / 'none'}", f"sqlite:{tmp_path / 'target'}")
    assert status == 2 and "no store at" in err and not (tmp_path / "target").exists()


def test_stores_in_use_by_a_daemon_are_refused(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with daemon_lock(source):
        status, _, err = _copy(capsys, f"sqlite:{source}", f"sqlite:{tmp_path / 'target'}")
    assert status == 2 and "a daemon (overread serve) is using" in err and "before the copy" in err
    target = tmp_path / "busy"
    with daemon_lock(target):
        status, _, err = _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")
    assert status == 2 and str(target) in err and "before the copy" in err
    assert not (target / "overread.db").exists()


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("mysql://db/x", "sqlite:t", "--from must be sqlite:PATH or postgresql://"),
        ("sqlite:", "sqlite:t", "--from sqlite: needs a path"),
        ("sqlite:s", "postgresql://u:hunter2@db/x", "--to: the URL carries a password"),
        ("sqlite:same", "sqlite:same", "the source and the target are the same store"),
    ],
)
def test_bad_store_names_are_refused(
    src: str,
    dst: str,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if src == "sqlite:same":
        fill(SQLiteStore.in_state_dir(tmp_path / "same"))
    status, _, err = _copy(capsys, src, dst)
    assert status == 2 and expected in err and "hunter2" not in err


def test_a_failed_copy_leaves_the_target_empty(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outbox row whose message is gone (written with foreign keys off) fails the insert after
    messages and reports went in: the one transaction rolls all of them back."""
    _orphan_outbox_row(source / "overread.db")
    target = tmp_path / "target"
    status, _, err = _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")
    assert status == 2 and "copying table outbox failed (IntegrityError SQLITE_CONSTRAINT_FOREIGNKEY)" in err
    assert set(_counts(target / "overread.db").values()) == {0}


def _orphan_outbox_row(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute(
        "INSERT INTO outbox (message_id, destination, accession, control_id, next_attempt_at, created, updated, payload)"
        " VALUES (999, 'ris', 'ACC9', 'O9', '2024-05-01T12:00:00.000000Z', '2024-05-01T12:00:00.000000Z',"
        " '2024-05-01T12:00:00.000000Z', x'00')"
    )
    conn.commit()
    conn.close()


def test_the_checksum_reads_times_alike_in_either_form() -> None:
    """SQLite's time text and PostgreSQL's datetime hash the same; "" and NULL too; other values do not."""
    text = ("2024-05-01T12:00:00.000000Z", "", b"x", 3)
    native = (T0, None, b"x", 3)
    flags = (True, True, False, False)
    assert row_digest(text, flags) == row_digest(native, flags)
    assert row_digest(text, flags) != row_digest((T0 + timedelta(microseconds=1), None, b"x", 3), flags)
    assert row_digest(("a", "bc"), (False, False)) != row_digest(("ab", "c"), (False, False))


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(name="pg_url")
def fixture_pg_url() -> Iterator[tuple[str, str]]:
    """A fresh empty schema on the test server: (its DSN, its postgresql:// URL)."""
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        yield dsn, as_url(dsn)


@pytest.mark.postgresql
def test_round_trip_sqlite_postgresql_sqlite_reads_back_identically(
    source: Path, tmp_path: Path, pg_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from listener.store.postgresql import PostgresStore

    dsn, url = pg_url
    status, up, err = _copy(capsys, f"sqlite:{source}", url)
    assert (status, err) == (0, "")
    expected = read_back(SQLiteStore.in_state_dir(source))
    assert read_back(PostgresStore(dsn, migrate_schema=False)) == expected
    status, down, err = _copy(capsys, url, f"sqlite:{tmp_path / 'back'}")
    assert (status, err) == (0, "")
    assert read_back(SQLiteStore.in_state_dir(tmp_path / "back")) == expected
    assert down["tables"] == up["tables"]
    assert {t: v["rows"] for t, v in down["tables"].items()} == _counts(tmp_path / "back" / "overread.db")


@pytest.mark.postgresql
def test_a_copy_to_postgresql_leaves_the_tables_analyzed(
    source: Path, pg_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy ANALYZEs what it wrote (docs/store.md, "Moving a store"): each table's row
    estimate is its copied row count, and the planner has statistics of the reports' columns."""
    import psycopg

    dsn, url = pg_url
    status, out, err = _copy(capsys, f"sqlite:{source}", url)
    assert (status, err) == (0, "")
    with psycopg.connect(dsn) as conn:
        estimates = dict(
            conn.execute(
                "SELECT relname, reltuples::bigint FROM pg_class"
                " WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'"
            ).fetchall()
        )
        columns = {
            str(name)
            for (name,) in conn.execute(
                "SELECT attname FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'reports'"
            ).fetchall()
        }
    assert {t: estimates[t] for t in TABLES} == {t: v["rows"] for t, v in out["tables"].items()}
    assert {"accession", "received", "summary"} <= columns


@pytest.mark.postgresql
def test_postgresql_sequences_continue_after_the_copied_ids(
    source: Path, pg_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from listener.store.postgresql import PostgresStore

    conn = sqlite3.connect(source / "overread.db")
    conn.execute("UPDATE sqlite_sequence SET seq = 100 WHERE name = 'messages'")
    conn.commit()
    conn.close()
    dsn, url = pg_url
    assert _copy(capsys, f"sqlite:{source}", url)[0] == 0
    store = PostgresStore(dsn)
    try:
        top = max(r.id for r in store.outbox_list())
        saved = store.save(record("NEW", outbox=(item("ACCN", "ON"),)))
        assert saved.message_pk == 101  # the source's high-water mark, not its highest id (3)
        assert max(r.id for r in store.outbox_list()) == top + 1
    finally:
        store.close()


@pytest.mark.postgresql
def test_postgresql_target_not_empty_and_failed_copy(
    source: Path, tmp_path: Path, pg_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    from listener.store.postgresql import PostgresStore

    dsn, url = pg_url
    _orphan_outbox_row(source / "overread.db")
    status, _, err = _copy(capsys, f"sqlite:{source}", url)
    assert status == 2 and "copying table outbox failed (ForeignKeyViolation SQLSTATE 23503)" in err
    with psycopg.connect(dsn) as conn:
        assert [conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in sorted(TABLES)] == [(0,)] * len(TABLES)
    store = PostgresStore(dsn)
    store.save(record("OTHER"))
    store.close()
    status, _, err = _copy(capsys, f"sqlite:{tmp_path / 'none'}", url)
    assert status == 2 and "no store at" in err
    fresh = tmp_path / "fresh"
    fill(SQLiteStore.in_state_dir(fresh))
    status, _, err = _copy(capsys, f"sqlite:{fresh}", url)
    assert status == 2 and "is not empty (messages 1, reports 1 rows)" in err


@pytest.mark.postgresql
def test_postgresql_stores_in_use_are_refused(
    source: Path, tmp_path: Path, pg_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An open store (as a daemon's) holds the in-use lock SHARED: a copy from or into it is refused;
    while a copy holds it EXCLUSIVE, opening the store is refused."""
    import psycopg

    from listener.store.pg_schema import IN_USE_LOCK
    from listener.store.postgresql import PostgresStore

    dsn, url = pg_url
    store = PostgresStore(dsn)
    try:
        status, _, err = _copy(capsys, url, f"sqlite:{tmp_path / 'out'}")
        assert status == 2 and "is in use: a daemon (overread serve)" in err
        status, _, err = _copy(capsys, f"sqlite:{source}", url)
        assert status == 2 and "is in use" in err
    finally:
        store.close()
    with psycopg.connect(dsn, autocommit=True) as copier:
        copier.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema()))", (IN_USE_LOCK,))
        with pytest.raises(StoreError, match="is being copied"):
            PostgresStore(dsn)
    assert _copy(capsys, f"sqlite:{source}", url)[0] == 0


@pytest.mark.postgresql
def test_postgresql_password_file(
    source: Path, tmp_path: Path, pg_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The password comes from --to-password-file (the test server trusts local users: any password
    works, so this proves the file is read and never printed); an unreadable one is refused."""
    _, url = pg_url
    secret = tmp_path / "pw"
    secret.write_text("pw-NEVERSHOWN\n", encoding="utf-8")
    status, out, err = _copy(capsys, f"sqlite:{source}", url, "--to-password-file", str(secret))
    assert status == 0 and "NEVERSHOWN" not in json.dumps(out) + err
    status, _, err = _copy(capsys, url, f"sqlite:{tmp_path / 'b'}", "--from-password-file", str(tmp_path / "missing"))
    assert status == 2 and "cannot be read" in err


@pytest.mark.postgresql
def test_a_search_path_naming_no_schema_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL whose search_path names no existing schema: said so, not mistaken for a store in use."""
    from listener.store.postgresql import PostgresStore
    from tests.postgres import schema_dsn

    base = server_dsn()
    assert base is not None
    dsn = schema_dsn(base, "no_such_schema_here")
    status, _, err = _copy(capsys, as_url(dsn), f"sqlite:{tmp_path / 'out'}")
    assert status == 2 and "no schema to use" in err
    with pytest.raises(StoreError, match="no schema to use"):
        PostgresStore(dsn)


def _add_column(db: Path, table: str, column: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    conn.commit()
    conn.close()


def test_columns_come_from_the_live_schema(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A column a later migration adds (here by hand, on both ends) is copied with no change to the
    copy; one end without it is refused, naming the column."""
    _add_column(source / "overread.db", "outbox", "lease_owner TEXT")
    conn = sqlite3.connect(source / "overread.db")
    conn.execute("UPDATE outbox SET lease_owner = 'node-' || id")
    conn.commit()
    conn.close()
    lacking = tmp_path / "lacking"
    status, _, err = _copy(capsys, f"sqlite:{source}", f"sqlite:{lacking}")
    assert status == 2 and "table outbox differs in columns lease_owner" in err
    target = tmp_path / "target"
    SQLiteStore.in_state_dir(target).close()
    _add_column(target / "overread.db", "outbox", "lease_owner TEXT")
    assert _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")[0] == 0
    conn = sqlite3.connect(target / "overread.db")
    owners = conn.execute("SELECT id, lease_owner FROM outbox ORDER BY id").fetchall()
    conn.close()
    assert owners and all(owner == f"node-{row_id}" for row_id, owner in owners)


@pytest.mark.postgresql
def test_a_new_time_column_travels_both_ways(
    source: Path, tmp_path: Path, pg_url: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A time column a later migration adds (TEXT in SQLite, timestamptz in PostgreSQL) is found by
    introspection and converted both ways, NULLs kept."""
    import psycopg

    from listener.store.postgresql import PostgresStore

    dsn, url = pg_url
    _add_column(source / "overread.db", "outbox", "lease_until TEXT")
    conn = sqlite3.connect(source / "overread.db")
    conn.execute("UPDATE outbox SET lease_until = '2024-05-01T12:30:00.250000Z' WHERE id = 1")
    conn.commit()
    conn.close()
    PostgresStore(dsn).close()
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("ALTER TABLE outbox ADD COLUMN lease_until timestamptz")
    assert _copy(capsys, f"sqlite:{source}", url)[0] == 0
    with psycopg.connect(dsn) as pg:
        leases = pg.execute("SELECT id, lease_until FROM outbox ORDER BY id").fetchall()
    assert leases[0] == (1, T0 + timedelta(minutes=30, microseconds=250000))
    assert all(lease is None for _, lease in leases[1:])
    back = tmp_path / "back"
    SQLiteStore.in_state_dir(back).close()
    _add_column(back / "overread.db", "outbox", "lease_until TEXT")
    assert _copy(capsys, url, f"sqlite:{back}")[0] == 0
    conn = sqlite3.connect(back / "overread.db")
    assert conn.execute("SELECT lease_until FROM outbox ORDER BY id").fetchall()[:2] == [
        ("2024-05-01T12:30:00.250000Z",),
        (None,),
    ]
    conn.close()


def test_a_verification_failure_rolls_the_copy_back(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target that changes what it is given (a trigger rewriting each report's bucket) reads back
    with another checksum: the copy fails before its COMMIT and the target keeps nothing."""
    target = tmp_path / "target"
    SQLiteStore.in_state_dir(target).close()
    conn = sqlite3.connect(target / "overread.db")
    conn.execute(
        "CREATE TRIGGER rewrite AFTER INSERT ON reports BEGIN"
        " UPDATE reports SET bucket = 'tampered' WHERE id = NEW.id; END"
    )
    conn.commit()
    conn.close()
    status, _, err = _copy(capsys, f"sqlite:{source}", f"sqlite:{target}")
    assert status == 2
    assert "verification failed for table reports: 2 rows copied, 2 read back, checksums" in err
    assert "nothing was kept" in err
    assert set(_counts(target / "overread.db").values()) == {0}
