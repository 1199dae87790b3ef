"""Where an HL7 v2 message's time goes between the network and the ACK, per stage of the pipeline runner.

Run by hand: ``.venv/bin/python bench/worker_stages.py [--workers 2] [--connections 8] [--messages 800]
[--inline on|off]``.

Starts ``overread serve`` (SQLite store, JSON logs to /dev/null) as a child of this script, with
timestamps added around the pipeline runner's jobs (listener/server/runner.py): wrappers of
``Job.__init__``, ``Job._finish`` and ``ProcessRunner._on_process``, and a ``gc.callbacks`` entry.
Drives it as ``bench/mllp.py --vary-text`` does (window 1; a warm-up of 200 messages first), stops
it, and prints for the measured messages:

* ``queue wait``: from ``runner.run`` (the reactor hands the message over) to a runner thread
  starting it (the job's budget starts then);
* ``work``: from that start to the thread having the result (on a worker process: the message
  sent, decoded, checked, routed, its prior look-up answered, the result back and unpickled);
* ``reactor wake``: from the thread having the result to the reactor taking it (``_finish``);
* ``run -> finish``: the three together; the rest of the client's ACK latency is the commit, the
  ACK and the network;
* how many messages ran on the inline thread (``workers_inline``, docs/configuration.md);
* the garbage collector's collections in the daemon during the measured messages, per
  generation (count, total, longest, and which threads ran them);
* CPU per message (user + system, ``/proc``) of the daemon and of its worker processes.

The wrappers cost a few microseconds a message; compare runs of this script with each other,
not with ``bench/mllp.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.mllp import CORPUS_FILE, child_pids, daemon_command, free_port, run_load, wait_port  # noqa: E402
from bench.pipeline_cpu import cpu_seconds  # noqa: E402


def serve_instrumented(out: Path, argv: list[str]) -> int:
    """``overread serve argv`` with the runner's stage timestamps and GC pauses, written to ``out`` at exit."""
    from listener.cli import main
    from listener.server import runner

    clock = time.monotonic
    open_jobs: dict[int, tuple[Any, dict[str, Any]]] = {}
    done: list[dict[str, Any]] = []
    collections: list[tuple[int, float, str, float]] = []
    gc_started: dict[int, float] = {}

    job_init = runner.Job.__init__
    job_finish = runner.Job._finish
    on_process = runner.ProcessRunner._on_process

    def init(self: Any, owner: Any, work: Callable[[Any], Any], on_overrun: Callable[[Any], Any]) -> None:
        rec: dict[str, Any] = {"queued": clock(), "inline": not isinstance(owner, runner.ProcessRunner)}

        def timed(interrupt: Any) -> Any:
            try:
                return work(interrupt)
            finally:
                rec["end"] = clock()

        job_init(self, owner, timed, on_overrun)
        open_jobs[id(self)] = (self, rec)

    def finish(self: Any, ok: bool, value: Any) -> None:
        item = open_jobs.pop(id(self), None)
        if item is not None:
            rec = item[1]
            rec["finish"] = clock()
            deadline = self.interrupt._deadline
            if deadline is not None:
                rec["start"] = deadline - self._runner.budget
            done.append(rec)
        job_finish(self, ok, value)

    def process(self: Any, worker: Any, job: Any) -> Any:
        try:
            return on_process(self, worker, job)
        finally:
            item = open_jobs.get(id(job))
            if item is not None:
                item[1]["end"] = clock()

    def on_gc(phase: str, info: dict[str, int]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            gc_started[ident] = clock()
        else:
            now = clock()
            collections.append(
                (info["generation"], now - gc_started.get(ident, now), threading.current_thread().name, now)
            )

    runner.Job.__init__ = init  # type: ignore[method-assign]
    runner.Job._finish = finish  # type: ignore[method-assign]
    runner.ProcessRunner._on_process = process  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    try:
        return main(argv)
    finally:
        out.write_text(json.dumps({"jobs": done, "gc": collections}))


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "(none)"

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    return f"p50 {at(0.5):7.2f}  p90 {at(0.9):7.2f}  p99 {at(0.99):7.2f}  max {at(1.0):7.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2", help="the workers setting (docs/configuration.md)")
    parser.add_argument("--inline", choices=("on", "off"), default="on", help="the workers_inline setting")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--messages", type=int, default=800, help="messages measured (after 200 of warm-up)")
    parser.add_argument("--serve", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve_instrumented(Path(args.serve[0]), args.serve[1:])

    raw = CORPUS_FILE.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "overread.yaml"
        config.write_text(f"workers: {args.workers}\nworkers_inline: {'true' if args.inline == 'on' else 'false'}\n")
        out = Path(tmp) / "stages.json"
        port = free_port()
        command = daemon_command(port, Path(tmp) / "state", ["--config", str(config)])
        # daemon_command runs `python -m listener serve ...`: run this script's --serve instead.
        command = [sys.executable, __file__, "--serve", str(out), *command[command.index("serve") :]]
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            asyncio.run(run_load(port, raw, "warm", args.connections, 1, 200, True))
            time.sleep(1)
            workers = child_pids(proc.pid)
            daemon0, workers0 = cpu_seconds(proc.pid), sum(cpu_seconds(p) for p in workers)
            rate, p50, p99 = asyncio.run(run_load(port, raw, "run", args.connections, 1, args.messages, True))
            daemon1, workers1 = cpu_seconds(proc.pid), sum(cpu_seconds(p) for p in workers)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        data = json.loads(out.read_text())

    jobs = data["jobs"][-args.messages :]
    first, last = min(j["queued"] for j in jobs), max(j["finish"] for j in jobs)
    n = args.messages
    print(
        f"workers {args.workers}, workers_inline {args.inline}, {args.connections} connections, window 1, "
        f"{n} messages: {rate:.0f} msgs/s, ACK p50 {p50:.2f} ms p99 {p99:.2f} ms; "
        f"inline {sum(1 for j in jobs if j['inline'])}/{len(jobs)}"
    )
    print(
        f"  CPU per message: daemon {(daemon1 - daemon0) / n * 1000:.2f} ms, "
        f"worker processes {(workers1 - workers0) / n * 1000:.2f} ms"
    )
    timed = [j for j in jobs if "start" in j and "end" in j]
    print(f"  {'queue wait':15s}", percentiles([j["start"] - j["queued"] for j in timed]))
    print(f"  {'work':15s}", percentiles([j["end"] - j["start"] for j in timed]))
    print(f"  {'reactor wake':15s}", percentiles([j["finish"] - j["end"] for j in timed]))
    print(f"  {'run -> finish':15s}", percentiles([j["finish"] - j["queued"] for j in jobs]))
    window = [c for c in data["gc"] if first <= c[3] <= last]
    for generation in (0, 1, 2):
        pauses = [c[1] for c in window if c[0] == generation]
        threads = sorted({c[2] for c in window if c[0] == generation})
        if pauses:
            print(
                f"  gc generation {generation}: {len(pauses)} collections, {sum(pauses) * 1000:.1f} ms in all, "
                f"longest {max(pauses) * 1000:.2f} ms ({', '.join(threads)})"
            )
        else:
            print(f"  gc generation {generation}: none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
