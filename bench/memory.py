"""The daemon's memory and store over a long run: 100,000 messages through ``overread serve``.

Run by hand: ``.venv/bin/python bench/memory.py [--messages 100000] [--step 10000]
[--connections 8] [--window 16] [--config FILE | --store DSN] [--dir DIR]``.

Starts ``overread serve`` as ``bench/mllp.py`` does (SQLite store in ``--dir`` or a
temporary directory, JSON logs to /dev/null, its default ``workers: auto`` unless
``--config`` says otherwise) and sends it ``--messages`` messages of the corpus ORU,
each with its own MSH-10, accession and report text (``with_control_id(...,
vary_text=True)``: the text layer's memories and the duplicate check's recent keys
see a real feed's variety), ``--step`` at a time over ``--connections`` connections
with up to ``--window`` messages in flight on each. After each step it prints:

* the messages sent so far and the step's msgs/s and ACK p99;
* the resident set (``VmRSS``) of the daemon and of each worker process, in MiB,
  and the daemon's peak (``VmHWM``) and its parts: anonymous memory (the heap: Python's
  objects, SQLite's page caches), file pages (the mapped code) and shared memory (SQLite's
  WAL index);
* the store's files on disk (the database and its WAL), in bytes per message.

``--store DSN`` (a PostgreSQL server the bench may create a schema on, such as
``$OVERREAD_TEST_PG_DSN``) runs the daemon on a fresh schema of it instead (dropped at the
end); the store's size is then ``pg_total_relation_size`` of the schema's tables (their
indexes and TOAST included), and no WAL is counted (the server's WAL is not the store's).

At the end it stops the daemon (SIGTERM: the store checkpoints its WAL on close)
and prints the database file's bytes per message against the raw bytes per
message (docs/store.md, "Compact storage"; ``bench/store_size.py`` measures the
store alone, with a VACUUM). Every answer must be AA: any other code stops the run.
Figures: docs/benchmarks.md, "Memory over 100,000 messages".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.mllp import (  # noqa: E402
    CORPUS_FILE,
    ConnectionClosed,
    Refused,
    child_pids,
    daemon_command,
    free_port,
    payloads_for,
    run_load,
    status_mib,
    store_schema,
    wait_port,
)
from listener.store.sqlite import DB_FILENAME  # noqa: E402


def mib(pid: int, field: str) -> float:
    """``field`` of ``pid``'s status (``status_mib``) in MiB, 0 when the process is gone."""
    sizes = status_mib(pid, field)
    return sizes[0] if sizes else 0.0


def store_bytes(state_dir: Path) -> tuple[int, int]:
    """(database file, its WAL) in bytes: the SQLite store of ``state_dir``."""

    def size(path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    db = state_dir / DB_FILENAME
    return size(db), size(db.with_name(db.name + "-wal"))


def schema_bytes(url: str) -> tuple[int, int]:
    """(the tables of the store's schema with their indexes and TOAST, 0) in bytes: a PostgreSQL store."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        ).fetchone()
    return (int(row[0]) if row else 0), 0


def step(port: int, raw: bytes, first: int, count: int, connections: int, window: int) -> tuple[float, float, int]:
    """``count`` more messages (over ``connections``): (msgs/s, ACK p99 ms, raw bytes sent)."""
    tag = f"MEM{first}"
    sent = sum(len(p) for one in payloads_for(raw, tag, connections, count, vary_text=True) for p in one)
    try:
        rate, _, p99 = asyncio.run(run_load(port, raw, tag, connections, window, count, True, require_aa=True))
    except (ConnectionClosed, Refused) as exc:
        raise SystemExit(f"after {first} messages: {exc}") from None
    return rate, p99, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--step", type=int, default=10_000, help="messages between two samples")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=16, help="messages in flight per connection")
    parser.add_argument("--config", type=Path, help="the daemon's config file (default: its embedded defaults)")
    parser.add_argument("--store", metavar="DSN", help="a PostgreSQL server: the store on a fresh schema of it")
    parser.add_argument("--dir", type=Path, help="state directory's parent (default: a temporary directory)")
    args = parser.parse_args()
    if args.step % args.connections or args.messages % args.step:
        parser.error("--step must divide --messages, and --connections must divide --step")
    if args.store and args.config:
        parser.error("--store writes the daemon's config itself: give --config or --store, not both")
    raw = CORPUS_FILE.read_bytes()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, ExitStack() as schema:
        state = Path(tmp) / "state"
        port = free_port()
        extra = ["--config", str(args.config)] if args.config else []
        url = schema.enter_context(store_schema(args.store)) if args.store else None
        if url is not None:
            config = Path(tmp) / "overread.yaml"
            config.write_text(f"store: {url}\n")
            extra = ["--config", str(config)]

        def sizes() -> tuple[int, int]:
            return store_bytes(state) if url is None else schema_bytes(url)

        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        proc = subprocess.Popen(
            daemon_command(port, state, extra), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_port(port, proc)
            workers = child_pids(proc.pid)
            print(
                f"overread serve (pid {proc.pid}, {len(workers)} worker processes"
                + (", PostgreSQL store" if args.store else ", SQLite store")
                + f"), {args.messages} messages"
                f" (the corpus ORU, each its own text), {args.connections} connections, window {args.window}"
            )
            print(
                f"at start: daemon RSS {mib(proc.pid, 'VmRSS'):.0f} MiB, workers "
                + ", ".join(f"{mib(w, 'VmRSS'):.0f}" for w in workers)
                + " MiB"
            )
            sent = raw_bytes = 0
            while sent < args.messages:
                rate, p99, size = step(port, raw, sent, args.step, args.connections, args.window)
                sent += args.step
                raw_bytes += size
                db, wal = sizes()
                workers = child_pids(proc.pid)
                print(
                    f"{sent:>7} sent: {rate:5.0f} msgs/s, p99 {p99:6.1f} ms | RSS daemon"
                    f" {mib(proc.pid, 'VmRSS'):4.0f} MiB (peak {mib(proc.pid, 'VmHWM'):.0f};"
                    f" anonymous {mib(proc.pid, 'RssAnon'):.1f}, file {mib(proc.pid, 'RssFile'):.1f},"
                    f" shared {mib(proc.pid, 'RssShmem'):.1f}), workers "
                    + ", ".join(f"{mib(w, 'VmRSS'):.0f}" for w in workers)
                    + f" MiB | store {db / sent:,.0f} B/msg + WAL {wal / 1e6:.0f} MB",
                    flush=True,
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        db, wal = sizes()
        print(
            f"stopped (exit {code}): database {db / 1e6:,.0f} MB, {db / args.messages:,.0f} B/msg for"
            f" {raw_bytes / args.messages:,.0f} raw B/msg ({db / raw_bytes:.2f}x), WAL {wal} B"
        )
        return code


if __name__ == "__main__":
    raise SystemExit(main())
