"""The daemon's cache of live peer-review figures for the routing policy.

Layer: reactor code around a thread, like the store probe and the purge in
:mod:`listener.server.daemon`. At start and every ``outcomes.refresh_seconds``
(docs/configuration.md) a refresh computes every reader's and group's graded
reads and significant discrepancies over ``outcomes.window_days`` with
:func:`listener.live_figures.compute_live_figures` on a thread (it reads the
store and re-grades pairs: never on the reactor), then swaps the result in on
the reactor thread. The intakes read :meth:`LiveRates.figures` as a message
starts and hand it to the pure pipeline with the message (docs/routing.md):
a routing decision never queries the store.

A failed refresh keeps the previous figures, logs ``live_figures_failed``
with the error type only (no patient data, no store text) and counts it in
``overread_live_figures_refreshes{outcome="failed"}``. One refresh runs at a
time: a tick that finds one still running is skipped.

The refresh runs on a daemon thread of its own, not the reactor's thread
pool: on a large store it can take a while, and shutdown neither waits for
it nor joins it (the reactor's pool is joined at shutdown). A refresh the
shutdown cut short (the store closed under it) ends silently.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from listener.logs import get_logger
from listener.outcome_data import HistoryContext
from listener.sites import LiveFigures
from listener.store.base import Store

__all__ = ["LiveRates"]


def _log() -> Any:
    # Looked up at use time, like the daemon's (cli configures logging later).
    return get_logger("listener.server.live_rates")


def _on_daemon_thread(reactor: Any) -> Callable[..., Deferred[Any]]:
    """``run_in_thread`` on a new daemon thread per call; the Deferred fires on the reactor thread."""

    def run(work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()

        def body() -> None:
            try:
                value = work()
            except BaseException:  # noqa: BLE001 - handed to the reactor as the Deferred's failure
                reactor.callFromThread(d.errback, Failure())  # type: ignore[no-untyped-call]
                return
            reactor.callFromThread(d.callback, value)

        threading.Thread(target=body, name="overread-live-figures", daemon=True).start()
        return d

    return run


def _compute(store: Store, ctx: HistoryContext, until: datetime, window_days: int) -> LiveFigures:
    from listener.live_figures import compute_live_figures

    return compute_live_figures(store, ctx, until=until, window_days=window_days)


class LiveRates:
    """Live figures, refreshed off the reactor and swapped whole.

    Args:
        store: the daemon's store (read on a thread).
        reactor: for the periodic call.
        context: gives the current :class:`~listener.history.HistoryContext`
            (the running pipeline, grading rules, FHIR clients); called on the
            refresh's thread (it reads the grading rules file), so a reload
            applies to the next refresh.
        window_days, refresh_seconds: ``outcomes.window_days`` and ``outcomes.refresh_seconds``.
        metrics: the daemon's metrics (None in tests that do not read them).
        clock: aware UTC now; the window ends there.
        run_in_thread: runs the refresh off the reactor (default: a daemon thread of its own).
        compute: the computation (``compute_live_figures``).
    """

    def __init__(
        self,
        store: Store,
        reactor: Any,
        *,
        context: Callable[[], HistoryContext],
        window_days: int,
        refresh_seconds: float,
        metrics: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
        compute: Callable[[Store, HistoryContext, datetime, int], LiveFigures] = _compute,
    ) -> None:
        self.store = store
        self.reactor = reactor
        self.context = context
        self.window_days = window_days
        self.refresh_seconds = refresh_seconds
        self.metrics = metrics
        self.clock = clock
        self.run_in_thread = run_in_thread if run_in_thread is not None else _on_daemon_thread(reactor)
        self.compute = compute
        #: The figures in force (None until the first refresh succeeds): replaced whole, never changed.
        self.current: LiveFigures | None = None
        #: When the current figures' window ended (None: none yet).
        self.computed_at: datetime | None = None
        #: The refresh running on a thread, if any.
        self.running: Deferred[None] | None = None
        #: True once the daemon began stopping: a refresh still running ends silently.
        self.stopped = False
        self._loop: LoopingCall | None = None
        if metrics is not None:
            metrics.live_figures_age.set_function(self.age_seconds)

    def figures(self) -> LiveFigures | None:
        """The figures in force (reactor thread; one attribute read)."""
        return self.current

    def age_seconds(self) -> float:
        """Seconds since the figures in force were computed; NaN when there are none."""
        if self.computed_at is None:
            return math.nan
        return max(0.0, (self.clock() - self.computed_at).total_seconds())

    def start(self) -> None:
        """Refresh now and every ``refresh_seconds``."""
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.reactor
        self._loop.start(self.refresh_seconds, now=True)

    def stop(self) -> None:
        """Stop refreshing (shutdown): a refresh running now is neither waited for nor reported."""
        self.stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def refresh(self) -> Deferred[None]:
        """Compute the figures on a thread and swap them in (reactor thread); never fails."""
        if self.stopped or (self.running is not None and not self.running.called):
            return succeed(None)
        until = self.clock()

        def work() -> LiveFigures:
            return self.compute(self.store, self.context(), until, self.window_days)

        def done(figures: LiveFigures) -> None:
            if self.stopped:
                return
            self.current = figures
            self.computed_at = until
            if self.metrics is not None:
                self.metrics.live_figures_refreshes.labels("ok").inc()
            _log().info("live_figures_refreshed", count=len(figures.readers), interval_s=self.refresh_seconds)

        def failed(failure: Any) -> None:
            if self.stopped:
                return
            self._failed(failure.type.__name__ if failure.type else "")

        def broken(failure: Any) -> None:
            # done/failed raised (e.g. the log sink is gone): the loop keeps running, the figures stay.
            if self.metrics is not None:
                self.metrics.live_figures_refreshes.labels("failed").inc()

        d: Deferred[None] = self.run_in_thread(work)
        d.addCallbacks(done, failed)
        d.addErrback(broken)
        self.running = d
        return d

    def _failed(self, error_type: str) -> None:
        """Keep the figures in force; count and log the failure (its type only: no patient data)."""
        if self.metrics is not None:
            self.metrics.live_figures_refreshes.labels("failed").inc()
        _log().warning(
            "live_figures_failed",
            error_type=error_type,
            reason="previous_figures_kept" if self.current is not None else "no_live_figures",
        )
