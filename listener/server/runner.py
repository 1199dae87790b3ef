"""Worker threads for the pure pipeline, each message within a time budget.

Layer: reactor code around threads. The pipeline is pure CPU work whose cost
grows with the report's length; on the reactor thread one long report would
hold up every other sender, the HTTP API and ``/healthz``. Here it runs on a
small pool of worker threads and the reactor only waits for a Deferred.

The budget (docs/hardening.md):

* ``budget`` seconds after a job starts, its :class:`~listener.pipeline.Interrupt`
  turns True and the pipeline stops at its next check (between two QA rules):
  the reports that were decoded are stored and routed as unchecked
  (``qa.timeout``). This is the normal way a slow message ends.
* ``grace`` seconds later, if the worker has still not come back (one rule
  running long), the reactor stops waiting: ``on_overrun`` builds the answer
  from what the job published (the decoded reports), and the runner starts a
  replacement thread so the pool keeps its size. The stuck thread finishes
  its rule, sees the interrupt and exits.

Threads are daemon threads: shutdown never waits for a stuck rule.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Generic, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from listener.config import Config
from listener.intake import Recording
from listener.pipeline import Decoded, Interrupt, Outcome
from listener.qa.engine import Prior
from listener.server.journal import QUARANTINE_AFTER, Journal
from listener.server.priors import PriorKey
from listener.server.procworker import asked, dumps, loads, pack_figures, send
from listener.sites import LiveFigures

__all__ = [
    "CALM_ARRIVALS",
    "Job",
    "PipelineRunner",
    "STARTING_THREAD_MAX",
    "PipelineTask",
    "ProcessRunner",
    "WorkerAbandoned",
    "WorkerCrashed",
    "WorkerError",
    "run_journaled",
]

T = TypeVar("T")

#: Default number of worker threads.
DEFAULT_WORKERS = 2

#: With worker processes and ``workers_inline``: a task runs in the daemon when it and the
#: jobs that arrived just before it, this many in all, each found no other job in flight.
CALM_ARRIVALS = 3

#: While a runner thread's worker process is started again (after an overrun or a death), a
#: message of at most this many bytes runs on the thread in the daemon instead of waiting for
#: it; a larger one waits (:meth:`ProcessRunner._waits`).
STARTING_THREAD_MAX = 32 * 1024

#: Seconds a start-up waits, before listening, for the worker processes to build their pipeline
#: (:meth:`ProcessRunner.wait_started`; docs/hardening.md, "Worker processes").
START_TIMEOUT = 20.0

#: Seconds a shutdown waits, after the drain, for the runner threads to close and reap their
#: worker processes (:meth:`ProcessRunner.join`; docs/hardening.md, "Worker processes").
CLOSE_TIMEOUT = 5.0


class Job(Generic[T]):
    """One unit of pipeline work.

    Attributes:
        result: fires on the reactor thread with the work's value, or with the
            ``on_overrun`` value once the hard limit passed; fails with the
            work's exception.
        finished: fires when no thread runs the work any more (its worker
            returned, or it never started because the runner stopped).
    """

    __slots__ = (
        "work",
        "on_overrun",
        "interrupt",
        "result",
        "finished",
        "_timer",
        "_runner",
        "task",
        "worker",
        "abandoned",
    )

    def __init__(
        self, runner: PipelineRunner, work: Callable[[Interrupt], T], on_overrun: Callable[[Interrupt], T | None]
    ) -> None:
        self._runner = runner
        self.work = work
        self.on_overrun = on_overrun
        self.interrupt = Interrupt()
        self.result: defer.Deferred[T] = defer.Deferred()
        self.finished: defer.Deferred[None] = defer.Deferred()
        self._timer: Any = None
        #: What a worker process needs to run the work (None: threads only).
        self.task: PipelineTask | None = None
        #: The worker process running it now (ProcessRunner; under its lock).
        self.worker: Any = None
        #: True once the reactor stopped waiting and killed its worker process.
        self.abandoned = False

    # Everything below runs on the reactor thread (but _overrun_off_reactor).

    def _started(self) -> None:
        if not self.finished.called:
            self._runner.active.add(self)
            limit = self._runner.grace if self._runner.hurrying else self._runner.budget + self._runner.grace
            self._timer = self._runner.reactor.callLater(limit, self._overrun)

    def hurry(self) -> None:
        """Shutdown: stop QA at the next check, and stop waiting after the grace at most."""
        self.interrupt.request()
        if self._timer is not None and self._timer.active():
            remaining = self._timer.getTime() - self._runner.reactor.seconds()
            if remaining > self._runner.grace:
                self._timer.reset(self._runner.grace)

    def _overrun(self) -> None:
        self._timer = None
        if self.result.called:
            return
        if self.task is not None and self.interrupt.decoded is None:
            # A worker process decoded the message out of reach: the unchecked answer decodes it
            # again, here in the daemon, off the reactor thread. A 4 MB FHIR Bundle's decode takes
            # seconds; on the reactor it froze every connection and /healthz meanwhile
            # (docs/hardening.md, "Thrown at the real daemon").
            threading.Thread(target=self._overrun_off_reactor, name="overread-overrun", daemon=True).start()
            return
        self._answer_overrun(self._unchecked())

    def _unchecked(self) -> T | None:
        try:
            return self.on_overrun(self.interrupt)
        except Exception:  # noqa: BLE001 - keep waiting for the worker instead
            return None

    def _overrun_off_reactor(self) -> None:
        """On a thread of its own: the unchecked answer, handed to the reactor."""
        self._runner.reactor.callFromThread(self._answer_overrun, self._unchecked())

    def _answer_overrun(self, value: T | None) -> None:
        if value is None or self.result.called:
            # Nothing to answer with yet (still decoding), or the worker answered meanwhile: wait for it.
            return
        self._runner.abandon(self)
        self.result.callback(value)

    def _finish(self, ok: bool, value: Any) -> None:
        self._runner.active.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self.result.called:
            if ok:
                self.result.callback(value)
            else:
                self.result.errback(Failure(value))  # type: ignore[no-untyped-call]
        if not self.finished.called:
            self.finished.callback(None)


class PipelineRunner:
    """A fixed pool of daemon worker threads that run pipeline jobs in FIFO order.

    Args:
        reactor: for ``callFromThread`` and ``callLater``.
        workers: threads in the pool.
        budget: seconds a job may run before its interrupt turns True.
        grace: seconds after the budget before the reactor stops waiting.
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        reactor: Any,
        *,
        workers: int = DEFAULT_WORKERS,
        budget: float = 2.0,
        grace: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.reactor = reactor
        self.workers = workers
        self.budget = budget
        self.grace = grace
        self.clock = clock
        self._queue: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: Threads that should exit after their current job (a replacement took their place).
        self._surplus = 0
        self._threads: list[threading.Thread] = []
        self._stopped = False
        #: Jobs running on a worker now (reactor thread only).
        self.active: set[Job[Any]] = set()
        #: True once shutdown began: every job gets only the grace.
        self.hurrying = False
        for _ in range(workers):
            self._spawn()

    def run(
        self,
        work: Callable[[Interrupt], T],
        on_overrun: Callable[[Interrupt], T | None],
        task: PipelineTask | None = None,
    ) -> Job[T]:
        """Queue ``work(interrupt)`` for a worker thread; see :class:`Job`.

        ``task`` describes the same work for a worker process
        (:class:`ProcessRunner`); this runner ignores it.
        """
        job: Job[T] = Job(self, work, on_overrun)
        job.task = task
        if self._stopped:
            job._finish(False, RuntimeError("pipeline runner stopped"))
            return job
        self._queue.put(job)
        return job

    def hurry(self) -> None:
        """Shutdown began: running and queued jobs stop QA now (their reports are stored unchecked)."""
        self.hurrying = True
        for job in list(self.active):
            job.hurry()

    def abandon(self, job: Job[Any]) -> None:
        """The reactor stopped waiting for ``job`` (it overran): keep the pool at its size."""
        self.replace_stuck_worker()

    def replace_stuck_worker(self) -> None:
        """A job overran: start one more thread; the stuck one exits when it returns."""
        with self._lock:
            if self._stopped:
                return
            self._surplus += 1
        self._spawn()

    def stop(self) -> None:
        """Let every idle thread exit; busy ones exit after their job (daemon threads)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(None)

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._loop, name="overread-pipeline", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _loop(self) -> None:
        call = self.reactor.callFromThread
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.interrupt.start(self.clock, self.budget)
            if self.hurrying:
                job.interrupt.request()
            call(job._started)
            try:
                value: Any = job.work(job.interrupt)
                ok = True
            except BaseException as exc:  # noqa: BLE001 - handed to the reactor as a Failure
                value, ok = exc, False
            call(job._finish, ok, value)
            with self._lock:
                if self._surplus > 0:
                    self._surplus -= 1
                    return


@dataclass(frozen=True, slots=True)
class PipelineTask:
    """A message's pipeline run described as data, for a worker process (HL7 v2 or FHIR).

    Attributes:
        raw: the frame (HL7 v2) or the POST body (FHIR).
        received_at: the receive time (the rules' clock).
        live_figures: the routing policy's live figures (or None).
        versions: (QA, routing, mapping) versions of the pipeline meant to run it.
        entry: its journal entry (key, transport, raw, meta), or None.
        decode: decodes the message in the daemon, for the answer of a worker
            that overran (never sent to the worker).
        kind: the worker's request: "hl7" (:func:`~listener.pipeline.process`) or
            "fhir" (:func:`~listener.pipeline.process_fhir`).
        options: what the kind needs besides (sent after the common fields): for
            "fhir", the media type and the :class:`~listener.fhir.decode.FhirClient`.
    """

    raw: bytes
    received_at: datetime
    live_figures: LiveFigures | None
    versions: tuple[str, str, str]
    entry: tuple[str, str, bytes, str] | None = None
    decode: Callable[[], Decoded | None] = lambda: None
    kind: str = "hl7"
    options: tuple[Any, ...] = ()


class WorkerCrashed(Exception):
    """A message's worker process died (not killed by us) as often as quarantines it."""

    def __init__(self, crashes: int) -> None:
        super().__init__(f"worker process died {crashes} times on this message")
        self.crashes = crashes


class WorkerAbandoned(Exception):
    """The reactor stopped waiting for the job and killed its worker process (its answer was given)."""


class WorkerError(Exception):
    """The worker process failed outside the pipeline (named by the exception's type)."""


class _Worker:
    """One worker process and the parent's end of its socket (used by one runner thread only)."""

    def __init__(self, cpu: int | None = None) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        #: The CPU its processes are bound to (None: any the daemon may run on).
        self.cpu = cpu
        #: The runner generation whose config it built (-1: none yet).
        self.generation = -1
        #: False when its pipeline could not be built from that config.
        self.usable = False
        #: The generation of the config sent and not answered yet (-1: none).
        self.asked = -1
        #: Started and not ready yet: :meth:`ProcessRunner._ready` need not wait for it.
        self.starting = False

    def alive(self) -> bool:
        return self.proc is not None and self.conn is not None and self.proc.poll() is None

    def start(self) -> None:
        parent, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "listener.server.procworker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Tracebacks could quote a message: nothing of the child reaches the logs.
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        if self.cpu is not None:
            try:
                os.sched_setaffinity(self.proc.pid, {self.cpu})
            except OSError:  # the CPU was taken from the daemon meanwhile: the process runs anywhere
                pass
        self.conn = Connection(parent.detach())
        self.generation = -1
        self.usable = False
        self.asked = -1
        self.starting = True

    def kill(self) -> None:
        # One read of self.proc: the runner thread's close() may set it to None meanwhile.
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:  # already gone
                pass

    def signal(self, signum: int) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signum)
            except OSError:  # already gone (ProcessLookupError)
                pass

    def close(self) -> int | None:
        """Close the socket, kill the process if it still runs, reap it; its exit status (negative: signal)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        code = None
        if self.proc is not None:
            self.kill()
            try:
                code = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                code = None
            self.proc = None
        self.generation = -1
        self.usable = False
        self.asked = -1
        self.starting = False
        return code


class ProcessRunner(PipelineRunner):
    """The pipeline on worker processes: every core used (docs/hardening.md, "Worker processes").

    Each of the ``workers`` runner threads owns one worker process
    (:mod:`listener.server.procworker`), which runs one job at a time (the
    thread may send it the next one ahead: :meth:`_stage`): a job with a
    :class:`PipelineTask` (an HL7 v2 message or a FHIR body) runs in the
    process, any other job on the thread as in :class:`PipelineRunner`. The daemon's process keeps the I/O, the journal
    (written before the task is sent), the store and the ACKs; the thread
    answers the worker's prior look-ups from the store.

    * A process that overruns the hard limit is killed (SIGKILL), not waited
      for, and the thread starts a new one before its next job.
    * A process that dies by itself (a segfault, the OOM killer) counts a
      crash in the message's journal entry; the message is tried once more
      on a new process, and at :data:`QUARANTINE_AFTER` crashes it fails with
      :class:`WorkerCrashed` (the intake quarantines it).
    * :meth:`configure` (SIGHUP) gives every process the new config (and how
      the daemon records a message, :class:`~listener.intake.Recording`) before
      its next job; a process whose pipeline versions differ from the ones
      the job names (a file changed between the two loads) or whose pipeline
      could not be built leaves the job to its thread.
    * With ``inline``, a task that arrives while no other job is queued or
      running (:attr:`in_flight`), after :data:`CALM_ARRIVALS` - 1 jobs
      before it that arrived so too, runs on a thread of the daemon instead
      (its own :class:`PipelineRunner` of one thread), as with ``workers:
      0``: at one message at a time the four crossings between the
      processes cost more than the second core gives (docs/configuration.md,
      "workers_inline"; docs/benchmarks.md). Every task that arrives while
      another is in flight goes to a process, so two messages never share
      the daemon's interpreter lock for QA; and so do the next ones until
      :data:`CALM_ARRIVALS` in a row arrived alone: under load (8
      connections) the pool empties now and then between two messages, and
      a message run inline then would hold the lock the daemon's network
      thread and store writer need for the other connections' answers.

    Args:
        config: the configuration the processes build their pipeline from.
        recording: how the daemon records a checked message (its destinations, whether
            it keeps raw bytes, the log hashes' key): a process builds the record, the
            log line's fields and the metrics' tally itself (:func:`~listener.intake.mllp_checked`).
        journal: where each task's journal entry is written and crashes counted.
        prior_lookup: the daemon's prior look-up, from a report's
            :func:`~listener.server.priors.prior_key` (run on the runner thread).
        on_event: called on the reactor thread with an event name and log
            fields (a worker died, a worker could not start).
        inline: run a task that arrives with no other job in flight on the
            daemon's own thread (``workers_inline``); False: every task on a process.
        store_file: the SQLite store's database file: each process reads its
            reports' prior studies from it itself, read-only, and asks the
            thread (``prior_lookup``) only when that read fails. None (PostgreSQL):
            every look-up is the thread's.
        cpus: the CPUs to bind the processes to, each runner thread's to the one
            fewest other threads' processes are bound to (``worker_affinity``:
            docs/configuration.md; docs/benchmarks.md, "The worker in the daemon,
            2026-12-07"); empty: not bound.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        config: Config,
        recording: Recording,
        workers: int,
        budget: float = 2.0,
        grace: float = 1.0,
        journal: Journal | None = None,
        prior_lookup: Callable[[PriorKey], tuple[Prior, ...] | None] | None = None,
        on_event: Callable[..., object] = lambda *_, **__: None,
        clock: Callable[[], float] = time.monotonic,
        inline: bool = False,
        store_file: Path | None = None,
        cpus: tuple[int, ...] = (),
    ) -> None:
        self.config = config
        #: How many runner threads bind their processes to each of ``cpus`` (under the lock).
        self._bound = dict.fromkeys(cpus, 0)
        self.recording = recording
        self.generation = 0
        self.journal = journal
        self.prior_lookup = prior_lookup
        #: The SQLite store's file, as a string for the pipe (None: PostgreSQL).
        self.store_file = None if store_file is None else str(store_file)
        self.on_event = on_event
        #: Jobs handed to :meth:`run` whose ``finished`` has not fired (under the lock).
        self.in_flight = 0
        #: Jobs in a row, up to the last one, that arrived with no other in flight (under the lock).
        self.calm = 0
        #: Released by each runner thread once its first worker process answered its config (or failed).
        self._first_ready = threading.Semaphore(0)
        #: Journal keys of messages a worker process died on lately (under the lock): never run
        #: on a thread of the daemon while a process starts (:meth:`_ready`), at most 256 kept.
        self._died_on: set[str] = set()
        super().__init__(reactor, workers=workers, budget=budget, grace=grace, clock=clock)
        #: The daemon's own thread for a task that arrives alone (None: never).
        self.inline: PipelineRunner | None = (
            PipelineRunner(reactor, workers=1, budget=budget, grace=grace, clock=clock) if inline else None
        )

    def run(
        self,
        work: Callable[[Interrupt], T],
        on_overrun: Callable[[Interrupt], T | None],
        task: PipelineTask | None = None,
    ) -> Job[T]:
        """Queue the job: after a calm spell (:data:`CALM_ARRIVALS`) on the inline thread, else as the base class."""
        with self._lock:
            self.calm = self.calm + 1 if self.in_flight == 0 else 0
            alone = self.calm >= CALM_ARRIVALS
            self.in_flight += 1
        if alone and task is not None and self.inline is not None:
            job = self.inline.run(work, on_overrun, task)
        else:
            job = super().run(work, on_overrun, task)
        job.finished.addBoth(self._landed)
        return job

    def _landed(self, value: object) -> object:
        with self._lock:
            self.in_flight -= 1
        return value

    def configure(self, config: Config, recording: Recording | None = None) -> None:
        """A reload: every worker process builds its pipeline from ``config`` (and takes ``recording``,
        None: the same as before) before its next job."""
        with self._lock:
            self.config = config
            self.recording = recording or self.recording
            self.generation += 1

    def abandon(self, job: Job[Any]) -> None:
        """The job overran: kill its worker process (the thread starts a new one); a thread job as the base class."""
        with self._lock:
            # Marked in every case: a job between a worker's death and its retry has no
            # worker now, and the retry loop must not start another process for it.
            job.abandoned = True
            worker = job.worker
            if worker is not None:
                worker.kill()
        if worker is None:
            super().abandon(job)

    def hurry(self) -> None:
        """Shutdown: as the base class, and tell every busy worker process to stop QA now."""
        super().hurry()
        if self.inline is not None:
            self.inline.hurry()
        with self._lock:
            busy = [job.worker for job in self.active if job.worker is not None]
        for worker in busy:
            worker.signal(signal.SIGUSR1)

    def stop(self) -> None:
        """As the base class; a worker process still inside a rule is killed, not waited for."""
        super().stop()
        if self.inline is not None:
            self.inline.stop()
        with self._lock:
            busy = [job.worker for job in self.active if job.worker is not None]
        for worker in busy:
            worker.kill()

    def wait_started(self, timeout: float = START_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds for every runner thread's first worker process to be ready
        (its pipeline built) or to have failed; True when all were. The daemon calls it before it
        listens, so the first messages never wait for a process's start-up."""
        deadline = time.monotonic() + timeout
        for _ in range(self.workers):
            if not self._first_ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False
        return True

    def join(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """After :meth:`stop`: wait up to ``timeout`` seconds for the runner threads to exit; True when all did.

        Each thread closes its worker process on the way out (the socket closed, the process
        killed and reaped), so once this returns True no worker process is left. A thread still
        inside a rule of a job it runs itself (no usable process) is not waited for past ``timeout`` (a daemon thread; its idle
        worker process dies with the daemon, ``PR_SET_PDEATHSIG``).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def _event(self, event: str, **fields: Any) -> None:
        self.reactor.callFromThread(self.on_event, event, **fields)

    def _ready(self, worker: _Worker, wait: bool = True) -> bool:
        """Start the worker process and give it the current config when needed; True when it can take tasks.

        ``wait`` False: a process being started (in place of one that overran or died) is not
        waited for: False until its pipeline is built, and the caller runs its job on the thread
        meanwhile, as with ``workers: 0``. A start takes about 1 s of CPU, several seconds on a
        loaded host, and a thread that waited for it left the queue to the other processes, which
        a sender flooding slow messages keeps busy (docs/hardening.md, "Worker processes").
        """
        with self._lock:
            config, generation, stopped, recording = self.config, self.generation, self._stopped, self.recording
        if worker.alive() and worker.generation == generation:
            return worker.usable
        if stopped:
            return False
        try:
            if not worker.alive():
                worker.close()
                worker.start()
            assert worker.conn is not None
            if worker.asked != generation:
                if worker.asked >= 0:
                    worker.conn.recv()  # the answer to an older config (a reload while it started)
                worker.conn.send(("config", generation, config, self.store_file, recording))
                worker.asked = generation
            if not wait and worker.starting and not worker.conn.poll(0):
                return False
            reply = worker.conn.recv()
        except (OSError, EOFError) as exc:
            code = worker.close()
            self._event("pipeline_worker_failed", error_type=type(exc).__name__, status=code)
            return False
        worker.generation = generation
        worker.asked = -1
        worker.starting = False
        worker.usable = reply[0] == "ready"
        if not worker.usable:
            self._event("pipeline_worker_failed", error_type=str(reply[1]), status=None)
        return worker.usable

    def _bind(self) -> int | None:
        """The CPU for a new runner thread's processes: the one fewest threads bind theirs to (None: unbound)."""
        with self._lock:
            if not self._bound:
                return None
            cpu = min(self._bound, key=self._bound.__getitem__)
            self._bound[cpu] += 1
            return cpu

    def _loop(self) -> None:
        call = self.reactor.callFromThread
        worker = _Worker(self._bind())
        #: The last job as (job, ok, value) while its _finish is not handed to the reactor yet.
        done: tuple[Job[Any], bool, Any] | None = None
        #: The next job, taken from the queue while the worker ran the last one (:meth:`_stage`).
        staged: _Staged | None = None
        #: Where :meth:`_on_process` leaves the job it staged, whatever way it ends.
        slot = _Slot()
        first = True
        try:
            while True:
                # The worker runs the staged job already: no config or start-up may come between.
                running = staged is not None and staged.sent
                if not running:
                    if done is not None and not self._configured(worker):
                        # A process to start or configure first (about 1 s): answer the last job now.
                        call(done[0]._finish, done[1], done[2])
                        done = None
                    # Started (and configured) before taking a job, so a new
                    # process's start-up never counts against a message's budget; a
                    # process started again after an overrun or a death is not waited for.
                    self._ready(worker, wait=first)
                if first:
                    first = False
                    self._first_ready.release()
                job: Job[Any] | None
                if staged is not None:
                    job = staged.job
                elif done is None:
                    job = self._queue.get()
                else:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        call(done[0]._finish, done[1], done[2])
                        done = None
                        job = self._queue.get()
                if job is None:
                    return
                on_process = running or (job.task is not None and self._ready(worker, wait=self._waits(job)))
                if not running:
                    job.interrupt.start(self.clock, self.budget)
                    if self.hurrying:
                        job.interrupt.request()
                if done is None:
                    call(job._started)
                else:
                    # A job was waiting: the last one's answer and this one's start cross to the
                    # reactor in one call, one wake-up of the reactor less per message under load
                    # (docs/benchmarks.md, "The daemon's main process").
                    call(_hand_over, done, job)
                    done = None
                this, staged = staged, None
                try:
                    value: Any = self._on_process(worker, job, this, slot) if on_process else job.work(job.interrupt)
                    ok = True
                except BaseException as exc:  # noqa: BLE001 - handed to the reactor as a Failure
                    value, ok = exc, False
                staged, slot.staged = slot.staged, None
                done = (job, ok, value)
                if staged is None:
                    with self._lock:
                        if self._surplus > 0:
                            self._surplus -= 1
                            return
        finally:
            if done is not None:
                call(done[0]._finish, done[1], done[2])
            staged = staged or slot.staged
            if staged is not None:
                # Never left unanswered (only a bug in this loop ends it with a job staged).
                call(staged.job._finish, False, WorkerError("RunnerStopped"))
            worker.close()
            if worker.cpu is not None:
                with self._lock:
                    self._bound[worker.cpu] -= 1

    def _waits(self, job: Job[Any]) -> bool:
        """True when ``job`` waits for a process being started rather than run on the thread in the
        daemon meanwhile (docs/hardening.md, "Worker processes"): a message over
        :data:`STARTING_THREAD_MAX` bytes (its QA could hold the thread, unkillable, for seconds),
        or one a worker process died running lately or before a restart."""
        task = job.task
        if task is None or len(task.raw) > STARTING_THREAD_MAX:
            return True
        entry = task.entry
        if entry is None:
            return False
        with self._lock:
            if entry[0] in self._died_on:
                return True
        return self.journal is not None and self.journal.has_crashes(entry[0])

    def _configured(self, worker: _Worker) -> bool:
        """True when ``worker`` runs and has the current config (:meth:`_ready` has nothing to do)."""
        with self._lock:
            generation = self.generation
        return worker.alive() and worker.generation == generation

    def _request(self, job: Job[Any]) -> bytes:
        """The pickled request for ``job.task`` (by procworker.dumps, as the reply: no ForkingPickler per message)."""
        task = job.task
        assert task is not None
        return dumps(
            (
                task.kind,
                task.raw,
                task.received_at,
                pack_figures(task.live_figures),
                self.budget,
                job.interrupt.requested(),
                *task.options,
            )
        )

    def _stage(self) -> _Staged | None:
        """While the worker runs a message: take the next queued job, journal it and make its request.

        One job at a time, and only when at least one queued job stays for each other runner
        thread, so no process idles while the job staged here waits for this one.
        :meth:`_send_staged` sends it at once: the worker starts it the moment it has answered the
        one it runs, without waiting for this thread to get the interpreter lock back and unpickle
        that answer (docs/hardening.md, "Worker processes").
        """
        if self._stopped or self.hurrying or self._queue.qsize() < self.workers:
            return None
        try:
            job = self._queue.get_nowait()
        except queue.Empty:
            return None
        if job is None:
            self._queue.put(None)  # the stop sentinel stays for the thread that takes it
            return None
        task = job.task
        if task is None:
            return _Staged(job)
        try:
            if self.journal is not None and task.entry is not None:
                self.journal.begin(*task.entry)
            return _Staged(job, self._request(job))
        except Exception:  # noqa: BLE001 - the job's own turn journals it again and fails there, as any job
            return _Staged(job)

    def _on_process(self, worker: _Worker, job: Job[Any], this: _Staged | None, slot: _Slot) -> Any:
        """Run ``job.task`` on ``worker``'s process: journal first, then send it; retry once after a crash.

        ``this``: the job as staged (journaled, its request made, maybe sent already), or None.
        The next job staged meanwhile is left in ``slot`` (sent when the worker runs it already).
        """
        task = job.task
        assert task is not None
        if (this is None or this.request is None) and self.journal is not None and task.entry is not None:
            self.journal.begin(*task.entry)
        request = this.request if this is not None else None
        sent = this is not None and this.sent
        attempts = 0
        while True:
            attempts += 1
            conn = worker.conn
            assert conn is not None
            with self._lock:
                job.worker = worker
            try:
                if not sent:
                    if request is None or job.interrupt.requested():
                        request = self._request(job)
                    conn.send_bytes(request)
                sent = False  # a retry sends it again
                if slot.staged is None:
                    slot.staged = self._stage()
                if slot.staged is not None and not slot.staged.sent:
                    self._send_staged(worker, slot.staged)
                while True:
                    data = conn.recv_bytes()
                    key = asked(data)
                    if key is None:
                        break
                    send(conn, ("priors", self.prior_lookup(key) if self.prior_lookup is not None else None))
            except (EOFError, OSError):
                with self._lock:
                    job.worker = None
                    if slot.staged is not None and slot.staged.sent:
                        # It waited in the dead process's socket, never started: sent again after this one.
                        slot.staged.sent = False
                        slot.staged.job.worker = None
                code = worker.close()
                if job.abandoned or self._stopped:
                    raise WorkerAbandoned() from None
                # The journal's count, never below this job's own: an entry the reactor
                # already ended (an overrun answered meanwhile) counts from zero again.
                crashes = attempts
                if task.entry is not None:
                    with self._lock:
                        if len(self._died_on) >= 256:
                            self._died_on.clear()
                        self._died_on.add(task.entry[0])
                if self.journal is not None and task.entry is not None:
                    crashes = max(crashes, self.journal.count_crash(task.entry[0]))
                self._event("pipeline_worker_died", status=code, count=crashes)
                if crashes >= QUARANTINE_AFTER:
                    raise WorkerCrashed(crashes) from None
                if not self._ready(worker):
                    # Never run a message that just killed a process here, in the daemon:
                    # an AE 207 now (stored rejected), and the sender's resend tries again.
                    raise WorkerError("WorkerUnavailable") from None
                if job.abandoned or self._stopped:  # overran while the new process started
                    raise WorkerAbandoned() from None
                continue
            with self._lock:
                job.worker = None
            reply = loads(data)
            if reply[0] == "error":
                raise WorkerError(str(reply[1]))
            if tuple(reply[1]) != task.versions:
                # Another policy than the daemon meant (a file changed between the loads): run it here.
                return job.work(job.interrupt)
            return reply[2]

    def _send_staged(self, worker: _Worker, staged: _Staged) -> None:
        """Send the staged job to the worker now, behind the one it runs, unless a reload, a stop or
        a shutdown came (then the loop sends it as any job, after the config).

        The process reads it when it has answered the one it runs (a prior look-up's answer
        may come after it: the process keeps it for then), so it starts at once. No poll of the
        process first: a system call gives up the interpreter lock, and a process that died
        fails this send or the next read, where the crash path takes it.
        """
        with self._lock:
            current = worker.generation == self.generation
            if staged.request is None or self._stopped or self.hurrying or not current or worker.conn is None:
                return
            staged.job.worker = worker
        conn = worker.conn
        try:
            conn.send_bytes(staged.request)
        except OSError:  # the process died: the crash path or the loop starts a new one for this job
            with self._lock:
                staged.job.worker = None
            return
        staged.job.interrupt.start(self.clock, self.budget)
        staged.sent = True


@dataclass(slots=True)
class _Staged:
    """A job a runner thread took from the queue while its worker process ran the last one.

    Attributes:
        job: the job.
        request: its pickled request, made once its journal entry was written (None: neither
            done, or a job without a task, run on the thread).
        sent: True once the request went to the worker (the worker runs it now).
    """

    job: Job[Any]
    request: bytes | None = None
    sent: bool = False


@dataclass(slots=True)
class _Slot:
    """Where :meth:`ProcessRunner._on_process` leaves the job it staged."""

    staged: _Staged | None = None


def _hand_over(done: tuple[Job[Any], bool, Any], job: Job[Any]) -> None:
    """On the reactor: the last job of a runner thread finished (``done``), then ``job`` started."""
    try:
        done[0]._finish(done[1], done[2])
    finally:
        job._started()


def run_journaled(
    runner: PipelineRunner | None,
    journal: Journal | None,
    entry: tuple[str, str, bytes, str],
    check: Callable[[Interrupt], Outcome],
    unchecked: Callable[[Decoded], Outcome],
    serialize: Callable[[Outcome], T],
    on_overrun: Callable[[], object],
    task: PipelineTask | None = None,
) -> tuple[defer.Deferred[T], defer.Deferred[None]]:
    """Journal a message, then check it on a worker within the budget (both intakes' one path).

    Args:
        runner: the worker threads (None: run inline, as unit tests do).
        journal: where the message is recorded before it is checked (None: not kept).
        entry: its journal key, transport, raw bytes and meta text.
        check: the pipeline run, given the job's interrupt.
        unchecked: the Outcome built from decoded reports when the worker overran.
        serialize: turns an Outcome into what the intake stores (on the worker too).
        on_overrun: called on the reactor thread when the answer comes from ``unchecked``.
        task: the same check as data, for a worker process (:class:`ProcessRunner`);
            its serialized result must store what ``serialize(check(...))`` stores (it may carry
            stored forms made ahead: listener/server/procworker.py).

    Returns:
        (the serialized result, a Deferred firing once no worker runs the message).
        The caller ends the journal entry once the message is stored.
    """
    key, transport, raw, meta = entry

    def work(interrupt: Interrupt) -> T:
        # On the worker: the journal entry exists before the pipeline runs (docs/hardening.md).
        if journal is not None:
            journal.begin(key, transport, raw, meta)
        return serialize(check(interrupt))

    def overrun(interrupt: Interrupt) -> T | None:
        # budget + grace passed and the worker is still in one rule: answer from
        # the decoded reports, unchecked (still stored, still accepted).
        decoded = interrupt.decoded
        if decoded is None and task is not None:
            # A worker process decoded it out of reach: decode it here.
            decoded = task.decode()
        if decoded is None:
            return None
        on_overrun()
        return serialize(unchecked(decoded))

    if runner is None:
        return defer.maybeDeferred(work, Interrupt()), defer.succeed(None)
    job = runner.run(work, overrun, task)
    return job.result, job.finished
