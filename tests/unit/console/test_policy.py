"""The policy page's pure helpers (listener/console/policy.py), the pasted-YAML guard
(listener/yamlconf.parse_untrusted_yaml) and the what-if jobs (listener/console/whatif.py: real
``overread simulate`` children on a real store); the page in a daemon:
tests/integration/test_console_policy.py."""

from __future__ import annotations

import json
import sys
import time as time_module
import tracemalloc
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from listener.assemble import load_routing_policy
from listener.cli import main
from listener.console.policy import (
    PASTED,
    candidate_files,
    compare_rows,
    condition_text,
    describe_policy,
    policy_page,
    rule_sentence,
)
from listener.console.web import Caller, Ctx, Reply, environment
from listener.console.whatif import JobView, WhatIfJobs, remove_stale_files
from listener.errors import ConfigError
from listener.outcomes import load_outcome_rules
from listener.pipeline import Pipeline
from listener.routing import RoutingPolicy
from listener.simulate import DISCREPANCY_GRADES, PolicyFigures, Simulation, Workload
from listener.yamlconf import parse_untrusted_yaml
from tests.conftest import REPO
from tests.unit.cli.test_scorecard import RECEIVED, graded_store


@pytest.fixture(name="shipped", scope="module")
def fixture_shipped() -> RoutingPolicy:
    return load_routing_policy(REPO / "policies/routing.yaml")


def _rule(policy: RoutingPolicy, name: str) -> str:
    (rule,) = [r for r in policy.rules if r.name == name]
    return rule_sentence(rule)


def test_every_shipped_rule_reads_as_a_sentence_naming_its_conditions_bucket_and_pool(shipped: RoutingPolicy) -> None:
    assert _rule(shipped, "overnight_external_stroke_prelim") == (
        "When the reader type is external and the result status is preliminary and the procedure code is one of "
        "70496, 70498, 0042T, 70544, 70545, 70546, 70547, 70548, 70549 and the message time is between 22:00 and "
        "07:00 site time: a full internal final read (always_final) in pool neuroradiology, priority stat, due "
        "within 60 min."
    )
    assert _rule(shipped, "overnight_external_pediatric_cross_sectional").startswith(
        "When the reader type is external and the result status is preliminary and the modality is CT or MR and "
        "the patient is at most 17 years old and"
    )
    assert "due within the site's contract turnaround." in _rule(shipped, "overnight_external_neuro_prelim")
    assert _rule(shipped, "uncertain_impression") == (
        "When the impression has more than 0.5 hedging phrases per sentence: a selective overread "
        "(selective_overread) in pool general_overread."
    )
    assert _rule(shipped, "external_peer_review_sample") == (
        "When the reader type is external and the report is drawn in a stable 5.0% sample per reader "
        "(salt '2026-Q4'): a selective overread (selective_overread) in pool peer_review."
    )
    assert _rule(shipped, "qa_errors_return_to_author") == (
        "When QA found a problem of severity error or worse: a return to the author (process_check) in pool author."
    )
    texts = {condition_text(c) for r in shipped.rules for c in r.conditions}
    assert "the contract holder is Pinevale Health" in texts
    assert "a critical finding is stated as present" in texts
    assert "the reader has none of the subspecialties pediatric_neuroradiology" in texts
    assert "the reader's significant-discrepancy rate is above 5.0% on at least 50 graded reads" in texts
    # No condition falls through to its bare key.
    assert not {t for t in texts if " " not in t}


def test_describe_policy_orders_rules_by_bucket_and_collects_samples_and_lists(shipped: RoutingPolicy) -> None:
    described = describe_policy(shipped)
    assert described["label"] == "default-2026.11" and described["version"].startswith("default-2026.11+")
    buckets = [r["bucket"] for r in described["rules"]]
    assert buckets == sorted(buckets, key=["always_final", "selective_overread", "process_check", "release"].index)
    assert len(described["rules"]) == len(shipped.rules)
    assert described["samples"] == [
        {"rule": "external_peer_review_sample", "rate": "5.0%", "salt": "2026-Q4", "pool": "peer_review"}
    ]
    assert described["lists"] == [
        {"rule": "pinevale_external_mr_preference", "key": "client", "listed": "Pinevale Health"}
    ]
    stroke = next(r for r in described["rules"] if r["name"] == "overnight_external_stroke_prelim")
    assert (stroke["priority"], stroke["turnaround"], stroke["pool"]) == ("stat", "60 min", "neuroradiology")
    assert stroke["line"] is not None and stroke["why"].startswith("Overnight stroke imaging")
    stricter = describe_policy(load_routing_policy(REPO / "samples/policies/stricter.yaml"))
    assert stricter["samples"][0]["rate"] == "25.0%"


def _figures(name: str, buckets: dict[str, int], reads: int, minutes: float, sent: int) -> PolicyFigures:
    return PolicyFigures(
        name=name,
        version=f"{name}+0123456789",
        source=f"{name}.yaml",
        buckets=buckets,
        by={
            "site": {"LEMC": {"release": buckets["release"], "selective_overread": buckets["selective_overread"]}},
            "modality": {"CR": dict(buckets)},
            "group": {"(none)": dict(buckets)},
        },
        reads=reads,
        minutes=minutes,
        queued=1,
        wait_minutes=90.0,
        peak_queue=1,
        sent={g: sent if g == "3b" else 0 for g in DISCREPANCY_GRADES},
        unseen={g: 1 - sent if g == "3b" else 0 for g in DISCREPANCY_GRADES},
    )


def test_compare_rows_puts_baseline_candidate_and_signed_delta_side_by_side() -> None:
    workload = Workload("w", {"CR": 3.0}, 10.0, time(8), time(17), frozenset(range(5)))
    base = _figures(
        "current", {"always_final": 0, "selective_overread": 1, "process_check": 1, "release": 8}, 1, 3.0, 0
    )
    cand = _figures(
        "stricter", {"always_final": 0, "selective_overread": 4, "process_check": 1, "release": 5}, 4, 12.0, 1
    )
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    rows = compare_rows(Simulation(since, until, workload, base, cand).to_json())
    by_label = {r["label"]: r for r in rows["buckets"]}
    assert by_label["selective_overread"] == {
        "label": "selective_overread",
        "base": 1,
        "base_share": "10.0%",
        "cand": 4,
        "cand_share": "40.0%",
        "delta": "+3",
    }
    assert by_label["release"]["delta"] == "-3" and by_label["process_check"]["delta"] == "0"
    assert rows["workload"] == [
        {"label": "second reads", "base": "1", "cand": "4", "delta": "+3"},
        {"label": "radiologist minutes", "base": "3.0", "cand": "12.0", "delta": "+9.0"},
    ]
    assert rows["turnaround"][2] == {"label": "mean wait, minutes", "base": "90.0", "cand": "90.0", "delta": "0"}
    three_b = [r for r in rows["discrepancies"] if r["label"].startswith("grade 3b")]
    assert three_b == [
        {"label": "grade 3b: sent to a second read", "base": "0", "cand": "1", "delta": "+1"},
        {"label": "grade 3b: released unseen", "base": "1", "cand": "0", "delta": "-1"},
    ]
    assert rows["by_site"] == [{"label": "LEMC", "base": "1", "cand": "4", "delta": "+3", "reports": 9}]


def test_candidate_files_lists_only_routing_policies(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "routing.yaml").write_text("version: x\npools: [none]\nrules: {}\n", encoding="utf-8")
    (tmp_path / "a" / "workload.yaml").write_text("version: x\ndefault_minutes: 3\n", encoding="utf-8")
    (tmp_path / "a" / "notes.txt").write_text("pools:\nrules:\n", encoding="utf-8")
    found = candidate_files([("policies", tmp_path / "a"), ("samples/policies", tmp_path / "missing")])
    assert found == {"policies/routing.yaml": tmp_path / "a" / "routing.yaml"}
    shipped = candidate_files([("samples/policies", REPO / "samples/policies")])
    assert set(shipped) == {"samples/policies/looser.yaml", "samples/policies/stricter.yaml"}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("base: &b [1, 2]\nmore: *b\n", 1, "anchors and aliases (&name, *name) are not accepted here"),
        ("a: [*x]\n", 1, "anchors and aliases"),
        ("a:\n" + "".join(f"{'  ' * i}b{i}:\n" for i in range(1, 30)) + "  " * 30 + "c: 1\n", 21, "nested deeper"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nested deeper than 20 levels"),
    ],
)
def test_untrusted_yaml_refuses_aliases_and_deep_nesting_before_building_anything(
    text: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_untrusted_yaml(text, "(pasted)", max_bytes=256 * 1024)
    assert caught.value.line == line and message in caught.value.message


def test_untrusted_yaml_refuses_size_and_names_line_and_column_of_a_syntax_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_untrusted_yaml("a: " + "x" * 300, "(pasted)", max_bytes=256)
    assert caught.value.message == "303 bytes is more than the 256 accepted" and caught.value.line is None
    with pytest.raises(ConfigError) as caught:
        parse_untrusted_yaml("version: x\npools: [a, b\nrules: {}\n", "(pasted)", max_bytes=1024)
    assert (caught.value.line, caught.value.column) == (3, 6)
    assert caught.value.message.startswith("invalid YAML")
    assert parse_untrusted_yaml("version: x\npools: [a]\n", "(pasted)", max_bytes=1024) == {
        "version": "x",
        "pools": ["a"],
    }


# --------------------------------------------------------------------------
# the page function and its jobs on a real store (no daemon): real ``overread simulate`` children

STRICTER = "samples/policies/stricter.yaml"


@pytest.fixture(name="state", scope="module")
def fixture_state(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline) -> Path:
    return graded_store(tmp_path_factory.mktemp("policy-page") / "state", pipeline)


def _jobs(state: Path) -> WhatIfJobs:
    return WhatIfJobs(lambda: [sys.executable, "-m", "listener", "simulate", "--state-dir", str(state)], state)


def _run(
    pipeline: Pipeline, jobs: WhatIfJobs, *rest: str, who: str = "manager", method: str = "GET", **params: str
) -> Reply:
    rules = load_outcome_rules(REPO / "policies/outcomes.yaml")
    services = {
        "pipeline": lambda: pipeline,
        "hash_key": b"k" * 32,
        "outcome_rules": lambda: rules,
        "fhir_clients": dict,
        "whatif": jobs,
    }
    caller = Caller(who, frozenset({"console"}), "bearer")
    return policy_page(Ctx(caller, method, rest, params, {}, RECEIVED + timedelta(hours=3)), services)


def _page(reply: Reply) -> str:
    values = {"caller": None, "csrf": "", "nav": (), "page": "policy", **reply.context}
    return environment().get_template(reply.template).render(values)


def _ended(jobs: WhatIfJobs, job_id: str) -> JobView:
    """The job once its child has ended (the test's own bound: a child that hangs fails the test)."""
    for _ in range(1200):
        if jobs.jobs[job_id].ended is not None:
            view = jobs.find(job_id, "manager")
            assert view is not None
            return view
        time_module.sleep(0.1)
    raise AssertionError("the what-if child did not end")


def test_a_what_if_job_replays_the_whole_window_and_its_json_is_the_commands(
    pipeline: Pipeline, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _jobs(state)
    started = _run(pipeline, jobs, candidate=STRICTER, since="7d")
    assert started.status == 303 and started.location.startswith("/console/policy/run/")
    job_id = started.location.rsplit("/", 1)[1]
    assert len(job_id) >= 24  # unguessable
    assert _run(pipeline, jobs, "run", job_id, who="someone-else").status == 404
    running = _run(pipeline, jobs, "run", job_id)
    if running.context["job"].state == "running":
        assert f'<meta http-equiv="refresh" content="2; url={started.location}">' in _page(running)
    view = _ended(jobs, job_id)
    assert (view.state, view.read, view.total) == ("done", 3, 3), view.error
    assert not list(state.glob(".whatif-*")), "the job's private files are removed"

    done = _run(pipeline, jobs, "run", job_id)
    page = _page(done)
    assert "http-equiv" not in page and 'id="whatif-buckets"' in page
    assert "5 reports of 3 accessions, all replayed in" in page
    as_json = _run(pipeline, jobs, "run", job_id, format="json")
    doc = json.loads(as_json.body)
    assert as_json.status == 200 and doc["candidate"]["name"] == STRICTER and doc["baseline"]["reports"] == 5
    window = doc["window"]
    capsys.readouterr()  # the log lines of the job so far
    status = main(
        ["simulate", "--state-dir", str(state), "--policy", str(REPO / STRICTER), "--name", STRICTER]
        + ["--since", window["since"], "--until", window["until"], "--format", "json"]
    )
    assert status == 0 and json.loads(capsys.readouterr().out) == doc


def test_one_what_if_at_a_time_cancel_and_a_failing_child(pipeline: Pipeline, state: Path, tmp_path: Path) -> None:
    jobs = _jobs(state)
    first = _run(pipeline, jobs, candidate=STRICTER)
    job_id = first.location.rsplit("/", 1)[1]
    busy = _run(pipeline, jobs, candidate=STRICTER)
    assert busy.status == 503 and ("Retry-After", "2") in busy.headers
    assert f'its page is <a href="/console/policy/run/{job_id}">' in _page(busy)
    other = _run(pipeline, jobs, candidate=STRICTER, who="analyst")
    assert other.status == 503 and "a what-if is running, started at" in _page(other)
    assert "/console/policy/run/" not in _page(other) and "by manager" in _page(other)
    as_json = _run(pipeline, jobs, candidate=STRICTER, format="json", who="analyst")
    assert as_json.status == 503 and set(json.loads(as_json.body)) == {"error"}

    assert _run(pipeline, jobs, "run", job_id, "cancel", method="POST", who="analyst").status == 404
    cancelled = _run(pipeline, jobs, "run", job_id, "cancel", method="POST")
    assert cancelled.status == 303 and cancelled.location == f"/console/policy/run/{job_id}"
    assert _ended(jobs, job_id).state == "cancelled"
    assert not list(state.glob(".whatif-*")), "the job's private files are removed"
    assert "Cancelled" in _page(_run(pipeline, jobs, "run", job_id))
    assert _run(pipeline, jobs, "run", job_id, format="json").status == 409

    broken = WhatIfJobs(
        lambda: [sys.executable, "-m", "listener", "simulate", "--state-dir", str(tmp_path / "none")], state
    )
    failed = _run(pipeline, broken, candidate=STRICTER)
    view = _ended(broken, failed.location.rsplit("/", 1)[1])
    assert view.state == "failed" and view.error.startswith("overread simulate: "), view.error
    assert view.error in _page(_run(pipeline, broken, "run", view.id))


#: A child that prints the document a replay printed (the file named first) and ends at once.
_REPLAYED = "import sys\nsys.stdout.write(open(sys.argv[1], encoding='utf-8').read())\n"


def test_finished_jobs_are_kept_for_a_bounded_time_and_number(
    pipeline: Pipeline, state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What is kept is the jobs' own bookkeeping: each child prints a real replay's document (made
    # once, in process) instead of replaying the store again; the tests above run the real child.
    capsys.readouterr()
    since, until = RECEIVED - timedelta(days=7), RECEIVED + timedelta(days=7)
    argv = ["simulate", "--state-dir", str(state), "--policy", str(REPO / STRICTER), "--name", STRICTER]
    assert main([*argv, "--since", since.isoformat(), "--until", until.isoformat(), "--format", "json"]) == 0
    replayed = tmp_path / "replayed.json"
    replayed.write_text(capsys.readouterr().out, encoding="utf-8")
    assert json.loads(replayed.read_text(encoding="utf-8"))["baseline"]["reports"] == 5
    now = [0.0]
    jobs = WhatIfJobs(
        lambda: [sys.executable, "-c", _REPLAYED, str(replayed)],
        state,
        clock=lambda: now[0],
        keep_seconds=60,
        keep_jobs=2,
    )
    ids = []
    for _ in range(3):
        started = _run(pipeline, jobs, candidate=STRICTER)
        ids.append(started.location.rsplit("/", 1)[1])
        assert _ended(jobs, ids[-1]).state == "done"
        now[0] += 10
    assert [jobs.find(i, "manager") is not None for i in ids] == [False, True, True]
    now[0] += 45
    assert [jobs.find(i, "manager") is not None for i in ids] == [False, False, True]
    now[0] += 10
    assert jobs.find(ids[2], "manager") is None
    jobs.stop()
    assert _run(pipeline, jobs, candidate=STRICTER).status == 503


#: A child that writes 32 MiB on stderr without a line break, progress lines with numbers too long
#: for int() (over 4,300 digits) or for any count, then a progress line and its message.
_FLOOD = (
    "import sys\n"
    "for _ in range(512):\n"
    "    sys.stderr.buffer.write(b'x' * 65536)\n"
    "sys.stderr.buffer.write(b'\\nprogress ' + b'9' * 5000 + b' 1\\nprogress ' + b'9' * 4000 + b' 1\\n')\n"
    "sys.stderr.buffer.write(b'progress 7 9\\noverread simulate: the store is gone\\n')\n"
    "sys.exit(3)\n"
)


def _pasted_job_ended(jobs: WhatIfJobs) -> JobView:
    """Start a job of a pasted policy on ``jobs`` and wait for its end."""
    view, started = jobs.start(
        client="manager",
        name=PASTED,
        since_key="7d",
        since=RECEIVED,
        until=RECEIVED + timedelta(days=7),
        policy=None,
        pasted="version: x\n",
        lay_out=lambda doc: doc,
    )
    assert started
    return _ended(jobs, view.id)


def test_a_child_flooding_its_stderr_without_line_breaks_never_grows_the_daemons_memory(tmp_path: Path) -> None:
    jobs = WhatIfJobs(lambda: [sys.executable, "-c", _FLOOD], tmp_path)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        ended = _pasted_job_ended(jobs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The 32 MiB line is skipped a piece at a time; the lines after it are still read.
    assert peak < 4 * 1024 * 1024, f"{peak:,} bytes held while the child's stderr was read"
    assert (ended.state, ended.read, ended.total) == ("failed", 7, 9)
    assert ended.error == "overread simulate: the store is gone"
    assert not list(tmp_path.glob(".whatif-*"))


def test_a_child_that_dies_on_a_store_error_quoting_a_patient_shows_none_of_its_text(tmp_path: Path) -> None:
    """The child's traceback ends in the database's text (a DETAIL quoting an accession, made up
    here): the job names the exit status only, never a line of the traceback (docs/monitoring.md)."""
    secret = "ACC-LEAK-31337"
    crash = f"raise RuntimeError('Key (accession)=({secret}) already exists')"
    jobs = WhatIfJobs(lambda: [sys.executable, "-c", crash], tmp_path)
    ended = _pasted_job_ended(jobs)
    assert (ended.state, ended.error) == ("failed", "the replay failed (exit 1)")
    assert secret not in repr(ended)
    assert not list(tmp_path.glob(".whatif-*"))


def test_the_files_a_killed_daemons_what_if_left_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / ".whatif-abc123.json").write_text("{}", encoding="utf-8")
    (tmp_path / ".whatif-def456.yaml").write_text("version: x\n", encoding="utf-8")
    kept = [tmp_path / "store.sqlite", tmp_path / ".whatif-notes", tmp_path / "whatif-x.json"]
    for path in kept:
        path.write_text("keep", encoding="utf-8")
    (tmp_path / ".whatif-dir.json").mkdir()
    assert remove_stale_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in kept), ".whatif-dir.json"])
    assert remove_stale_files(tmp_path) == 0


def test_a_child_that_hangs_is_killed_after_the_longest_run_and_its_job_fails(tmp_path: Path) -> None:
    hang = "import sys, time\nsys.stderr.write('progress 0 5\\n')\nsys.stderr.flush()\ntime.sleep(3600)\n"
    jobs = WhatIfJobs(lambda: [sys.executable, "-c", hang], tmp_path, max_seconds=1)
    ended = _pasted_job_ended(jobs)
    assert (ended.state, ended.total) == ("failed", 5)
    assert ended.error == "the replay ran longer than 1 s and was stopped"
    assert not list(tmp_path.glob(".whatif-*"))
    assert jobs.running() is None, "the place is free for the next what-if"
