"""Alternated pairs: two daemons (two trees of the code, or two configs), same load, same minutes.

Run by hand::

    .venv/bin/python bench/pairs.py --a /path/to/old/tree --b . [--pairs 4]
    .venv/bin/python bench/pairs.py --b-config "worker_affinity: false"

On a shared machine the rate of one run moves by ±20 % from minute to minute,
so a change is judged by pairs: side A, then side B, then A again, each a fresh
``overread serve`` (SQLite store in a new directory, ``workers: 2`` unless a
side's config says otherwise, JSON logs to /dev/null) started from its tree
(``PYTHONPATH`` and working directory) and driven as ``bench/mllp.py
--vary-text`` drives it (with ``--corpus-texts``, as ``bench/mllp.py --corpus-texts``: the
real reports of ../shared/corpus): a warm-up of ``--warm-up`` messages (8 connections,
window 16), then ``--messages`` at ``--connections`` and ``--window``. Each run
prints:

* msgs/s and ACK p50/p99 (ms), and the client's own CPU per message (this
  process: the load is on the same cores);
* the daemon's user and system CPU per message, and each of its threads'
  (``/proc/PID/task``) with its voluntary and involuntary context switches per
  message (the GIL hand-offs and reactor wake-ups show there);
* each worker process's CPU per message it handled (its share: CPU over
  messages / workers), the seconds it ran and waited to run
  (``/proc/PID/schedstat``), and the CPUs it may run on.

At the end: the median of each figure per side, and in how many pairs B was
faster. Figures of these runs: docs/benchmarks.md ("The worker in the daemon,
2026-12-07" and later sections).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.mllp import CORPUS_FILE, child_pids, corpus_bodies, daemon_command, free_port, run_load, wait_port  # noqa: E402
from bench.pipeline_cpu import stat_times  # noqa: E402


@dataclass
class Side:
    """One side of the pairs: where its code is and what its config file says."""

    name: str
    tree: Path
    config: str
    runs: list[dict[str, float]] = field(default_factory=list)


def _thread_times(pid: int) -> dict[str, tuple[str, float, float, int, int]]:
    """Per thread of ``pid``: (name, user s, system s, voluntary, involuntary context switches)."""
    found: dict[str, tuple[str, float, float, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
            status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        found[task.name] = (
            name,
            *stat_times(stat),
            int(status["voluntary_ctxt_switches"]),
            int(status["nonvoluntary_ctxt_switches"]),
        )
    return found


def _process_times(pid: int) -> tuple[float, float, float, float]:
    """(user s, system s, s run, s waited to run) of process ``pid``."""
    ran, waited = Path(f"/proc/{pid}/schedstat").read_text().split()[:2]
    return (*stat_times(Path(f"/proc/{pid}/stat").read_text()), int(ran) / 1e9, int(waited) / 1e9)


def one_run(side: Side, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Start ``side``'s daemon, load it, print and return its figures."""
    config = tmp / "overread.yaml"
    config.write_text(f"workers: 2\n{side.config}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = str(side.tree)
    proc = subprocess.Popen(
        daemon_command(port, tmp / "state", ["--config", str(config)]),
        cwd=side.tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    n = args.messages
    try:
        wait_port(port, proc)
        raw = CORPUS_FILE.read_bytes()
        bodies = args.bodies
        asyncio.run(run_load(port, raw, "warm", 8, 16, args.warm_up, True, bodies))
        workers = child_pids(proc.pid)
        daemon0, threads0 = _process_times(proc.pid), _thread_times(proc.pid)
        workers0 = {w: _process_times(w) for w in workers}
        client0 = resource.getrusage(resource.RUSAGE_SELF)
        rate, p50, p99 = asyncio.run(run_load(port, raw, "run", args.connections, args.window, n, True, bodies))
        client1 = resource.getrusage(resource.RUSAGE_SELF)
        daemon1, threads1 = _process_times(proc.pid), _thread_times(proc.pid)
        workers1 = {w: _process_times(w) for w in workers}
        cpus = {w: sorted(os.sched_getaffinity(w)) for w in workers}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    client = (client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime) / n * 1000
    user, system = ((daemon1[i] - daemon0[i]) / n * 1000 for i in (0, 1))
    print(
        f"{side.name}: {rate:.0f} msgs/s, ACK p50 {p50:.1f} p99 {p99:.1f} ms; client {client:.2f} ms/msg;"
        f" daemon user {user:.3f} + system {system:.3f} ms/msg"
    )
    for tid, now in sorted(threads1.items()):
        before = threads0.get(tid)
        if before is None:
            continue
        u, s, vol, inv = now[1] - before[1], now[2] - before[2], now[3] - before[3], now[4] - before[4]
        if u + s > 0.01 or vol > n / 10:
            print(
                f"    thread {now[0]:<15} user {u / n * 1000:.3f} system {s / n * 1000:.3f}"
                f" ms/msg, switches {vol / n:.2f} voluntary {inv / n:.2f} involuntary per msg"
            )
    worker_ms = []
    for w in workers:
        b, a = workers0[w], workers1[w]
        ms = (a[0] + a[1] - b[0] - b[1]) / n * 1000 * len(workers)
        worker_ms.append(ms)
        print(
            f"    worker {w}: {ms:.3f} ms per message it handled, ran {a[2] - b[2]:.1f} s,"
            f" waited {a[3] - b[3]:.1f} s, CPUs {cpus[w]}"
        )
    figures = {"msgs/s": rate, "p99 ms": p99, "daemon ms": user + system}
    if worker_ms:
        figures["worker ms"] = statistics.mean(worker_ms)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, default=REPO, help="side A's tree (default: this one)")
    parser.add_argument("--b", type=Path, default=REPO, help="side B's tree (default: this one)")
    parser.add_argument("--a-config", default="", help="lines added to side A's config (after workers: 2)")
    parser.add_argument("--b-config", default="", help="lines added to side B's config (after workers: 2)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--messages", type=int, default=3000, help="messages measured per run")
    parser.add_argument("--warm-up", type=int, default=300, help="messages sent first, not measured")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=1, help="messages in flight per connection")
    parser.add_argument(
        "--corpus-texts",
        action="store_true",
        help="each message carries a real report of ../shared/corpus, as bench/mllp.py --corpus-texts sends",
    )
    args = parser.parse_args()
    args.bodies = corpus_bodies(CORPUS_FILE.read_bytes()) if args.corpus_texts else []
    sides = [
        Side("A", args.a.resolve(), args.a_config.replace("\\n", "\n")),
        Side("B", args.b.resolve(), args.b_config.replace("\\n", "\n")),
    ]
    for side in sides:
        print(f"{side.name}: {side.tree}, config: workers: 2 {side.config!r}")
    for i in range(args.pairs):
        print(f"pair {i + 1} (load average {os.getloadavg()[0]:.1f})")
        for side in sides:
            with tempfile.TemporaryDirectory() as tmp:
                side.runs.append(one_run(side, args, Path(tmp)))
    print(f"medians of {args.pairs} pairs, A / B:")
    for key in sides[0].runs[0]:
        a, b = (statistics.median(r[key] for r in side.runs) for side in sides)
        print(f"  {key:<10} {a:8.2f} / {b:8.2f}")
    faster = sum(rb["msgs/s"] > ra["msgs/s"] for ra, rb in zip(sides[0].runs, sides[1].runs, strict=True))
    print(f"B faster in {faster} of {args.pairs} pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
