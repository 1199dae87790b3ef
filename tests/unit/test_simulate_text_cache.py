"""The what-if's run-wide text cache (listener/simulate.py, docs/simulate.md "Speed").

One :class:`listener.text.TextCache` serves every report of a simulation, so
a text seen before is not scanned again. These tests check that sharing it
changes no decision: every sample report, repeated, with its sections dropped
(same text, other regions) and interleaved, gets the bucket
:func:`listener.routing.decide_route` gives it on its own.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from listener.pipeline import Pipeline, process
from listener.routing import RoutingContext, decide_route
from listener.simulate import Case, GradedCase, build_workload, simulate
from listener.yamlconf import parse_yaml
from tests.conftest import REPO
from tests.unit.routing.helpers import load_policy_file
from tests.unit.test_simulate import WORKLOAD

AT = datetime(2026, 11, 17, 16, 40, tzinfo=UTC)


def test_shared_text_cache_keeps_every_decision(pipeline: Pipeline) -> None:
    baseline = load_policy_file(REPO / "policies/routing.yaml")
    candidate = load_policy_file(REPO / "samples/policies/stricter.yaml")
    reports = [
        r
        for sample in sorted((REPO / "samples/hl7").glob("*.hl7"))
        for r in process(sample.read_bytes(), pipeline, received_at=AT).reports
    ]
    cases: list[Case] = []
    # Three passes: as decoded, with the sections dropped (the whole text is scanned), as decoded again.
    for n, variant in enumerate(("decoded", "unsectioned", "decoded")):
        for i, result in enumerate(reports):
            rep = result.report if variant == "decoded" else replace(result.report, sections=())
            at = AT + timedelta(hours=7 * i + n)
            cases.append(Case(1000 * n + i, 0, f"C{n}-{i}", at, rep, result.findings))
    graded = [GradedCase(f"A{c.message_pk}", (c.message_pk, 0), "2a", "prelim_to_final") for c in cases]
    sim = simulate(
        cases,
        graded,
        baseline=("current", baseline),
        candidate=("stricter", candidate),
        workload=build_workload(parse_yaml(WORKLOAD, "workload.yaml")),
        since=AT,
        until=AT + timedelta(days=365),
    )
    decided = {c["control_id"]: (c["baseline"], c["candidate"]) for c in sim.to_json()["discrepancy_cases"]}
    assert len(decided) == len(cases) >= 30
    buckets = set()
    for c in cases:
        expected = tuple(
            decide_route(c.report, c.findings, RoutingContext(now=c.received), p).bucket for p in (baseline, candidate)
        )
        assert decided[c.control_id] == expected, c.control_id
        buckets.update(expected)
    assert len(buckets) >= 2  # the samples reach more than one bucket, so a wrong shared result would show
