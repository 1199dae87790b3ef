"""The overread page: bucket mix, turnaround, worklist per pool, discrepancy rates (docs/console.md, "Overread").

Layer: a page object; its call runs on a thread and reads the store. The figures come from
the store's aggregates (:meth:`listener.store.base.Store.bucket_mix`,
:meth:`listener.store.base.ReportReader.open_task_pools`) and from the graded chains and counted
lone versions the scorecard reads (:func:`listener.outcome_data.collect`,
:func:`listener.outcomes.scorecard.scorecard`), so the page shows the numbers ``overread
scorecard`` and ``/api/scorecard`` give.

The database counts the window's lone versions and the worklist's open tasks; only accessions
with more than one version are chained and graded, a pair not yet in the comparisons cache
decoded again (tens of milliseconds each): a quarter of a second of CPU for 100,000 lone
versions, more for many new pairs (docs/benchmarks.md, "Console pages"). :class:`OverreadPage`
keeps each computed document, keyed by the window, the grouping and the minimum of graded reads, with the store's
newest message pk it saw: it is current while no message arrived, for :data:`CACHE_SECONDS`;
then it is shown while a new one is computed in the background (past :data:`STALE_SECONDS` the
page says how old it is). The default view is computed in the background as soon as the console
is built (:meth:`OverreadPage.warm`), so only the first request for another choice waits for
its figures. The page says when its figures were computed.

No patient data is shown: reader ids, groups, sites, pools and counts only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from listener.console.bins import STEP_WIDTH, bin_label, bin_starts, fill, window_start
from listener.console.charts import bars, lines
from listener.console.web import Ctx, Reply
from listener.logs import get_logger
from listener.outcome_data import HistoryContext, collect
from listener.outcomes.scorecard import Rate, ScorecardRow, prelim_to_final, spread
from listener.sites import EMPTY_DIRECTORY
from listener.store.base import TaskPool

__all__ = [
    "BY",
    "CACHE_SECONDS",
    "STALE_SECONDS",
    "WINDOWS",
    "WORKLIST_LIMIT",
    "OverreadPage",
    "in_thread",
    "started",
    "worklist",
]

T = TypeVar("T")


def _log() -> Any:
    return get_logger("listener.console")


#: The windows: name -> (days, turnaround bin step, label).
WINDOWS = {
    "7d": (7, "day", "last 7 days"),
    "30d": (30, "day", "last 30 days"),
    "90d": (90, "week", "last 90 days"),
}
DEFAULT_WINDOW = "90d"
#: What the discrepancy table groups by (a subset of the scorecard's).
BY = ("reader", "group", "site")
#: How long a computed document is shown as current (no new message since).
CACHE_SECONDS = 60.0
#: Past this age a kept document shown while a newer one is computed is called out as old.
STALE_SECONDS = 900.0
#: Computed documents kept at most (the oldest goes first).
CACHE_ENTRIES = 16
#: Open tasks the worklist reads at most (newest first); beyond it the page says the counts are partial.
WORKLIST_LIMIT = 5000
#: The discrepancy figures shown, and flagged when a reader's interval lies above the group's.
SHOWN = (("any", "any discrepancy"), ("significant", "significant (2b, 3b)"))
DEFAULT_MIN_READS = 30


@dataclass(frozen=True, slots=True)
class _Computed:
    """A computed document: when (monotonic seconds and wall time) and the newest message pk it saw."""

    at: float
    computed: datetime
    newest: int
    document: Mapping[str, Any]


def in_thread(job: Callable[[], None]) -> None:
    """Run ``job`` on a new daemon thread (a document computed in the background)."""
    threading.Thread(target=job, name="console-overread", daemon=True).start()


def started(call: Callable[[], T]) -> Future[T]:
    """``call`` run on a new daemon thread, its result (or its exception) in the future returned:
    a read of the page that overlaps the others (its own connection, or the server's work while
    this process draws)."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            future.set_exception(exc)

    threading.Thread(target=run, name="console-overread-read", daemon=True).start()
    return future


def worklist(pools: Sequence[TaskPool]) -> list[dict[str, Any]]:
    """Open tasks per pool (:meth:`listener.store.base.ReportReader.open_task_pools`): how many and
    the oldest receive time, by pool name (``""`` shown as "(no pool)")."""
    rows = [{"pool": p.pool or "(no pool)", "open": p.open, "oldest": p.oldest} for p in pools]
    return sorted(rows, key=lambda row: str(row["pool"]))


def _rate_cell(rate: Rate) -> dict[str, Any]:
    if rate.rate is None:
        return {"text": "-", "interval": "", "count": rate.count}
    interval = f"{100 * rate.low:.1f}–{100 * rate.high:.1f}%" if rate.low is not None and rate.high is not None else ""
    return {"text": f"{100 * rate.rate:.1f}%", "interval": interval, "count": rate.count}


def _above(row: ScorecardRow, group: ScorecardRow | None, key: str) -> bool:
    """Whether the row's interval lies wholly above its group's (both given)."""
    if group is None:
        return False
    mine, theirs = row.discrepancies[key], group.discrepancies[key]
    return mine.low is not None and theirs.high is not None and mine.low > theirs.high


class OverreadPage:
    """The ``/console/overread`` page with its short-lived cache of computed documents."""

    def __init__(
        self,
        services: Mapping[str, Any],
        clock: Callable[[], float] = time.monotonic,
        refresh: Callable[[Callable[[], None]], None] = in_thread,
    ) -> None:
        self.store = services["store"]
        self.queries = services["queries"]
        self.pipeline = services["pipeline"]
        self.rules = services["outcome_rules"]
        self.fhir_clients = services["fhir_clients"]
        self.clock = clock
        self.refresh = refresh
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, int], _Computed] = {}
        self._refreshing: set[tuple[str, str, int]] = set()

    def __call__(self, ctx: Ctx) -> Reply:
        """The page for ``?window=`` (7d, 30d, 90d), ``?by=`` (reader, group, site) and ``?min_reads=``.

        A document computed for the same choices is shown as it is while no message arrived and
        for :data:`CACHE_SECONDS`; after that it is still shown (the page says so, and how old it
        is past :data:`STALE_SECONDS`) while a new one is computed in the background
        (``refresh``). Without one, the request computes the document itself.
        """
        window = ctx.param("window", DEFAULT_WINDOW)
        if window not in WINDOWS:
            window = DEFAULT_WINDOW
        by = ctx.param("by", "reader")
        if by not in BY:
            by = "reader"
        text = ctx.param("min_reads", str(DEFAULT_MIN_READS))
        problem = ""
        if text.isascii() and text.isdigit() and len(text) <= 9 and int(text) >= 1:
            min_reads = int(text)
        else:
            min_reads, problem = DEFAULT_MIN_READS, "min_reads must be a whole number, 1 or more: 30 is used."
        key = (window, by, min_reads)
        newest = self.store.newest_message_pk()
        at = self.clock()
        with self._lock:
            found = self._cache.get(key)
        refreshing = False
        if found is None:
            found = self._compute(key, ctx.now, newest)
        elif found.newest != newest or at - found.at > CACHE_SECONDS:
            refreshing = True
            self._refresh_later(key, ctx.now, newest)
        old = refreshing and at - found.at > STALE_SECONDS
        context = dict(found.document)
        context.update(
            {
                "computed": found.computed,
                "cached": found.computed != ctx.now,
                "refreshing": refreshing,
                "old_minutes": int((at - found.at) // 60) if old else 0,
                "windows": [(name, label) for name, (_, _, label) in WINDOWS.items()],
                "bys": BY,
                "problem": problem,
            }
        )
        return Reply("overread.html.j2", context)

    def warm(self, now: datetime) -> None:
        """Compute the default view's document in the background (the console calls it once, when built).

        The store is first read on that background thread, never on the caller's (the reactor's,
        while the daemon builds its HTTP site).
        """
        self._refresh_later((DEFAULT_WINDOW, "reader", DEFAULT_MIN_READS), now, None)

    def _compute(self, key: tuple[str, str, int], now: datetime, newest: int) -> _Computed:
        """Compute the document of ``key`` and keep it (the oldest kept one goes beyond :data:`CACHE_ENTRIES`)."""
        found = _Computed(self.clock(), now, newest, self.document(now, *key))
        with self._lock:
            self._cache[key] = found
            while len(self._cache) > CACHE_ENTRIES:
                del self._cache[min(self._cache, key=lambda k: self._cache[k].at)]
        return found

    def _refresh_later(self, key: tuple[str, str, int], now: datetime, newest: int | None) -> None:
        """Compute ``key``'s document in the background unless that is already under way."""
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def job() -> None:
            try:
                self._compute(key, now, self.store.newest_message_pk() if newest is None else newest)
            except Exception as exc:  # noqa: BLE001 - logged; the next request computes again
                _log().warning("console_overread_refresh_failed", error_type=type(exc).__name__)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        self.refresh(job)

    def document(self, now: datetime, window: str, by: str, min_reads: int) -> dict[str, Any]:
        """Every figure of the page for one window, grouping and minimum (blocking).

        The graded chains are collected and the worklist counted on threads of their own while
        this one counts the bucket mix and draws its chart: on PostgreSQL the version read runs on
        the store's connection and the two counts on the report searches' one, so the server
        works on both at once (docs/console.md, "Overread").
        """
        days, step, label = WINDOWS[window]
        since = window_start(now, "day", days)
        pipeline = self.pipeline()
        context = HistoryContext(pipeline, self.rules(), self.fhir_clients())
        collected = started(lambda: collect(self.store, context, since=since, until=now))
        pools_read = started(lambda: self.queries.open_task_pools(limit=WORKLIST_LIMIT))
        buckets = self.store.bucket_mix(since, now, step="day")
        days_starts = bin_starts(since, now, "day")
        mix = fill(days_starts, buckets, lambda b: b.start, lambda b: b.bucket, lambda b: b.count)
        day_labels = [bin_label(s, "day") for s in days_starts]
        mix_chart = (
            bars(f"Routed reports per day by bucket, {label}", day_labels, mix, every=7 if days > 7 else 1)
            if mix
            else None
        )

        found = collected.result()
        outcomes = found.outcomes
        turn_since = window_start(now, step, days // 7) if step == "week" else since
        turn_starts = bin_starts(turn_since, now, step)
        per_bin: list[list[float]] = [[] for _ in turn_starts]
        for when, minutes in prelim_to_final(outcomes, since=turn_since, until=now):
            position = max(i for i, s in enumerate(turn_starts) if s <= when)
            per_bin[position].append(minutes)
        spreads = [spread(values) for values in per_bin]
        turn_labels = [bin_label(s, step) for s in turn_starts]
        turnaround = [
            {"label": lab, "end": s + STEP_WIDTH[step], "count": sp.count, "median": sp.median, "p90": sp.p90}
            for lab, s, sp in zip(turn_labels, turn_starts, spreads, strict=True)
        ]
        turn_chart = None
        if any(sp.count for sp in spreads):
            turn_chart = lines(
                f"Preliminary to final, minutes per {step}, {label}",
                turn_labels,
                {"median": [sp.median for sp in spreads], "p90": [sp.p90 for sp in spreads]},
                every=7 if step == "day" and days > 7 else 1,
            )

        directory = pipeline.qa.directory if pipeline.qa is not None else EMPTY_DIRECTORY
        card = found.scorecard(by=by, directory=directory, since=since, until=now, min_reads=min_reads)
        groups: dict[str, ScorecardRow] = {}
        if by == "reader":
            group_card = found.scorecard(by="group", directory=directory, since=since, until=now, min_reads=min_reads)
            groups = {r.key: r for r in group_card.rows}
        rows = []
        for r in card.rows:
            group = groups.get(r.group) if r.group is not None else None
            cells = []
            for key, _ in SHOWN:
                cell = _rate_cell(r.discrepancies[key])
                cell["above"] = _above(r, group, key)
                cells.append(cell)
            rows.append(
                {
                    "key": r.key,
                    "group": r.group or "",
                    "reads": r.reads,
                    "graded": r.graded,
                    "cells": cells,
                    "flagged": any(c["above"] for c in cells),
                    "note": r.note,
                }
            )

        pools = pools_read.result()
        return {
            "window": window,
            "window_label": label,
            "since": since,
            "until": now,
            "by": by,
            "min_reads": min_reads,
            "mix_chart": mix_chart,
            "mix_labels": day_labels,
            "mix": mix,
            "mix_totals": {bucket: sum(values) for bucket, values in mix.items()},
            "turn_chart": turn_chart,
            "turn_step": step,
            "turnaround": turnaround,
            "shown": SHOWN,
            "rows": rows,
            "graded_total": sum(r.graded for r in card.rows),
            "pools": worklist(pools),
            "worklist_partial": sum(p.open for p in pools) >= WORKLIST_LIMIT,
            "worklist_limit": WORKLIST_LIMIT,
        }
