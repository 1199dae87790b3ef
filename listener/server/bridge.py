"""The one bridge from the store's writer thread to the reactor, shared by the MLLP and HTTP intakes.

Layer: reactor code. The store's :meth:`~listener.store.base.Store.submit`
answers with a :class:`concurrent.futures.Future` resolved on its writer
thread; :func:`deferred_from_future` turns it into a Deferred that fires on
the reactor thread, and :func:`commit` is the whole save of one record: a
key already stored, a durable commit (then the outbound workers are woken
when routing messages were stored with it) or a store that failed.
:class:`InFlight` holds the answers still waiting for their commit, so a
shutdown answers them before it stops (docs/operations.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from listener.errors import StoreError
from listener.store.base import MessageRecord, SaveResult, Store

__all__ = ["InFlight", "commit", "deferred_from_future", "duration_ms", "error_type", "resend_fields", "submit"]

T = TypeVar("T")


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
