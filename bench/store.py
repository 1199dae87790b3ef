"""Benchmark the durable store: sequential commits vs group commit.

Run by hand: ``.venv/bin/python bench/store.py [--seconds 3] [--synchronous FULL] [--dir DIR]``
or, for the PostgreSQL backend (group scenarios only, each in a new schema of
the database the DSN names, dropped afterwards; docs/store.md):
``.venv/bin/python bench/store.py --postgresql "$OVERREAD_TEST_PG_DSN"``

Scenarios, each on a fresh database in ``--dir`` (default: a temporary directory
under ./var, i.e. on the disk the daemon would use), each record the size of a
typical message (2.4 KB raw ORU, one report with findings and route, one outbox
row):

* ``sequential``: no writer thread; one connection, one transaction and one
  fsync per record (what a naive "commit then ACK" does);
* ``group xN``: N threads calling ``SQLiteStore.save()`` in a loop, sharing the
  group-commit writer.

Prints records/s, commits/s, the mean batch size, save latency p50/p99 and,
for the group scenarios, the store threads' CPU per record (writer and
checkpointer, from /proc schedstat; the sequential case reports its caller's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from listener.store import MessageRecord, OutboxItem, ReportRecord, SQLiteStore
from listener.store.schema import migrate
from listener.store.sqlite import _connect, _insert_record, create_private_file

RAW = b"MSH|^~\\&|RIS|HOSP|OVR|HOSP|20240501120000||ORU^R01|%s|P|2.5.1\r" + b"OBX|" * 600
REPORT = json.dumps({"text": "FINDINGS: " + "no acute intracranial abnormality. " * 80})
FINDINGS = json.dumps([{"rule": "laterality.impression_vs_findings", "severity": "error"}] * 3)
ROUTE = json.dumps({"bucket": "selective_overread", "pool": "neuro", "reasons": ["x"] * 4})


def make_record(control_id: str) -> MessageRecord:
    """A record of realistic size."""
    return MessageRecord(
        control_id=control_id,
        sender_application="RIS",
        sender_facility="HOSP",
        feed="default",
        received=datetime.now(UTC),
        raw=RAW % control_id.encode(),
        transport="mllp",
        state="processed",
        ack_code="AA",
        ack=b"MSH|^~\\&|OVR|HOSP|RIS|HOSP|20240501120000||ACK^R01|A1|P|2.5.1\rMSA|AA|" + control_id.encode(),
        reports=(ReportRecord("ACC" + control_id, REPORT, FINDINGS, ROUTE, "selective_overread"),),
        outbox=(OutboxItem("ris", "ACC" + control_id, "O" + control_id, RAW[:1500]),),
    )


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def thread_cpu_ns(*native_ids: int | None) -> int:
    """CPU time (ns) of the given threads of this process, from /proc schedstat (0 elsewhere)."""
    total = 0
    for tid in native_ids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def report(name: str, records: int, commits: int, elapsed: float, latencies: list[float], cpu_ns: int) -> None:
    """Print one result line."""
    print(
        f"{name:<12} {records:>8} {commits:>8} {records / elapsed:>10.0f} {commits / elapsed:>10.0f}"
        f" {records / max(commits, 1):>7.1f} {statistics.median(latencies) * 1000:>8.2f}"
        f" {percentile(latencies, 99) * 1000:>8.2f} {cpu_ns / max(records, 1) / 1000:>10.0f}"
    )


def bench_sequential(path: Path, seconds: float, synchronous: str) -> None:
    """One thread, one transaction per record, on the caller's thread."""
    create_private_file(path)
    conn = _connect(path, synchronous, 5000, reader=False)  # type: ignore[arg-type]
    migrate(conn)
    latencies: list[float] = []
    n = 0
    cpu0 = time.thread_time_ns()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        rec = make_record(f"S{n}")
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        _insert_record(conn, rec)
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t0)
        n += 1
    elapsed = time.perf_counter() - start
    cpu = time.thread_time_ns() - cpu0
    conn.close()
    report("sequential", n, n, elapsed, latencies, cpu)


def bench_group(path: Path, seconds: float, synchronous: str, threads_n: int, store: Any = None) -> None:
    """threads_n submitters calling save() in a loop through the group-commit writer (SQLite, or ``store``)."""
    if store is None:
        store = SQLiteStore(path, synchronous=synchronous)  # type: ignore[arg-type]
    latencies: list[list[float]] = [[] for _ in range(threads_n)]
    stop = threading.Event()
    barrier = threading.Barrier(threads_n + 1)

    def work(t: int) -> None:
        mine = latencies[t]
        i = 0
        barrier.wait()
        while not stop.is_set():
            rec = make_record(f"G{t}-{i}")
            t0 = time.perf_counter()
            store.save(rec)
            mine.append(time.perf_counter() - t0)
            i += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    barrier.wait()
    checkpointer = getattr(store, "_checkpointer", None)  # absent in older versions of the store
    ids = (store.writer._thread.native_id, checkpointer._thread.native_id if checkpointer else None)
    commits0, jobs0 = store.writer.commits, store.writer.jobs_committed
    cpu0 = thread_cpu_ns(*ids)
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu = thread_cpu_ns(*ids) - cpu0
    commits = store.writer.commits - commits0
    records = store.writer.jobs_committed - jobs0
    store.close()
    report(f"group x{threads_n}", records, commits, elapsed, [x for ls in latencies for x in ls], cpu)


def bench_postgresql(dsn: str, seconds: float) -> None:
    """The group scenarios on the PostgreSQL backend, each in a fresh schema."""
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    from listener.store.postgresql import PostgresStore

    print(f"postgresql, {seconds:g} s per scenario")
    print(
        f"{'scenario':<12} {'records':>8} {'commits':>8} {'records/s':>10} {'commits/s':>10}"
        f" {'batch':>7} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/rec':>10}"
    )
    for threads_n in (1, 8, 32):
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        try:
            store = PostgresStore(make_conninfo(dsn, options=f"-c search_path={schema}"))
            bench_group(Path(schema), seconds, "FULL", threads_n, store)
        finally:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    """Run every scenario and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "EXTRA", "NORMAL"])
    parser.add_argument("--dir", default="var")
    parser.add_argument("--postgresql", metavar="DSN", help="bench the PostgreSQL backend on this server instead")
    args = parser.parse_args()
    if args.postgresql:
        bench_postgresql(args.postgresql, args.seconds)
        return
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        print(f"synchronous={args.synchronous}, {args.seconds:g} s per scenario, in {work}")
        print(
            f"{'scenario':<12} {'records':>8} {'commits':>8} {'records/s':>10} {'commits/s':>10}"
            f" {'batch':>7} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/rec':>10}"
        )
        bench_sequential(work / "sequential.db", args.seconds, args.synchronous)
        for threads_n in (1, 8, 32):
            bench_group(work / f"group{threads_n}.db", args.seconds, args.synchronous, threads_n)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
