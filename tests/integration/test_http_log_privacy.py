"""A caller who types a patient's name or MRN into a URL (its path or its query) leaves none of it
in the daemon's log: HTTP log lines carry the route template, never the path as sent
(docs/monitoring.md, "Logs"; listener/server/http_routes.py).

One real daemon with console, operator and FHIR clients; every request below names a made-up
patient in its path, its query or both, through every door: the FHIR API, the /api queries, the
console (signed in, signed out, a refused CSRF token), an unknown path, a body over the limit and
a made-up method.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.conftest import RunningDaemon, start_configured
from tests.integration.test_console import ANALYST, Browser, _client

#: A made-up patient: no such person in any sample.
NAME = "QUENNELL^AVARINA"
MRN = "MRN4417093"
#: What must not appear in any log line, in any case or encoding.
MARKERS = ("quennell", "avarina", "4417093")
FEEDER = "privacy-feeder-token-7"
MAX_BODY = 4096
PATIENT = quote(NAME)


@pytest.fixture(name="daemon", scope="module")
def fixture_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root: Path = tmp_path_factory.mktemp("log-privacy")
    config = (
        f"http_max_body_size: {MAX_BODY}\nhttp_clients:\n"
        + _client("analyst", ANALYST, "console, operator, phi")
        + _client("feeder", FEEDER, "")
    )
    daemon, _ = start_configured(root, config)
    try:
        yield daemon
    finally:
        assert daemon.stop() == 0


def _send(daemon: RunningDaemon, method: str, target: str, token: str = "", body: bytes | None = None) -> int:
    """The status of one request sent as is (``target`` already percent-encoded)."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port or 0, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        if body is not None:
            conn.putheader("Content-Type", "application/fhir+json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        response.read()
        return response.status
    except (ConnectionError, http.client.HTTPException):
        return 0  # a refused body or method may close the connection before an answer is read
    finally:
        conn.close()


def test_no_patient_value_typed_into_a_url_reaches_the_log(daemon: RunningDaemon) -> None:
    sent = [
        ("GET", f"/fhir/DiagnosticReport/{MRN}", FEEDER, 404),
        ("GET", f"/fhir/Task?status=requested&owner={PATIENT}", FEEDER, None),
        ("GET", f"/fhir/DetectedIssue?implicated:identifier={MRN}", FEEDER, None),
        ("GET", f"/api/messages/{MRN}", ANALYST, 404),
        ("GET", f"/api/messages?patient_id={MRN}&authority={PATIENT}", ANALYST, 200),
        ("GET", f"/api/history/{MRN}", ANALYST, 404),
        ("GET", f"/api/{PATIENT}/{MRN}", ANALYST, 404),
        ("GET", f"/{PATIENT}?mrn={MRN}", "", 404),
        ("GET", f"/console/messages/{PATIENT}", "", 303),
        ("GET", f"/console/messages/{MRN}", ANALYST, 404),
        ("GET", f"/console/messages?patient={MRN}&name={PATIENT}", ANALYST, 200),
        ("GET", f"/console/{PATIENT}", ANALYST, 404),
        ("GET", f"/console/login?next=/console/messages/{MRN}", "", 200),
    ]
    for method, target, token, status in sent:
        got = _send(daemon, method, target, token)
        assert status is None or got == status, (target, got)
    # A body over the limit is refused before the resource tree is walked (413).
    assert _send(daemon, "POST", f"/fhir/DiagnosticReport/{MRN}?name={PATIENT}", FEEDER, b"{" * (MAX_BODY + 1)) in (
        0,
        413,
    )
    # A made-up method token.
    _send(daemon, "AVARINA", f"/api/messages/{MRN}", ANALYST)
    # A signed-in POST whose CSRF token is wrong is refused and logged (console_csrf_refused).
    browser = Browser(daemon)
    browser.sign_in(ANALYST)
    status, _, _ = browser.request("POST", f"/console/actions/{MRN}", {"csrf": "wrong", "back": f"/console/{MRN}"})
    assert status == 403

    lines = daemon.log_lines()
    text = "\n".join(json.dumps(line) for line in lines).lower()
    for marker in MARKERS:
        assert marker not in text, marker
    requests = [line for line in lines if line["event"] == "http_request"]
    assert all("path" not in line for line in requests)
    routes = {str(line["route"]) for line in requests}
    assert {
        "/fhir/(unmatched)",
        "/fhir/Task",
        "/api/messages/{pk}",
        "/api/messages",
        "/api/history/{accession}",
        "/api/(unmatched)",
        "(unmatched)",
        "/console/messages/{pk}",
        "/console/messages",
        "/console/(unmatched)",
        "/console/login",
        "/console/actions/{action}",
    } <= routes, routes
    refused = [line for line in lines if line["event"] == "console_csrf_refused"]
    assert [line["route"] for line in refused] == ["/console/actions/{action}"]
    too_large = [line for line in lines if line.get("reason") == "body_too_large"]
    assert [line["route"] for line in too_large] == ["/fhir/(unmatched)"]
