"""The PostgreSQL backend's own machinery, on the real test server (docs/store.md).

The contract (saves, duplicates, reads, the outbox) is proven by the shared
store tests through the ``store`` fixture; these are what only PostgreSQL has:
several stores on one schema (migrating at once, saving one key at once), the
group commit's savepoints on a server that aborts the statement, a connection
the server drops, schema versions, and the URL never showing a password.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.store import SaveResult, open_store
from tests.postgres import as_url, fresh_schema, server_dsn

from .records import item, record, report

pytestmark = pytest.mark.postgresql

psycopg = pytest.importorskip("psycopg")

from listener.store import pg_schema  # noqa: E402 - needs psycopg, imported after the skip
from listener.store.postgresql import PostgresStore  # noqa: E402
from listener.store.rows import version_columns  # noqa: E402


@pytest.fixture(name="dsn")
def fixture_dsn() -> Iterator[str]:
    """A DSN of a fresh, empty schema on the test server, dropped afterwards."""
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        yield dsn


def _admin(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, autocommit=True)


def test_two_stores_opening_one_new_schema_migrate_it_once(dsn: str) -> None:
    """Two daemons starting at once on an empty database: the advisory lock lets one create the tables."""
    barrier = threading.Barrier(4)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStore(dsn))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len(opened) == 4
        with _admin(dsn) as conn:
            assert pg_schema.schema_version(conn) == pg_schema.PG_SCHEMA_VERSION
        assert not opened[0].save(record("M1")).duplicate
        assert all(s.find_duplicate("RIS", "HOSP", "M1") is not None for s in opened)
    finally:
        for s in opened:
            s.close()


def test_an_older_store_is_migrated_by_the_daemon_and_refused_by_commands(dsn: str) -> None:
    """A v2 schema: migrate_schema=False (every operator command) refuses it; the daemon's open upgrades it."""
    with _admin(dsn) as conn:
        assert pg_schema.migrate(conn, target=2) == 0
    with pytest.raises(StoreError, match="older than this program's"):
        PostgresStore(dsn, migrate_schema=False)
    store = PostgresStore(dsn)
    try:
        assert [s.version for s in store.migrations_run] == list(range(3, pg_schema.PG_SCHEMA_VERSION + 1))
        assert store.migrations_run[0].label.startswith("v2 -> v3: ")
        assert not store.save(record("M1")).duplicate
    finally:
        store.close()
    again = PostgresStore(dsn, migrate_schema=False)
    try:
        assert again.migrations_run == () and again.find_duplicate("RIS", "HOSP", "M1") is not None
    finally:
        again.close()


def test_an_upgrade_waits_for_every_other_user_of_the_store_to_leave(dsn: str) -> None:
    """A daemon of the old version still running (holding the in-use lock): the new one refuses to migrate."""
    older = pg_schema.PG_SCHEMA_VERSION - 1
    with _admin(dsn) as conn:
        pg_schema.migrate(conn, target=older)
    running = _admin(dsn)  # what an older daemon's writer session holds for its lifetime
    try:
        running.execute("SELECT pg_advisory_lock_shared(%s, hashtext(current_schema()))", (pg_schema.IN_USE_LOCK,))
        with pytest.raises(StoreError, match="another daemon or command has it open: stop every daemon"):
            PostgresStore(dsn)
        with _admin(dsn) as conn:
            assert pg_schema.schema_version(conn) == older  # nothing rewritten
    finally:
        running.close()
    store = PostgresStore(dsn)  # the last old daemon stopped: the upgrade runs
    try:
        assert [s.version for s in store.migrations_run] == [pg_schema.PG_SCHEMA_VERSION]
        assert not store.save(record("M1")).duplicate
    finally:
        store.close()


def test_no_store_a_newer_store_and_a_foreign_schema_are_refused(dsn: str) -> None:
    """Commands do not create a store; a newer version or someone else's messages table is never touched."""
    with pytest.raises(StoreError, match="no store in"):
        PostgresStore(dsn, migrate_schema=False)
    with _admin(dsn) as conn:
        conn.execute("CREATE TABLE messages (x integer)")
    with pytest.raises(StoreError, match="not an overread store"):
        PostgresStore(dsn)
    with _admin(dsn) as conn:
        conn.execute("DROP TABLE messages")
        pg_schema.migrate(conn)
        conn.execute("UPDATE overread_schema SET version = 99")
    with pytest.raises(StoreError, match="newer than this program's"):
        PostgresStore(dsn)


def test_one_message_saved_by_two_stores_at_once_is_stored_once(dsn: str) -> None:
    """Two daemons on one database get the same 60 messages at once: each is stored once, both answer alike."""
    first, second = PostgresStore(dsn), PostgresStore(dsn)
    try:
        keys = [f"K{i}" for i in range(60)]
        barrier = threading.Barrier(2)
        results: dict[int, list[Future[SaveResult]]] = {0: [], 1: []}

        def send(index: int, store: PostgresStore) -> None:
            barrier.wait()
            results[index] = [store.submit(record(k, ack=f"ACK {k} from {index}".encode())) for k in keys]

        threads = [threading.Thread(target=send, args=(i, s)) for i, s in enumerate((first, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, a, b in zip(keys, results[0], results[1], strict=True):
            one, two = a.result(timeout=30), b.result(timeout=30)
            assert one.message_pk == two.message_pk
            assert sorted((one.duplicate, two.duplicate)) == [False, True], k
            assert one.ack == two.ack  # the duplicate answers with the stored ACK
        assert len(list(first.messages())) == len(keys)
    finally:
        first.close()
        second.close()


def test_outbox_ids_of_one_accession_follow_commit_order_across_stores(dsn: str) -> None:
    """Daemon A has inserted a routing message of accession X but not committed: daemon B's save of a
    routing message of X waits for A's commit and gets the larger id; C's, of another accession, does not wait."""
    from listener.store.postgresql import _insert_record

    a, b, c = PostgresStore(dsn), PostgresStore(dsn), PostgresStore(dsn)
    try:
        inserted, release = threading.Event(), threading.Event()

        def save_and_hold(conn: object) -> None:
            _insert_record(conn, record("A1", outbox=(item("X", "from-a"),)))  # type: ignore[arg-type]
            inserted.set()
            release.wait(20)

        held = a.writer.execute(save_and_hold, "hold")
        assert inserted.wait(10)
        waiting = b.submit(record("B1", outbox=(item("X", "from-b"),)))
        other = c.submit(record("C1", outbox=(item("Y", "from-c"),)))
        assert not other.result(timeout=10).duplicate
        time.sleep(0.5)
        assert not waiting.done(), "B's routing message of X committed before A's"
        release.set()
        held.result(timeout=10)
        assert not waiting.result(timeout=10).duplicate
        ids = {r.control_id: r.id for r in c.outbox_list()}
        assert ids["from-a"] < ids["from-b"]
    finally:
        release.set()
        for store in (a, b, c):
            store.close()


def test_a_failing_save_in_a_batch_fails_alone(dsn: str) -> None:
    """The server aborts one save's statement mid-batch: its savepoint is rolled back, the others commit."""
    store = PostgresStore(dsn)
    try:
        with _admin(dsn) as conn:
            conn.execute(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.accession = 'POISON' THEN RAISE EXCEPTION 'patient Doe poisoned'; END IF;"
                " RETURN NEW; END $$"
            )
            conn.execute("CREATE TRIGGER poison BEFORE INSERT ON reports FOR EACH ROW EXECUTE FUNCTION poison()")
        started, release = threading.Event(), threading.Event()

        def hold(conn: object) -> None:
            started.set()
            release.wait(10)

        store.writer.execute(hold, "hold")
        assert started.wait(10)
        futures = [
            store.submit(record("G1")),
            store.submit(record("P1", reports=(report("POISON"),))),
            store.submit(record("G2")),
        ]
        commits = store.writer.commits
        release.set()
        assert not futures[0].result(timeout=10).duplicate
        with pytest.raises(StoreError) as failed:
            futures[1].result(timeout=10)
        assert "Doe" not in str(failed.value) and "save failed" in str(failed.value)
        assert not futures[2].result(timeout=10).duplicate
        assert store.writer.commits == commits + 2  # the hold's COMMIT, then one shared by the three saves
        assert [m.control_id for m in store.messages()] == ["G1", "G2"]
    finally:
        store.close()


def test_a_connection_the_server_drops_is_opened_again(dsn: str) -> None:
    """The server ends the writer's and the reader's sessions (a restart, a failover): the next calls reconnect."""
    store = PostgresStore(dsn)
    try:
        assert not store.save(record("M1")).duplicate
        writer_pid = store.writer.execute(lambda conn: conn.info.backend_pid).result()
        reader_pid = store._reader.run("pid", lambda conn: conn.info.backend_pid)  # the reader session (private)
        with _admin(dsn) as conn:
            for pid in (writer_pid, reader_pid):
                conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        # Reads run again on a new session; the save that meets the dropped one fails (no ACK).
        assert store.find_duplicate("RIS", "HOSP", "M1") is not None
        with pytest.raises(StoreError, match="save failed"):
            store.save(record("M2"))
        assert store.health_reason().startswith("last save failed")
        assert not store.save(record("M2")).duplicate
        assert store.health_reason() == ""
        assert [m.control_id for m in store.messages()] == ["M1", "M2"]
    finally:
        store.close()


@dataclass(frozen=True)
class _Settings:
    state_dir: Path
    store_url: str
    synchronous: str = "FULL"
    store_password_file: Path | None = None


def test_open_store_picks_postgresql_by_the_url(dsn: str, tmp_path: Path) -> None:
    """A postgresql:// store_url selects the backend; commands (create=False) never create a store."""
    settings = _Settings(tmp_path, as_url(dsn))
    with pytest.raises(StoreError, match="no store in postgresql://"):
        open_store(settings, create=False)
    store = open_store(settings)
    try:
        assert isinstance(store, PostgresStore)
        assert not store.save(record("M1")).duplicate
    finally:
        store.close()
    assert not (tmp_path / "overread.db").exists()
    secret = tmp_path / "pw"
    secret.write_bytes(b"\xff\xfe not text")
    with pytest.raises(StoreError, match="cannot be read") as unreadable:
        open_store(_Settings(tmp_path, dsn, store_password_file=secret), backend="postgresql")
    assert "not text" not in str(unreadable.value)


def test_store_migrate_upgrades_a_postgresql_store_and_file_actions_refuse(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`overread store migrate` with a postgresql:// config: --list, migrate, nothing left; backup points elsewhere."""
    from listener.cli import main

    config = tmp_path / "overread.yaml"
    config.write_text(f"state_dir: var\nstore: {as_url(dsn)}\n", encoding="utf-8")
    assert main(["store", "migrate", "--config", str(config)]) == 2
    assert "no store in postgresql://" in capsys.readouterr().err
    with _admin(dsn) as conn:
        pg_schema.migrate(conn, target=3)
    assert main(["store", "migrate", "--list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    latest = pg_schema.PG_SCHEMA_VERSION
    assert (
        f"schema v3 (this program: v{latest})" in listed
        and "v3 -> v4: explicit peer-review scores table  [pending]" in listed
    )
    assert main(["store", "migrate", "--config", str(config)]) == 0
    assert f"migrated from v3 to v{latest}" in capsys.readouterr().out
    assert main(["store", "migrate", "--config", str(config)]) == 0
    assert f"is at v{latest}: nothing to migrate" in capsys.readouterr().out
    assert main(["store", "backup", str(tmp_path / "bk"), "--config", str(config)]) == 2
    assert "use the server's tools" in capsys.readouterr().err
    assert not (tmp_path / "bk").exists()


def test_the_password_file_is_sent_and_never_shown(dsn: str, tmp_path: Path) -> None:
    """A role that must give a password (the test server asks members of overread_password_login for one):
    store_password_file opens the store; a wrong one is refused without either text in the error."""
    import uuid

    from psycopg import sql

    role = f"pw_{uuid.uuid4().hex[:12]}"
    schema = psycopg.conninfo.conninfo_to_dict(dsn)["options"].split("=", 1)[1]
    with _admin(dsn) as conn:
        if conn.execute("SELECT to_regrole('overread_password_login')").fetchone() == (None,):
            pytest.skip("the test server has no overread_password_login group (.ci/postgres.sh makes one)")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE overread_password_login").format(
                sql.Identifier(role), sql.Literal("right-QZX-1")
            )
        )
        conn.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role))
        )
    try:
        url = as_url(psycopg.conninfo.make_conninfo(dsn, user=role))
        (tmp_path / "right").write_text("right-QZX-1\n", encoding="utf-8")
        (tmp_path / "wrong").write_text("wrong-QZX-2\n", encoding="utf-8")
        with pytest.raises(StoreError, match="connecting to PostgreSQL failed") as refused:
            open_store(_Settings(tmp_path, url, store_password_file=tmp_path / "wrong"))
        assert "QZX" not in str(refused.value)
        store = open_store(_Settings(tmp_path, url, store_password_file=tmp_path / "right"))
        try:
            assert not store.save(record("M1")).duplicate
            assert "QZX" not in repr(store.__dict__)  # kept by the connection factories only
        finally:
            store.close()
    finally:
        with _admin(dsn) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_v9_fills_the_version_summaries_of_stored_reports(dsn: str) -> None:
    """Reports stored before version 9 (one of a processed message, one of a rejected one) get
    their version summary from their JSON and their message, as a save writes it."""
    received = datetime(2026, 11, 17, 8, 0, tzinfo=UTC)
    stored = (report("ACC1"), report("ACC2", text="a second report"))
    with _admin(dsn) as conn:
        pg_schema.migrate(conn, target=8)
        for n, (state, r) in enumerate(zip(("processed", "rejected"), stored, strict=True)):
            (pk,) = conn.execute(
                "INSERT INTO messages (sender_application, sender_facility, control_id, feed, received, transport,"
                " state, ack_code, ack) VALUES ('RIS', 'HOSP', %s, 'default', %s, 'mllp', %s, 'AA', '') RETURNING id",
                (f"M{n}", received, state),
            ).fetchone()
            conn.execute(
                "INSERT INTO reports (message_id, seq, accession, bucket, report_json, findings_json, route_json)"
                " VALUES (%s, 0, %s, %s, %s, %s, %s)",
                (pk, r.accession, r.bucket, r.report_json, r.findings_json, r.route_json),
            )
    store = PostgresStore(dsn)
    try:
        assert [s.version for s in store.migrations_run] == list(range(9, pg_schema.PG_SCHEMA_VERSION + 1))
        (lone,) = store.window_versions(
            received,
            received + timedelta(hours=1),
            [(received - timedelta(days=9999), received + timedelta(days=9999))],
        ).lone
        assert (lone.count, lone.first_accession) == (1, "ACC1")
    finally:
        store.close()
    with _admin(dsn) as conn:
        rows = conn.execute(
            "SELECT received, stage, clinical_at, prelim_minutes, summary FROM reports ORDER BY id"
        ).fetchall()
    assert [tuple(row) for row in rows] == [
        version_columns(r.report_json, r.findings_json, received, processed)
        for r, processed in zip(stored, (True, False), strict=True)
    ]


def _indexes_used(plan: object) -> set[str]:
    """The names of the indexes an EXPLAIN (FORMAT JSON) plan reads."""
    if isinstance(plan, dict):
        found = {str(plan["Index Name"])} if "Index Name" in plan else set()
        return found.union(*(_indexes_used(v) for v in plan.values()))
    if isinstance(plan, list):
        return set().union(*(_indexes_used(v) for v in plan))
    return set()


def test_the_overread_page_reads_have_indexes_that_answer_them(dsn: str) -> None:
    """Schema step 10's indexes serve the statements of the overread page (docs/store.md,
    "Console reads"): priced as on a large store (this one has six rows), each statement reads
    the index made for it. The open Tasks' index is partial: this fails if its predicate and the Task search's
    conditions ever say different things (the planner could no longer use it). The version read
    probes a hash of the accessions with another row (a hashed sub-plan), never scans them per row."""
    import json

    from listener.store.postgresql import _BUCKET_MIX_SQL, _C, _SEARCH_SQL
    from listener.store.rows import window_versions_params, window_versions_sql

    store = PostgresStore(dsn)
    try:
        for n in range(3):
            routed = dataclasses.replace(report(f"ACC{n}"), bucket="overread", route_json='{"pool": "ct"}')
            assert not store.save(record(f"M{n}", reports=(report(f"ACC{n}"), routed))).duplicate
    finally:
        store.close()
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    pools, pool_params = _SEARCH_SQL.open_task_pools()
    statements = {
        "window_versions": (
            window_versions_sql(1, "%s", "::timestamptz", _C),
            window_versions_params(since, until, (since, until), windows=True),
        ),
        "open_task_pools": (pools, (*pool_params, 5000)),
        "bucket_mix": (_BUCKET_MIX_SQL, (since, until)),
    }
    wanted = {
        "window_versions": {"reports_versions", "reports_accession"},
        "open_task_pools": {"reports_tasks"},
        "bucket_mix": {"reports_received_bucket"},
    }
    used = {}
    plans = {}
    with _admin(dsn) as conn:
        conn.execute("ANALYZE reports")
        # Priced as on a large store: no table scan, and the newest Tasks read in id order.
        conn.execute("SET enable_seqscan = off")
        for name, (sql, params) in statements.items():
            conn.execute(f"SET enable_sort = {'off' if name == 'open_task_pools' else 'on'}")
            ((plan,),) = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchall()
            used[name] = _indexes_used(plan) & wanted[name]
            plans[name] = json.dumps(plan)
    assert used == wanted
    assert "NOT (hashed SubPlan" in plans["window_versions"]


def _grouped_runs(plan: object) -> list[int]:
    """The loops run by each node of an EXPLAIN (ANALYZE, FORMAT JSON) plan that groups by ``g.accession``
    (the counting of every accession's rows in :func:`listener.store.rows.window_versions_sql`)."""
    if isinstance(plan, dict):
        found = [int(plan["Actual Loops"])] if plan.get("Group Key") == ["g.accession"] else []
        return found + [n for v in plan.values() for n in _grouped_runs(v)]
    if isinstance(plan, list):
        return [n for v in plan for n in _grouped_runs(v)]
    return []


def test_window_versions_counts_every_accession_only_when_the_window_holds_most_of_the_store(dsn: str) -> None:
    """The version read finds the accessions with another row one of two ways (docs/store.md, "The
    overread page on PostgreSQL"), and the server runs only the one the store's first receive time
    chooses: a window reaching back to less than one window length before that time counts every
    accession's rows in ``reports_accession`` (its group aggregate runs, in index order); a short
    window of an older store looks its own accessions up (the aggregate never runs). Both give the
    same split (tests/unit/store/test_outcome_data.py)."""
    from listener.store.postgresql import _C
    from listener.store.rows import window_versions_params, window_versions_sql

    first = datetime(2026, 3, 1, tzinfo=UTC)
    store = PostgresStore(dsn)
    try:
        for n, day in enumerate((0, 0, 10, 40)):
            saved = record(f"M{n}", reports=(report(f"ACC{n % 3}"),), received=first + timedelta(days=day))
            assert not store.save(saved).duplicate
    finally:
        store.close()
    cases = {
        # 40 days back to the first report: less than one 45-day window before the window's start.
        "whole": (first - timedelta(days=5), first + timedelta(days=41)),
        # A 2-day window 39 days after the first report.
        "short": (first + timedelta(days=39), first + timedelta(days=41)),
    }
    runs = {}
    with _admin(dsn) as conn:
        conn.execute("ANALYZE reports")
        conn.execute("SET enable_hashagg = off")  # the count of each accession in index order, as on a large store
        for name, (since, until) in cases.items():
            sql = window_versions_sql(1, "%s", "::timestamptz", _C)
            params = window_versions_params(since, until, (since, until), windows=True)
            ((plan,),) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchall()
            runs[name] = _grouped_runs(plan)
    assert runs == {"whole": [1], "short": [0]}
