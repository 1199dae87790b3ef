"""Bytes per stored message: 100,000 messages through the real store write path.

Run by hand: ``.venv/bin/python bench/store_size.py [--messages 100000] [--dir DIR]``
and, for the PostgreSQL backend (a new schema of the database the DSN names,
dropped afterwards; docs/store.md): ``... --postgresql "$OVERREAD_TEST_PG_DSN"``.

The records are the daemon's own: each message file (the corpus message of
bench/mllp.py and three samples/hl7 messages) goes once through the real
``Intake.receive`` with the default configuration (decode, QA, routing, the
stored JSON of ``report_records``), and the record it submits is kept. Each
stored message is one of those records with a new control id (in the record
and in its raw bytes) and a new accession (in the record and its report JSON),
saved with ``store.submit()`` by one thread keeping up to ``--window`` saves
in flight (the writer groups them into commits, as with many senders).

Prints, per backend: the raw bytes per message, the store's bytes per message
(SQLite: the database file after a WAL checkpoint and a VACUUM, as an operator
sees it; PostgreSQL: ``pg_total_relation_size`` of every table, indexes and
TOAST included, after a VACUUM), its ratio to the raw size, messages/s, the
CPU time per message of the whole process and of the store's writer thread
(the one thread every save goes through: on a loaded machine messages/s
follows the load, CPU time much less), and the process's peak RSS.
``--columns`` also prints what each column and index costs per message
(docs/store.md, "Compact storage"). ``--profile FILE`` writes a cProfile of
the writer thread, timed by that thread's CPU clock (not wall time, which a
loaded machine inflates): ``python -m pstats FILE``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from listener.assemble import build_pipeline  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.logs import configure_logging, get_logger  # noqa: E402
from listener.server.mllp import Intake  # noqa: E402
from listener.store.base import MessageRecord, SaveResult  # noqa: E402

FILES = (
    ROOT / "tests" / "data" / "hl7" / "scout" / "oru_v27_prelim_xr_chest.hl7",
    ROOT / "samples" / "hl7" / "xr-chest-2v-normal.hl7",
    ROOT / "samples" / "hl7" / "ct-head-critical-sdh-communicated.hl7",
    ROOT / "samples" / "hl7" / "mr-knee-left-73721-lt.hl7",
)

#: (table, column) pairs whose stored size --columns reports.
COLUMNS = (
    ("messages", "raw"),
    ("messages", "ack"),
    ("reports", "report_json"),
    ("reports", "findings_json"),
    ("reports", "route_json"),
    ("reports", "explanation"),  # from the compaction schema step on (docs/store.md, "Compact storage")
)


class _Capture:
    """A store that keeps what the intake submits and answers at once."""

    def __init__(self) -> None:
        self.records: list[MessageRecord] = []

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        self.records.append(record)
        fut: Future[SaveResult] = Future()
        fut.set_result(SaveResult(1, False, record.ack, record.ack_code))
        return fut


def templates() -> list[MessageRecord]:
    """The records the daemon's intake makes of the message files."""
    with open("/dev/null", "w") as devnull:
        configure_logging("json", stream=devnull)
        capture = _Capture()
        intake = Intake(
            build_pipeline(load_config(None)),
            capture,  # type: ignore[arg-type]
            hash_key=b"k" * 32,
            call_from_thread=lambda f, *a: f(*a),
        )
        log = get_logger("bench").bind(peer="127.0.0.1:1", conn=1)
        for path in FILES:
            intake.receive(path.read_bytes(), log)
    return capture.records


def variant(template: MessageRecord, n: int, received: datetime | None = None) -> MessageRecord:
    """The template as message number n: a new control id and accession, received now (or at ``received``)."""
    control_id = f"SZ{n:09d}"
    reports = tuple(
        dataclasses.replace(
            r,
            accession=f"{r.accession}-{n}",
            report_json=r.report_json.replace(f'"accession": "{r.accession}"', f'"accession": "{r.accession}-{n}"'),
        )
        for r in template.reports
    )
    return dataclasses.replace(
        template,
        control_id=control_id,
        raw=(template.raw or b"").replace(template.control_id.encode(), control_id.encode()),
        received=received if received is not None else datetime.now(UTC),
        reports=reports,
    )


def fill(
    store: Any,
    records: list[MessageRecord],
    messages: int,
    window: int,
    make: Callable[[MessageRecord, int], MessageRecord] = variant,
) -> tuple[int, float]:
    """Save ``messages`` records ``make`` builds from the templates in turn (default: :func:`variant`);
    returns (raw bytes saved, seconds)."""
    pending: deque[Future[SaveResult]] = deque()
    raw_bytes = 0
    start = time.perf_counter()
    for n in range(messages):
        record = make(records[n % len(records)], n)
        raw_bytes += len(record.raw or b"")
        pending.append(store.submit(record))
        if len(pending) >= window:
            pending.popleft().result()
    while pending:
        pending.popleft().result()
    return raw_bytes, time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class Fill:
    """What saving the messages took."""

    raw_bytes: int
    seconds: float
    #: CPU seconds of the whole process, and of the store's writer thread, while saving.
    cpu: float
    writer_cpu: float


def writer_cpu() -> float:
    """CPU seconds the store's writer thread (``overread-store-writer``) has used so far (0: none running)."""
    return sum(
        time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        for thread in threading.enumerate()
        if thread.name == "overread-store-writer" and thread.ident is not None
    )


class WriterProfile:
    """A cProfile of the store's writer thread on its own CPU clock, from the thread's start.

    Started before the store opens: ``threading.setprofile`` reaches threads started afterwards;
    every other thread drops the hook at its first call.
    """

    def __init__(self) -> None:
        self.profile: cProfile.Profile | None = None
        threading.setprofile(self._boot)

    def _boot(self, _frame: Any, _event: str, _arg: Any) -> None:
        sys.setprofile(None)
        if threading.current_thread().name == "overread-store-writer" and self.profile is None:
            self.profile = cProfile.Profile(time.thread_time)
            self.profile.enable()

    def dump(self, path: str) -> None:
        """Write the profile (call once the store is closed: its writer thread has ended)."""
        threading.setprofile(None)
        if self.profile is None:
            raise SystemExit("the store's writer thread was not profiled")
        self.profile.dump_stats(path)
        print(f"writer thread profile (CPU clock): {path}")


def fill_store(open_store: Callable[[], Any], records: list[MessageRecord], args: argparse.Namespace) -> Fill:
    """Open a store, :func:`fill` it (profiling its writer thread when asked), close it."""
    profile = WriterProfile() if args.profile else None
    store = open_store()
    writer_start, cpu_start = writer_cpu(), time.process_time()
    raw_bytes, seconds = fill(store, records, args.messages, args.window)
    # Read before the store closes: the writer thread's clock ends with the thread.
    filled = Fill(raw_bytes, seconds, time.process_time() - cpu_start, writer_cpu() - writer_start)
    store.close()
    if profile is not None:
        profile.dump(args.profile)
    return filled


def peak_rss_mb() -> float:
    """This process's peak resident set size, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sqlite_sizes(path: Path, columns: bool) -> int:
    """The file's size after a checkpoint and VACUUM; prints per-column/index costs when asked."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (messages,) = conn.execute("SELECT count(*) FROM messages").fetchone()
        if columns:
            for table, column in COLUMNS:
                try:
                    (total,) = conn.execute(
                        f"SELECT coalesce(sum(length(CAST({column} AS BLOB))), 0) FROM {table}"
                    ).fetchone()
                except sqlite3.OperationalError:
                    continue  # a column this version does not have
                print(f"  column {table}.{column:<16} {total / messages:>9.0f} B/msg")
            try:
                rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
            except sqlite3.OperationalError:
                rows = []
            for name, size in rows:
                print(f"  object {name:<24} {size / messages:>9.0f} B/msg")
    finally:
        conn.close()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def bench_sqlite(records: list[MessageRecord], args: argparse.Namespace) -> None:
    """Fill a new SQLite store and measure it."""
    from listener.store.sqlite import SQLiteStore

    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-size-", dir=args.dir))
    try:
        path = work / "overread.db"
        filled = fill_store(lambda: SQLiteStore(path, synchronous="NORMAL"), records, args)
        size = sqlite_sizes(path, args.columns)
        result("sqlite", args.messages, filled, size)
    finally:
        shutil.rmtree(work)


def bench_postgresql(records: list[MessageRecord], args: argparse.Namespace) -> None:
    """Fill a new schema on the PostgreSQL server and measure it."""
    import psycopg

    from listener.store.postgresql import PostgresStore

    with pg_schema(args.postgresql) as (schema, conninfo):
        filled = fill_store(lambda: PostgresStore(conninfo), records, args)
        with psycopg.connect(args.postgresql, autocommit=True) as conn:
            tables = [
                str(name)
                for (name,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
                ).fetchall()
            ]
            for table in tables:
                conn.execute(f"VACUUM ANALYZE {schema}.{table}")
            size = 0
            for table in tables:
                row = conn.execute("SELECT pg_total_relation_size(%s)", (f"{schema}.{table}",)).fetchone()
                size += int(row[0]) if row else 0
            if args.columns:
                present = {
                    (str(t), str(c))
                    for t, c in conn.execute(
                        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
                        (schema,),
                    ).fetchall()
                }
                for table, column in COLUMNS:
                    if (table, column) not in present:
                        continue  # a column this version does not have
                    row = conn.execute(
                        f"SELECT coalesce(sum(pg_column_size({column})), 0) FROM {schema}.{table}"
                    ).fetchone()
                    print(f"  column {table}.{column:<16} {int(row[0]) / args.messages if row else 0:>9.0f} B/msg")
                for name, kind, bytes_ in conn.execute(
                    "SELECT c.relname, c.relkind, pg_relation_size(c.oid) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s"
                    " UNION ALL SELECT c.relname || ' (toast)', 't', pg_total_relation_size(c.reltoastrelid)"
                    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind = 'r' AND c.reltoastrelid != 0"
                    " ORDER BY 3 DESC",
                    (schema, schema),
                ).fetchall():
                    if bytes_:
                        print(f"  object {name:<24} {kind} {int(bytes_) / args.messages:>9.0f} B/msg")
        result("postgresql", args.messages, filled, size)


@contextmanager
def pg_schema(dsn: str) -> Iterator[tuple[str, str]]:
    """A new schema on the server ``dsn`` names, dropped afterwards: yields its name and a
    conninfo whose search_path is it (a store opened there creates its tables in it)."""
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema, make_conninfo(dsn, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def result(name: str, messages: int, filled: Fill, size: int) -> None:
    """Print one result line."""
    raw_per = filled.raw_bytes / messages
    per = size / messages
    print(
        f"{name:<11} {messages:>8} msgs  raw {raw_per:>6.0f} B/msg  stored {per:>6.0f} B/msg"
        f"  ratio {per / raw_per:>5.2f}  total {size / 1e6:>7.1f} MB  {messages / filled.seconds:>6.0f} msgs/s"
        f"  CPU {filled.cpu / messages * 1e6:>4.0f} us/msg (writer {filled.writer_cpu / messages * 1e6:>4.0f})"
        f"  peak RSS {peak_rss_mb():>5.0f} MB"
    )


def main() -> None:
    """Build the records, fill the chosen store, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=64, help="saves in flight")
    parser.add_argument("--dir", default="var")
    parser.add_argument("--columns", action="store_true", help="also print each column's and index's bytes per message")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the writer thread (its CPU clock)")
    parser.add_argument("--postgresql", metavar="DSN", help="bench the PostgreSQL backend on this server instead")
    args = parser.parse_args()
    records = templates()
    print(f"{len(records)} message templates, peak RSS {peak_rss_mb():.0f} MB after loading the pipeline")
    if args.postgresql:
        bench_postgresql(records, args)
    else:
        bench_sqlite(records, args)


if __name__ == "__main__":
    main()
