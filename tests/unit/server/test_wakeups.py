"""ThreadCalls: the calls threads queue while the reactor has not run them yet cost one wake-up.

The reactor is stood in for by a list of the runs it was asked for (what ``callFromThread`` would
queue); the test runs them when the reactor would, so it sees how many wake-ups a run of calls
cost and in what order the calls were made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.logger import LogEvent, globalLogPublisher

from listener.server.wakeups import ThreadCalls


class AskedReactor:
    """A stand-in for ``reactor.callFromThread``: remembers each call it was asked for."""

    def __init__(self) -> None:
        self.asked: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    def callFromThread(self, f: Callable[[], object]) -> None:  # noqa: N802 - twisted's name
        with self._lock:
            self.asked.append(f)

    def turn(self) -> int:
        """One reactor turn: make every call asked so far; how many there were."""
        with self._lock:
            asked, self.asked = self.asked, []
        for f in asked:
            f()
        return len(asked)


def test_calls_queued_before_the_reactor_runs_them_wake_it_once_in_order() -> None:
    reactor = AskedReactor()
    calls = ThreadCalls(reactor.callFromThread)
    made: list[tuple[str, int]] = []
    for n in range(5):
        calls(lambda n=n, kind="kw": made.append((kind, n)))
    assert len(reactor.asked) == 1
    assert reactor.turn() == 1
    assert made == [("kw", n) for n in range(5)]
    # The run took the queue: the next call asks again, and nothing is made twice.
    calls(made.append, ("next", 5))
    assert len(reactor.asked) == 1
    reactor.turn()
    assert made[-1] == ("next", 5) and len(made) == 6
    assert calls.wakeups == 2


def test_a_call_queued_while_the_reactor_runs_the_queue_asks_again() -> None:
    reactor = AskedReactor()
    calls = ThreadCalls(reactor.callFromThread)
    made: list[str] = []

    def first() -> None:
        made.append("first")
        # Another thread's call while the reactor makes this queue's calls: it must not wait for
        # a run that already took the queue (it would wait for the next unrelated call).
        calls(made.append, "during")

    calls(first)
    reactor.turn()
    assert made == ["first"]
    assert len(reactor.asked) == 1
    reactor.turn()
    assert made == ["first", "during"]


def test_a_call_that_raises_is_logged_and_the_next_ones_are_still_made() -> None:
    reactor = AskedReactor()
    calls = ThreadCalls(reactor.callFromThread)
    made: list[int] = []
    logged: list[LogEvent] = []
    globalLogPublisher.addObserver(logged.append)
    try:

        def broken() -> None:
            raise ValueError("a bug")

        calls(made.append, 1)
        calls(broken)
        calls(made.append, 2)
        reactor.turn()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert made == [1, 2]
    assert [e["log_failure"].type for e in logged if "log_failure" in e] == [ValueError]


def test_calls_from_many_threads_are_each_made_once() -> None:
    reactor = AskedReactor()
    calls = ThreadCalls(reactor.callFromThread)
    made: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda t=t: [calls(made.append, (t, n)) for n in range(2000)]) for t in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        reactor.turn()
    for thread in threads:
        thread.join()
    reactor.turn()
    assert sorted(made) == [(t, n) for t in range(4) for n in range(2000)]
    # Each thread's own calls keep their order.
    for t in range(4):
        assert [n for u, n in made if u == t] == list(range(2000))
    assert not reactor.asked and calls.wakeups <= len(made)
