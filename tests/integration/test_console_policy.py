"""``/console/policy``: the live routing policy and the what-if, against a real daemon fed with
the samples (docs/console.md, "Policy and what-if").

The daemon receives every sample of samples/hl7 and two accessions read first by a Nocturna
teleradiology reader and finalled by Lakeshore (tests/integration/test_scorecard.py): one final
adds a pneumothorax the preliminary denied (a grade 3b discrepancy). The stricter sample policy
sends every external preliminary to a selective overread, so it finds that read.

A what-if is a background job (``overread simulate`` in a child of the daemon): the form answers
303 to the job's page, which refreshes itself until the result is there.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, overread_json, start_configured
from tests.integration.test_console import Browser, _client, _hidden
from tests.integration.test_scorecard import _final, _prelim

ANALYST = "policy-analyst-token-1"
MANAGER = "policy-manager-token-2"
STRICTER = "samples/policies/stricter.yaml"
#: Patient data of the samples that no page may show.
PATIENT_DATA = ("ZZDEMO", "ZZTEST", "ZZ9000103", "NORA")


@pytest.fixture(name="fed", scope="module")
def fixture_fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDaemon, Path]]:
    config = "http_clients:\n" + _client("analyst", ANALYST, "console, phi") + _client("manager", MANAGER, "console")
    daemon, path = start_configured(tmp_path_factory.mktemp("policy"), config)
    try:
        messages = [p.read_bytes() for p in sorted((REPO / "samples/hl7").glob("*.hl7"))]
        messages += [_prelim("CP-P1", b"CP1"), _final("CP-F1", b"CP1", pneumothorax=True)]
        messages += [_prelim("CP-P2", b"CP2"), _final("CP-F2", b"CP2")]
        for raw in messages:
            conn = MllpConnection(daemon.address)
            try:
                conn.request(raw)
            finally:
                conn.close()
        yield daemon, path
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


def _signed_in(daemon: RunningDaemon, token: str) -> Browser:
    browser = Browser(daemon)
    status, _, _ = browser.sign_in(token)
    assert status == 303
    return browser


RUN = re.compile(r"/console/policy/run/[A-Za-z0-9_-]{24}")


def finished(browser: Browser, location: str) -> tuple[int, dict[str, str], str]:
    """The job's page at ``location`` once it has ended, reloaded as its meta refresh does (the
    loop's bound is the test's own: a what-if that never ends fails here)."""
    for _ in range(1200):
        status, headers, page = browser.request("GET", location)
        running = status == 202 if "format=json" in location else 'http-equiv="refresh"' in page
        if not running:
            return status, headers, page
        time.sleep(0.25)
    raise AssertionError(f"the what-if at {location} did not end")


def what_if(browser: Browser, method: str, path: str, form: dict[str, str] | None = None) -> tuple[str, int, str]:
    """Start a what-if as the page's form does: (its run page, that page's status and text once done)."""
    status, headers, page = browser.request(method, path, form)
    assert status == 303 and RUN.fullmatch(headers["location"].split("?")[0]), (status, page[-2000:])
    status, _, page = finished(browser, headers["location"])
    return headers["location"], status, page


def test_the_policy_page_lists_the_live_rules_in_words(fed: tuple[RunningDaemon, Path]) -> None:
    daemon, _ = fed
    browser = _signed_in(daemon, MANAGER)
    status, headers, page = browser.request("GET", "/console/policy")
    assert status == 200, page
    text = html.unescape(page)
    assert "<h1>Routing policy</h1>" in page and 'aria-current="page">Policy' in page
    version = re.search(r"version <code>(default-2026\.11\+[0-9a-f]{10})</code>", page)
    assert version, "the daemon's routing version is shown"
    for rule in ("overnight_external_neuro_prelim", "critical_finding_affirmed", "qa_errors_return_to_author"):
        assert f"<code>{rule}</code>" in page
    assert (
        "When a critical finding is stated as present: a selective overread (selective_overread) in pool "
        "critical_results, priority stat, due within 60 min." in text
    )
    assert '<td><code>external_peer_review_sample</code></td><td class="num">5.0%</td><td><code>2026-Q4</code>' in page
    assert "Pinevale Health" in page
    for name in ("samples/policies/stricter.yaml", "samples/policies/looser.yaml", "policies/routing.yaml"):
        assert f'<option value="{name}"' in page
    assert "script" not in headers["content-security-policy"]


def test_a_what_if_of_the_stricter_sample_matches_overread_simulate(fed: tuple[RunningDaemon, Path]) -> None:
    daemon, config = fed
    browser = _signed_in(daemon, MANAGER)
    query = f"/console/policy?candidate={quote(STRICTER, safe='')}&since=30d"
    location, status, body = what_if(browser, "GET", query + "&format=json")
    assert location.endswith("?format=json") and status == 200, body
    doc = json.loads(body)
    base, cand = doc["baseline"], doc["candidate"]
    assert base["name"] == "current" and cand["name"] == STRICTER and cand["version"].startswith("stricter-sample")
    assert base["reports"] == cand["reports"] >= 25
    assert cand["workload"]["reads"] > base["workload"]["reads"]
    assert cand["workload"]["minutes"] > base["workload"]["minutes"]
    (case,) = [c for c in doc["discrepancy_cases"] if c["accession"] == "CP1"]
    assert (case["grade"], case["baseline_sends"], case["candidate_sends"]) == ("3b", False, True)
    assert case["control_id"] == "CP-P1" and case["reader"] == "NT7741" and len(case["patient_hash"]) == 16
    # The command on the same store, policy file and window prints the same document.
    window = ("--since", doc["window"]["since"], "--until", doc["window"]["until"], "--name", STRICTER)
    assert overread_json(config, daemon.state_dir, "simulate", "--policy", cand["source"], *window) == doc
    assert not list(daemon.state_dir.glob(".whatif-*")), "the job's private files are removed"

    # The same job's page, and a new job of the same what-if as a page.
    status, _, page = browser.request("GET", location.split("?")[0])
    assert status == 200 and "http-equiv" not in page and '<h2 id="job-h">Done</h2>' in page
    location, status, page = what_if(browser, "GET", query)
    assert status == 200, page
    reads = re.search(r'<th scope="row">second reads</th><td class="num">(\d+)</td><td class="num">(\d+)</td>', page)
    assert reads and (int(reads[1]), int(reads[2])) == (base["workload"]["reads"], cand["workload"]["reads"])
    assert '<img class="chart" src="data:image/svg+xml;base64,' in page
    released, still_sent = page.split("Still sent to a second read by the candidate")
    assert "CP1" not in released.split("Released unseen by the candidate")[1]
    assert "<td>CP1</td>" in still_sent and "<code>CP-P1</code>" in still_sent
    assert "second reads by site" in page  # the CLI's table, under <details>
    assert f"{base['reports']} reports of " in page and "accessions, all replayed in" in page
    for secret in PATIENT_DATA:
        assert secret not in page and secret not in body
    events = [line for line in daemon.log_lines() if str(line.get("event", "")).startswith("console_whatif")]
    assert {"console_whatif_started", "console_whatif_finished"} <= {e["event"] for e in events}
    assert any(e.get("state") == "done" and e.get("sender_app") == "manager" for e in events)


def test_a_what_if_is_the_callers_own_one_runs_at_a_time_and_cancel_kills_it(
    fed: tuple[RunningDaemon, Path],
) -> None:
    daemon, _ = fed
    manager, analyst = _signed_in(daemon, MANAGER), _signed_in(daemon, ANALYST)
    query = f"/console/policy?candidate={quote(STRICTER, safe='')}&since=90d"
    status, headers, _ = manager.request("GET", query)
    assert status == 303
    location = headers["location"]
    # Another client neither sees nor cancels it; a second what-if waits for it.
    status, _, page = analyst.request("GET", location)
    assert status == 404 and "There is no such what-if." in page
    status, _, page = analyst.request("GET", "/console/policy")
    csrf = _hidden(page, "csrf")
    status, _, page = analyst.request("POST", location + "/cancel", {"csrf": csrf})
    assert status == 404
    status, headers, page = analyst.request("GET", query)
    assert status == 503 and headers["retry-after"] == "2", page
    assert re.search(r"a what-if is running, started at \d\d:\d\d UTC by manager</strong>: try again", page)
    assert location not in page
    status, headers, page = manager.request("GET", query)
    assert status == 503 and f'its page is <a href="{location}">' in page
    status, headers, body = manager.request("GET", query + "&format=json")
    assert status == 503 and json.loads(body)["page"] == location + "?format=json"

    # The child needs seconds to start and replay 90 days; the requests above take milliseconds.
    status, _, page = manager.request("GET", location)
    assert status == 200 and 'http-equiv="refresh"' in page, "the what-if is still running"
    assert f'<meta http-equiv="refresh" content="2; url={location}">' in page and "<progress" in page
    status, headers, body = manager.request("GET", location + "?format=json")
    assert status == 202 and headers["retry-after"] == "2" and json.loads(body)["state"] == "running"
    status, headers, _ = manager.request("POST", location + "/cancel", {"csrf": _hidden(page, "csrf")})
    assert status == 303 and headers["location"] == location
    status, _, page = finished(manager, location)
    assert status == 200 and '<h2 id="job-h">Cancelled</h2>' in page
    status, _, body = manager.request("GET", location + "?format=json")
    assert status == 409 and json.loads(body)["state"] == "cancelled"
    # Cancelled, it no longer holds the place: the next what-if starts.
    _, status, _ = what_if(analyst, "GET", query)
    assert status == 200


def test_a_pasted_policy_runs_and_a_broken_one_shows_the_loaders_message_with_its_line(
    fed: tuple[RunningDaemon, Path],
) -> None:
    daemon, _ = fed
    browser = _signed_in(daemon, MANAGER)
    status, _, page = browser.request("GET", "/console/policy")
    csrf = _hidden(page, "csrf")
    stricter = (REPO / STRICTER).read_text(encoding="utf-8")

    _, status, page = what_if(browser, "POST", "/console/policy", {"csrf": csrf, "since": "7d", "policy": stricter})
    assert status == 200, page
    assert "vs candidate (pasted policy) <code>stricter-sample-2026.12+" in page and "Window: last 7d (" in page
    assert not list(daemon.state_dir.glob(".whatif-*")), "the pasted copy is removed"

    broken = stricter.replace("    bucket: selective_overread\n", "    bucket: second_look\n", 1)
    line = broken.splitlines().index("    bucket: second_look") + 1
    status, headers, page = browser.request("POST", "/console/policy", {"csrf": csrf, "since": "30d", "policy": broken})
    assert status == 400 and "location" not in headers  # answered at once: no job
    assert (
        f"<strong>(pasted policy), line {line}</strong>: rules.critical_finding_affirmed.bucket: unknown bucket "
        in html.unescape(page)
    )
    assert "bucket: second_look" in page  # the text is offered again for correction, escaped in the textarea

    status, _, page = browser.request(
        "POST", "/console/policy", {"csrf": csrf, "policy": "version: x\npools: [a, b\nrules: {}\n"}
    )
    assert status == 400 and "<strong>(pasted policy), line 3, column 6</strong>: invalid YAML" in page

    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nrules: *c\n'
    status, _, page = browser.request("POST", "/console/policy", {"csrf": csrf, "policy": bomb})
    assert status == 400 and "line 1</strong>: anchors and aliases (&amp;name, *name) are not accepted here" in page

    status, _, page = browser.request("POST", "/console/policy", {"csrf": csrf, "policy": "#" * (256 * 1024 + 1)})
    assert status == 400 and "262,145 bytes is more than the 262,144 accepted" in page
    assert "#" * 100 not in page


def test_a_post_without_the_csrf_token_is_refused(fed: tuple[RunningDaemon, Path]) -> None:
    daemon, _ = fed
    browser = _signed_in(daemon, ANALYST)
    stricter = (REPO / STRICTER).read_text(encoding="utf-8")
    status, _, page = browser.request("POST", "/console/policy", {"policy": stricter})
    assert status == 403 and "CSRF token is missing or wrong" in page
    status, _, page = browser.request("POST", "/console/policy", {"csrf": "forged", "policy": stricter})
    assert status == 403
    # A picked file that is not one of the listed ones is not read.
    status, _, page = browser.request("GET", "/console/policy?candidate=..%2F..%2Fetc%2Fpasswd")
    assert status == 400 and "pick one of the listed policy files" in page


def _simulate_children(state_dir: Path) -> list[int]:
    """The pids of ``overread simulate`` processes on ``state_dir`` (read from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"simulate" in argv and str(state_dir).encode() in argv:
            with contextlib.suppress(OSError):
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not a zombie
                    found.append(int(proc.name))
    return found


def _child(daemon: RunningDaemon, timeout: float = 30.0) -> int:
    """The pid of the daemon's running what-if child, looked for again until it shows in /proc: the
    daemon forks it after answering, and on a loaded host the exec can come a while after the 303
    (a child that never shows within ``timeout`` fails here)."""
    deadline = time.monotonic() + timeout
    while True:
        children = _simulate_children(daemon.state_dir)
        if children:
            assert len(children) == 1, children
            return children[0]
        if time.monotonic() > deadline:
            raise AssertionError("the what-if's child does not run")
        time.sleep(0.05)


def test_the_daemons_stop_kills_a_running_what_if(tmp_path: Path) -> None:
    daemon, _ = start_configured(tmp_path, "http_clients:\n" + _client("manager", MANAGER, "console"))
    try:
        conn = MllpConnection(daemon.address)
        try:
            conn.request(_prelim("CP-P9", b"CP9"))
        finally:
            conn.close()
        browser = _signed_in(daemon, MANAGER)
        status, _, _ = browser.request("GET", f"/console/policy?candidate={quote(STRICTER, safe='')}&since=90d")
        assert status == 303
        child = _child(daemon)
        nice = int((Path("/proc") / str(child) / "stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice >= 10, "the child runs at a lower priority"
    finally:
        assert daemon.stop() == 0, daemon.log_lines()[-5:]
    assert not _simulate_children(daemon.state_dir), "the child died with the daemon"
    assert not list(daemon.state_dir.glob(".whatif-*"))
