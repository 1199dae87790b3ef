"""listener.server.bridge: the store's futures as Deferreds, one commit, and draining what is in flight."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer

from listener.errors import StoreError
from listener.server.bridge import InFlight, commit, deferred_from_future
from listener.store.base import MessageRecord, OutboxItem, SaveResult

NOW = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


def _direct(f: Any, *args: Any) -> None:
    f(*args)


class _Store:
    def __init__(self, result: SaveResult | Exception | None) -> None:
        self.result = result

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        if self.result is None:
            raise StoreError("store closed")
        future: Future[SaveResult] = Future()
        if isinstance(self.result, Exception):
            future.set_exception(self.result)
        else:
            future.set_result(self.result)
        return future


def _record(outbox: tuple[OutboxItem, ...] = ()) -> MessageRecord:
    return MessageRecord(
        control_id="C1",
        sender_application="A",
        sender_facility="F",
        feed="default",
        received=NOW,
        raw=None,
        transport="mllp",
        state="processed",
        ack_code="AA",
        ack=b"ACK",
        outbox=outbox,
    )


def _commit(store: _Store, record: MessageRecord, woken: list[int]) -> list[str]:
    out: list[str] = []
    commit(
        store,
        record,
        _direct,
        duplicate=lambda r: f"duplicate {r.ack_code}",  # type: ignore[arg-type]
        processed=lambda r: f"processed {r.processing}",
        unavailable=lambda kind: f"unavailable {kind}",
        on_outbox=lambda: woken.append(1),
    ).addCallback(out.append)
    return out


def test_deferred_from_future_fires_with_the_result_or_the_failure() -> None:
    good: Future[int] = Future()
    seen: list[Any] = []
    deferred_from_future(good, _direct).addCallback(seen.append)
    good.set_result(7)
    bad: Future[int] = Future()
    deferred_from_future(bad, _direct).addErrback(lambda f: seen.append(f.type))
    bad.set_exception(StoreError("disk"))
    assert seen == [7, StoreError]


def test_commit_answers_each_result_and_wakes_outbound_only_after_a_commit_with_routing() -> None:
    woken: list[int] = []
    assert _commit(_Store(SaveResult(1, False, b"ACK", "AA")), _record(), woken) == ["processed 1"]
    assert woken == []
    item: Any = object()
    assert _commit(_Store(SaveResult(1, False, b"ACK", "AA", processing=2)), _record((item,)), woken) == ["processed 2"]
    assert woken == [1]
    assert _commit(_Store(SaveResult(1, True, b"OLD", "AE")), _record((item,)), woken) == ["duplicate AE"]
    assert _commit(_Store(OSError("disk")), _record(), woken) == ["unavailable OSError"]
    assert _commit(_Store(None), _record(), woken) == ["unavailable StoreError"]
    assert woken == [1]


def test_in_flight_drains_once_everything_held_has_fired() -> None:
    held = InFlight()
    assert held.drain().called
    first: defer.Deferred[str] = defer.Deferred()
    second: defer.Deferred[str] = defer.Deferred()
    held.track(first)
    held.track(second)
    assert len(held) == 2
    drained = held.drain()
    first.callback("a")
    assert not drained.called and len(held) == 1
    second.errback(RuntimeError("x"))
    second.addErrback(lambda _: None)
    assert drained.called and len(held) == 0
