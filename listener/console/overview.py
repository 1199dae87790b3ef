"""The overview page: traffic, answers, the outbox per destination and store health (docs/console.md, "Overview").

Layer: a page object; its call runs on a thread and reads the store. The counts come from
:meth:`listener.store.base.Store.traffic` (grouped by the database over the window's rows): the
bins before the current one are counted once every :data:`CLOSED_SECONDS` and kept in the page
object, the current bin on every request; the outbox comes from
:meth:`~listener.store.base.Store.outbox_stats`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from listener.console.bins import bin_label, bin_starts, fill, is_nack, window_start
from listener.console.charts import Chart, bars
from listener.console.web import Ctx, Reply
from listener.hl7v2.keys import shown_key
from listener.store.base import Store, TrafficBin, bin_start

__all__ = ["CLOSED_SECONDS", "WINDOWS", "OverviewPage", "overview_page", "sender_of", "traffic_section"]

#: The overview's windows: name -> (bin step, number of bins, label).
WINDOWS = {"24h": ("hour", 24, "last 24 hours, per hour"), "7d": ("day", 7, "last 7 days, per day")}
#: How long the counts of a window's closed bins are shown again before they are counted afresh.
CLOSED_SECONDS = 300.0


def _age(seconds: float) -> str:
    """A duration as ``3 h 05 min`` / ``4 min 10 s`` / ``12 s``."""
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    if whole >= 60:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole} s"


def sender_of(row: TrafficBin) -> str:
    """A sender as the overview names it: ``APPLICATION^FACILITY`` (the application alone without a facility),
    each as the sender wrote it (:func:`shown_key`)."""
    app = shown_key(row.sender_application)
    return f"{app}^{shown_key(row.sender_facility)}" if row.sender_facility else app


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def traffic_section(rows: Sequence[TrafficBin], starts: Sequence[datetime], step: str, title: str) -> dict[str, Any]:
    """The overview's traffic figures: the chart's series, the table per sender, the answers, the totals."""
    series = fill(starts, rows, lambda r: r.start, sender_of, lambda r: r.count)
    labels = [bin_label(s, step) for s in starts]
    chart: Chart | None = None
    if series:
        # Each row of four legend entries takes room from the plot: the chart grows with it.
        height = 280 + 20 * -(-len(series) // 4)
        chart = bars(
            f"Messages per {step} by sender, {title}", labels, series, every=3 if step == "hour" else 1, height=height
        )
    senders: dict[str, dict[str, Any]] = {}
    codes: dict[str, int] = {}
    states: dict[str, int] = {}
    transports: dict[str, int] = {}
    for r in rows:
        s = senders.setdefault(sender_of(r), {"name": sender_of(r), "count": 0, "nack": 0, "codes": {}})
        s["count"] += r.count
        s["codes"][r.ack_code] = s["codes"].get(r.ack_code, 0) + r.count
        if is_nack(r.ack_code):
            s["nack"] += r.count
        codes[r.ack_code] = codes.get(r.ack_code, 0) + r.count
        states[r.state] = states.get(r.state, 0) + r.count
        transports[r.transport] = transports.get(r.transport, 0) + r.count
    total = sum(codes.values())
    table = []
    for name in sorted(senders):
        s = senders[name]
        s["ratio"] = _percent(s["nack"], s["count"])
        s["row"] = [s["codes"].get(code, 0) for code in sorted(codes)]
        table.append(s)
    return {
        "chart": chart,
        "labels": labels,
        "series": series,
        "senders": table,
        "codes": sorted(codes),
        "code_counts": [(code, codes[code], is_nack(code)) for code in sorted(codes)],
        "total": total,
        "nack": sum(n for code, n in codes.items() if is_nack(code)),
        "nack_ratio": _percent(sum(n for code, n in codes.items() if is_nack(code)), total),
        "states": sorted(states.items()),
        "transports": sorted(transports.items()),
    }


class OverviewPage:
    """The overview page with its cache of the window's closed bins.

    The bins before the current hour (24 h) or day (7 d) are counted once and kept for
    :data:`CLOSED_SECONDS` (a reprocessed message can still change its state and answer); the
    current bin is counted on every request. docs/console.md, "Overview".
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
        result_of: Callable[[Ctx], dict[str, Any] | None] | None = None,
        destinations: Callable[[], Sequence[object]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        #: The live enabled destinations (None: not known, as for a page built on a store alone).
        self.destinations = destinations
        #: The signed result of an operator action that redirected here (a kick), if any.
        self.result_of = result_of
        self._lock = threading.Lock()
        self._closed: dict[str, tuple[float, datetime, datetime, tuple[TrafficBin, ...]]] = {}

    def traffic(self, since: datetime, now: datetime, step: str) -> tuple[tuple[TrafficBin, ...], datetime]:
        """The window's bins (closed ones from the cache) and when the closed ones were counted."""
        current = bin_start(now, step)
        at = self.clock()
        with self._lock:
            found = self._closed.get(step)
        if found is None or found[1] != current or at - found[0] > CLOSED_SECONDS:
            found = (at, current, now, self.store.traffic(since, current, step=step))
            with self._lock:
                self._closed[step] = found
        return found[3] + self.store.traffic(current, now, step=step), found[2]

    def __call__(self, ctx: Ctx) -> Reply:
        """Traffic of the window (``?window=24h`` or ``7d``), answers, the outbox per destination, store health."""
        result = self.result_of(ctx) if self.result_of is not None else None
        routing = self.destinations is None or bool(self.destinations())
        return overview_page(ctx, self.store, self.traffic, result, routing=routing)


def overview_page(
    ctx: Ctx,
    store: Store,
    traffic_of: Callable[[datetime, datetime, str], tuple[tuple[TrafficBin, ...], datetime]],
    result: dict[str, Any] | None = None,
    *,
    routing: bool = True,
) -> Reply:
    """The overview's reply; ``traffic_of(since, now, step)`` counts the window (:meth:`OverviewPage.traffic`).

    ``routing`` False: no destination is configured, so the page says no routing message is sent
    (rather than "none queued yet"; docs/console.md, "Overview").
    """
    window = ctx.param("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    step, count, title = WINDOWS[window]
    since = window_start(ctx.now, step, count)
    starts = bin_starts(since, ctx.now, step)
    rows, counted = traffic_of(since, ctx.now, step)
    traffic = traffic_section(rows, starts, step, title)
    stats = store.outbox_stats(ctx.now)
    states = {s.destination: s for s in store.destination_states()}
    names = sorted({d.destination for d in stats.depth} | set(states))
    destinations: list[dict[str, Any]] = []
    for name in names:
        oldest = [d.oldest_age for d in stats.depth if d.destination == name and d.state == "pending" and d.count]
        state = states.get(name)
        if state is None or not state.connect_failures:
            connection = "connected or idle"
        else:
            connection = f"{state.connect_failures} failed connects; next try {state.next_connect_at or '-'}"
        destinations.append(
            {
                "name": name,
                "pending": stats.count("pending", name),
                "delivered": stats.count("delivered", name),
                "dead": stats.count("dead", name),
                "oldest": _age(oldest[0].total_seconds()) if oldest else "-",
                "connection": connection,
            }
        )
    return Reply(
        "overview.html.j2",
        {
            "now": ctx.now,
            "store_ok": store.health(),
            "store_reason": store.health_reason(),
            "store_kind": type(store).__name__.removesuffix("Store") or "store",
            "destinations": destinations,
            "window": window,
            "windows": [(name, label) for name, (_, _, label) in WINDOWS.items()],
            "window_title": title,
            "since": since,
            "traffic": traffic,
            "counted": counted,
            "step": step,
            "result": result,
            "operator": ctx.caller.may("operator"),
            "routing": routing,
        },
    )
