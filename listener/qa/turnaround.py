"""Turnaround rules: preliminary report time against the site's target.

Pure: no I/O. The clock is ``data.context.now``, used only when the report
carries no report or received time. Naive datetimes are the sender's local
time: they are placed in the site's time zone when the site is known, and a
pair that cannot be placed on one clock is not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from listener.model import Finding, Severity
from listener.qa.engine import RuleInput, rule


def _aligned(start: datetime, end: datetime, data: RuleInput) -> tuple[datetime, datetime] | None:
    if (start.tzinfo is None) == (end.tzinfo is None):
        return start, end
    site = data.directory.site_for(data.report)
    if site is None:
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=site.timezone)
    if end.tzinfo is None:
        end = end.replace(tzinfo=site.timezone)
    return start, end


def _statuses(params: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(s).lower() for s in (params.get("statuses") or ()))


@rule(
    "turnaround",
    severity=Severity.WARNING,
    params={"grace_minutes": 0, "statuses": ["preliminary", "final", "partial"]},
    prepare=_statuses,
)
def preliminary_late(data: RuleInput) -> Iterable[Finding]:
    """Preliminary turnaround (report time minus exam time) beyond the site's target for the priority."""
    report = data.report
    statuses: frozenset[str] = data.prepared
    if report.status.value not in statuses:
        return
    target = data.directory.turnaround_target(report)
    start = report.times.observation
    if target is None or start is None:
        return
    end = report.times.report or report.times.received or data.context.now
    pair = _aligned(start, end, data)
    if pair is None:
        return
    minutes = (pair[1] - pair[0]).total_seconds() / 60.0
    if minutes < 0:  # clock skew or a back-dated time: nothing to judge
        return
    if minutes <= target + float(data.param("grace_minutes") or 0):
        return
    yield data.emit(
        f"Preliminary turnaround {int(minutes)} min exceeds the {target} min target for {report.priority} priority.",
        (),
        "Review the reading queue for this priority.",
    )
