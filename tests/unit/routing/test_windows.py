"""Coverage windows in site-local time, right on both DST change nights.

America/Chicago in 2026: clocks spring forward on Sunday 8 March at 02:00 CST
(-> 03:00 CDT) and fall back on Sunday 1 November at 02:00 CDT (-> 01:00 CST).
A window of 22:00-07:00 must follow the wall clock, so the UTC instant that
ends it moves by an hour across each change. A fixed offset gets one of the
two nights wrong; these cases would catch it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from listener.model import Times
from listener.routing import RoutingPolicy
from tests.unit.routing.helpers import NOW, policy_from, report, route

UTC = UTC
CST = timezone(timedelta(hours=-6))  # what a 2.5.1 sender stamps as -0600


def _policy(tmp_path: Path, window: str = '{from: "22:00", to: "07:00"}') -> RoutingPolicy:
    return policy_from(
        tmp_path,
        f"""
        rules:
          overnight:
            bucket: always_final
            when:
              coverage_window: {window}
            pool: neuroradiology
        """,
    )


def _inside(policy: RoutingPolicy, at: datetime, site: str = "LEMC") -> bool:
    return route(report(at=at, site=site), policy).bucket == "always_final"


SPRING_FORWARD = [
    (datetime(2026, 3, 8, 3, 59, tzinfo=UTC), False),  # Sat 21:59 CST
    (datetime(2026, 3, 8, 4, 0, tzinfo=UTC), True),  # Sat 22:00 CST
    (datetime(2026, 3, 8, 7, 59, tzinfo=UTC), True),  # Sun 01:59 CST, the last minute before the change
    (datetime(2026, 3, 8, 8, 0, tzinfo=UTC), True),  # Sun 03:00 CDT, the first minute after it
    (datetime(2026, 3, 8, 11, 59, tzinfo=UTC), True),  # 06:59 CDT
    (datetime(2026, 3, 8, 12, 0, tzinfo=UTC), False),  # 07:00 CDT (a fixed -06:00 would say 06:00, inside)
    (datetime(2026, 3, 8, 12, 30, tzinfo=CST), False),  # 12:30 -0600 is 13:30 CDT
    (datetime(2026, 3, 9, 3, 0, tzinfo=UTC), True),  # Sun 22:00 CDT: the window opens an hour earlier in UTC
    (datetime(2026, 3, 9, 2, 59, tzinfo=UTC), False),  # Sun 21:59 CDT
]

FALL_BACK = [
    (datetime(2026, 11, 1, 2, 59, tzinfo=UTC), False),  # Sat 21:59 CDT
    (datetime(2026, 11, 1, 3, 0, tzinfo=UTC), True),  # Sat 22:00 CDT
    (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), True),  # 01:30 CDT (first pass)
    (datetime(2026, 11, 1, 7, 30, tzinfo=UTC), True),  # 01:30 CST (second pass)
    (datetime(2026, 11, 1, 12, 59, tzinfo=UTC), True),  # 06:59 CST (a fixed -05:00 would say 07:59, outside)
    (datetime(2026, 11, 1, 13, 0, tzinfo=UTC), False),  # 07:00 CST
    (datetime(2026, 11, 2, 3, 59, tzinfo=UTC), False),  # Sun 21:59 CST
    (datetime(2026, 11, 2, 4, 0, tzinfo=UTC), True),  # Sun 22:00 CST
]


@pytest.mark.parametrize(("at", "inside"), SPRING_FORWARD, ids=[f"{a:%m-%dT%H:%M}{a:%z}" for a, _ in SPRING_FORWARD])
def test_spring_forward_night(tmp_path: Path, at: datetime, inside: bool) -> None:
    """Across the March change the window follows Chicago wall-clock time, not a fixed offset."""
    assert _inside(_policy(tmp_path), at) is inside


@pytest.mark.parametrize(("at", "inside"), FALL_BACK, ids=[f"{a:%m-%dT%H:%M}" for a, _ in FALL_BACK])
def test_fall_back_night(tmp_path: Path, at: datetime, inside: bool) -> None:
    """Across the November change (01:00-02:00 happens twice) the window follows Chicago wall-clock time."""
    assert _inside(_policy(tmp_path), at) is inside


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (datetime(2026, 3, 8, 2, 30), True),  # a wall time that never happened in Chicago: still night
        (datetime(2026, 11, 1, 1, 30), True),  # a wall time that happened twice: night either way
        (datetime(2026, 11, 1, 7, 0), False),
        (datetime(2026, 11, 1, 21, 59), False),
    ],
)
def test_naive_times_are_site_wall_clock(tmp_path: Path, at: datetime, inside: bool) -> None:
    """A naive time (old v2.3 feeds send no offset) is the sender's wall clock and is compared as is."""
    assert _inside(_policy(tmp_path), at) is inside


def test_each_site_uses_its_own_zone(tmp_path: Path) -> None:
    """The same instant is 22:30 in Chicago (inside) and 21:30 in Denver (outside)."""
    at = datetime(2026, 11, 20, 4, 30, tzinfo=UTC)
    policy = _policy(tmp_path)
    assert _inside(policy, at, "LEMC") is True
    assert _inside(policy, at, "PVCH") is False


def test_unknown_site_uses_default_timezone(tmp_path: Path) -> None:
    """A site missing from sites.yaml falls back to default_timezone, and the explanation says so."""
    policy = policy_from(
        tmp_path,
        """
        default_timezone: America/Denver
        rules:
          overnight:
            bucket: always_final
            when: {coverage_window: {from: "22:00", to: "07:00"}}
            pool: neuroradiology
        """,
    )
    result = route(report(at=datetime(2026, 11, 20, 4, 30, tzinfo=UTC), site="ELSEWHERE"), policy)
    assert result.bucket == "release"
    assert "default America/Denver (site unknown)" in result.explanation[0]


def test_daytime_window_and_days(tmp_path: Path) -> None:
    """A window that does not cross midnight, limited to weekend days (2026-11-21 is a Saturday)."""
    policy = _policy(tmp_path, '{from: "08:00", to: "17:00", days: [sat, sun]}')
    assert _inside(policy, datetime(2026, 11, 21, 15, 0, tzinfo=UTC)) is True  # Sat 09:00 CST
    assert _inside(policy, datetime(2026, 11, 20, 15, 0, tzinfo=UTC)) is False  # Fri 09:00 CST
    assert _inside(policy, datetime(2026, 11, 21, 23, 0, tzinfo=UTC)) is False  # Sat 17:00 CST


def test_time_source_and_fallback(tmp_path: Path) -> None:
    """``time: observation`` reads OBR-7; with no such time it falls back to the message time."""
    policy = _policy(tmp_path, '{from: "22:00", to: "07:00", time: observation}')
    night = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    day = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
    rep = report(at=day)
    assert route(rep, policy).bucket == "release"
    assert (
        route(replace(rep, times=Times(observation=night, message=day, received=NOW)), policy).bucket == "always_final"
    )
    assert route(replace(rep, times=Times(message=night, received=NOW)), policy).bucket == "always_final"
    result = route(replace(rep, times=Times(message=night, received=NOW)), policy)
    assert "message time" in result.explanation[0]
