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

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from listener.pipeline import Decoded, Interrupt, Outcome
from listener.server.journal import Journal

__all__ = ["Job", "PipelineRunner", "run_journaled"]

T = TypeVar("T")

#: Default number of worker threads.
DEFAULT_WORKERS = 2


class Job(Generic[T]):
    """One unit of pipeline work.

    Attributes:
        result: fires on the reactor thread with the work's value, or with the
            ``on_overrun`` value once the hard limit passed; fails with the
            work's exception.
        finished: fires when no thread runs the work any more (its worker
            returned, or it never started because the runner stopped).
    """

    __slots__ = ("work", "on_overrun", "interrupt", "result", "finished", "_timer", "_runner")

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

    # Everything below runs on the reactor thread.

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
        try:
            value = self.on_overrun(self.interrupt)
        except Exception:  # noqa: BLE001 - keep waiting for the worker instead
            value = None
        if value is None:
            # Nothing to answer with yet (still decoding): wait for the worker.
            return
        self._runner.replace_stuck_worker()
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

    def run(self, work: Callable[[Interrupt], T], on_overrun: Callable[[Interrupt], T | None]) -> Job[T]:
        """Queue ``work(interrupt)`` for a worker thread; see :class:`Job`."""
        job: Job[T] = Job(self, work, on_overrun)
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


def run_journaled(
    runner: PipelineRunner | None,
    journal: Journal | None,
    entry: tuple[str, str, bytes, str],
    check: Callable[[Interrupt], Outcome],
    unchecked: Callable[[Decoded], Outcome],
    serialize: Callable[[Outcome], T],
    on_overrun: Callable[[], object],
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
        if interrupt.decoded is None:
            return None
        on_overrun()
        return serialize(unchecked(interrupt.decoded))

    if runner is None:
        return defer.maybeDeferred(work, Interrupt()), defer.succeed(None)
    job = runner.run(work, overrun)
    return job.result, job.finished
