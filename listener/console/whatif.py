"""The policy page's what-if jobs: ``overread simulate`` in a child process, one at a time
(docs/console.md, "Policy and what-if").

Layer: process management for the console (no Twisted). A job is the CLI itself,
``python -m listener simulate ... --format json --progress``, started with the daemon's own
configuration and state directory: the replay covers the whole window and its document is the
command's, byte for byte. The child runs at a lower priority (niceness +10) and out of the
daemon's process, so message intake keeps its threads and its GIL. It writes
``progress READ TOTAL`` lines on stderr (a thread of the daemon reads them) and the JSON document
to a private file in the state directory; a pasted candidate is written to another (both mode
0600, removed when the job ends).

One job runs at a time; a finished one is kept :data:`KEEP_SECONDS` (at most :data:`KEEP_JOBS`),
visible only to the client that started it. :meth:`WhatIfJobs.stop` kills the running child
(the daemon's shutdown calls it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from listener.logs import get_logger

if TYPE_CHECKING:
    from listener.config import Config

__all__ = [
    "FILE_PREFIX",
    "KEEP_JOBS",
    "KEEP_SECONDS",
    "MAX_LINE",
    "MAX_SECONDS",
    "NICENESS",
    "Job",
    "JobView",
    "WhatIfJobs",
    "remove_stale_files",
    "simulate_command",
]

#: How long a finished job's result is kept, in seconds.
KEEP_SECONDS = 30 * 60
#: How many finished jobs are kept at most (the oldest go first).
KEEP_JOBS = 10
#: How long a child may run before the daemon kills it and fails the job: a child stuck on its
#: store would otherwise hold the one place for what-ifs until its starter cancels it (the
#: 90-day replay of 100,000 messages takes some 2 minutes on a loaded machine: docs/benchmarks.md).
MAX_SECONDS = 30 * 60
#: How much nicer than the daemon the child runs.
NICENESS = 10
#: How the private files of a job are named in the state directory (``.whatif-<random>.json`` / ``.yaml``).
FILE_PREFIX = ".whatif-"
#: The longest stderr line of the child that is read whole; the rest of a longer one is skipped
#: unread into memory (a ``progress`` line is some 30 bytes, the command's messages under 600).
MAX_LINE = 4096
#: Lines of the child's stderr that say where the replay is (``overread simulate --progress``).
_PROGRESS = re.compile(r"progress (\d{1,18}) (\d{1,18})")
#: Only the command's own error lines are shown (never a traceback: it could quote a report).
_MESSAGE = re.compile(r"overread( simulate)?: .{1,500}")


def _log() -> Any:
    return get_logger("listener.console")


@dataclass(slots=True)
class Job:
    """One what-if: its child process while it runs, then its result or its error.

    ``state``: ``running``, ``done``, ``failed`` or ``cancelled``.
    """

    id: str
    client: str
    name: str
    since_key: str
    started: datetime
    clock: float
    state: str = "running"
    read: int = 0
    total: int | None = None
    ended: float | None = None
    result: dict[str, Any] | None = None
    error: str = ""
    process: subprocess.Popen[bytes] | None = None
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobView:
    """What a page shows of a job (a copy taken under the lock)."""

    id: str
    client: str
    name: str
    since_key: str
    started: datetime
    state: str
    read: int
    total: int | None
    seconds: float
    result: dict[str, Any] | None
    error: str


class WhatIfJobs:
    """The what-if jobs of one daemon.

    Args:
        command: the command line of ``overread simulate`` with the daemon's configuration
            (read at each start, so a reload is followed); the job adds the policy, window and
            output options.
        state_dir: where the private files of a job go.
        clock: monotonic seconds.
        max_seconds: a child running longer is killed and its job fails.
    """

    def __init__(
        self,
        command: Callable[[], Sequence[str]],
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        keep_seconds: float = KEEP_SECONDS,
        keep_jobs: int = KEEP_JOBS,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.command = command
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.keep_seconds = keep_seconds
        self.keep_jobs = keep_jobs
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.stopped = False

    # ------------------------------------------------------------------ queries

    def view(self, job: Job) -> JobView:
        """A copy of ``job`` as it is now (take it under :attr:`lock`)."""
        end = job.ended if job.ended is not None else self.clock()
        return JobView(
            job.id,
            job.client,
            job.name,
            job.since_key,
            job.started,
            job.state,
            job.read,
            job.total,
            end - job.clock,
            job.result,
            job.error,
        )

    def find(self, job_id: str, client: str) -> JobView | None:
        """The job ``job_id`` if ``client`` started it and it is still kept; else None."""
        with self.lock:
            self._prune()
            job = self.jobs.get(job_id)
            if job is None or not secrets.compare_digest(job.client.encode(), client.encode()):
                return None
            return self.view(job)

    def running(self) -> JobView | None:
        """The job running now, if any."""
        with self.lock:
            job = self._running()
            return self.view(job) if job is not None else None

    def _running(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.state == "running"), None)

    def _prune(self) -> None:
        now = self.clock()
        finished = sorted(
            (j for j in self.jobs.values() if j.ended is not None), key=lambda j: j.ended or 0.0, reverse=True
        )
        for index, job in enumerate(finished):
            if index >= self.keep_jobs or now - (job.ended or now) > self.keep_seconds:
                del self.jobs[job.id]

    # ------------------------------------------------------------------ actions

    def start(
        self,
        *,
        client: str,
        name: str,
        since_key: str,
        since: datetime,
        until: datetime,
        policy: Path | None,
        pasted: str,
        lay_out: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> tuple[JobView, bool]:
        """Start a job, or find the one running: (the job, whether it is the new one).

        ``policy``: the candidate's file; None: ``pasted`` is written to a private file.
        ``lay_out``: turns the command's document into the page's values (on the job's thread).

        Raises:
            OSError: the state directory cannot take the job's files, or the child cannot start.
        """
        with self.lock:
            self._prune()
            busy = self._running()
            if busy is not None:
                return self.view(busy), False
            if self.stopped:
                raise OSError("the daemon is stopping")
            job = Job(secrets.token_urlsafe(18), client, name, since_key, datetime.now(UTC), self.clock())
            try:
                self._spawn(job, since, until, policy, pasted)
            except OSError:
                _remove(job.files)
                raise
            self.jobs[job.id] = job
            view = self.view(job)
        _log().info("console_whatif_started", sender_app=client)
        threading.Thread(target=self._watch, args=(job, lay_out), name="console-whatif", daemon=True).start()
        return view, True

    def _spawn(self, job: Job, since: datetime, until: datetime, policy: Path | None, pasted: str) -> None:
        # mkstemp makes each file readable by the daemon's user only (0600).
        fd, out = tempfile.mkstemp(prefix=FILE_PREFIX, suffix=".json", dir=self.state_dir)
        job.files.append(Path(out))
        try:
            if policy is None:
                pfd, where = tempfile.mkstemp(prefix=FILE_PREFIX, suffix=".yaml", dir=self.state_dir)
                job.files.append(Path(where))
                with os.fdopen(pfd, "w", encoding="utf-8") as f:
                    f.write(pasted)
                policy = Path(where)
            argv = [
                *self.command(),
                "--policy",
                str(policy),
                "--name",
                job.name,
                "--since",
                since.isoformat(),
                "--until",
                until.isoformat(),
                "--format",
                "json",
                "--progress",
            ]
            job.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.PIPE, close_fds=True
            )
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            # The child is ours (same user): it may be made nicer from here (docs/console.md).
            os.setpriority(os.PRIO_PROCESS, job.process.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS))

    def _watch(self, job: Job, lay_out: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Read the child's progress until it ends, then keep its result or its error."""
        process = job.process
        assert process is not None and process.stderr is not None
        overdue = threading.Timer(self.max_seconds, self._overdue, args=(job,))
        overdue.daemon = True
        overdue.start()
        try:
            said = _read_progress(process.stderr, job, self.lock)
            code = process.wait()
        finally:
            overdue.cancel()
        result: dict[str, Any] | None = None
        error = ""
        try:
            if code == 0 and job.state == "running":
                doc = json.loads(job.files[0].read_text(encoding="utf-8"))
                result = lay_out(doc)
            elif code != 0:
                error = said or (
                    f"the replay was stopped by signal {-code}" if code < 0 else f"the replay failed (exit {code})"
                )
        except Exception as exc:  # noqa: BLE001 - a job must end, or no what-if could ever start again
            error = f"the replay's result could not be read ({type(exc).__name__})"
        finally:
            _remove(job.files)
        with self.lock:
            job.ended = self.clock()
            job.process = None
            if job.state == "running":
                job.state, job.result, job.error = (
                    ("done", result, "") if result is not None else ("failed", None, error)
                )
            state, seconds = job.state, job.ended - job.clock
        _log().info(
            "console_whatif_finished",
            sender_app=job.client,
            state=state,
            status=code,
            count=job.read,
            duration_ms=round(seconds * 1000),
        )

    def _overdue(self, job: Job) -> None:
        """Kill the child of ``job`` if it still runs after :attr:`max_seconds`; the job fails."""
        with self.lock:
            if job.state != "running":
                return
            job.state = "failed"
            limit = self.max_seconds
            longest = f"{limit / 60:g} minutes" if limit >= 60 and limit % 60 == 0 else f"{limit:g} s"
            job.error = f"the replay ran longer than {longest} and was stopped"
            if job.process is not None:
                with contextlib.suppress(OSError):
                    job.process.kill()

    def cancel(self, job_id: str, client: str) -> JobView | None:
        """Kill the child of a running job ``client`` started; the job (None: no such job of theirs)."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or not secrets.compare_digest(job.client.encode(), client.encode()):
                return None
            if job.state == "running":
                job.state = "cancelled"
                if job.process is not None:
                    with contextlib.suppress(OSError):
                        job.process.kill()
            return self.view(job)

    def stop(self) -> None:
        """Kill the running child, if any, and refuse new jobs (the daemon is stopping)."""
        with self.lock:
            self.stopped = True
            job = self._running()
            process = job.process if job is not None else None
            if job is not None:
                job.state, job.error = "cancelled", "the daemon stopped"
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if job is not None:
                _remove(job.files)


def _read_progress(stream: IO[bytes], job: Job, lock: threading.Lock) -> str:
    """Follow ``progress`` lines into ``job``; the last line of the command's own message."""
    said = ""
    while raw := stream.readline(MAX_LINE):
        if not raw.endswith(b"\n") and len(raw) >= MAX_LINE:
            # A line longer than any the command writes: skip to its end, a piece at a time, so a
            # child printing megabytes without a line break never grows the daemon's memory.
            while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            continue
        line = raw.decode("utf-8", "replace").strip()
        found = _PROGRESS.fullmatch(line)
        if found:
            with lock:
                job.read, job.total = int(found[1]), int(found[2])
        elif _MESSAGE.fullmatch(line):
            said = line
    stream.close()
    return said


def remove_stale_files(state_dir: Path) -> int:
    """Remove the private files of what-ifs a killed daemon left in ``state_dir``; how many.

    Only the daemon holding the state directory's lock calls this (listener/statelock.py): the
    daemon that made the files is dead, and its child, if it still runs, writes to a file it has
    open (its next progress line fails on the closed pipe and ends it: docs/console.md).
    """
    removed = 0
    for path in Path(state_dir).glob(FILE_PREFIX + "*"):
        if path.suffix in (".json", ".yaml") and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _remove(files: Sequence[Path]) -> None:
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def simulate_command(config: Config) -> list[str]:
    """``overread simulate`` on the daemon's configuration: its file (if any), state and mappings directories."""
    argv = [sys.executable, "-m", "listener", "simulate", "--state-dir", str(config.state_dir)]
    if config.source != "(defaults)":  # listener.config.load_config without a file
        argv += ["--config", config.source]
    return [*argv, "--mappings", str(config.mappings_dir)]
