"""The overview page: store health and the outbox per destination (docs/console.md, "Overview").

Layer: a page function; runs on a thread and reads the store.
"""

from __future__ import annotations

from typing import Any

from listener.console.web import Ctx, Reply
from listener.store.base import Store

__all__ = ["overview_page"]


def _age(seconds: float) -> str:
    """A duration as ``3 h 05 min`` / ``4 min 10 s`` / ``12 s``."""
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    if whole >= 60:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole} s"


def overview_page(ctx: Ctx, store: Store) -> Reply:
    """Store health and, per destination, pending/delivered/dead rows and the oldest pending."""
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
        },
    )
