"""The overview page: traffic, answers, the outbox per destination and store health (docs/console.md, "Overview").

Layer: a page function; runs on a thread and reads the store. The counts come from one
:meth:`listener.store.base.Store.traffic` call (grouped by the database over the window's rows);
the outbox from :meth:`~listener.store.base.Store.outbox_stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from listener.console.bins import bin_label, bin_starts, fill, is_nack, window_start
from listener.console.charts import Chart, bars
from listener.console.web import Ctx, Reply
from listener.store.base import Store, TrafficBin

__all__ = ["WINDOWS", "overview_page", "sender_of", "traffic_section"]

#: The overview's windows: name -> (bin step, number of bins, label).
WINDOWS = {"24h": ("hour", 24, "last 24 hours, per hour"), "7d": ("day", 7, "last 7 days, per day")}


def _age(seconds: float) -> str:
    """A duration as ``3 h 05 min`` / ``4 min 10 s`` / ``12 s``."""
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    if whole >= 60:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole} s"


def sender_of(row: TrafficBin) -> str:
    """A sender as the overview names it: ``APPLICATION^FACILITY`` (the application alone without a facility)."""
    return f"{row.sender_application}^{row.sender_facility}" if row.sender_facility else row.sender_application


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def traffic_section(rows: Sequence[TrafficBin], starts: Sequence[datetime], step: str, title: str) -> dict[str, Any]:
    """The overview's traffic figures: the chart's series, the table per sender, the answers, the totals."""
    series = fill(starts, rows, lambda r: r.start, sender_of, lambda r: r.count)
    labels = [bin_label(s, step) for s in starts]
    chart: Chart | None = None
    if series:
        chart = bars(f"Messages per {step} by sender, {title}", labels, series, every=3 if step == "hour" else 1)
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


def overview_page(ctx: Ctx, store: Store) -> Reply:
    """Traffic of the window (``?window=24h`` or ``7d``), answers, the outbox per destination, store health."""
    window = ctx.param("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    step, count, title = WINDOWS[window]
    since = window_start(ctx.now, step, count)
    starts = bin_starts(since, ctx.now, step)
    traffic = traffic_section(store.traffic(since, ctx.now, step=step), starts, step, title)
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
        },
    )
