"""The one bridge from the store's writer thread to the reactor, shared by the MLLP and HTTP intakes.

Layer: reactor code. The store's :meth:`~listener.store.base.Store.submit`
answers with a :class:`concurrent.futures.Future` resolved on its writer
thread; :func:`deferred_from_future` turns it into a Deferred that fires on
the reactor thread, and :func:`commit` is the whole save of one record: a
key already stored, a durable commit (then the outbound workers are woken
when routing messages were stored with it) or a store that failed.
:class:`InFlight` holds the answers still waiting for their commit, so a
shutdown answers them before it stops (docs/operations.md).
:class:`StoreShell` is what both intakes hold around the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import datetime
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from listener.errors import StoreError
from listener.pipeline import Decoded, Interrupt, Outcome
from listener.server.journal import Journal
from listener.server.metrics import Metrics
from listener.server.runner import PipelineRunner, PipelineTask, WorkerCrashed, run_journaled
from listener.store.base import MessageRecord, SaveResult, Store

__all__ = [
    "InFlight",
    "StoreShell",
    "commit",
    "deferred_from_future",
    "duration_ms",
    "error_type",
    "resend_fields",
    "submit",
]

T = TypeVar("T")
R = TypeVar("R")


def deferred_from_future(future: Future[T], call_from_thread: Callable[..., object]) -> defer.Deferred[T]:
    """Wrap a concurrent Future in a Deferred that fires on the reactor thread.

    Args:
        future: resolved by another thread (the store's writer).
        call_from_thread: ``reactor.callFromThread`` (tests pass a direct call).
    """
    d: defer.Deferred[T] = defer.Deferred()

    def fire(done: Future[T]) -> None:
        exc = done.exception()
        if exc is not None:
            d.errback(Failure(exc))  # type: ignore[no-untyped-call]
        else:
            d.callback(done.result())

    future.add_done_callback(lambda done: call_from_thread(fire, done))
    return d


def submit(store: Store, record: MessageRecord, call_from_thread: Callable[..., object]) -> defer.Deferred[SaveResult]:
    """Hand ``record`` to the store's writer; the Deferred fails with StoreError when the store is closed."""
    try:
        future = store.submit(record)
    except StoreError:
        return defer.fail(StoreError("store closed"))
    return deferred_from_future(future, call_from_thread)


def commit(
    store: Store,
    record: MessageRecord,
    call_from_thread: Callable[..., object],
    *,
    duplicate: Callable[[SaveResult], T],
    processed: Callable[[SaveResult], T],
    unavailable: Callable[[str], T],
    on_outbox: Callable[[], object] | None,
) -> defer.Deferred[T]:
    """Save one record and fire with the answer to send.

    Args:
        duplicate: the answer when the save found the key stored already
            (nothing was written; the result carries the stored answer).
        processed: the answer once the record is durably committed; after it,
            ``on_outbox`` is called when the record stored routing messages.
        unavailable: the answer when the store failed (given the failure's type name).
    """

    def stored(result: SaveResult) -> T:
        if result.duplicate:
            return duplicate(result)
        answer = processed(result)
        if record.outbox and on_outbox is not None:
            on_outbox()
        return answer

    def failed(failure: Failure) -> T:
        return unavailable(error_type(failure))

    return submit(store, record, call_from_thread).addCallbacks(stored, failed)


def error_type(failure: Failure) -> str:
    """The failure's exception type name (what a log line may say of it)."""
    return failure.type.__name__ if failure.type else "Exception"


def duration_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading), as logged."""
    return round((time.perf_counter() - started) * 1000, 3)


def resend_fields(result: SaveResult) -> dict[str, Any]:
    """Log fields of a commit that replaced a stored rejection (a resend processed again), else none."""
    return {"processing": result.processing, "reason": "resend_after_rejection"} if result.processing > 1 else {}


class InFlight:
    """The answers still waiting for their commit; a shutdown drains them."""

    def __init__(self) -> None:
        self._pending: set[defer.Deferred[Any]] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[defer.Deferred[Any]]:
        return iter(list(self._pending))

    def track(self, d: defer.Deferred[T]) -> defer.Deferred[T]:
        """Hold ``d`` until it fires; returns ``d``, its result unchanged."""
        self._pending.add(d)

        def forget(result: T) -> T:
            self._pending.discard(d)
            return result

        return d.addBoth(forget)

    def drain(self) -> defer.Deferred[None]:
        """Fire once every held Deferred has fired (whatever its result)."""
        pending = list(self._pending)
        if not pending:
            return defer.succeed(None)
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)


class StoreShell:
    """What an intake (MLLP or HTTP) holds around the store, and its one way to commit.

    Args:
        store: the durable store.
        hash_key: the installation key (log hashes; HTTP message keys).
        call_from_thread: ``reactor.callFromThread`` (tests pass a direct call).
        now: the clock (aware UTC datetimes).
        keep_raw: store raw bodies (retention purges them later).
        metrics: counters to bump, or None.
        on_outbox: called on the reactor thread after a commit that stored
            outbox rows (wakes the outbound workers).
        runner: worker threads and the time budget for the pipeline (None:
            the pipeline runs inline, as unit tests do).
        journal: where bodies are recorded before the pipeline runs (None: none kept).
    """

    def __init__(
        self,
        store: Store,
        *,
        hash_key: bytes,
        call_from_thread: Callable[..., object],
        now: Callable[[], datetime],
        keep_raw: bool,
        metrics: Metrics | None,
        on_outbox: Callable[[], object] | None,
        runner: PipelineRunner | None,
        journal: Journal | None,
    ) -> None:
        self.store = store
        self.hash_key = hash_key
        self.call_from_thread = call_from_thread
        self.now = now
        self.keep_raw = keep_raw
        self.metrics = metrics
        self.on_outbox = on_outbox
        self.runner = runner
        self.journal = journal
        #: Set at shutdown: messages arriving from then on are not taken.
        self.closing = False
        #: Answers of messages being stored; shutdown waits for them.
        self.in_flight = InFlight()

    def commit(
        self,
        record: MessageRecord,
        *,
        duplicate: Callable[[SaveResult], T],
        processed: Callable[[SaveResult], T],
        unavailable: Callable[[str], T],
    ) -> defer.Deferred[T]:
        """:func:`commit` with this intake's store, reactor and outbound wake-up."""
        return commit(
            self.store,
            record,
            self.call_from_thread,
            duplicate=duplicate,
            processed=processed,
            unavailable=unavailable,
            on_outbox=self.on_outbox,
        )

    def journaled(
        self,
        entry: tuple[str, str, bytes, str],
        check: Callable[[Interrupt], Outcome],
        unchecked: Callable[[Decoded], Outcome],
        serialize: Callable[[Outcome], R],
        on_overrun: Callable[[], object],
        *,
        failed: Callable[[Failure], R],
        save: Callable[[R], defer.Deferred[T]],
        quarantined: Callable[[int], defer.Deferred[T]],
        task: PipelineTask | None = None,
    ) -> tuple[defer.Deferred[T], defer.Deferred[None]]:
        """Journal, check and store one message (:func:`~listener.server.runner.run_journaled`, then ``save``).

        Args:
            failed: what to store when the work itself failed (the journal
                could not be written, a bug outside the pipeline).
            save: stores the result and gives the answer; the journal entry
                ends once it has (docs/hardening.md).
            quarantined: stores the message quarantined and gives the answer, given
                the count of its worker processes' deaths (:class:`WorkerCrashed`:
                they died on it again and again, as a message that kills the daemon
                is quarantined, docs/hardening.md).
            task: the check as data, for a worker process (see
                :func:`~listener.server.runner.run_journaled`).

        Returns:
            (the answer, a Deferred firing once no worker runs the message).
        """
        journal = self.journal

        def forget(answer: Any) -> Any:
            if journal is not None:
                journal.end(entry[0])
            return answer

        def not_checked(failure: Failure) -> defer.Deferred[T]:
            crashed = failure.value
            if isinstance(crashed, WorkerCrashed):
                return quarantined(crashed.crashes)
            return save(failed(failure))

        processed, finished = run_journaled(self.runner, journal, entry, check, unchecked, serialize, on_overrun, task)
        answered: defer.Deferred[T] = processed.addCallbacks(save, not_checked)
        return answered.addBoth(forget), finished

    def submit(self, record: MessageRecord) -> defer.Deferred[SaveResult]:
        """:func:`submit` with this intake's store and reactor."""
        return submit(self.store, record, self.call_from_thread)

    def drain(self) -> defer.Deferred[None]:
        """Fire once every message being stored has its answer."""
        return self.in_flight.drain()
