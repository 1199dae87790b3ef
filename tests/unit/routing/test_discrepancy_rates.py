"""``reader_discrepancy_rate`` and ``group_discrepancy_rate``: live figures, the readers.yaml fallback, labels.

The repository's readers.yaml snapshots (as of 2026-10-31): NT7802 9/140 (6.4%),
NT7741 11/512 (2.1%), both of Nocturna Teleradiology (sum 20/652, 3.1%); R1187
7/402 (1.7%); PV0318 (Pinevale Radiology Associates) has none.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from listener.qa.engine import QaContext
from listener.routing import RoutingPolicy, routing_decider
from listener.sites import LiveFigures, ReaderHistory
from tests.unit.routing.helpers import NOW, policy_from, report, route

SOURCE = "store 90 d to 2026-11-20T08:30Z"
RULES = """\
rules:
  reader_rate:
    bucket: selective_overread
    pool: peer_review
    when:
      reader_discrepancy_rate: {above: 0.05, min_reads: 50}
  group_rate:
    bucket: selective_overread
    pool: general_overread
    when:
      group_discrepancy_rate: {above: 0.05, min_reads: 50}
"""


@pytest.fixture
def policy(tmp_path: Path) -> RoutingPolicy:
    return policy_from(tmp_path, RULES)


def _line(explanation: tuple[str, ...], rule: str) -> str:
    return next(line for line in explanation if line.startswith(f"{rule} "))


def _live(readers: dict[str, ReaderHistory] | None = None, groups: dict[str, ReaderHistory] | None = None) -> dict:
    return {
        "reader_history": MappingProxyType(readers or {}),
        "group_history": MappingProxyType(groups or {}),
        "history_source": SOURCE,
    }


def test_live_reader_rate_above_threshold_routes_with_the_figures(policy: RoutingPolicy) -> None:
    decided = route(report(reader="R1187"), policy, **_live({"R1187": ReaderHistory(50, 4)}))
    assert decided.bucket == "selective_overread" and decided.reasons[0] == "reader_rate"
    line = _line(decided.explanation, "reader_rate")
    assert "reader_discrepancy_rate R1187 8.0% (4/50 graded reads, store 90 d to 2026-11-20T08:30Z) above 5.0%" in line


def test_live_reader_rate_below_threshold_wins_over_a_high_snapshot(policy: RoutingPolicy) -> None:
    """NT7802's snapshot is 6.4%; enough live graded reads at 1% decide instead."""
    decided = route(report(reader="NT7802"), policy, **_live({"NT7802": ReaderHistory(100, 1)}))
    assert "reader_rate" not in decided.reasons
    line = _line(decided.explanation, "reader_rate")
    assert f"NT7802 1.0% (1/100 graded reads, {SOURCE}) not above 5.0%" in line
    assert "readers.yaml" not in line


def test_no_live_figures_falls_back_to_the_labelled_snapshot(policy: RoutingPolicy) -> None:
    decided = route(report(reader="NT7802"), policy)
    assert decided.reasons[0] == "reader_rate"
    line = _line(decided.explanation, "reader_rate")
    assert (
        "reader_discrepancy_rate NT7802 6.4% (9/140 reviewed reads, "
        "readers.yaml snapshot as of 2026-10-31 (fallback: no live figures)) above 5.0%"
    ) in line


def test_too_few_live_reads_fall_back_to_the_snapshot_and_say_why(policy: RoutingPolicy) -> None:
    decided = route(report(reader="NT7802"), policy, **_live({"NT7802": ReaderHistory(12, 6)}))
    assert decided.reasons[0] == "reader_rate"
    line = _line(decided.explanation, "reader_rate")
    assert f"(fallback: 12 graded reads in {SOURCE}, fewer than 50)" in line
    assert "6.4% (9/140 reviewed reads" in line


def test_too_few_live_reads_and_no_snapshot_is_no_match(policy: RoutingPolicy) -> None:
    decided = route(report(reader="PV0318", site="PVCH"), policy, **_live({"PV0318": ReaderHistory(49, 30)}))
    assert "reader_rate" not in decided.reasons
    line = _line(decided.explanation, "reader_rate")
    assert f"PV0318: 49 graded reads in {SOURCE}, fewer than 50; no readers.yaml snapshot" in line


def test_live_figures_without_the_reader_fall_back(policy: RoutingPolicy) -> None:
    decided = route(report(reader="R1187"), policy, **_live({"NT7802": ReaderHistory(60, 1)}))
    line = _line(decided.explanation, "reader_rate")
    assert f"readers.yaml snapshot as of 2026-10-31 (fallback: no graded reads in {SOURCE})" in line
    assert "R1187 1.7% (7/402 reviewed reads" in line and "not above" in line


def test_too_few_snapshot_reads_is_no_match(tmp_path: Path) -> None:
    policy = policy_from(
        tmp_path,
        RULES.replace(
            "reader_discrepancy_rate: {above: 0.05, min_reads: 50}",
            "reader_discrepancy_rate: {above: 0.05, min_reads: 200}",
        ),
    )
    decided = route(report(reader="NT7802"), policy)
    assert "reader_rate" not in decided.reasons
    line = _line(decided.explanation, "reader_rate")
    assert "NT7802: 140 reviewed reads, fewer than 200 (readers.yaml snapshot as of 2026-10-31" in line


def test_live_group_rate_above_threshold_routes_a_reader_below_it(policy: RoutingPolicy) -> None:
    figures = _live({"NT7741": ReaderHistory(60, 1)}, {"Nocturna Teleradiology": ReaderHistory(120, 9)})
    decided = route(report(reader="NT7741"), policy, **figures)
    assert decided.reasons == ("group_rate",)
    assert decided.pool == "general_overread"
    line = _line(decided.explanation, "group_rate")
    assert (
        f"group_discrepancy_rate Nocturna Teleradiology (reader NT7741) 7.5% (9/120 graded reads, {SOURCE}) above 5.0%"
    ) in line


def test_group_fallback_sums_the_readers_snapshots(policy: RoutingPolicy) -> None:
    decided = route(report(reader="NT7741"), policy)
    line = _line(decided.explanation, "group_rate")
    assert (
        "Nocturna Teleradiology (reader NT7741) 3.1% (20/652 reviewed reads, "
        "readers.yaml snapshot (sum of 2 readers) as of 2026-10-31 (fallback: no live figures)) not above 5.0%"
    ) in line


def test_group_too_few_live_reads_and_no_snapshot(policy: RoutingPolicy) -> None:
    figures = _live(groups={"Pinevale Radiology Associates": ReaderHistory(10, 5)})
    decided = route(report(reader="PV0318", site="PVCH"), policy, **figures)
    assert "group_rate" not in decided.reasons
    line = _line(decided.explanation, "group_rate")
    assert f"10 graded reads in {SOURCE}, fewer than 50; no readers.yaml snapshot" in line


def test_group_of_a_reader_not_in_readers_yaml(policy: RoutingPolicy) -> None:
    decided = route(report(reader="ZZ999"), policy, **_live(groups={"Nocturna Teleradiology": ReaderHistory(99, 50)}))
    assert decided.bucket == "release"
    assert "group_discrepancy_rate ZZ999: reader not in readers.yaml" in _line(decided.explanation, "group_rate")


def test_the_pipeline_context_carries_the_live_figures(policy: RoutingPolicy) -> None:
    """``routing_decider`` reads ``QaContext.live_figures``: the pipeline's way in."""
    decide = routing_decider(policy)
    figures = LiveFigures(
        MappingProxyType({"R1187": ReaderHistory(50, 5)}), MappingProxyType({}), "store 30 d to 2026-11-20T08:30Z"
    )
    live = decide(report(reader="R1187"), (), QaContext(now=NOW, live_figures=figures))
    assert live.reasons == ("reader_rate",)
    assert "(5/50 graded reads, store 30 d to 2026-11-20T08:30Z) above 5.0%" in _line(live.explanation, "reader_rate")
    without = decide(report(reader="R1187"), (), QaContext(now=NOW))
    assert without.bucket == "release"
    assert "(fallback: no live figures)" in _line(without.explanation, "reader_rate")


def test_figures_passed_without_a_source_are_labelled_as_passed_in(policy: RoutingPolicy) -> None:
    decided = route(report(reader="R1187"), policy, reader_history={"R1187": ReaderHistory(100, 10)})
    assert "(10/100 graded reads, figures passed in) above 5.0%" in _line(decided.explanation, "reader_rate")
