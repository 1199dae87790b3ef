"""The web console's reads over 100,000 stored messages: how long each takes on the server.

Run by hand: ``.venv/bin/python bench/console_queries.py [--messages 100000] [--dir DIR]``;
it also benches PostgreSQL (a new schema, dropped afterwards) when
``OVERREAD_TEST_PG_DSN`` is set or ``--pg DSN`` is given (``--no-sqlite`` skips
SQLite).

The store is filled as bench/store_size.py fills it (the daemon's own records
of four message files, each saved with a new control id and accession), with
the receive times spread evenly over the 7 days before now and the sender
application one of five, so the bins and groups look like a week of traffic.

Then each read the console pages make (docs/store.md, "Console reads") runs
``--runs`` times (default 20) and its median and p95 wall time are printed,
in ms: ``traffic`` over the last 24 hours by hour and the last 7 days by hour,
``bucket_mix`` over 7 days by day, ``messages(bucket=..., limit=50)`` for the
commonest and the rarest bucket and for one no report has (the worst case: every message is probed), the first page ``messages(limit=50)``, and
the newest page (``newest_message_pk()`` then ``messages(after=..., limit=50)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.store_size import fill, pg_schema, templates, variant  # noqa: E402
from listener.store.base import MessageRecord  # noqa: E402

WEEK = timedelta(days=7)
SENDERS = ("RIS", "RIS2", "PACS", "EPIC", "TELERAD")


def builder(now: datetime, messages: int) -> Callable[[MessageRecord, int], MessageRecord]:
    """Records for :func:`bench.store_size.fill`: message n received at an even step of the week before ``now``."""
    step = WEEK / messages

    def make(template: MessageRecord, n: int) -> MessageRecord:
        record = variant(template, n, received=now - WEEK + n * step)
        return dataclasses.replace(record, sender_application=SENDERS[n % len(SENDERS)])

    return make


def timed(runs: int, read: Callable[[], object]) -> tuple[float, float]:
    """(median, p95) ms of ``runs`` calls of ``read``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        read()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def measure(name: str, store: Any, now: datetime, runs: int) -> None:
    """Time each console read on a filled store and print one line each."""
    mix = store.bucket_mix(now - WEEK, now + timedelta(hours=1), step="day")
    totals: dict[str, int] = {}
    for b in mix:
        totals[b.bucket] = totals.get(b.bucket, 0) + b.count
    common = max(totals, key=lambda k: totals[k])
    rare = min(totals, key=lambda k: totals[k])
    print(f"{name}: buckets {dict(sorted(totals.items()))}")

    def newest_page() -> list[Any]:
        return list(store.messages(after=max(0, store.newest_message_pk() - 50), limit=50))

    reads: list[tuple[str, Callable[[], object]]] = [
        ("traffic 24h by hour", lambda: store.traffic(now - timedelta(hours=24), now, step="hour")),
        ("traffic 7d by hour", lambda: store.traffic(now - WEEK, now, step="hour")),
        ("bucket_mix 7d by day", lambda: store.bucket_mix(now - WEEK, now, step="day")),
        (f"messages bucket={common} limit 50", lambda: list(store.messages(bucket=common, limit=50))),
        (f"messages bucket={rare} limit 50", lambda: list(store.messages(bucket=rare, limit=50))),
        ("messages bucket=absent limit 50 (reads all)", lambda: list(store.messages(bucket="absent", limit=50))),
        ("messages limit 50 (first page)", lambda: list(store.messages(limit=50))),
        ("messages newest page of 50", newest_page),
    ]
    for label, read in reads:
        median, p95 = timed(runs, read)
        print(f"{name:<10} {label:<40} median {median:>8.1f} ms  p95 {p95:>8.1f} ms")


@contextmanager
def filled_sqlite(directory: str, records: list[MessageRecord], messages: int, now: datetime) -> Iterator[Any]:
    """A new SQLite store in ``directory`` (synchronous NORMAL: the fill is not what is measured)
    holding ``messages`` records of :func:`builder`; closed and removed afterwards."""
    from listener.store.sqlite import SQLiteStore

    Path(directory).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-console-", dir=directory))
    try:
        store = SQLiteStore(work / "overread.db", synchronous="NORMAL")
        try:
            _, seconds = fill(store, records, messages, 64, builder(now, messages))
            print(f"sqlite: {messages} messages stored in {seconds:.0f} s", flush=True)
            yield store
        finally:
            store.close()
    finally:
        shutil.rmtree(work)


def bench_sqlite(args: argparse.Namespace, records: list[MessageRecord], now: datetime) -> None:
    """Fill a new SQLite store and time the reads."""
    with filled_sqlite(args.dir, records, args.messages, now) as store:
        measure("sqlite", store, now, args.runs)


@contextmanager
def filled_postgresql(dsn: str, records: list[MessageRecord], messages: int, now: datetime) -> Iterator[Any]:
    """A new schema on the PostgreSQL server ``dsn`` names holding ``messages`` records of
    :func:`builder`, then VACUUM ANALYZEd as autovacuum leaves a store after inserts
    (statistics for the planner, and the visibility map that lets the server answer from an
    index alone); closed and dropped afterwards."""
    import psycopg

    from listener.store.postgresql import PostgresStore

    with pg_schema(dsn) as (schema, conninfo):
        store = PostgresStore(conninfo)
        try:
            _, seconds = fill(store, records, messages, 64, builder(now, messages))
            print(f"postgresql: {messages} messages stored in {seconds:.0f} s", flush=True)
            with psycopg.connect(dsn, autocommit=True) as conn:
                for table in ("messages", "reports", "processings", "scores", "comparisons"):
                    conn.execute(f"VACUUM ANALYZE {schema}.{table}")
            yield store
        finally:
            store.close()


def bench_postgresql(args: argparse.Namespace, records: list[MessageRecord], now: datetime) -> None:
    """Fill a new schema on the PostgreSQL server and time the reads."""
    with filled_postgresql(args.pg, records, args.messages, now) as store:
        measure("postgresql", store, now, args.runs)


def main() -> None:
    """Build the records, fill each store, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dir", default="var")
    parser.add_argument("--pg", metavar="DSN", default=os.environ.get("OVERREAD_TEST_PG_DSN"))
    parser.add_argument("--no-sqlite", action="store_true", help="bench PostgreSQL only")
    args = parser.parse_args()
    records = templates()
    now = datetime.now(UTC).replace(microsecond=0)
    if not args.no_sqlite:
        bench_sqlite(args, records, now)
    if args.pg:
        bench_postgresql(args, records, now)


if __name__ == "__main__":
    main()
