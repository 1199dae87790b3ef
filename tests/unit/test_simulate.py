"""The pure what-if (listener/simulate.py): hand-built cases, every figure worked out by hand.

Policies are small YAML files (tests/unit/routing/helpers.py writes them to a
real file so errors name file and line); reports come from the routing test
factory, at a site sites.yaml does not know, so their time zone is the
policy's default (UTC) and the reading hours are read in UTC.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from listener.errors import ConfigError
from listener.model import Finding, ResultStatus, Severity
from listener.pipeline import Pipeline, process
from listener.routing import RoutingContext, decide_route, draw
from listener.routing.facts import Facts
from listener.serialize import finding_dict, report_dict
from listener.simulate import (
    Case,
    GradedCase,
    bucket_plan,
    build_workload,
    decide_bucket,
    findings_from_json,
    render_table,
    report_from_json,
    simulate,
)
from listener.yamlconf import parse_yaml, read_yaml_file
from tests.conftest import REPO
from tests.unit.routing.helpers import default_policy, load_policy_file, policy_from, report

WORKLOAD = """\
version: "test-workload"
default_minutes: 10
modalities: {CT: 15, MR: 20}
reading_hours: {from: "08:00", to: "17:00", days: [mon, tue, wed, thu, fri]}
"""
BASELINE = """\
rules:
  ct_overread:
    bucket: selective_overread
    when: {modality: [CT]}
    pool: general_overread
"""
CANDIDATE = """\
rules:
  cross_sectional_overread:
    bucket: selective_overread
    when: {modality: [CT, MR]}
    pool: general_overread
"""
SINCE = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
UNTIL = datetime(2026, 12, 7, tzinfo=UTC)


def workload(text: str = WORKLOAD):  # type: ignore[no-untyped-def]
    return build_workload(parse_yaml(text, "workload.yaml"))


def case(pk: int, modality: str, received: datetime, *, accession: str = "", in_window: bool = True) -> Case:
    rep = report(site="NOWHERE", accession=accession or f"A{pk}", modality=modality, reader="NT7741")
    return Case(pk, 0, f"C{pk}", received, rep, (), in_window=in_window, patient_hash=f"h{pk}")


def cases() -> list[Case]:
    return [
        case(1, "CT", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),  # Tuesday, in hours
        case(2, "CT", datetime(2026, 12, 1, 20, 0, tzinfo=UTC)),  # Tuesday evening: waits to Wed 08:00, 720 min
        case(3, "MR", datetime(2026, 12, 5, 12, 0, tzinfo=UTC)),  # Saturday noon: waits to Mon 08:00, 2640 min
        case(4, "XR", datetime(2026, 12, 1, 10, 0, tzinfo=UTC)),  # released by both
        case(6, "CT", datetime(2026, 12, 1, 23, 0, tzinfo=UTC)),  # Tuesday 23:00: waits to Wed 08:00, 540 min
        case(5, "CT", datetime(2026, 11, 1, 9, 0, tzinfo=UTC), in_window=False),  # before the window
    ]


GRADED = [
    GradedCase("A3", (3, 0), "2b", "prelim_to_final"),  # MR: baseline releases, candidate sends
    GradedCase("A4", (4, 0), "3a", "prelim_to_final"),  # XR: both release
    GradedCase("A1", (1, 0), "1", "prelim_to_final"),  # agreement: no discrepancy
    GradedCase("A5", (5, 0), "2a", "correction"),  # CT outside the window: both send
    GradedCase("A9", (9, 0), "3b", "prelim_to_final"),  # a version not replayed: skipped
]


def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir(parents=True)
    base = policy_from(tmp_path / "b", BASELINE)
    cand = policy_from(tmp_path / "c", CANDIDATE)
    return simulate(
        cases(),
        GRADED,
        baseline=("current", base),
        candidate=("candidate", cand),
        workload=workload(),
        since=SINCE,
        until=UNTIL,
    )


def test_buckets_and_shares(tmp_path: Path) -> None:
    doc = run(tmp_path).to_json()
    base, cand = doc["baseline"], doc["candidate"]
    # Five cases in the window (case 5 is before it).
    assert base["reports"] == cand["reports"] == 5
    # Baseline: the three CTs (1, 2, 6) overread, MR and XR released: 3/5 = 0.6, 2/5 = 0.4.
    assert base["buckets"]["selective_overread"] == {"count": 3, "share": 0.6}
    assert base["buckets"]["release"] == {"count": 2, "share": 0.4}
    assert base["buckets"]["always_final"] == {"count": 0, "share": 0.0}
    # Candidate: CTs and the MR: 4/5 = 0.8; the XR: 1/5 = 0.2.
    assert cand["buckets"]["selective_overread"] == {"count": 4, "share": 0.8}
    assert cand["buckets"]["release"] == {"count": 1, "share": 0.2}
    assert doc["delta"]["buckets"] == {"always_final": 0, "selective_overread": 1, "process_check": 0, "release": -1}
    # Per modality: the MR moves from release to overread (1 of 1).
    assert base["by"]["modality"]["MR"]["release"] == {"count": 1, "share": 1.0}
    assert cand["by"]["modality"]["MR"]["selective_overread"] == {"count": 1, "share": 1.0}
    assert base["by"]["modality"]["CT"]["selective_overread"] == {"count": 3, "share": 1.0}
    # The site is not in sites.yaml: its raw field, upper case; NT7741's readers.yaml group.
    assert sorted(base["by"]["site"]) == ["NOWHERE"]
    assert sorted(base["by"]["group"]) == ["Nocturna Teleradiology"]


def test_workload_and_turnaround(tmp_path: Path) -> None:
    doc = run(tmp_path).to_json()
    base, cand = doc["baseline"], doc["candidate"]
    # Baseline: three CT reads at 15 minutes = 45.
    assert base["workload"] == {"reads": 3, "minutes": 45.0}
    # Candidate: + the MR at 20 = 65.
    assert cand["workload"] == {"reads": 4, "minutes": 65.0}
    # Baseline: case 2 waits 720, case 6 540 = 1260, mean 630; both wait for Wed 08:00: a queue of 2.
    assert base["turnaround"] == {"queued": 2, "wait_minutes": 1260.0, "mean_wait_minutes": 630.0, "peak_queue": 2}
    # Candidate: + the Saturday MR, 2640: 3900 over 3 = 1300; it waits for Monday: the peak stays 2.
    assert cand["turnaround"] == {"queued": 3, "wait_minutes": 3900.0, "mean_wait_minutes": 1300.0, "peak_queue": 2}
    assert doc["delta"]["workload"] == {"reads": 1, "minutes": 20.0}
    assert doc["delta"]["turnaround"]["wait_minutes"] == 2640.0


def test_discrepancies_sent_and_unseen(tmp_path: Path) -> None:
    doc = run(tmp_path).to_json()
    base, cand = doc["baseline"]["discrepancies"], doc["candidate"]["discrepancies"]
    assert base == {
        "2a": {"sent": 1, "unseen": 0},
        "2b": {"sent": 0, "unseen": 1},
        "3a": {"sent": 0, "unseen": 1},
        "3b": {"sent": 0, "unseen": 0},
    }
    assert cand["2b"] == {"sent": 1, "unseen": 0}
    assert cand["3a"] == {"sent": 0, "unseen": 1}
    assert doc["delta"]["discrepancies"]["2b"] == {"sent": 1, "unseen": -1}
    # By case, most severe first; accession, control id, reader id and hash only.
    listed = [(c["grade"], c["accession"], c["baseline"], c["candidate"]) for c in doc["discrepancy_cases"]]
    assert listed == [
        ("3a", "A4", "release", "release"),
        ("2b", "A3", "release", "selective_overread"),
        ("2a", "A5", "selective_overread", "selective_overread"),
    ]
    first = doc["discrepancy_cases"][0]
    assert (first["control_id"], first["reader"], first["patient_hash"]) == ("C4", "NT7741", "h4")


def test_same_inputs_same_bytes_and_table(tmp_path: Path) -> None:
    one = json.dumps(run(tmp_path / "1").to_json(), sort_keys=True)
    two = json.dumps(run(tmp_path / "2").to_json(), sort_keys=True)
    assert one.replace(str(tmp_path / "1"), "") == two.replace(str(tmp_path / "2"), "")
    table = render_table(run(tmp_path / "3").to_json())
    assert "  second reads" in table and "grade 2b unseen" in table
    row = next(line for line in table.splitlines() if line.startswith("  radiologist minutes"))
    assert row.split() == ["radiologist", "minutes", "45.0", "65.0", "+20.0"]
    assert "2b  A3  prelim_to_final  message C3  reader NT7741  patient h3  baseline release" in table


def test_sampling_is_the_routers_draw(tmp_path: Path) -> None:
    """A sample rule samples exactly the accessions whose draw on (salt, reader, accession) is below the rate."""
    sample = """\
    rules:
      peer_sample:
        bucket: selective_overread
        when: {sample: {rate: 0.3, salt: "S1"}}
        pool: peer_review
    """
    (tmp_path / "c").mkdir()
    cand = policy_from(tmp_path / "c", sample)
    at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    many = [case(i, "CT", at, accession=f"ACC{i}") for i in range(200)]
    expected = sum(1 for i in range(200) if draw("S1", "NT7741", f"ACC{i}") < 0.3)
    assert 0 < expected < 200
    for _ in range(2):
        result = simulate(
            many, [], baseline=("b", cand), candidate=("c", cand), workload=workload(), since=SINCE, until=UNTIL
        )
        assert result.candidate.buckets["selective_overread"] == expected


def test_next_start() -> None:
    w = workload()
    assert w.next_start(datetime(2026, 12, 1, 10, 0)) is None  # Tuesday, in hours
    assert w.next_start(datetime(2026, 12, 1, 7, 0)) == datetime(2026, 12, 1, 8, 0)  # same morning
    assert w.next_start(datetime(2026, 12, 1, 17, 0)) == datetime(2026, 12, 2, 8, 0)  # 17:00 is excluded
    assert w.next_start(datetime(2026, 12, 4, 18, 0)) == datetime(2026, 12, 7, 8, 0)  # Friday -> Monday
    assert w.wait(datetime(2026, 12, 4, 18, 0)) == timedelta(hours=62)
    assert (w.day_start, w.day_end) == (time(8), time(17))


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (WORKLOAD.replace('"08:00"', '"8am"'), 4, "HH:MM"),
        (WORKLOAD.replace("fri]", "fry]"), 4, "'fry' is not one of"),
        (WORKLOAD + "overtime: 3\n", 5, "overtime"),
        (WORKLOAD.replace('"17:00"', '"07:00"'), 4, "later than"),
        (WORKLOAD.replace("CT: 15", "ct: 15"), 3, "modality code"),
        (WORKLOAD.replace("MR: 20", "MR: -1"), 3, "MR"),
    ],
)
def test_bad_workload_names_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "workload.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        build_workload(read_yaml_file(path).doc)
    assert info.value.path == str(path) and info.value.line == line
    assert words in str(info.value)


@pytest.mark.parametrize("sample", sorted((REPO / "samples/hl7").glob("*.hl7")), ids=lambda p: p.stem)
def test_stored_json_routes_like_the_decoded_report(pipeline: Pipeline, sample: Path) -> None:
    """A report rebuilt from its stored JSON is the decoded report, and routes the same."""
    at = datetime(2026, 11, 17, 16, 40, tzinfo=UTC)
    outcome = process(sample.read_bytes(), pipeline, received_at=at)
    policy = default_policy()
    for result in outcome.reports:
        stored = json.loads(json.dumps(report_dict(result.report, include_patient=True, include_text=True)))
        rebuilt = report_from_json(stored)
        findings = findings_from_json(json.loads(json.dumps([finding_dict(f) for f in result.findings])))
        assert rebuilt == result.report
        assert findings == result.findings
        context = RoutingContext(now=at)
        assert decide_route(rebuilt, findings, context, policy) == decide_route(
            result.report, result.findings, context, policy
        )


def test_report_from_json_defaults() -> None:
    rebuilt = report_from_json({"accession": "X1", "status": "preliminary"})
    assert (rebuilt.accession, rebuilt.status, rebuilt.reader, rebuilt.priority) == (
        "X1",
        ResultStatus.PRELIMINARY,
        None,
        "routine",
    )
    assert replace(rebuilt, accession="X2").accession == "X2"


@pytest.mark.parametrize("policy_file", ["policies/routing.yaml", "samples/policies/stricter.yaml",
                                         "samples/policies/looser.yaml"])  # fmt: skip
def test_decide_bucket_is_decide_routes_bucket(pipeline: Pipeline, policy_file: str) -> None:
    """The short-cut bucket equals decide_route's on every sample, also at night and with a QA timeout."""
    policy = load_policy_file(REPO / policy_file)
    plan = bucket_plan(policy)
    checked = 0
    for sample in sorted((REPO / "samples/hl7").glob("*.hl7")):
        for at in (datetime(2026, 11, 17, 16, 40, tzinfo=UTC), datetime(2026, 11, 18, 8, 0, tzinfo=UTC)):
            for result in process(sample.read_bytes(), pipeline, received_at=at).reports:
                for findings in (result.findings, (*result.findings, Finding("qa.timeout", Severity.INFO, "t"))):
                    context = RoutingContext(now=at)
                    facts = Facts(
                        result.report, findings, context, policy.directory, policy.terms, policy.default_timezone
                    )
                    expected = decide_route(result.report, findings, context, policy).bucket
                    assert decide_bucket(facts, policy, plan) == expected, (sample.name, at)
                    checked += 1
    assert checked >= 60
