"""Time bins for the console's charts: the bins of a window, counts per bin with empty bins as 0.

Layer: plain Python (no I/O). The store counts per UTC hour or day and leaves empty bins out
(:meth:`listener.store.base.Store.traffic`); a chart needs every bin, so :func:`fill` puts the
zeros back. docs/console.md, "Overview" and "Overread".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from listener.store.base import bin_start

__all__ = ["STEP_WIDTH", "bin_label", "bin_starts", "fill", "is_nack", "window_start"]

#: How long a bin of each step is.
STEP_WIDTH = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}

#: Acknowledgement codes that refuse a message (HL7 table 0008); an HTTP status of 400 or more does too.
_NACK_CODES = frozenset({"AE", "AR", "CE", "CR"})

T = TypeVar("T")


def window_start(now: datetime, step: str, count: int) -> datetime:
    """The start of the window of ``count`` bins of ``step`` whose last bin holds ``now`` (UTC)."""
    if step == "week":
        return bin_start(now, "day") - (count - 1) * STEP_WIDTH["week"] - timedelta(days=6)
    return bin_start(now, step) - (count - 1) * STEP_WIDTH[step]


def bin_starts(since: datetime, until: datetime, step: str) -> tuple[datetime, ...]:
    """The starts of the bins of ``step`` from ``since`` (a bin start) up to, not including, ``until``."""
    width = STEP_WIDTH[step]
    out = []
    start = since
    while start < until:
        out.append(start)
        start += width
    return tuple(out)


def bin_label(start: datetime, step: str) -> str:
    """A bin's label on a chart and in its table: ``14:00`` for hours, ``12-06`` for days and weeks."""
    return start.strftime("%H:%M") if step == "hour" else start.strftime("%m-%d")


def fill(
    starts: Sequence[datetime],
    rows: Iterable[T],
    when: Callable[[T], datetime],
    key: Callable[[T], str],
    count: Callable[[T], int],
) -> dict[str, list[int]]:
    """Per key, the counts of ``rows`` in each bin of ``starts`` (0 where none); keys sorted.

    A row belongs to the last bin whose start is at or before ``when(row)``; a row before the first
    bin or at or after ``starts[-1]`` plus its width is for the caller to keep out (rows of the
    store's window are never).
    """
    index = {start: i for i, start in enumerate(starts)}
    out: dict[str, list[int]] = {}
    for row in rows:
        at = when(row)
        position = index.get(at)
        if position is None:
            earlier = [i for i, s in enumerate(starts) if s <= at]
            if not earlier:
                continue
            position = earlier[-1]
        series = out.setdefault(key(row), [0] * len(starts))
        series[position] += count(row)
    return dict(sorted(out.items()))


def is_nack(code: str) -> bool:
    """Whether an answer refused the message: AE, AR, CE, CR, or an HTTP status of 400 or more."""
    if code in _NACK_CODES:
        return True
    return code.isascii() and code.isdigit() and int(code) >= 400
