"""Group commit: shared transactions, per-job savepoints, answers only after COMMIT."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from listener.errors import StoreError
from listener.store import SQLiteStore
from listener.store.sqlite import SQLiteSession
from listener.store.writer import BATCH_ATTEMPTS, GroupCommitWriter

from .records import POISON, item, poison_reports, record, report


@pytest.fixture(name="store")
def fixture_store(sqlite_store: SQLiteStore) -> SQLiteStore:
    """SQLite only: these tests drive the SQLite writer connection (traces, savepoints, COMMIT)."""
    return sqlite_store


def _hold_writer(store: SQLiteStore) -> tuple[threading.Event, threading.Event]:
    """Occupy the writer thread with a job that waits, so later submissions queue up."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    store.writer.execute(hold, "hold")
    assert started.wait(10)
    return started, release


def test_concurrent_submitters_share_commits(db_path: Path) -> None:
    """32 threads saving 25 records each need far fewer commits than records; all are stored."""
    batches: list[int] = []
    db_path.parent.mkdir()
    store = SQLiteStore(db_path, on_commit=batches.append)
    try:
        threads_n, per_thread = 32, 25
        barrier = threading.Barrier(threads_n)

        def work(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                assert not store.save(record(f"T{t}-{i}", outbox=(item(f"A{t}", f"O{t}-{i}"),))).duplicate

        threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = threads_n * per_thread
        assert sum(batches) == total == store.writer.jobs_committed
        assert len(batches) == store.writer.commits
        assert len(batches) < total / 2, f"{len(batches)} commits for {total} records"
        assert max(batches) > 1
        assert len(list(store.messages())) == total
    finally:
        store.close()


def test_commit_hook_matches_sqlite_commits(store: SQLiteStore) -> None:
    """on_commit is called once per real COMMIT statement (counted with SQLite's trace hook)."""
    statements: list[str] = []
    commits_before = store.writer.commits
    store.writer.execute(lambda conn: conn.set_trace_callback(statements.append)).result()
    futures = [store.submit(record(f"C{i}")) for i in range(200)]
    for f in futures:
        f.result()
    store.writer.execute(lambda conn: conn.set_trace_callback(None)).result()
    traced = sum(1 for s in statements if s.strip().upper() == "COMMIT")
    # The job installing the hook has its COMMIT traced; the one removing it does not.
    assert traced == store.writer.commits - commits_before - 1
    assert 2 <= traced < 1 + 200


def test_queued_jobs_commit_together(store: SQLiteStore) -> None:
    """Everything queued while the writer is busy goes into the very next transaction."""
    batches: list[int] = []
    store.writer._on_commit = batches.append
    _, release = _hold_writer(store)
    futures = [store.submit(record(f"C{i}")) for i in range(50)]
    assert not any(f.done() for f in futures), "nothing may resolve before its commit"
    release.set()
    for f in futures:
        f.result(10)
    assert batches == [1, 50]


def test_savepoint_failure_isolates_one_record(store: SQLiteStore) -> None:
    """In one shared transaction, a record failing half-way loses only its own writes and future."""
    poison_reports(store)
    batches: list[int] = []
    store.writer._on_commit = batches.append
    _, release = _hold_writer(store)
    good1 = store.submit(record("G1", outbox=(item("A1", "O1"),)))
    # The message row and its first report are written before the bad report fails.
    failing = store.submit(record("BAD", reports=(report("A8"), report(POISON)), outbox=(item("A8", "OB"),)))
    good2 = store.submit(record("G2", outbox=(item("A2", "O2"),)))
    release.set()
    assert not good1.result(10).duplicate
    assert not good2.result(10).duplicate
    with pytest.raises(StoreError):
        failing.result(10)
    assert batches == [1, 3], "the three records shared one transaction"
    assert [m.control_id for m in store.messages()] == ["G1", "G2"]
    assert [r.control_id for r in store.outbox_list()] == ["O1", "O2"]
    assert store.find_duplicate("RIS", "HOSP", "BAD") is None
    # The failed key is free: the sender's retry can be stored.
    assert not store.save(record("BAD")).duplicate


def test_the_first_record_of_a_batch_failing_loses_only_its_own_writes(store: SQLiteStore) -> None:
    """The first job of a batch runs without a savepoint: failing half-way, the transaction (its
    writes only) is rolled back and the records after it are stored in a new one."""
    poison_reports(store)
    batches: list[int] = []
    store.writer._on_commit = batches.append
    _, release = _hold_writer(store)
    failing = store.submit(record("BAD", reports=(report("A8"), report(POISON)), outbox=(item("A8", "OB"),)))
    good1 = store.submit(record("G1", outbox=(item("A1", "O1"),)))
    good2 = store.submit(record("G2", outbox=(item("A2", "O2"),)))
    release.set()
    with pytest.raises(StoreError):
        failing.result(10)
    assert not good1.result(10).duplicate
    assert not good2.result(10).duplicate
    assert batches == [1, 3], "one batch, committed once"
    assert [m.control_id for m in store.messages()] == ["G1", "G2"]
    assert [r.control_id for r in store.outbox_list()] == ["O1", "O2"]
    assert store.find_duplicate("RIS", "HOSP", "BAD") is None
    assert not store.save(record("BAD")).duplicate


def test_duplicates_within_one_batch(store: SQLiteStore) -> None:
    """Two saves of one key in the same transaction: the second is a duplicate of the first."""
    _, release = _hold_writer(store)
    first = store.submit(record("DUP", ack=b"ONE"))
    second = store.submit(record("DUP", ack=b"TWO"))
    release.set()
    assert (first.result(10).duplicate, second.result(10).duplicate) == (False, True)
    assert second.result().ack == b"ONE"
    assert second.result().message_pk == first.result().message_pk


def test_failing_job_of_any_kind_is_isolated(store: SQLiteStore) -> None:
    """A job raising a non-SQLite exception fails its own future with a StoreError naming only its type."""

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO messages (sender_application, sender_facility, control_id,"
            " feed, received, transport, state, ack_code, ack)"
            " VALUES ('X','X','X','f','t','mllp','processed','AA', x'00')"
        )
        raise KeyError("DOE^JANE")

    _, release = _hold_writer(store)
    bad = store.writer.execute(boom, "boom")
    good = store.submit(record("G1"))
    release.set()
    with pytest.raises(StoreError, match=r"^boom failed \(KeyError\)$") as info:
        bad.result(10)
    assert "DOE" not in str(info.value)
    assert good.result(10).duplicate is False
    assert [m.control_id for m in store.messages()] == ["G1"]


def test_failing_job_alone_in_its_transaction_writes_nothing(store: SQLiteStore) -> None:
    """A record failing half-way in a transaction of its own (no SAVEPOINT then) fails its
    future, leaves none of its writes behind, and the next save works."""
    poison_reports(store)
    batches: list[int] = []
    store.writer._on_commit = batches.append
    with pytest.raises(StoreError):
        store.save(record("BAD", reports=(report("A8"), report(POISON)), outbox=(item("A8", "OB"),)))
    assert not store.save(record("G1")).duplicate
    assert batches == [1]
    assert [m.control_id for m in store.messages()] == ["G1"]
    assert store.outbox_list() == []
    assert store.find_duplicate("RIS", "HOSP", "BAD") is None
    assert not store.save(record("BAD")).duplicate


def test_close_commits_queued_work(db_path: Path) -> None:
    """close() finishes every queued save before returning; the data is there after reopening."""
    store = SQLiteStore.in_state_dir(db_path.parent)
    _, release = _hold_writer(store)
    futures = [store.submit(record(f"C{i}")) for i in range(100)]
    closer = threading.Thread(target=store.close)
    closer.start()
    release.set()
    closer.join(10)
    assert all(f.result(0).duplicate is False for f in futures)
    again = SQLiteStore.in_state_dir(db_path.parent)
    try:
        assert len(list(again.messages())) == 100
    finally:
        again.close()


class _FailingCommit(sqlite3.Connection):
    """A connection whose COMMIT fails, as on a full disk."""

    fail_commit = True

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail_commit:
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args, **kwargs)


def test_failed_commit_fails_every_future_and_keeps_nothing(tmp_path: Path) -> None:
    """If COMMIT fails, no future succeeds (no ACK) and none of the batch's writes remain."""
    db = tmp_path / "w.db"

    def connect() -> SQLiteSession:
        return SQLiteSession(sqlite3.connect(db, isolation_level=None, factory=_FailingCommit))

    writer = GroupCommitWriter(
        connect,
        setup=lambda conn: conn.execute("CREATE TABLE IF NOT EXISTS t (x)"),
    )
    held, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        held.set()
        release.wait(10)

    def insert(n: int) -> Future[sqlite3.Cursor]:
        return writer.execute(lambda conn: conn.execute("INSERT INTO t VALUES (?)", (n,)), "insert")

    writer.execute(hold)
    assert held.wait(10)
    futures = [insert(n) for n in range(5)]
    release.set()
    for f in futures:
        with pytest.raises(StoreError, match="insert failed"):
            f.result(10)
    writer.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    finally:
        conn.close()


def test_writer_that_cannot_open_raises_store_error(tmp_path: Path) -> None:
    """A connection failure at start-up is a StoreError from the constructor, not a hung thread."""

    def connect() -> SQLiteSession:
        raise sqlite3.OperationalError("unable to open database file /secret/path")

    with pytest.raises(StoreError, match=r"opening the store failed") as info:
        GroupCommitWriter(connect)
    assert "secret" not in str(info.value)


def test_checkpoints_run_off_the_writer_connection(db_path: Path) -> None:
    """The writer connection only checkpoints as a backstop (a high wal_autocheckpoint); the
    checkpointer thread copies the WAL into the database file every CHECKPOINT_EVERY jobs,
    and every saved record is still there after reopening."""
    from listener.store.sqlite import CHECKPOINT_EVERY, WRITER_AUTOCHECKPOINT

    db_path.parent.mkdir()
    store = SQLiteStore(db_path)
    try:
        pages = store.writer.execute(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]).result()
        assert pages == WRITER_AUTOCHECKPOINT
        for i in range(CHECKPOINT_EVERY):
            store.save(record(f"K{i}"))
    finally:
        store.close()
    assert store._checkpointer.runs >= 1
    again = SQLiteStore(db_path)
    try:
        assert len(list(again.messages())) == CHECKPOINT_EVERY
    finally:
        again.close()


class DeadlockDetected(Exception):
    """What psycopg raises when PostgreSQL ends a transaction's statement as a deadlock's victim."""

    sqlstate = "40P01"


def _deadlocking(runs: list[int], times: int) -> Any:
    """A job that writes a row, then fails as a deadlock's victim in its first ``times`` runs."""

    def work(conn: sqlite3.Connection) -> str:
        conn.execute(
            "INSERT INTO messages (sender_application, sender_facility, control_id,"
            " feed, received, transport, state, ack_code, ack)"
            " VALUES ('X','X','X','f','t','mllp','processed','AA', x'00')"
        )
        runs.append(1)
        if len(runs) <= times:
            raise DeadlockDetected()
        return "stored"

    return work


def _control_ids(store: SQLiteStore) -> list[str]:
    """Every stored message's control id, in order (read on the writer: the test's rows have no times)."""
    rows = store.writer.execute(
        lambda conn: conn.execute("SELECT control_id FROM messages ORDER BY control_id").fetchall(), "reading"
    ).result(10)
    return [str(row[0]) for row in rows]


def test_a_deadlock_runs_the_whole_batch_again_in_a_new_transaction(store: SQLiteStore) -> None:
    """A job fails as a deadlock's victim (two daemons' batches took two accessions' locks in opposite
    order, docs/store.md): only rolling the whole transaction back releases the locks the other waits
    for, so the batch runs again from its first job. Every future succeeds, each once, nothing twice."""
    batches: list[int] = []
    store.writer._on_commit = batches.append
    runs: list[int] = []
    _, release = _hold_writer(store)
    before = store.submit(record("D1"))
    victim = store.writer.execute(_deadlocking(runs, times=1), "deadlocking")
    after = store.submit(record("D2"))
    release.set()
    assert victim.result(10) == "stored"
    assert before.result(10).duplicate is False and after.result(10).duplicate is False
    assert len(runs) == 2
    assert batches == [1, 3]  # the holder alone, then the three in one transaction: the retry's
    assert _control_ids(store) == ["D1", "D2", "X"]


def test_a_deadlock_in_every_attempt_fails_that_job_only(store: SQLiteStore) -> None:
    """A batch runs BATCH_ATTEMPTS times at most: the job that is a deadlock's victim every time fails
    with a StoreError naming the class and SQLSTATE (no text), and the rest of its batch commits."""
    runs: list[int] = []
    _, release = _hold_writer(store)
    before = store.submit(record("E1"))
    victim = store.writer.execute(_deadlocking(runs, times=BATCH_ATTEMPTS), "deadlocking")
    after = store.submit(record("E2"))
    release.set()
    with pytest.raises(StoreError, match=r"^deadlocking failed \(DeadlockDetected SQLSTATE 40P01\)$"):
        victim.result(10)
    assert before.result(10).duplicate is False and after.result(10).duplicate is False
    assert len(runs) == BATCH_ATTEMPTS
    assert _control_ids(store) == ["E1", "E2"]
