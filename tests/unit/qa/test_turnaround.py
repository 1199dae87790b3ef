"""Turnaround rule: preliminary report time against the site's target for the priority."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from listener.model import ResultStatus, Severity, Times
from listener.qa.engine import QaConfig, QaContext
from listener.sites import Directory, Site
from tests.unit.qa.factory import RECEIVED, findings_for, make_report, pipeline

TEXT = "INDICATION: Trauma.\nCOMPARISON: None.\nFINDINGS: No bleed.\nIMPRESSION: Normal."
OBS = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def qa(targets: dict[str, int] | None = None, defaults: dict[str, int] | None = None) -> QaConfig:
    site = Site(
        code="GENHOSP",
        name="General",
        state="TX",
        country="US",
        timezone=ZoneInfo("America/Chicago"),
        sending_facilities=("GENHOSP",),
        professional_only=False,
        turnaround_minutes=MappingProxyType(targets or {}),
        us_final_required=False,
        medicare_financial_classes=("MC",),
        client="",
    )
    directory = Directory(
        MappingProxyType({"GENHOSP": site}), MappingProxyType({}), MappingProxyType(defaults or {"stat": 30})
    )
    return replace(pipeline().qa, directory=directory)


def late(report, config: QaConfig | None = None, now: datetime = RECEIVED):  # type: ignore[no-untyped-def]
    found = findings_for(report, qa=config or qa(), context=QaContext(now=now), rule_prefix="turnaround.")
    return found[0] if found else None


def stat(minutes: float, **kw) -> object:  # type: ignore[no-untyped-def]
    return make_report(
        TEXT,
        priority="stat",
        status=ResultStatus.PRELIMINARY,
        times=Times(
            observation=OBS, report=OBS + timedelta(minutes=minutes), received=OBS + timedelta(minutes=minutes + 1)
        ),
        **kw,
    )


def test_stat_preliminary_beyond_default_30_minutes() -> None:
    """A STAT preliminary 45 minutes after the exam breaks the default 30-minute target: warning with both numbers."""
    finding = late(stat(45))
    assert finding is not None and finding.severity is Severity.WARNING
    assert "45" in finding.message and "30" in finding.message


def test_within_target_or_routine_without_target() -> None:
    """30 minutes exactly is on time; routine priority has no default target."""
    assert late(stat(30)) is None
    routine = make_report(TEXT, times=Times(observation=OBS, report=OBS + timedelta(hours=20)))
    assert late(routine) is None


def test_site_target_overrides_default() -> None:
    """A site with a 20-minute STAT target flags 25 minutes; a routine target of 240 applies to routine reports."""
    config = qa(targets={"stat": 20, "routine": 240})
    assert late(stat(25), config) is not None
    routine = make_report(TEXT, times=Times(observation=OBS, report=OBS + timedelta(minutes=300)))
    assert late(routine, config) is not None


def test_received_time_then_clock_when_report_time_absent() -> None:
    """No report time: the received time is used; neither: the clock (context.now)."""
    received_only = make_report(
        TEXT, priority="stat", times=Times(observation=OBS, received=OBS + timedelta(minutes=50))
    )
    assert late(received_only) is not None
    neither = make_report(TEXT, priority="stat", times=Times(observation=OBS))
    assert late(neither, now=OBS + timedelta(minutes=10)) is None
    assert late(neither, now=OBS + timedelta(minutes=40)) is not None


@pytest.mark.parametrize("status", [ResultStatus.CORRECTED, ResultStatus.AMENDED, ResultStatus.CANCELLED])
def test_later_versions_not_judged(status: ResultStatus) -> None:
    """Corrected, amended and cancelled reports carry a later time: turnaround is not judged on them."""
    report = replace(stat(90), status=status)  # type: ignore[type-var]
    assert late(report) is None


def test_naive_times_placed_in_site_zone_and_skew_ignored() -> None:
    """Naive local exam time vs aware report time uses the site zone; a report before the exam is not judged."""
    naive_obs = datetime(2026, 11, 20, 1, 0)  # 01:00 Chicago = 07:00 UTC
    report = make_report(TEXT, priority="stat", times=Times(observation=naive_obs, report=OBS + timedelta(minutes=20)))
    assert late(report) is None
    report = make_report(TEXT, priority="stat", times=Times(observation=naive_obs, report=OBS + timedelta(minutes=50)))
    assert late(report) is not None
    skew = make_report(TEXT, priority="stat", times=Times(observation=OBS, report=OBS - timedelta(minutes=5)))
    assert late(skew) is None


def test_mixed_naive_and_aware_without_site_not_judged() -> None:
    """Without a site time zone a naive and an aware time cannot be compared: silent."""
    report = make_report(
        TEXT,
        priority="stat",
        site="NOSUCH",
        sender=replace(make_report(TEXT).sender, facility="NOSUCH"),
        times=Times(observation=datetime(2026, 11, 20, 1, 0), report=OBS + timedelta(hours=5)),
    )
    assert late(report) is None


def test_no_observation_time_not_judged() -> None:
    """No exam time: nothing to measure from."""
    report = make_report(TEXT, priority="stat", times=Times(report=OBS))
    assert late(report) is None
