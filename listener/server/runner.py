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
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from twisted.internet import defer, threads
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from listener.config import Config
from listener.intake import Recording
from listener.pipeline import Decoded, Interrupt, Outcome
from listener.qa.engine import Prior
from listener.server.journal import QUARANTINE_AFTER, Journal
from listener.server.priors import PriorKey
from listener.server.procworker import asked, dumps, loads, pack_figures
from listener.server.wire import send_now
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

#: While a worker process is started again (after an overrun or a death) and no other is free, a
#: message of at most this many bytes runs on a thread in the daemon instead of waiting for
#: it; a larger one waits (:meth:`ProcessRunner._waits`).
STARTING_THREAD_MAX = 32 * 1024

#: Seconds a start-up waits, before listening, for the worker processes to build their pipeline
#: (:meth:`ProcessRunner.wait_started`; docs/hardening.md, "Worker processes").
START_TIMEOUT = 20.0

#: Seconds a shutdown waits, after the drain, for the threads to end and the worker processes to
#: be reaped (:meth:`ProcessRunner.join`; docs/hardening.md, "Worker processes").
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
        "attempts",
        "process_only",
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
        #: How many times it was sent to a worker process that started it (ProcessRunner).
        self.attempts = 0
        #: A worker process died running it: it runs on a process or not at all (ProcessRunner).
        self.process_only = False

    # Everything below runs on the reactor thread (but _overrun_off_reactor).

    def _started(self) -> None:
        if not self.finished.called and self._timer is None:
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

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _finish(self, ok: bool, value: Any) -> None:
        self._runner.active.discard(self)
        self._cancel_timer()
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


class _WorkerProtocol(Protocol):
    """The daemon's end of one worker process's socket, read and written by the reactor.

    Frames are :class:`multiprocessing.connection.Connection`'s (a 4-byte big-endian length, or -1
    and an 8-byte one, then the bytes), which the worker process reads and writes.
    """

    #: The reactor's connection to the socket (a Twisted unix.Server).
    transport: Any

    def __init__(self, runner: ProcessRunner, worker: _Worker) -> None:
        self.runner = runner
        self.worker = worker
        self._buffer = bytearray()

    def send(self, data: bytes) -> None:
        """One frame to the process (buffered by the transport: the reactor never blocks on it)."""
        size = len(data)
        head = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        send_now(self.transport, head + data)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = struct.unpack_from("!i", buffer)
            start = 4
            if size == -1:
                if len(buffer) < 12:
                    return
                (size,) = struct.unpack_from("!Q", buffer, 4)
                start = 12
            end = start + size
            if len(buffer) < end:
                return
            frame = bytes(memoryview(buffer)[start:end])
            del buffer[:end]
            self.runner._frame(self.worker, frame)
            if self.worker.protocol is not self:
                return  # the process was closed while the frame was handled

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        self.runner._lost(self.worker, self)


class _OneProtocol(Factory):
    """A factory that gives ``adoptStreamConnection`` the one protocol it was made with."""

    def __init__(self, protocol: _WorkerProtocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> _WorkerProtocol:  # noqa: N802 - Twisted's name
        return self.protocol_instance


class _Worker:
    """One worker process and the reactor's connection to it (reactor thread only)."""

    def __init__(self, cpu: int | None = None) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        #: The connection to the process (None: no process, or it is gone).
        self.protocol: _WorkerProtocol | None = None
        #: The CPU its processes are bound to (None: any the daemon may run on).
        self.cpu = cpu
        #: The runner generation whose config it built (-1: none yet).
        self.generation = -1
        #: False when its pipeline could not be built from that config.
        self.usable = False
        #: The generations of the configs sent and not answered yet, in order.
        self.configs: deque[int] = deque()
        #: The jobs sent to it and not answered yet, in order: the first runs, the next is staged.
        self.jobs: deque[Job[Any]] = deque()
        #: Its start failed, or it died before its first config was built: started again only
        #: when a job finds no process (one attempt per job, as a start costs a second of CPU).
        self.failed = False
        #: True until its first config was answered (or it failed): ``wait_started`` counts it then.
        self.first = True
        #: Its process started and has not answered its first config yet.
        self.fresh = False

    def ready(self, generation: int) -> bool:
        """True when it can take a job now: connected, its pipeline built from the current config."""
        return self.protocol is not None and not self.configs and self.usable and self.generation == generation

    def starting(self) -> bool:
        """True while its process, just started, builds its first pipeline."""
        return self.protocol is not None and self.fresh

    def reloading(self) -> bool:
        """True while its process, running already, builds a reload's pipeline (a job waits for it)."""
        return self.protocol is not None and bool(self.configs) and not self.fresh

    def kill(self) -> None:
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

    def reap(self, timeout: float) -> int | None:
        """Kill the process if it still runs and wait up to ``timeout`` seconds for it; its exit status."""
        proc = self.proc
        if proc is None:
            return None
        self.kill()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class ProcessRunner(PipelineRunner):
    """The pipeline on worker processes: every core used (docs/hardening.md, "Worker processes").

    Each of the ``workers`` worker processes (:mod:`listener.server.procworker`) runs one job
    at a time; the reactor itself sends it the job and reads the answer from its socket, so a
    message crosses from the reactor to a process and back with no thread between
    (docs/benchmarks.md, "The reactor reads the worker processes"). A job with a
    :class:`PipelineTask` (an HL7 v2 message or a FHIR body) runs in a process; any other job,
    and a task no process can take, on one of ``workers`` threads in the daemon, as in
    :class:`PipelineRunner`. The daemon's process keeps the I/O, the journal (written before the
    task is sent), the store and the ACKs; a thread of the reactor's pool answers a process's
    prior look-up from the store when the process could not read it itself.

    * While a process runs a job, the next queued job may be sent behind it (staged, :meth:`_free`),
      so the process starts it the moment it answered.
    * A process that overruns the hard limit is killed (SIGKILL), not waited for, and a new one
      is started. Until it is ready, a message of at most :data:`STARTING_THREAD_MAX` bytes runs
      on a thread in the daemon; a larger one, or one a process died on, waits for it.
    * A process that dies by itself (a segfault, the OOM killer) counts a crash in the running
      message's journal entry; the message is tried once more on a new process (never on a
      thread), and at :data:`QUARANTINE_AFTER` crashes it fails with :class:`WorkerCrashed` (the
      intake quarantines it). A job staged behind it never started: it is sent again, no crash
      counted.
    * :meth:`configure` (SIGHUP) sends every process the new config (and how the daemon records
      a message, :class:`~listener.intake.Recording`); a process takes no job until it answered.
      A process whose pipeline versions differ from the ones the job names (a file changed
      between the two loads) or whose pipeline could not be built leaves the job to a thread.
    * With ``inline``, a task that arrives while no other job is queued or running
      (:attr:`in_flight`), after :data:`CALM_ARRIVALS` - 1 jobs before it that arrived so too,
      runs on a thread of the daemon instead (its own :class:`PipelineRunner` of one thread), as
      with ``workers: 0``: at one message at a time the crossings between the processes cost more
      than the second core gives (docs/configuration.md, "workers_inline"; docs/benchmarks.md).
      Every task that arrives while another is in flight goes to a process, so two messages never
      share the daemon's interpreter lock for QA; and so do the next ones until
      :data:`CALM_ARRIVALS` in a row arrived alone.

    Everything but :meth:`wait_started` and :meth:`join` runs on the reactor thread (the runner's
    state is the reactor's); the processes are started there too, so they die with the daemon's
    main thread (``PR_SET_PDEATHSIG``).

    Args:
        config: the configuration the processes build their pipeline from.
        recording: how the daemon records a checked message (its destinations, whether
            it keeps raw bytes, the log hashes' key): a process builds the record, the
            log line's fields and the metrics' tally itself (:func:`~listener.intake.mllp_checked`).
        journal: where each task's journal entry is written and crashes counted.
        prior_lookup: the daemon's prior look-up, from a report's
            :func:`~listener.server.priors.prior_key` (run on a thread of the reactor's pool).
        on_event: called on the reactor thread with an event name and log
            fields (a worker died, a worker could not start).
        inline: run a task that arrives with no other job in flight on the
            daemon's own thread (``workers_inline``); False: every task on a process.
        store_file: the SQLite store's database file: each process reads its
            reports' prior studies from it itself, read-only, and asks the
            daemon (``prior_lookup``) only when that read fails. None (PostgreSQL):
            each process reads them through a session of its own.
        cpus: the CPUs to bind the processes to, each to the one fewest other processes are
            bound to (``worker_affinity``: docs/configuration.md; docs/benchmarks.md, "The
            worker in the daemon, 2026-12-07"); empty: not bound.
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
        self.recording = recording
        self.generation = 0
        self.journal = journal
        self.prior_lookup = prior_lookup
        #: The SQLite store's file, as a string for the pipe (None: PostgreSQL).
        self.store_file = None if store_file is None else str(store_file)
        self.on_event = on_event
        #: Jobs handed to :meth:`run` whose ``finished`` has not fired.
        self.in_flight = 0
        #: Jobs in a row, up to the last one, that arrived with no other in flight.
        self.calm = 0
        #: Released once for each process whose first config was answered (or that failed).
        self._first_ready = threading.Semaphore(0)
        #: Journal keys of messages a worker process died on lately: never run on a thread of
        #: the daemon while a process starts (:meth:`_waits`), at most 256 kept.
        self._died_on: set[str] = set()
        #: Tasks waiting for a process, in arrival order (a crashed one's retry first).
        self._pending: deque[Job[Any]] = deque()
        # The threads: for jobs without a task, and tasks no process can take.
        super().__init__(reactor, workers=workers, budget=budget, grace=grace, clock=clock)
        bound = dict.fromkeys(cpus, 0)
        self._processes: list[_Worker] = []
        for _ in range(workers):
            cpu = min(bound, key=bound.__getitem__) if bound else None
            if cpu is not None:
                bound[cpu] += 1
            self._processes.append(_Worker(cpu))
        #: The daemon's own thread for a task that arrives alone (None: never).
        self.inline: PipelineRunner | None = (
            PipelineRunner(reactor, workers=1, budget=budget, grace=grace, clock=clock) if inline else None
        )
        for worker in self._processes:
            self._start(worker)

    def run(
        self,
        work: Callable[[Interrupt], T],
        on_overrun: Callable[[Interrupt], T | None],
        task: PipelineTask | None = None,
    ) -> Job[T]:
        """Queue the job: a task for a process (after a calm spell, :data:`CALM_ARRIVALS`, on the
        inline thread), any other job on a thread."""
        self.calm = self.calm + 1 if self.in_flight == 0 else 0
        alone = self.calm >= CALM_ARRIVALS
        self.in_flight += 1
        if task is None or self._stopped:
            job = super().run(work, on_overrun, task)
        elif alone and self.inline is not None:
            job = self.inline.run(work, on_overrun, task)
        else:
            job = Job(self, work, on_overrun)
            job.task = task
            self._pending.append(job)
            self._dispatch()
        job.finished.addBoth(self._landed)
        return job

    def _landed(self, value: object) -> object:
        self.in_flight -= 1
        return value

    def configure(self, config: Config, recording: Recording | None = None) -> None:
        """A reload: every worker process builds its pipeline from ``config`` (and takes
        ``recording``, None: the same as before); it takes no job until it answered."""
        self.config = config
        self.recording = recording or self.recording
        self.generation += 1
        for worker in self._processes:
            if worker.protocol is not None:
                self._send_config(worker)

    def abandon(self, job: Job[Any]) -> None:
        """The job overran: kill its worker process (a new one is started); a thread job as the base class."""
        job.abandoned = True
        worker = job.worker
        if worker is not None:
            worker.kill()  # its socket's end comes to _lost, which starts a new process
        elif job.task is not None and job in self._pending:
            # Answered by the caller right after this returns: ended (finished) after that.
            self.reactor.callLater(0, self._dispatch)
        else:
            super().abandon(job)

    def hurry(self) -> None:
        """Shutdown: as the base class, and tell every busy worker process to stop QA now."""
        super().hurry()
        if self.inline is not None:
            self.inline.hurry()
        for worker in self._processes:
            if worker.jobs:
                worker.signal(signal.SIGUSR1)

    def stop(self) -> None:
        """As the base class: the tasks waiting (and those staged behind a running one) run on the
        threads; a worker process still inside a rule is killed, an idle one told to exit."""
        if self._stopped:
            return
        # The staged ones (one per process at most) were sent before any still waiting: they go first.
        waiting = [self._unsend(w, w.jobs.pop()) for w in self._processes if len(w.jobs) > 1]
        waiting += self._pending
        self._pending.clear()
        for job in waiting:
            self._to_thread(job)
        super().stop()
        if self.inline is not None:
            self.inline.stop()
        for worker in self._processes:
            if worker.jobs:
                worker.kill()
            elif worker.protocol is not None and worker.protocol.transport is not None:
                worker.protocol.transport.loseConnection()  # the process exits at the socket's end

    def wait_started(self, timeout: float = START_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds for every worker process to be ready (its pipeline built)
        or to have failed; True when all were. The daemon calls it, on a thread, before it
        listens, so the first messages never wait for a process's start-up."""
        deadline = time.monotonic() + timeout
        for _ in range(self.workers):
            if not self._first_ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False
        return True

    def join(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """After :meth:`stop`: wait up to ``timeout`` seconds for the threads to exit and every worker
        process to end (killed if it has not); True when all did, so no worker process is left.

        A thread still inside a rule of a job it runs itself is not waited for past ``timeout`` (a
        daemon thread).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        inline = self.inline._threads if self.inline is not None else []
        for thread in [*threads, *inline]:
            thread.join(max(0.0, deadline - time.monotonic()))
        for worker in self._processes:
            proc = worker.proc
            if proc is not None and proc.poll() is None:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    worker.reap(1.0)
        alive = any(w.proc is not None and w.proc.poll() is None for w in self._processes)
        return not alive and not any(thread.is_alive() for thread in [*threads, *inline])

    # The processes.

    def _start(self, worker: _Worker) -> None:
        """Start a process for ``worker`` and send it the current config (its answer comes to :meth:`_frame`)."""
        worker.failed = False
        parent, child = socket.socketpair()
        try:
            worker.proc = subprocess.Popen(
                [sys.executable, "-m", "listener.server.procworker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Tracebacks could quote a message: nothing of the child reaches the logs.
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent.close()
            self._failed(worker, type(exc).__name__, None)
            return
        finally:
            child.close()
        if worker.cpu is not None:
            try:
                os.sched_setaffinity(worker.proc.pid, {worker.cpu})
            except OSError:  # the CPU was taken from the daemon meanwhile: the process runs anywhere
                pass
        protocol = _WorkerProtocol(self, worker)
        parent.setblocking(False)
        try:
            self.reactor.adoptStreamConnection(parent.fileno(), socket.AF_UNIX, _OneProtocol(protocol))
        finally:
            parent.close()  # the reactor holds its own descriptor of it
        worker.protocol = protocol
        worker.generation = -1
        worker.usable = False
        worker.fresh = True
        worker.configs.clear()
        self._send_config(worker)

    def _send_config(self, worker: _Worker) -> None:
        assert worker.protocol is not None
        worker.configs.append(self.generation)
        worker.protocol.send(dumps(("config", self.generation, self.config, self.store_file, self.recording)))

    def _failed(self, worker: _Worker, error_type: str, status: int | None) -> None:
        """``worker``'s process could not start, or died before its pipeline was built."""
        worker.failed = True
        self.on_event("pipeline_worker_failed", error_type=error_type, status=status)
        self._first_done(worker)

    def _first_done(self, worker: _Worker) -> None:
        """``worker``'s first start is over (its pipeline built, or it failed): :meth:`wait_started` counts it once."""
        if worker.first:
            worker.first = False
            self._first_ready.release()

    def _frame(self, worker: _Worker, frame: bytes) -> None:
        """One frame from ``worker``'s process: a prior look-up, a config's answer or a job's."""
        key = asked(frame)
        if key is not None:
            self._answer_priors(worker, key)
            return
        reply = loads(frame)
        kind = reply[0]
        if kind in ("ready", "config_error"):
            generation = worker.configs.popleft()
            worker.fresh = False
            if not worker.configs:
                worker.generation = generation
                worker.usable = kind == "ready"
                if not worker.usable:
                    self.on_event("pipeline_worker_failed", error_type=str(reply[1]), status=None)
                self._first_done(worker)
            self._dispatch()
            return
        if not worker.jobs:
            # The answer to a job given to a thread meanwhile (staged when the shutdown began): that
            # thread answers it.
            return
        job = worker.jobs.popleft()
        job.worker = None
        if worker.jobs:
            worker.jobs[0]._started()  # the staged one runs now
        task = job.task
        assert task is not None
        if kind == "done" and tuple(reply[1]) != task.versions:
            # Another policy than the daemon meant (a file changed between the loads): run it here.
            self._to_thread(job)
        elif kind == "done":
            job._finish(True, reply[2])
        else:
            job._finish(False, WorkerError(str(reply[1])))
        self._dispatch()

    def _answer_priors(self, worker: _Worker, key: PriorKey) -> None:
        """Answer a process's prior look-up from the store, on a thread of the reactor's pool."""
        protocol = worker.protocol
        lookup = self.prior_lookup
        if lookup is None:
            answer: defer.Deferred[Any] = defer.succeed(None)
        else:
            answer = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), lookup, key)
            answer.addErrback(lambda _failure: None)  # PriorLookup logs its own failures

        def reply(priors: tuple[Prior, ...] | None) -> None:
            if protocol is not None and worker.protocol is protocol:
                protocol.send(dumps(("priors", priors)))

        answer.addCallback(reply)

    def _lost(self, worker: _Worker, protocol: _WorkerProtocol) -> None:
        """``worker``'s socket ended: its process died, was killed or exited."""
        if worker.protocol is not protocol:
            return
        worker.protocol = None
        status = worker.reap(2.0)
        built = worker.generation >= 0 and not worker.configs
        worker.generation = -1
        worker.usable = False
        worker.configs.clear()
        running = worker.jobs.popleft() if worker.jobs else None
        # The ones staged behind it never started: first in line again, no crash counted.
        while worker.jobs:
            self._pending.appendleft(self._unsend(worker, worker.jobs.pop()))
        if running is not None:
            running.worker = None
            if running.abandoned or self._stopped:
                running._finish(False, WorkerAbandoned())
            else:
                self._crashed(running, status)
        if self._stopped:
            # The shutdown closed it: not a failure, and never started again.
            self._first_done(worker)
        elif not built:
            self._failed(worker, "EOFError", status)
        else:
            self._start(worker)
        self._dispatch()

    def _crashed(self, job: Job[Any], status: int | None) -> None:
        """``job``'s process died running it: count the crash; quarantine, or retry it on a process."""
        task = job.task
        assert task is not None
        # The journal's count, never below this job's own: an entry the reactor already ended
        # (an overrun answered meanwhile) counts from zero again.
        crashes = job.attempts
        if task.entry is not None:
            if len(self._died_on) >= 256:
                self._died_on.clear()
            self._died_on.add(task.entry[0])
            if self.journal is not None:
                try:
                    crashes = max(crashes, self.journal.count_crash(task.entry[0]))
                except OSError:  # the journal's disk: the message's own deaths still count
                    pass
        self.on_event("pipeline_worker_died", status=status, count=crashes)
        if crashes >= QUARANTINE_AFTER:
            job._finish(False, WorkerCrashed(crashes))
            return
        # Never run a message that just killed a process here, in the daemon: a process or nothing.
        job.process_only = True
        self._pending.appendleft(job)

    @staticmethod
    def _unsend(worker: _Worker, job: Job[Any]) -> Job[Any]:
        """``job`` was sent to ``worker`` behind another and never started: as if never sent."""
        job.worker = None
        job.attempts -= 1
        return job

    # Dispatch.

    def _dispatch(self) -> None:
        """Send the waiting tasks to the processes that can take them (or to the threads)."""
        while self._pending and not self._stopped:
            job = self._pending[0]
            if job.abandoned:
                self._pending.popleft()
                job._finish(False, WorkerAbandoned())
                continue
            worker = self._free()
            if worker is not None:
                self._pending.popleft()
                self._send(worker, job)
                continue
            for w in self._processes:
                if w.failed and w.protocol is None:
                    self._start(w)  # one attempt per job that finds no process
            starting = [w for w in self._processes if w.starting()]
            if starting and not any(w.first for w in starting) and not job.process_only and not self._waits(job):
                # A process is being started again (after an overrun or a death): a small message
                # does not wait for it, nor for the busy ones (docs/hardening.md, "Worker processes").
                self._pending.popleft()
                self._to_thread(job)
                continue
            if starting or any(w.ready(self.generation) or w.reloading() for w in self._processes):
                # Waits for a busy process, one being started (a first start is always waited for:
                # the daemon listens only once it is done), or one building a reload's pipeline.
                return
            self._pending.popleft()
            if job.process_only:
                # Never run here a message that just killed a process: AE 207 now (stored rejected),
                # and the sender's resend tries again.
                job._finish(False, WorkerError("WorkerUnavailable"))
            else:
                self._to_thread(job)

    def _free(self) -> _Worker | None:
        """The process to send the next task to (None: none now).

        An idle one; else, staged behind the job it runs, one whose job is a message of at most
        :data:`STARTING_THREAD_MAX` bytes (it ends in a few milliseconds, and the process starts
        the next the moment it answered), or any busy one while at least as many tasks wait as
        there are processes. Behind a larger message (which may run to its budget) a task is not
        staged while another process could take it: one being started again, say, whose place
        a thread in the daemon takes for a small message meanwhile.
        """
        ready = [w for w in self._processes if w.ready(self.generation)]
        for worker in ready:
            if not worker.jobs:
                return worker
        if self.hurrying:
            return None
        staging = [w for w in ready if len(w.jobs) == 1]
        for worker in staging:
            task = worker.jobs[0].task
            if task is not None and len(task.raw) <= STARTING_THREAD_MAX:
                return worker
        if staging and len(self._pending) >= len(self._processes):
            return staging[0]
        return None

    def _send(self, worker: _Worker, job: Job[Any]) -> None:
        """Journal ``job``'s task and send it to ``worker`` (its budget and hard limit start at its first send)."""
        task = job.task
        assert task is not None and worker.protocol is not None
        try:
            if self.journal is not None and task.entry is not None:
                self.journal.begin(*task.entry)
        except Exception as exc:  # noqa: BLE001 - handed to the intake as the job's failure
            job._finish(False, exc)
            return
        if job.attempts == 0:
            job.interrupt.start(self.clock, self.budget)
            if self.hurrying:
                job.interrupt.request()
        job.attempts += 1
        job.worker = worker
        worker.jobs.append(job)
        worker.protocol.send(self._request(job))
        if len(worker.jobs) == 1:
            # It runs now: its hard limit starts (a staged one's when the one before it answered).
            job._started()

    def _to_thread(self, job: Job[Any]) -> None:
        """Run ``job`` on a thread in the daemon (its hard limit counted again from its start there)."""
        job._cancel_timer()
        self._queue.put(job)

    def _waits(self, job: Job[Any]) -> bool:
        """True when ``job`` waits for a process being started rather than run on a thread in the
        daemon meanwhile (docs/hardening.md, "Worker processes"): a message over
        :data:`STARTING_THREAD_MAX` bytes (its QA could hold the thread, unkillable, for seconds),
        or one a worker process died running lately or before a restart."""
        task = job.task
        if task is None or len(task.raw) > STARTING_THREAD_MAX:
            return True
        entry = task.entry
        if entry is None:
            return False
        if entry[0] in self._died_on:
            return True
        return self.journal is not None and self.journal.has_crashes(entry[0])

    def _request(self, job: Job[Any]) -> bytes:
        """The pickled request for ``job.task`` (by procworker.dumps, as the reply)."""
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
