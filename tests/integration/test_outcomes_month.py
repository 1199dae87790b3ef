"""Issue 12's "done when": a realistic month through the real daemon, every outcome checked against its truth.

The month (tests/integration/month.py, seed ``SEED``) is Nocturna
Teleradiology's overnight preliminary reads and LEMC's finals for them, with
corrections, finals sent before their prelim, and about one message in six as a
FHIR DiagnosticReport over HTTP, the rest HL7 over MLLP. One daemon (a
``serve`` subprocess on loopback ports, its own state directory) receives the
whole month once for this file; every answer must be an acceptance. The
explicit scores of the month are then recorded with ``overread outcomes
score``. Each test reads one output and compares it with what the generator
intended (docs/outcomes.md):

- ``GET /api/history/<accession>`` for a discrepancy of each kind, a concordant,
  a corrected, an out-of-order, a FHIR and a scored accession: versions in
  clinical order, pairs, proposed and explicit grades; ``overread history``
  (the CLI's ``main``) prints the same document.
- The explicit scores override the proposals, which are kept.
- ``overread scorecard --by reader --format json``: per reader the reads,
  prelims, finals, overread, graded, per-grade and significant counts,
  corrections, addenda, disagreements and turnaround medians equal the truth
  computed from the generator; ``GET /api/scorecard`` by group likewise.
- ``overread feedback --group "Nocturna Teleradiology"`` (JSON and HTML): its
  figures, exactly the group's discrepancy cases, and no MRN or patient name.
- The loop into routing: once the live figures refresh, NT7741's next
  preliminary goes to selective overread with its month's figures in the
  explanation; NT7802's does not (docs/routing.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import shutil
import statistics
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from listener.cli import main
from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa
from tests.integration.month import CST, GROUP, READERS, Accession, Month, build_month, patient_markers, probe_prelim
from tests.integration.test_http import call

#: A minute or more on a shared 2-core machine: out of the fresh-clone check, in `make test` (docs/development.md).
pytestmark = pytest.mark.slow

SEED = 20261101
ANALYST = "month-analyst-token"
TOKENS = {"nocturna": "month-nocturna-token", "ris": "month-ris-token"}


@dataclass
class Fed:
    """The running daemon after the month, and what it was fed."""

    daemon: RunningDaemon
    config: Path
    month: Month
    answers: dict[str, str]  # control id -> MSA-1 or HTTP status
    seconds: dict[str, float]  # how long starting, feeding and scoring took (printed, never asserted)


#: A rule on the group's live rate: Nocturna's month (9 significant in 206 graded reads, 4.4%) stays below it.
GROUP_RULE = "group_discrepancy_above_threshold"
GROUP_RULE_YAML = f"""
  {GROUP_RULE}:
    bucket: selective_overread
    description: An external group whose significant-discrepancy rate is above 5% has its reports overread.
    when:
      group_discrepancy_rate: {{above: 0.05, min_reads: 50}}
    pool: peer_review
"""


def _config(tmp: Path) -> Path:
    def sha(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    # The shipped policies plus a group rule (routing.yaml ships the condition, not a rule using it).
    policies = tmp / "policies"
    shutil.copytree(REPO / "policies", policies)
    routing = policies / "routing.yaml"
    assert routing.read_text(encoding="utf-8").rstrip().endswith("pool: author")
    with routing.open("a", encoding="utf-8") as f:
        f.write(GROUP_RULE_YAML)
    config = tmp / "overread.yaml"
    config.write_text(
        f"policies: {policies}\n"
        # Live discrepancy figures for routing every 2 s, over ten years: the month's report times
        # (November 2026) stay inside the window until 2036.
        "outcomes: {refresh_seconds: 2, window_days: 3650}\n"
        "http_clients:\n"
        f"  analyst: {{token_sha256: {sha(ANALYST)}, allow: [submit, read, operator]}}\n"
        f"  nocturna: {{token_sha256: {sha(TOKENS['nocturna'])}, facility: LEMC}}\n"
        f"  ris: {{token_sha256: {sha(TOKENS['ris'])}, facility: LEMC}}\n",
        encoding="utf-8",
    )
    return config


def _cli(fed: Fed, *argv: str) -> tuple[int, str]:
    """``overread ARGV --config ... --state-dir ...`` through the CLI's ``main`` (exit status, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--config", str(fed.config), "--state-dir", str(fed.daemon.state_dir)])
    return code, out.getvalue()


def _api(fed: Fed, path: str) -> tuple[int, Any]:
    assert fed.daemon.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", fed.daemon.http_port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {ANALYST}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _feed(daemon: RunningDaemon, month: Month) -> dict[str, str]:
    """Send every message in order, each after the answer to the one before (MLLP on one connection)."""
    assert daemon.http_port is not None
    answers: dict[str, str] = {}
    conn = MllpConnection(daemon.address, timeout=60)
    try:
        for message in month.messages:
            if message.transport == "mllp":
                answers[message.control_id] = msa(conn.request(message.body))[0]
            else:
                reply = call(
                    daemon.http_port, "POST", "/fhir/DiagnosticReport", message.body, token=TOKENS[message.sender]
                )
                answers[message.control_id] = str(reply.status)
    finally:
        conn.close()
    return answers


@pytest.fixture(name="fed", scope="module")
def fixture_fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    tmp = tmp_path_factory.mktemp("month")
    config = _config(tmp)
    logs = tmp / "logs"
    logs.mkdir()
    daemon = RunningDaemon(tmp / "state", logs, extra=("--config", str(config)))
    month = build_month(SEED)
    started = time.monotonic()
    daemon.start()
    try:
        seconds = {"start": time.monotonic() - started}
        started = time.monotonic()
        answers = _feed(daemon, month)
        seconds["feed"] = time.monotonic() - started
        started = time.monotonic()
        fed = Fed(daemon, config, month, answers, seconds)
        for score in month.scores:
            code, _ = _cli(
                fed, "outcomes", "score", score.accession, score.grade, "--note", score.note, "--scorer", score.scorer
            )
            assert code == 0, score
        seconds["scores"] = time.monotonic() - started
        yield fed
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


def _history(fed: Fed, accession: str) -> dict[str, Any]:
    """``GET /api/history/<accession>``: the CLI's document (test_api_history_agrees_with_the_cli), served by
    the running daemon, whose pipeline is loaded once (each CLI run loads its own)."""
    status, doc = _api(fed, f"/api/history/{accession}")
    assert status == 200, doc
    assert isinstance(doc, dict)
    return doc


def _pick(month: Month, **want: Any) -> Accession:
    """The first accession of the month with every attribute as given."""
    for a in month.accessions:
        if all(getattr(a, k) == v for k, v in want.items()):
            return a
    raise AssertionError(f"the month has no accession with {want}")


def _scored(month: Month) -> set[str]:
    return {s.accession for s in month.scores}


def _check_chain(doc: dict[str, Any], a: Accession, month: Month) -> dict[str, Any]:
    """The versions and pairs of ``a``'s history as the generator made them; the prelim_to_final pair."""
    assert doc["accession"] == a.accession
    versions = doc["versions"]
    expected = [("preliminary", a.prelim_reader), ("final", a.final_reader)]
    if a.correction is not None:
        expected.append(("corrected", a.final_reader))
    assert [(v["status"], v["reader"]["id"]) for v in versions] == expected
    assert [v["transport"] for v in versions] == list(a.transports)
    assert all(v["exam"]["code"] == a.code for v in versions)
    times = [v["report_time"] for v in versions]
    assert times == sorted(times)
    assert [v["out_of_order"] for v in versions][1] is a.out_of_order
    pairs = [(p["kind"], p["before"], p["after"]) for p in doc["comparisons"]]
    expected_pairs = [("prelim_to_final", 0, 1)] + ([("correction", 1, 2)] if a.correction is not None else [])
    assert pairs == expected_pairs
    first = doc["comparisons"][0]
    assert first["comparable"] is True, first
    assert first["proposed_grade"] == a.grade, (a.kind, first["comparison"]["differences"])
    assert first["grade"] == month.effective_grade(a)
    if a.correction is not None:
        second = doc["comparisons"][1]
        assert second["comparable"] and second["grade"] == a.correction, second
    text = json.dumps(doc)
    assert a.mrn not in text and a.patient.split("^")[0] not in text
    return first


# ------------------------------------------------------------------ the feed


def test_the_month_is_deterministic_from_its_seed() -> None:
    first, again, other = build_month(SEED), build_month(SEED), build_month(SEED + 1)
    assert [m.body for m in first.messages] == [m.body for m in again.messages]
    assert first.truth() == again.truth()
    assert [m.body for m in first.messages] != [m.body for m in other.messages]
    # Every accession has a prelim and a final, plus its correction; each message names its accession.
    per_accession = Counter(m.accession for m in first.messages)
    assert per_accession == {a.accession: 2 + (a.correction is not None) for a in first.accessions}


def test_every_message_accepted(fed: Fed) -> None:
    month = fed.month
    assert len(fed.answers) == len(month.messages)
    refused = {cid: answer for cid, answer in fed.answers.items() if answer not in ("AA", "CA", "201")}
    assert refused == {}  # CA: the Nocturna and RIS messages ask for accept acknowledgements (MSH-15 AL)
    transports = {m.transport for m in month.messages}
    assert transports == {"mllp", "http"}
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in fed.seconds.items())
    sys.stderr.write(f"month: {len(month.messages)} messages, {len(month.accessions)} accessions; {timing}\n")


# ------------------------------------------------------------------ history


def test_history_of_a_critical_finding_missed(fed: Fed) -> None:
    month = fed.month
    a = next(x for x in month.accessions if x.kind == "3b" and x.accession not in _scored(month) and not x.out_of_order)
    pair = _check_chain(_history(fed, a.accession), a, month)
    assert "critical_added" in {d["kind"] for d in pair["comparison"]["differences"]}
    added = next(d for d in pair["comparison"]["differences"] if d["kind"] == "critical_added")
    assert added["category"] == "interpretive" and added["final"] and added["final"][0]["text"]


@pytest.mark.parametrize("kind", ["2b-flip", "2b-side", "2a"])
def test_history_of_other_discrepancies(fed: Fed, kind: str) -> None:
    month = fed.month
    a = next((x for x in month.accessions if x.kind == kind and x.accession not in _scored(month)), None)
    if a is None:
        pytest.fail(f"seed {SEED} gives no unscored {kind} accession: choose another seed")
    pair = _check_chain(_history(fed, a.accession), a, month)
    kinds = {d["kind"] for d in pair["comparison"]["differences"]}
    wanted = {"2b-flip": "assertion_changed", "2b-side": "side_changed", "2a": "finding_added"}[kind]
    assert wanted in kinds, kinds


def test_history_of_a_concordant_read(fed: Fed) -> None:
    month = fed.month
    a = _pick(month, kind="1", correction=None, out_of_order=False)
    pair = _check_chain(_history(fed, a.accession), a, month)
    assert pair["grade"] == "1"
    assert all(d["category"] == "operational" for d in pair["comparison"]["differences"])


@pytest.mark.parametrize("correction_kind", ["wording", "addendum", "missed_effusion"])
def test_history_of_a_corrected_final(fed: Fed, correction_kind: str) -> None:
    month = fed.month
    a = _pick(month, correction_kind=correction_kind)
    doc = _history(fed, a.accession)
    _check_chain(doc, a, month)
    assert doc["versions"][2]["report_time"] > doc["versions"][1]["report_time"]


def test_history_of_a_final_received_before_its_prelim(fed: Fed) -> None:
    month = fed.month
    a = _pick(month, out_of_order=True)
    doc = _history(fed, a.accession)
    _check_chain(doc, a, month)
    assert doc["versions"][1]["out_of_order"] is True
    assert doc["versions"][0]["out_of_order"] is False


def test_history_of_fhir_versions(fed: Fed) -> None:
    """A prelim posted as FHIR with an HL7 final, and the other way round: one history each."""
    month = fed.month
    for transports in (("http", "mllp"), ("mllp", "http")):
        a = _pick(month, transports=transports)
        _check_chain(_history(fed, a.accession), a, month)


def test_history_cli_prints_the_api_document(fed: Fed) -> None:
    """``overread history ACCESSION --format json --config ... --state-dir ...`` (the CLI's ``main``): the
    document ``GET /api/history/<accession>`` serves. One run (each loads the whole pipeline: seconds), on
    the accession with three versions and two graded pairs."""
    a = _pick(fed.month, correction_kind="missed_effusion")
    code, out = _cli(fed, "history", a.accession, "--format", "json")
    assert code == 0, out
    cli = json.loads(out)
    _check_chain(cli, a, fed.month)
    assert cli == _history(fed, a.accession)
    for marker in patient_markers(fed.month):
        assert marker not in out


# ------------------------------------------------------------------ explicit scores


def test_explicit_scores_override_the_proposal(fed: Fed) -> None:
    month = fed.month
    by_accession = month.by_accession()
    assert month.scores
    for score in month.scores:
        a = by_accession[score.accession]
        doc = _history(fed, a.accession)
        pair = doc["comparisons"][0]
        assert pair["kind"] == "prelim_to_final"
        assert (pair["proposed_grade"], pair["explicit_grade"], pair["grade"]) == (a.grade, score.grade, score.grade)
        assert pair["disagreement"] is (a.grade != score.grade)
        (recorded,) = pair["scores"]
        assert (recorded["source"], recorded["scorer"], recorded["note"]) == ("cli", score.scorer, score.note)


# ------------------------------------------------------------------ scorecard

#: The month's window: its reports' clinical times are in November 2026 (LEMC time); until is the
#: default (now), so every report received by the daemon during this test counts.
SINCE = "2026-11-01T00:00:00-06:00"


@pytest.fixture(name="by_reader", scope="module")
def fixture_by_reader(fed: Fed) -> dict[str, Any]:
    """``overread scorecard --by reader --format json`` over the month (run before any probe is sent)."""
    code, out = _cli(fed, "scorecard", "--by", "reader", "--since", SINCE, "--format", "json")
    assert code == 0, out
    doc: dict[str, Any] = json.loads(out)
    return doc


def _spread(values: tuple[float, ...]) -> dict[str, Any]:
    return {"count": len(values), "median": round(statistics.median(values), 1) if values else None}


def test_scorecard_by_reader_equals_the_truth(fed: Fed, by_reader: dict[str, Any]) -> None:
    truth = fed.month.truth()
    rows = {row["key"]: row for row in by_reader["rows"]}
    assert set(rows) == set(truth)
    assert by_reader["by"] == "reader" and by_reader["min_reads"] == 30
    for reader, want in truth.items():
        row = rows[reader]
        got = {k: row[k] for k in ("group", "reads", "prelims", "finals", "overread", "graded")}
        assert got == {
            "group": want.group,
            "reads": want.reads,
            "prelims": want.prelims,
            "finals": want.finals,
            "overread": want.overread,
            "graded": want.graded,
        }, reader
        discrepancies = row["discrepancies"]
        for grade in ("2a", "2b", "3a", "3b"):
            assert discrepancies[grade]["count"] == want.grades.get(grade, 0), (reader, grade)
        assert discrepancies["significant"]["count"] == want.significant, reader
        assert discrepancies["any"]["count"] == want.any, reader
        assert row["too_few"] is (want.graded < 30), reader
        if want.graded >= 30:
            rate = discrepancies["significant"]["rate"]
            assert rate == pytest.approx(want.significant / want.graded, abs=1e-3), reader
            assert discrepancies["significant"]["low"] <= rate <= discrepancies["significant"]["high"]
        else:
            assert discrepancies["significant"]["rate"] is None and "too few" in row["note"], reader
        assert row["corrected"]["count"] == want.corrected, reader
        assert row["addendum"]["count"] == want.addenda, reader
        assert row["disagreements"] == sum(
            1
            for s in fed.month.scores
            if fed.month.by_accession()[s.accession].prelim_reader == reader
            and s.grade != fed.month.by_accession()[s.accession].grade
        )
        turnaround = row["turnaround"]
        for key, values in (
            ("prelim_minutes", want.prelim_minutes),
            ("prelim_to_final_minutes", want.prelim_to_final_minutes),
        ):
            assert {k: turnaround[key][k] for k in ("count", "median")} == _spread(values), (reader, key)


def test_the_month_has_readers_on_both_sides_of_the_routing_threshold(fed: Fed, by_reader: dict[str, Any]) -> None:
    """The month is what the routing test needs: NT7741 above routing.yaml's 5% on 50 or more graded
    reads, NT7802 clearly below; the internal readers, whose finals are rarely corrected, have too few
    graded reads for a rate."""
    rows = {row["key"]: row for row in by_reader["rows"]}
    high, low = rows["NT7741"], rows["NT7802"]
    assert high["graded"] >= 50 and high["discrepancies"]["significant"]["rate"] > 0.05
    assert low["graded"] >= 50 and low["discrepancies"]["significant"]["rate"] < 0.02
    internal = [row for key, row in rows.items() if key not in READERS]
    assert internal and all(row["too_few"] and row["discrepancies"]["any"]["rate"] is None for row in internal)


def test_scorecard_by_group_and_the_api(fed: Fed) -> None:
    truth = [t for t in fed.month.truth().values() if t.group == GROUP]
    status, doc = _api(
        fed, f"/api/scorecard?by=group&only={urllib.parse.quote(GROUP)}&since={urllib.parse.quote(SINCE)}"
    )
    assert status == 200, doc
    (row,) = doc["rows"]
    assert row["key"] == GROUP and sorted(row["readers"]) == sorted(t.reader for t in truth)
    assert (row["reads"], row["graded"]) == (sum(t.reads for t in truth), sum(t.graded for t in truth))
    assert row["discrepancies"]["significant"]["count"] == sum(t.significant for t in truth)


# ------------------------------------------------------------------ feedback


def _group_cases(month: Month) -> dict[str, str]:
    """Accession -> grade of every discrepancy (grade other than 1) of the group's preliminaries."""
    return {
        a.accession: month.effective_grade(a)
        for a in month.accessions
        if a.prelim_reader in READERS and month.effective_grade(a) != "1"
    }


def test_feedback_json_lists_the_discrepancy_cases(fed: Fed) -> None:
    month = fed.month
    code, out = _cli(fed, "feedback", "--group", GROUP, "--since", SINCE, "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    truth = [t for t in month.truth().values() if t.group == GROUP]
    assert doc["group"] == GROUP and sorted(doc["readers"]) == sorted(READERS)
    assert doc["volume"]["prelims"] == sum(t.prelims for t in truth)
    assert doc["volume"]["graded"] == sum(t.graded for t in truth)
    assert doc["discrepancies"]["significant"]["count"] == sum(t.significant for t in truth)
    cases = {c["accession"]: c for c in doc["cases"]}
    assert {acc: c["grade"] for acc, c in cases.items()} == _group_cases(month)
    by_accession = month.by_accession()
    for accession, case in cases.items():
        a = by_accession[accession]
        assert case["kind"] == "prelim_to_final" and case["exam"]["code"] == a.code
        assert case["proposed_grade"] == a.grade
        assert case["differences"], case
    for score in month.scores:
        if score.accession in cases:
            assert score.note in [n["note"] for n in cases[score.accession]["notes"]]
    for marker in patient_markers(month):
        assert marker not in out
    assert doc["privacy"]


def test_feedback_html_names_no_patient(fed: Fed, tmp_path: Path) -> None:
    month = fed.month
    page = tmp_path / "nocturna.html"
    code, _ = _cli(fed, "feedback", "--group", GROUP, "--since", SINCE, "--format", "html", "--output", str(page))
    assert code == 0
    html = page.read_text(encoding="utf-8")
    for accession in _group_cases(month):
        assert accession in html
    for marker in patient_markers(month):
        assert marker not in html


# ------------------------------------------------------------------ the loop into routing

RULE = "reader_discrepancy_above_threshold"


def _refreshes(daemon: RunningDaemon) -> int:
    return sum(1 for line in daemon.log_lines() if line.get("event") == "live_figures_refreshed")


def _wait_for_fresh_figures(daemon: RunningDaemon) -> None:
    """Two more refreshes: refreshes never overlap, so the second began after everything stored so far."""
    seen = _refreshes(daemon)
    deadline = time.monotonic() + 120
    while _refreshes(daemon) < seen + 2:
        assert time.monotonic() < deadline, "no live figures refresh in 120 s"
        failed = [line for line in daemon.log_lines() if line.get("event") == "live_figures_failed"]
        assert not failed, failed
        time.sleep(0.25)


def _route(fed: Fed, control_id: str) -> dict[str, Any]:
    status, found = _api(fed, f"/api/messages?message_id={control_id}")
    assert status == 200, found
    (summary,) = found
    status, detail = _api(fed, f"/api/messages/{summary['message_pk']}")
    assert status == 200, detail
    (report,) = detail["reports"]
    route: dict[str, Any] = report["route"]
    return route


def test_the_next_prelim_of_the_reader_above_threshold_goes_to_overread(fed: Fed) -> None:
    """After the live figures refresh, NT7741's next preliminary is routed to selective overread with its
    month's figures in the explanation; NT7802's is not, although its readers.yaml snapshot (9/140)
    is above the threshold: the live figures decide."""
    truth = fed.month.truth()
    _wait_for_fresh_figures(fed.daemon)
    # Reported before the month (outside every scorecard window above), an XR chest no other rule overreads.
    when = datetime(2026, 10, 30, 23, 30, tzinfo=CST)
    conn = MllpConnection(fed.daemon.address)
    try:
        for reader in ("NT7741", "NT7802"):
            assert msa(conn.request(probe_prelim(reader, f"PROBE{reader}", when)))[0] in ("AA", "CA")
    finally:
        conn.close()
    high, low = _route(fed, "NOCPROBENT7741P"), _route(fed, "NOCPROBENT7802P")
    assert high["bucket"] == "selective_overread" and RULE in high["reasons"], high
    assert RULE not in low["reasons"], low
    group = [t for t in truth.values() if t.group == GROUP]
    significant, graded = sum(t.significant for t in group), sum(t.graded for t in group)
    for route, reader in ((high, "NT7741"), (low, "NT7802")):
        want = truth[reader]
        line = next(line for line in route["explanation"] if line.startswith(f"{RULE} "))
        assert f"reader_discrepancy_rate {reader} " in line, line
        assert f"({want.significant}/{want.graded} graded reads, store " in line, line
        assert "readers.yaml" not in line, line
        # The group's live figures (every Nocturna reader's month) are below the group rule's 5%.
        assert GROUP_RULE not in route["reasons"]
        line = next(line for line in route["explanation"] if line.startswith(f"{GROUP_RULE} "))
        assert f"group_discrepancy_rate {GROUP} (reader {reader}) " in line, line
        assert f"({significant}/{graded} graded reads, store " in line and "not above 5.0%" in line, line


def test_no_patient_data_in_the_daemon_log(fed: Fed) -> None:
    logged = fed.daemon.stdout() + fed.daemon.stderr()
    assert "live_figures_refreshed" in logged
    for marker in patient_markers(fed.month):
        assert marker not in logged, marker
