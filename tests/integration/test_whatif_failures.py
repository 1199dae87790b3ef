"""The console's what-if job under failure and attacker input, against real daemons
(docs/console.md, "Policy and what-if").

A daemon killed outright while its child runs, then started again on the same state directory;
a child killed from outside; a cancel without its CSRF token; hostile job ids. Each test asserts
the defence holds: no private file outlives its job, a job always ends, and no other client or
forged request reaches a job.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.conftest import MllpConnection, RunningDaemon, start_configured
from tests.integration.test_console import Browser, _client, _hidden
from tests.integration.test_console_policy import STRICTER, _child, finished
from tests.integration.test_scorecard import _prelim

MANAGER = "whatif-manager-token-1"
ANALYST = "whatif-analyst-token-2"
START = f"/console/policy?candidate={quote(STRICTER, safe='')}&since=90d"


def _fed(root: Path) -> RunningDaemon:
    config = "http_clients:\n" + _client("manager", MANAGER, "console") + _client("analyst", ANALYST, "console")
    daemon, _ = start_configured(root, config)
    conn = MllpConnection(daemon.address)
    try:
        conn.request(_prelim("WF-P1", b"WF1"))
    finally:
        conn.close()
    return daemon


def _signed_in(daemon: RunningDaemon, token: str) -> Browser:
    browser = Browser(daemon)
    assert browser.sign_in(token)[0] == 303
    return browser


def _gone(pids: list[int]) -> bool:
    """Whether none of ``pids`` runs any more (a zombie has ended)."""
    for pid in pids:
        try:
            fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            return False
    return True


@pytest.fixture(name="daemon", scope="module")
def fixture_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    daemon = _fed(tmp_path_factory.mktemp("whatif-failures"))
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


def test_a_child_killed_from_outside_fails_its_job_removes_its_files_and_frees_the_place(
    daemon: RunningDaemon,
) -> None:
    browser = _signed_in(daemon, MANAGER)
    status, headers, _ = browser.request("GET", START)
    assert status == 303
    location = headers["location"]
    child = _child(daemon)
    assert len(list(daemon.state_dir.glob(".whatif-*.json"))) == 1
    os.kill(child, signal.SIGKILL)
    status, _, page = finished(browser, location)
    assert status == 200 and '<h2 id="job-h">Failed</h2>' in page
    assert "the replay was stopped by signal 9" in page
    assert not list(daemon.state_dir.glob(".whatif-*")), "the dead child's files are removed"
    status, headers, _ = browser.request("GET", START)
    assert status == 303, "a failed job holds no place"
    status, _, _ = finished(browser, headers["location"])
    assert status == 200


def test_a_cancel_without_the_csrf_token_or_of_another_client_leaves_the_job_running(daemon: RunningDaemon) -> None:
    manager, analyst = _signed_in(daemon, MANAGER), _signed_in(daemon, ANALYST)
    status, headers, _ = manager.request("GET", START)
    assert status == 303
    location = headers["location"]
    status, _, page = manager.request("POST", location + "/cancel", {})
    assert status == 403 and "CSRF token is missing or wrong" in page
    status, _, _ = manager.request("POST", location + "/cancel", {"csrf": "forged"})
    assert status == 403
    # The analyst's own (valid) token does not cancel the manager's job either.
    status, _, page = analyst.request("GET", "/console/policy")
    status, _, _ = analyst.request("POST", location + "/cancel", {"csrf": _hidden(page, "csrf")})
    assert status == 404
    status, _, page = manager.request("GET", location)
    assert status == 200 and '<h2 id="job-h">Running</h2>' in page, "the job still runs"
    status, _, page = finished(manager, location)
    assert status == 200 and '<h2 id="job-h">Done</h2>' in page


@pytest.mark.parametrize(
    "path",
    [
        "/console/policy/run/" + "A" * 5000,
        "/console/policy/run/..%2F..%2Fetc%2Fpasswd",
        "/console/policy/run/%00",
        "/console/policy/run/x/cancel",
        "/console/policy/run/x/y/z",
        "/console/policy/run",
        "/console/policy/job/x",
    ],
)
def test_hostile_job_ids_answer_404_and_never_reach_the_log(daemon: RunningDaemon, path: str) -> None:
    browser = _signed_in(daemon, MANAGER)
    status, _, page = browser.request("GET", path)
    assert status == 404 and "There is no such what-if." in page
    status, _, page = browser.request("GET", "/console/policy")
    status, _, _ = browser.request("POST", path + "/cancel", {"csrf": _hidden(page, "csrf")})
    assert status == 404
    logged = "\n".join(str(line) for line in daemon.log_lines())
    assert "AAAAAAAAAA" not in logged and "passwd" not in logged


def test_a_killed_daemons_what_if_files_are_removed_when_the_next_one_starts(tmp_path: Path) -> None:
    daemon = _fed(tmp_path)
    try:
        browser = _signed_in(daemon, MANAGER)
        status, _, _ = browser.request("GET", START)
        assert status == 303
        children = [_child(daemon)]
        daemon.stop(signal.SIGKILL)
        left = sorted(p.name for p in daemon.state_dir.glob(".whatif-*"))
        assert left, "kill -9 leaves the job's files (no handler runs)"
        # The orphan ends by itself: its next progress line finds the daemon's pipe closed (the
        # loop's bound is the test's own: an orphan that runs on fails here).
        for _ in range(1200):
            if _gone(children):
                break
            time.sleep(0.1)
        assert _gone(children), "the orphaned child ended"
        daemon.start()
        assert not list(daemon.state_dir.glob(".whatif-*")), left
        events = [line for line in daemon.log_lines() if line.get("event") == "console_whatif_stale_removed"]
        assert [e.get("count") for e in events] == [len(left)]
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0
