"""Calls from the daemon's threads to the reactor, several for one wake-up of the reactor.

Layer: reactor code. Twisted's ``callFromThread`` writes one byte to the reactor's
waker pipe per call: a system call on the calling thread, which gives up the
interpreter lock (often to another thread, then waits to get it back), and a read
and a loop turn on the reactor. Under load the store's writer resolves several saves
per commit and the runner threads finish messages while the reactor is still busy
with earlier ones: :class:`ThreadCalls` queues each call and asks the reactor only
for the first one of a run, and the reactor then makes every call queued up to then,
in the order they were queued (docs/benchmarks.md, "Daemon wake-ups, 2026-12-07").

Every thread that hands work to the reactor for the same messages (the runner threads,
the store's writer) shares one :class:`ThreadCalls`, so their calls keep the order in
which they were made, as Twisted's queue would.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["ThreadCalls"]

_log = Logger()
#: Logs a call that raised and goes on with the next one, as the reactor does for its own queue.
_handled = _log.failureHandler("while calling from thread")


class ThreadCalls:
    """A ``callFromThread`` that wakes the reactor once for the calls queued while it is busy.

    Args:
        call_from_thread: ``reactor.callFromThread`` (tests may pass their own).
    """

    def __init__(self, call_from_thread: Callable[..., object]) -> None:
        self._call_from_thread = call_from_thread
        #: The calls not made yet (deque's append and popleft are atomic: no lock around them).
        self._calls: deque[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]] = deque()
        #: Held from the call that asked the reactor for :meth:`_run` until that run starts; only
        #: ever tried without waiting, so no thread blocks on another here.
        self._asked = threading.Lock()
        #: Times the reactor was asked (a figure for tests and benchmarks).
        self.wakeups = 0

    def __call__(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Call ``f(*args, **kwargs)`` on the reactor thread, after every call queued before it (thread-safe).

        Queued first, then the reactor is asked unless a run is asked for and not started yet:
        that run makes this call too (it makes every call queued before it started).
        """
        self._calls.append((f, args, kwargs))
        if self._asked.acquire(blocking=False):
            self.wakeups += 1
            self._call_from_thread(self._run)

    def _run(self) -> None:
        """On the reactor: make every queued call; one that raises is logged as Twisted logs its own."""
        # First let the next call ask again: a call queued from here on is made by the run it asks
        # for (this run makes only the calls queued before it started, so it always ends).
        self._asked.release()
        calls = self._calls
        for _ in range(len(calls)):
            f, args, kwargs = calls.popleft()
            with _handled:
                f(*args, **kwargs)
