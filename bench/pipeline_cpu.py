"""CPU per message for the ``bench/mllp.py --vary-text`` workload: where each millisecond goes.

Run by hand: ``.venv/bin/python bench/pipeline_cpu.py [--messages N] [--daemon] [--workers 0,2]``.

CPU time, not wall clock: the figures hold on a machine that other work keeps
busy (a loaded machine still inflates them somewhat through cache misses and
frequency scaling, so compare runs made side by side).

In process (always): the corpus ORU of bench/mllp.py, each message with its
own MSH-10 and its own report text (``with_control_id(..., vary_text=True)``),
through the stages a worker process runs, each timed with
``time.process_time()`` over all N messages:

* ``decode``: ``decode_message``;
* ``qa``: ``run_rules`` with the report's own new ``TextCache``;
* ``route``: the routing policy on that same cache (what ``check_report`` does);
* ``process``: ``listener.pipeline.process`` whole (the three above);
* ``records``: ``report_records`` (the stored JSON columns);
* ``forms``: what else a worker makes for the store: each record's stored
  forms (``with_forms``, SQLite's) and the raw bytes compressed (``pack_raw``);
* ``checked``: what a worker makes of the outcome for the daemon
  (``listener.intake.mllp_checked``: the ACK, the routing messages, the
  record, the log line's fields with their keyed hashes, the metrics' tally);
* ``reply pickle``: the worker's reply (that record, fields and tally)
  pickled (``procworker.dumps``) and unpickled (what crosses the pipe back to
  the daemon); ``reply loads``: the unpickling alone (the daemon's share);
* ``decode in turn``, ``qa in turn``, ``route in turn``: the first three again,
  timed one message at a time in the order ``process`` runs them. Each stage
  in a loop of its own runs with its code and data in the CPU's caches, so the
  three above add up to less than ``process`` (the same instructions: docs/benchmarks.md,
  "Worker CPU, round 8"); these three add up to it.

``--daemon``: ``overread serve`` (SQLite store, JSON logs to /dev/null) for each
value of ``--workers``, driven as ``bench/mllp.py`` drives it (8 connections,
window 1, ``--vary-text``); the CPU (user + system, from ``/proc/PID/stat``)
the daemon and its worker processes spent on N messages after a warm-up of
``--stored`` messages (default 200), divided by N. This is the figure the
throughput target is made of (docs/benchmarks.md, "Worker processes"); how it
moves with the store's size: docs/benchmarks.md, "The daemon's CPU and the
store's size".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.mllp import (  # noqa: E402
    CORPUS_FILE,
    child_pids,
    daemon_command,
    free_port,
    run_load,
    wait_port,
    with_control_id,
)
from listener.assemble import build_pipeline  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.hl7v2.decode import decode_message  # noqa: E402
from listener.hl7v2.segments import read_header  # noqa: E402
from listener.intake import Recording, ack_builder, mllp_checked, report_records  # noqa: E402
from listener.logs import keyed_hash  # noqa: E402
from listener.pipeline import Outcome, Pipeline, process, version_fields, versions_of  # noqa: E402
from listener.qa.engine import QaContext, run_rules  # noqa: E402
from listener.server.procworker import dumps  # noqa: E402
from listener.store.base import ReportRecord  # noqa: E402
from listener.store.compact import pack_raw  # noqa: E402
from listener.store.rows import with_forms  # noqa: E402
from listener.text import TextCache  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def stage_times(pipeline: Pipeline, messages: list[bytes]) -> dict[str, float]:
    """Milliseconds of CPU per message for each stage over ``messages``."""
    now = datetime.now(UTC)
    qa, decide = pipeline.qa, pipeline.decide_route
    assert qa is not None and decide is not None
    reports = [
        decode_message(m, pipeline.mappings, received_at=now, procedures=pipeline.procedures).reports[0]
        for m in messages
    ]
    contexts = [QaContext(now=now, text_cache=TextCache()) for _ in messages]
    findings = [run_rules(r, qa, c) for r, c in zip(reports, contexts, strict=True)]
    outcomes = [process(m, pipeline, received_at=now) for m in messages]
    records = [report_records(o) for o in outcomes]
    recording = Recording(b"k" * 32)
    ack = ack_builder(lambda: now)

    def checked(m: bytes, o: Outcome, r: tuple[ReportRecord, ...], packed_raw: bytes | None) -> object:
        header = read_header(m)
        assert header is not None
        return mllp_checked(
            m,
            header,
            o,
            r,
            ack=ack,
            recording=recording,
            received=now,
            versions=version_fields(pipeline),
            hashed=lambda v: keyed_hash(v, recording.hash_key),
            packed_raw=packed_raw,
        )

    replies = [
        ("done", versions_of(pipeline), checked(m, o, with_forms(r, packed=True), pack_raw(m)))
        for m, o, r in zip(messages, outcomes, records, strict=True)
    ]
    pickled = [dumps(r) for r in replies]
    stages: dict[str, Callable[[], object]] = {
        "decode": lambda: [
            decode_message(m, pipeline.mappings, received_at=now, procedures=pipeline.procedures) for m in messages
        ],
        # Each QA run gets a new cache; routing then reuses QA's, as check_report does.
        "qa": lambda: [
            run_rules(r, qa, replace(c, text_cache=TextCache())) for r, c in zip(reports, contexts, strict=True)
        ],
        "route": lambda: [decide(r, f, c) for r, f, c in zip(reports, findings, contexts, strict=True)],
        "process": lambda: [process(m, pipeline, received_at=now) for m in messages],
        "records": lambda: [report_records(o) for o in outcomes],
        "forms": lambda: [(with_forms(r, packed=True), pack_raw(m)) for r, m in zip(records, messages, strict=True)],
        "checked": lambda: [checked(m, o, r, None) for m, o, r in zip(messages, outcomes, records, strict=True)],
        "reply pickle": lambda: [pickle.loads(dumps(r)) for r in replies],
        "reply loads": lambda: [pickle.loads(p) for p in pickled],
    }
    out: dict[str, float] = {}
    for name, func in stages.items():
        if name == "route":
            # The routing facts come from the cache QA filled: fill them once more so
            # each run starts as check_report's routing does (QA done, routing not).
            contexts = [QaContext(now=now, text_cache=TextCache()) for _ in messages]
            for r, c in zip(reports, contexts, strict=True):
                run_rules(r, qa, c)
        t0 = time.process_time()
        func()
        out[name] = (time.process_time() - t0) / len(messages) * 1000
    # decode, QA and routing once more, one message at a time as process (and a worker) runs them:
    # each stage's own loop above keeps its code and data in the CPU's caches, so its figure is
    # less than its share of process; the instructions add up (docs/benchmarks.md, "Worker CPU,
    # round 8").
    spent = dict.fromkeys(("decode", "qa", "route"), 0.0)
    clock = time.process_time
    for m in messages:
        t0 = clock()
        report = decode_message(m, pipeline.mappings, received_at=now, procedures=pipeline.procedures).reports[0]
        t1 = clock()
        context = QaContext(now=now, text_cache=TextCache())
        found = run_rules(report, qa, context)
        t2 = clock()
        decide(report, found, context)
        t3 = clock()
        spent["decode"] += t1 - t0
        spent["qa"] += t2 - t1
        spent["route"] += t3 - t2
    for name, seconds in spent.items():
        out[f"{name} in turn"] = seconds / len(messages) * 1000
    out["reply bytes"] = statistics.fmean(len(dumps(r)) for r in replies)
    return out


def stat_times(stat: str) -> tuple[float, float]:
    """(user, system) CPU seconds from the text of a ``/proc/PID/stat`` (or ``/proc/PID/task/TID/stat``)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 when it is gone)."""
    try:
        return sum(stat_times(Path(f"/proc/{pid}/stat").read_text()))
    except OSError:
        return 0.0


def daemon_cpu(raw: bytes, workers: str, messages: int, tmp: Path, stored: int = 200) -> tuple[float, float, float]:
    """(daemon ms, workers ms, wall s) per message of one ``overread serve`` under the vary-text load.

    ``stored`` messages go in first, untimed (8 connections, window 16: a large
    store fills fast), so the measured ones meet a store of that size.
    """
    port = free_port()
    config = tmp / f"w{workers}.yaml"
    config.write_text(f"workers: {workers}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc = subprocess.Popen(
        daemon_command(port, tmp / f"state-{workers}", ["--config", str(config)]),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        asyncio.run(run_load(port, raw, f"warm{workers}", 8, 16, stored, True))
        kids = child_pids(proc.pid)
        before = cpu_seconds(proc.pid), sum(cpu_seconds(k) for k in kids)
        t0 = time.perf_counter()
        asyncio.run(run_load(port, raw, f"run{workers}", 8, 1, messages, True))
        wall = time.perf_counter() - t0
        after = cpu_seconds(proc.pid), sum(cpu_seconds(k) for k in kids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return (after[0] - before[0]) / messages * 1000, (after[1] - before[1]) / messages * 1000, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600, help="messages measured (each run)")
    parser.add_argument("--rounds", type=int, default=3, help="in-process runs over the messages (median kept)")
    parser.add_argument("--daemon", action="store_true", help="also measure overread serve's CPU per message")
    parser.add_argument("--workers", default="0,2", help="comma-separated workers settings for --daemon")
    parser.add_argument(
        "--stored", type=int, default=200, help="messages stored before the measured ones (--daemon; the warm-up)"
    )
    args = parser.parse_args()
    raw = CORPUS_FILE.read_bytes()
    pipeline = build_pipeline(load_config(None))
    messages = [with_control_id(raw, f"CPU-{i}", vary_text=True) for i in range(args.messages)]
    process(messages[0], pipeline, received_at=datetime.now(UTC))  # first-use costs out of the figures
    runs = [stage_times(pipeline, messages) for _ in range(args.rounds)]
    print(f"in process, {args.messages} messages with their own text, median of {args.rounds} runs (CPU ms/message):")
    for name in runs[0]:
        value = statistics.median(r[name] for r in runs)
        print(f"  {name:<14} {value:8.0f}" if name == "reply bytes" else f"  {name:<14} {value:8.3f}")
    if args.daemon:
        with tempfile.TemporaryDirectory() as tmp:
            for workers in [w.strip() for w in args.workers.split(",") if w.strip()]:
                daemon, kids, wall = daemon_cpu(raw, workers, args.messages, Path(tmp), args.stored)
                print(
                    f"overread serve, workers: {workers}, 8 connections window 1, {args.stored} stored before"
                    " (CPU ms/message):"
                    f" daemon {daemon:.2f} + workers {kids:.2f} = {daemon + kids:.2f}"
                    f" ({args.messages} messages in {wall:.1f} s wall; load average {os.getloadavg()[0]:.1f})"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
