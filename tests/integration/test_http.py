"""The FHIR HTTP API of a real daemon (``overread serve`` subprocess) on free loopback ports.

Covers: every samples/fhir file and every corpus/fhir file (as its PROVENANCE.md
says: 201, or the precise OperationOutcome), duplicates, 415/413/401/403, a
10 MB body refused without memory growth, /healthz, /metrics after traffic,
Task/DetectedIssue searches, HL7/FHIR twins giving the same findings and route,
and the patient-data canary.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.test_corpus_fhir import EXPECTED
from tests.conftest import cli_json_lines
from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    free_port,
    message_ids,
    msa,
    new_messages,
    started,
    with_control_id,
)
from tests.integration.ris import TestRis
from tests.integration.test_tls import fixture_pki  # noqa: F401 - the pki fixture (CA, server, clients)

SAMPLES = REPO / "samples" / "fhir"
FHIR = "application/fhir+json"
TOKENS = {name: f"{name}-token-0123456789abcdef" for name in ("r4", "r5", "stu3", "reader", "poster")}
VERSIONS = {"R4": "", "R5": ", fhir_version: R5", "STU3": ", fhir_version: STU3"}
TWINS = {"bundle-transaction-mr-knee-left.json": "mr-knee-left-73721-lt.hl7"}
#: Samples the default routing policy releases with no overread (so neither twin gets a Task).
RELEASED = {"bundle-transaction-mr-knee-left.json", "xr-chest-2v-normal.json"}


class Reply:
    """One HTTP response: status, headers (lower-cased names), body bytes."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    content_type: str | None = FHIR,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = dict(headers or {})
    if content_type is not None and body is not None:
        sent["Content-Type"] = content_type
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def post(port: int, body: bytes, *, token: str | None = None, content_type: str | None = FHIR) -> Reply:
    """POST to /fhir/DiagnosticReport or /fhir, by the body's resourceType."""
    kind = json.loads(body).get("resourceType") if body.lstrip().startswith(b"{") else ""
    path = "/fhir" if kind == "Bundle" else "/fhir/DiagnosticReport"
    return call(port, "POST", path, body, token=token, content_type=content_type)


def issue(reply: Reply) -> tuple[str, str]:
    """(code, expression) of an OperationOutcome's first issue."""
    first = reply.json()["issue"][0]
    return first["code"], (first.get("expression") or [""])[0]


_ACCESSION = re.compile(rb"A26[0-9]{8}")
_PATIENT_ID = re.compile(rb"ZZ9[0-9]{6}")


def unique(raw: bytes, tag: str | None = None) -> bytes:
    """A sample (HL7 or FHIR bytes) with ``tag`` (a fresh one by default) appended to its accession
    numbers and patient ids: on the shared daemon, a message no other test sent (not a duplicate),
    of a patient no other test sent (no prior studies), whose Tasks and DetectedIssues carry an
    accession of its own."""
    suffix = (tag or uuid.uuid4().hex[:8]).upper().encode()
    return _PATIENT_ID.sub(lambda m: m[0] + suffix, _ACCESSION.sub(lambda m: m[0] + suffix, raw))


def sample(name: str, tag: str | None = None) -> bytes:
    """samples/fhir/``name``, made :func:`unique`."""
    raw = (SAMPLES / name).read_bytes()
    made = unique(raw, tag)
    assert made != raw
    return made


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _corpus_cases() -> list[tuple[str, str]]:
    return sorted(key for key in EXPECTED if key[1] in ("R4", "R5", "STU3"))


def _case_token(i: int) -> str:
    return f"corpus-case-{i}-0123456789abcdef"


@pytest.fixture(name="authed", scope="module")
def fixture_authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One daemon for the module with clients r4 (default versions), r5, stu3, a reader, a poster, and one per corpus case.

    A corpus case gets its own client because duplicates are per client: two
    corpus files share a DiagnosticReport id and status (the STU3 DXA example
    and its R4 conversion), so the second would rightly be answered as the first.
    """
    root = tmp_path_factory.mktemp("authed")
    (root / "logs").mkdir()
    (root / "stu3.token").write_text(TOKENS["stu3"] + "\n")
    digest = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in TOKENS.items()}
    (root / "overread.yaml").write_text(
        "http_clients:\n"
        f"  r4: {{token_sha256: {digest['r4']}}}\n"
        f"  r5: {{token_sha256: {digest['r5']}, fhir_version: R5}}\n"
        "  stu3: {token_file: stu3.token, fhir_version: STU3}\n"
        f"  reader: {{token_sha256: {digest['reader']}, allow: [read]}}\n"
        f"  poster: {{token_sha256: {digest['poster']}, allow: [submit]}}\n"
        + "".join(
            f"  case{i}: {{token_sha256: {hashlib.sha256(_case_token(i).encode()).hexdigest()}{VERSIONS[client]}}}\n"
            for i, (_, client) in enumerate(_corpus_cases())
        )
        + "http_max_body_size: 1048576\n"
    )
    with started(
        RunningDaemon(root / "state", root / "logs", extra=("--config", str(root / "overread.yaml")))
    ) as daemon:
        yield daemon


# ------------------------------------------------------------------ intake


def created(reply: Reply) -> int:
    """How many DiagnosticReports an accepting answer created: 201 + OperationOutcome, or 200 + transaction/batch-response."""
    body = reply.json()
    if reply.status == 200 and body["resourceType"] == "Bundle":
        assert body["type"] in ("transaction-response", "batch-response")
        return sum(e["response"]["status"] == "201 Created" for e in body["entry"])
    assert reply.status == 201, reply.body
    return len(body["issue"])


_SINGLE_SAMPLES = sorted(p.name for p in SAMPLES.glob("*.json") if not p.name.startswith("bundle-"))


@pytest.mark.parametrize("name", _SINGLE_SAMPLES)
def test_sample_is_created_after_commit(name: str, shared_daemon: RunningDaemon) -> None:
    """Each of our DiagnosticReport samples gets 201, a Location under /fhir/DiagnosticReport/, an information OperationOutcome with the route, and is stored."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    before = message_ids(daemon)
    reply = post(daemon.http_port, sample(name))
    assert reply.status == 201, reply.body
    assert reply.headers["location"].startswith("/fhir/DiagnosticReport/")
    assert reply.headers["content-type"].startswith("application/fhir+json")
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert {i["severity"] for i in outcome["issue"]} == {"information"}
    assert all(i["diagnostics"].startswith("bucket ") for i in outcome["issue"])
    stored = new_messages(daemon, before)
    assert len(stored) == 1 and stored[0]["state"] == "processed"


@pytest.mark.parametrize(("name", "client"), _corpus_cases())
def test_corpus_file_over_http(name: str, client: str, authed: RunningDaemon, corpus: Path) -> None:
    """Every corpus file gets what the conformance table expects: 201 with one route per report, or 400/422 naming the issue code and FHIRPath."""
    assert authed.http_port is not None
    body = (corpus / "fhir" / name).read_bytes()
    reply = post(authed.http_port, body, token=_case_token(_corpus_cases().index((name, client))))
    expected = EXPECTED[(name, client)]
    if isinstance(expected, str):
        assert created(reply) == int(expected.split(":")[1])
        return
    if name.endswith("r4_servicerequest_chest_xray_order.json"):
        # Refused before decoding: POST /fhir/DiagnosticReport takes only a DiagnosticReport.
        assert (reply.status, issue(reply)) == (400, ("not-supported", "resourceType"))
        return
    assert reply.status in (400, 422), reply.body
    assert issue(reply) == expected
    assert reply.json()["issue"][0]["severity"] in ("error", "fatal")


def test_transaction_bundle_answered_with_transaction_response(shared_daemon: RunningDaemon) -> None:
    """A transaction Bundle gets 200 and a transaction-response pairing every request entry: 201 Created + Location + route for the DiagnosticReport, 200 OK for the resources read for references; a resend gets the same answer."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    body = sample("bundle-transaction-mr-knee-left.json")
    request = json.loads(body)
    before = message_ids(daemon)
    reply = post(daemon.http_port, body)
    assert reply.status == 200, reply.body
    assert "location" not in reply.headers
    answer = reply.json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(request["entry"])
    for asked, got in zip(request["entry"], answer["entry"], strict=True):
        response = got["response"]
        if asked["resource"]["resourceType"] == "DiagnosticReport":
            assert response["status"] == "201 Created"
            assert response["location"].startswith("DiagnosticReport/")
            assert response["outcome"]["issue"][0]["diagnostics"].startswith("bucket ")
        else:
            assert response["status"] == "200 OK" and "location" not in response
    assert post(daemon.http_port, body).body == reply.body
    assert len(new_messages(daemon, before)) == 1
    location = next(e["response"]["location"] for e in answer["entry"] if "location" in e["response"])
    # The knee MR is released with nothing to correct: no Task (docs/monitoring.md, "FHIR Task worklist");
    # its findings are still found by the id in its location.
    tasks = call(daemon.http_port, "GET", "/fhir/Task?status=requested").json().get("entry", [])
    # (A Task of an HL7 message, another test's on the shared daemon, has a focus by identifier.)
    assert all(t["resource"]["focus"].get("reference") != location for t in tasks)
    issues = call(daemon.http_port, "GET", f"/fhir/DetectedIssue?implicated={location}").json()["entry"]
    assert {i["resource"]["implicated"][0]["reference"] for i in issues} == {location}


@pytest.mark.parametrize(
    ("change", "code", "expression"),
    [
        ({"method": "GET"}, "not-supported", "Bundle.entry[0].request.method"),
        ({"method": "DELETE"}, "not-supported", "Bundle.entry[0].request.method"),
        (None, "required", "Bundle.entry[0].request"),
    ],
)
def test_transaction_entries_must_be_creates_or_updates(
    change: dict[str, str] | None, code: str, expression: str, shared_daemon: RunningDaemon
) -> None:
    """A transaction entry without a request, or asking for a read or delete, refuses the Bundle with the entry's FHIRPath (nothing is silently skipped)."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    doc = json.loads(sample("bundle-transaction-mr-knee-left.json"))
    if change is None:
        del doc["entry"][0]["request"]
    else:
        doc["entry"][0]["request"].update(change)
    reply = post(daemon.http_port, json.dumps(doc).encode())
    assert reply.status in (400, 422), reply.body
    assert issue(reply) == (code, expression)


def test_duplicate_post_answers_as_the_first(shared_daemon: RunningDaemon) -> None:
    """The same DiagnosticReport POSTed twice gets the same status, Location and body; one message is stored. A new status is a new message."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    body = sample("ct-head-wo-overnight-telerad-prelim.json")
    before = message_ids(daemon)
    first = post(daemon.http_port, body)
    again = post(daemon.http_port, body)
    assert first.status == again.status == 201
    assert first.headers["location"] == again.headers["location"]
    assert first.body == again.body
    assert len(new_messages(daemon, before)) == 1
    final = body.replace(b'"status": "preliminary"', b'"status": "final"')
    assert final != body
    assert post(daemon.http_port, final).status == 201
    ours = {m["message_id"] for m in new_messages(daemon, before)}
    assert len(ours) == 2
    events = [line["event"] for line in daemon.log_lines() if line.get("control_id") in ours]
    assert events.count("message_processed") == 2
    assert events.count("message_duplicate") == 1


def test_created_report_survives_kill_9(daemon: RunningDaemon) -> None:
    """A 201 means the report is on disk: after SIGKILL and a restart it is stored, searchable, and a resend gets the first answer byte for byte."""
    assert daemon.http_port is not None
    body = (SAMPLES / "xr-chest-pneumothorax-no-communication.json").read_bytes()
    first = post(daemon.http_port, body)
    assert first.status == 201
    daemon.stop(signal.SIGKILL)
    daemon.start()
    _wait(lambda: _accepts(daemon.http_port or 0))
    assert [m["state"] for m in daemon.messages()] == ["processed"]
    again = post(daemon.http_port, body)
    assert (again.status, again.headers["location"], again.body) == (201, first.headers["location"], first.body)
    location = first.headers["location"].removeprefix("/fhir/")
    assert call(daemon.http_port, "GET", f"/fhir/DetectedIssue?implicated={location}").json()["total"] >= 1
    assert len(daemon.messages()) == 1


def test_refused_body_resent_unchanged_gets_same_answer(shared_daemon: RunningDaemon) -> None:
    """A 4xx body is stored rejected; an identical resend gets the same answer, a corrected one with the same id is processed."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    good = json.loads(sample("xr-chest-2v-normal.json"))
    before = message_ids(daemon)
    bad = dict(good, status="not-a-status")
    first = post(daemon.http_port, json.dumps(bad).encode())
    again = post(daemon.http_port, json.dumps(bad).encode())
    assert first.status == again.status and first.status in (400, 422)
    assert first.body == again.body
    assert post(daemon.http_port, json.dumps(good).encode()).status == 201
    states = sorted(m["state"] for m in new_messages(daemon, before))
    assert states == ["processed", "rejected"]


def test_media_type_and_resource_type_refusals(shared_daemon: RunningDaemon) -> None:
    """Wrong or missing Content-Type: 415; fhirVersion is honoured; a Bundle on /fhir/DiagnosticReport: 400; not JSON: 400 fatal, not stored."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    body = sample("xr-chest-2v-normal.json")
    port = daemon.http_port
    before = message_ids(daemon)
    assert call(port, "POST", "/fhir/DiagnosticReport", body, content_type="text/plain").status == 415
    assert call(port, "POST", "/fhir/DiagnosticReport", body, content_type=None).status == 415
    assert (
        call(port, "POST", "/fhir/DiagnosticReport", body, content_type="application/fhir+json; charset=latin-1").status
        == 415
    )
    assert (
        call(port, "POST", "/fhir/DiagnosticReport", body, content_type="application/fhir+json; fhirVersion=4.0").status
        == 201
    )
    bundle = sample("bundle-transaction-mr-knee-left.json")
    wrong = call(port, "POST", "/fhir/DiagnosticReport", bundle)
    assert (wrong.status, issue(wrong)) == (400, ("not-supported", "resourceType"))
    garbage = call(port, "POST", "/fhir", b"\x00\xffnot json")
    assert garbage.status == 400 and garbage.json()["issue"][0]["severity"] == "fatal"
    assert call(port, "GET", "/fhir/DiagnosticReport").status == 405
    assert call(port, "GET", "/nowhere").status == 404
    assert len(new_messages(daemon, before)) == 1


def test_bearer_tokens_and_permissions(authed: RunningDaemon) -> None:
    """With clients configured: no token or an unknown one is 401 (WWW-Authenticate), a client without the permission is 403."""
    assert authed.http_port is not None
    port = authed.http_port
    body = (SAMPLES / "xr-chest-2v-normal.json").read_bytes()
    missing = post(port, body)
    assert missing.status == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert issue(missing)[0] == "login"
    assert post(port, body, token="wrong-token-0123456789").status == 401
    forbidden = post(port, body, token=TOKENS["reader"])
    assert (forbidden.status, issue(forbidden)[0]) == (403, "forbidden")
    assert call(port, "GET", "/fhir/Task?status=requested", token=TOKENS["poster"]).status == 403
    assert call(port, "GET", "/fhir/Task?status=requested", token=TOKENS["reader"]).status == 200
    assert call(port, "GET", "/fhir/Task").status == 401
    assert call(port, "GET", "/healthz").status == 200  # open: codes and counts only


# ---------------------------------------------------------------- body cap


def _raw_request(port: int, head: bytes, body_bytes: int, chunk: int = 65536) -> bytes:
    """Send ``head`` then up to ``body_bytes`` zeros (stopping quietly if the server cuts in), then read the reply."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(head)
        sent = 0
        zeros = b"0" * chunk
        try:
            while sent < body_bytes:
                sock.sendall(zeros[: min(chunk, body_bytes - sent)])
                sent += chunk
        except OSError:
            pass
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
        return data
    finally:
        sock.close()


def test_ten_megabyte_body_is_refused_without_memory_growth(shared_daemon: RunningDaemon) -> None:
    """A 10 MB body (declared, then streamed in full; and chunked without a length) gets 413 and the daemon's RSS grows far less than 10 MB."""
    daemon = shared_daemon
    assert daemon.http_port is not None and daemon.proc is not None
    before_ids, logged_before = message_ids(daemon), len(daemon.log_lines())
    port = daemon.http_port
    ten = 10 * 1024 * 1024
    head = (
        f"POST /fhir/DiagnosticReport HTTP/1.1\r\nHost: x\r\nContent-Type: {FHIR}\r\nContent-Length: {ten}\r\n"
    ).encode()
    # Warm up (first requests build caches), then measure.
    call(port, "GET", "/healthz")
    before = rss_kb(daemon.proc.pid)
    # 1. Expect: 100-continue: answered at once, no 100 Continue, body never sent.
    reply = _raw_request(port, head + b"Expect: 100-continue\r\n\r\n", 0)
    assert reply.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in reply
    # 2. The whole body streamed anyway: read and dropped, the 413 still arrives.
    reply = _raw_request(port, head + b"\r\n", ten)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"4194304 bytes" in reply
    # 3. Chunked, no length: refused once the running size passes the limit.
    chunked = (f"POST /fhir HTTP/1.1\r\nHost: x\r\nContent-Type: {FHIR}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"0" * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 160 + b"0\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(chunked)
        try:
            sock.sendall(body)
        except OSError:
            pass
        reply = sock.recv(65536)
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 413 ")
    after = rss_kb(daemon.proc.pid)
    assert after - before < 4 * 1024, (before, after)
    assert call(port, "GET", "/healthz").status == 200
    assert new_messages(daemon, before_ids) == []
    refusals = [line for line in daemon.log_lines()[logged_before:] if line.get("reason") == "body_too_large"]
    assert len(refusals) == 3 and all(r["limit"] == 4194304 for r in refusals)


# --------------------------------------------------------- health, metrics


def test_healthz_and_metrics_after_traffic(daemon: RunningDaemon, oru: bytes) -> None:
    """/healthz is 200 JSON; /metrics counts HTTP and MLLP answers by code and feed, findings, routes, latency and outbox gauges."""
    assert daemon.http_port is not None
    port = daemon.http_port
    health = call(port, "GET", "/healthz")
    assert health.status == 200 and health.json()["status"] == "ok" and health.json()["store"] == "ok"
    assert post(port, (SAMPLES / "xr-chest-pneumothorax-no-communication.json").read_bytes()).status == 201
    assert post(port, b'{"resourceType": "DiagnosticReport"}').status == 400
    conn = MllpConnection(daemon.address)
    assert msa(conn.request(with_control_id(oru, "METRICS1")))[0] == "AA"
    conn.close()
    reply = call(port, "GET", "/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    assert 'overread_messages_answered_total{code="201",feed="default",transport="http"} 1.0' in text
    assert 'overread_messages_answered_total{code="400",feed="default",transport="http"} 1.0' in text
    assert 'code="AA"' in text and 'transport="mllp"' in text
    assert 'overread_findings_total{category="communication",severity="error"}' in text
    assert 'overread_routes_total{bucket="selective_overread"}' in text
    assert 'overread_processing_seconds_bucket{le="+Inf",transport="http"} 2.0' in text
    assert "overread_outbox_oldest_pending_age_seconds" in text and "overread_store_up 1.0" in text
    assert 'overread_http_requests_total{endpoint="healthz",status="200"}' in text


# ------------------------------------------------------------------ searches


def test_task_and_detected_issue_searches(shared_daemon: RunningDaemon) -> None:
    """After a POST, GET /fhir/Task?status=requested&owner=<pool> and /fhir/DetectedIssue?implicated=DiagnosticReport/<id> return searchset Bundles."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    port = daemon.http_port
    created = post(port, sample("xr-chest-pneumothorax-no-communication.json"))
    location = created.headers["location"]
    tasks = call(port, "GET", "/fhir/Task?status=requested&owner=critical_results&_count=1000").json()
    # Other tests' Tasks may be listed too (a shared daemon): the pool's, and this report's once.
    assert tasks["type"] == "searchset" and tasks["total"] == len(tasks["entry"]) >= 1
    ours = [
        e["resource"]
        for e in tasks["entry"]
        if e["resource"]["focus"].get("reference") == location.removeprefix("/fhir/")
    ]
    assert len(ours) == 1
    task = ours[0]
    assert all(e["resource"]["owner"] == task["owner"] for e in tasks["entry"])
    assert task["businessStatus"]["coding"][0]["code"] == "selective_overread"
    assert call(port, "GET", "/fhir/Task?status=requested&owner=nobody").json()["total"] == 0
    # Only completed Tasks (another test's preliminary, superseded by its final), never this one.
    completed = call(port, "GET", "/fhir/Task?status=completed&_count=1000").json().get("entry", [])
    assert all(e["resource"]["status"] == "completed" for e in completed)
    assert all(e["resource"]["focus"].get("reference") != task["focus"]["reference"] for e in completed)
    assert call(port, "GET", "/fhir/Task?_count=0").status == 400
    issues = call(port, "GET", f"/fhir/DetectedIssue?implicated={location.removeprefix('/fhir/')}").json()
    codes = [e["resource"]["code"]["coding"][0]["code"] for e in issues["entry"]]
    assert "communication.critical_not_communicated" in codes
    assert all(e["resource"]["implicated"][0]["reference"] == location.removeprefix("/fhir/") for e in issues["entry"])


def test_negotiation_and_r5_searches(shared_daemon: RunningDaemon) -> None:
    """A POST asking only for XML gets 406 and is not stored; Accept fhirVersion=5.0 gets Task and DetectedIssue searchsets that validate as FHIR R5; Prefer: handling=strict refuses an unknown parameter."""
    from listener.fhir.models import model_class

    daemon = shared_daemon
    assert daemon.http_port is not None
    port = daemon.http_port
    body = sample("xr-chest-pneumothorax-no-communication.json")
    before = message_ids(daemon)
    refused = call(port, "POST", "/fhir/DiagnosticReport", body, headers={"Accept": "application/fhir+xml"})
    assert (refused.status, issue(refused)[0]) == (406, "not-supported")
    assert new_messages(daemon, before) == []
    location = post(port, body).headers["location"].removeprefix("/fhir/")
    r5 = {"Accept": "application/fhir+json; fhirVersion=5.0"}
    for path in ("/fhir/Task?status=requested", f"/fhir/DetectedIssue?implicated={location}"):
        reply = call(port, "GET", path, headers=r5)
        assert reply.status == 200 and "fhirVersion=5.0" in reply.headers["content-type"]
        bundle = reply.json()
        assert bundle["total"] >= 1
        model_class("R5", "Bundle").model_validate(bundle)  # type: ignore[attr-defined]
    strict = call(port, "GET", "/fhir/Task?subject=x", headers={"Prefer": "handling=strict"})
    assert (strict.status, issue(strict)) == (400, ("not-supported", "subject"))
    assert call(port, "GET", "/fhir/Task?subject=x").status == 200


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_hl7_and_fhir_twins_get_same_findings_and_route(name: str, shared_daemon: RunningDaemon) -> None:
    """A sample sent as HL7 over MLLP and its FHIR twin over HTTP get the same findings and the same route (read back as Task and DetectedIssue)."""
    daemon = shared_daemon
    assert daemon.http_port is not None
    port = daemon.http_port
    # Both twins get one new accession and patient id: their Tasks are told from other tests' by it.
    tag = uuid.uuid4().hex[:8].upper()
    conn = MllpConnection(daemon.address)
    raw = unique((REPO / "samples" / "hl7" / TWINS.get(name, name.replace(".json", ".hl7"))).read_bytes(), tag)
    assert msa(conn.request(with_control_id(raw, f"TWIN-{tag}")))[0] in ("AA", "CA")  # some ask for enhanced mode
    conn.close()
    body = sample(name, tag)
    assert created(post(port, body)) == 1
    accessions = {f"{m.decode()}{tag}" for m in _ACCESSION.findall((SAMPLES / name).read_bytes())}
    assert len(accessions) == 1
    requested = call(port, "GET", "/fhir/Task?status=requested&_count=1000").json().get("entry", [])
    tasks = [e["resource"] for e in requested if e["resource"]["identifier"][0]["value"] in accessions]
    if name in RELEASED:  # released with no overread: no Task from either twin
        assert tasks == []
        return
    assert len(tasks) == 2

    def strip(task: dict[str, Any]) -> dict[str, Any]:
        keys = ("priority", "code", "owner", "businessStatus", "input", "identifier")
        return {k: task[k] for k in keys if k in task}

    assert strip(tasks[0]) == strip(tasks[1])
    accession = tasks[0]["identifier"][0]["value"]
    issues = call(port, "GET", f"/fhir/DetectedIssue?implicated:identifier={accession}").json()["entry"]
    by_transport: dict[bool, list[str]] = {True: [], False: []}
    for entry in issues:
        resource = entry["resource"]
        code = resource["code"]["coding"][0]["code"]
        # The anonymous HTTP client has no facility, so only the HL7 twin's site (MSH-4) is in sites.yaml.
        if not code.startswith("directory."):
            by_transport["reference" in resource["implicated"][0]].append(code)
    assert sorted(by_transport[True]) == sorted(by_transport[False])


# -------------------------------------------------------------------- canary


CANARY = "QZXCANARYQZX"


def _canary_report() -> dict[str, Any]:
    doc = json.loads((SAMPLES / "ct-head-critical-sdh-communicated.json").read_bytes())
    doc["id"] = "canary-1"
    for contained in doc.get("contained", ()):
        if contained.get("resourceType") == "Patient":
            contained["name"] = [{"family": CANARY, "given": [CANARY]}]
            contained["identifier"] = [{"system": "urn:mrn", "value": CANARY}]
    doc["conclusion"] = f"Impression mentions {CANARY}."
    return doc


def test_patient_canary_absent_from_logs_and_refusals(daemon: RunningDaemon) -> None:
    """A marker in Patient name/identifier/birthDate, in the report text and in an unknown key never reaches a log line or a 4xx body."""
    assert daemon.http_port is not None
    port = daemon.http_port
    good = _canary_report()
    assert post(port, json.dumps(good).encode()).status == 201
    bodies = []
    bad_date = json.loads(json.dumps(good))
    bad_date["id"] = "canary-2"
    bad_date["effectiveDateTime"] = f"2026-{CANARY}"
    for contained in bad_date.get("contained", ()):
        if contained.get("resourceType") == "Patient":
            contained["birthDate"] = CANARY
    bodies.append(bad_date)
    # Unknown elements: the value of one shaped like an element name, and a key shaped like data.
    # (A key shaped like an element name is named in the answer, by design of the decoder.)
    bodies.append(dict(good, id="canary-3", vendorNote=CANARY))
    bodies.append(dict(good, id="canary-5", **{f"{CANARY} 1970-01-01": 1}))
    bad_status = dict(good, id="canary-4", status=CANARY)
    bodies.append(bad_status)
    for n, doc in enumerate(bodies):
        # Its own identifiers: the same identifier and status would be a duplicate of the first.
        doc["identifier"] = [dict(i, value=f"{i.get('value', '')}-{n}") for i in good.get("identifier", ())]
        reply = post(port, json.dumps(doc).encode())
        assert 400 <= reply.status < 500, reply.status
        assert CANARY.encode() not in reply.body
        assert CANARY.lower().encode() not in reply.body.lower()
    not_json = call(port, "POST", "/fhir/DiagnosticReport", f'{{"resourceType": "{CANARY}"'.encode())
    assert not_json.status == 400 and CANARY.encode() not in not_json.body
    wrong_type = call(
        port, "POST", "/fhir/DiagnosticReport", json.dumps({"resourceType": "Patient", "name": CANARY}).encode()
    )
    assert wrong_type.status == 400 and CANARY.encode() not in wrong_type.body
    call(port, "GET", f"/fhir/DetectedIssue?implicated:identifier={CANARY}")
    daemon.stop()
    out = daemon.stdout() + daemon.stderr()
    assert CANARY not in out and CANARY.lower() not in out.lower()
    assert "message_processed" in out


# ------------------------------------------------------------------ outbound


class TestFhirServer:
    """A FHIR server stand-in (threads): records each POST and answers with the next scripted status."""

    __test__ = False  # not a pytest test class

    def __init__(self, port: int) -> None:
        self.port = port
        self.script: list[int] = []
        self.status = 200
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Listen on the port (again)."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    owner.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = owner.script.pop(0) if owner.script else owner.status
                answer = json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": []}).encode()
                self.send_response(status)
                self.send_header("Content-Type", FHIR)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bundles(self) -> list[dict[str, Any]]:
        """The Bundles received so far."""
        with self.lock:
            return [json.loads(body) for _, _, body in self.received]


def _outbound_daemon(tmp_path: Path, destinations: str) -> RunningDaemon:
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "destinations.yaml").write_text("version: 1\ndestinations:\n" + destinations, encoding="utf-8")
    (tmp_path / "overread.yaml").write_text("destinations: destinations.yaml\n", encoding="utf-8")
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(tmp_path / "overread.yaml")))
    daemon.start()
    return daemon


_SHORT_RETRY = (
    "    retry: {max_attempts: 5, backoff_base_seconds: 0.2, backoff_max_seconds: 1, ack_timeout_seconds: 2}\n"
)


def _outbox_rows(daemon: RunningDaemon) -> list[dict[str, Any]]:
    """``overread outbox list --format json``, through ``listener.cli.main`` in this process (:func:`run_cli`)."""
    return cli_json_lines("outbox", "list", "--format", "json", "--state-dir", str(daemon.state_dir))


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(name="fhir_server")
def fixture_fhir_server() -> Iterator[TestFhirServer]:
    """A test FHIR server on a free port, not yet listening."""
    server = TestFhirServer(free_port())
    yield server
    server.stop()


def test_fhir_post_queues_routing_message_to_the_ris(tmp_path: Path) -> None:
    """A DiagnosticReport accepted over HTTP gets its routing message queued with it and delivered to the RIS over MLLP, as an HL7 report does."""
    ris = TestRis(free_port())
    ris.start()
    daemon = _outbound_daemon(tmp_path, f"  ris:\n    endpoint: {ris.endpoint}\n" + _SHORT_RETRY)
    try:
        assert daemon.http_port is not None
        doc = json.loads((SAMPLES / "xr-chest-pneumothorax-no-communication.json").read_bytes())
        assert post(daemon.http_port, json.dumps(doc).encode()).status == 201
        _wait(lambda: len(ris.applied) == 1)
        rows = _outbox_rows(daemon)
        assert [r["state"] for r in rows] == ["delivered"]
        message = ris.received[0][1].decode("utf-8", "replace")
        assert message.startswith("MSH|") and "|ORM^O01" in message
    finally:
        daemon.stop()
        ris.stop()


def test_decisions_pushed_to_fhir_server_with_retry(tmp_path: Path, fhir_server: TestFhirServer) -> None:
    """A FHIR destination gets a transaction Bundle (Task + one DetectedIssue per finding, conditional creates); refused connections back off without charging the row, a 503 is retried and the same Bundle is delivered."""
    daemon = _outbound_daemon(
        tmp_path,
        f"  fhir-hub:\n    endpoint: tcp:host=127.0.0.1:port={fhir_server.port}\n    fhir: {{base: /fhir/r4}}\n"
        + _SHORT_RETRY,
    )
    try:
        assert daemon.http_port is not None
        port = daemon.http_port
        created = post(port, (SAMPLES / "xr-chest-pneumothorax-no-communication.json").read_bytes())
        assert created.status == 201
        # Nobody listens yet: connection attempts back off and the row keeps zero attempts.
        _wait(lambda: any(line.get("reason") == "connect_failed" for line in daemon.log_lines()))
        rows = _outbox_rows(daemon)
        assert [(r["destination"], r["state"], r["attempts"]) for r in rows] == [("fhir-hub", "pending", 0)]
        fhir_server.script = [503]
        fhir_server.start()
        _wait(lambda: _outbox_rows(daemon)[0]["state"] == "delivered")
        assert _outbox_rows(daemon)[0]["attempts"] == 2
        first, second = fhir_server.bundles()
        assert first == second  # the retry sends the same Bundle: same conditional-create keys
        path, headers, _ = fhir_server.received[0]
        assert path == "/fhir/r4" and headers["content-type"].startswith("application/fhir+json")
        assert first["resourceType"] == "Bundle" and first["type"] == "transaction"
        resources = [e["resource"] for e in first["entry"]]
        assert all(
            e["request"]["method"] == "POST" and e["request"]["ifNoneExist"].startswith("identifier=")
            for e in first["entry"]
        )
        task = resources[0]
        served = call(port, "GET", "/fhir/Task?status=requested").json()["entry"][0]["resource"]
        for key in ("status", "intent", "priority", "code", "owner", "businessStatus", "input"):
            assert task.get(key) == served.get(key), key
        pushed = sorted(r["code"]["coding"][0]["code"] for r in resources[1:])
        location = created.headers["location"].removeprefix("/fhir/")
        served_issues = call(port, "GET", f"/fhir/DetectedIssue?implicated={location}").json()["entry"]
        assert pushed == sorted(e["resource"]["code"]["coding"][0]["code"] for e in served_issues)
        assert "communication.critical_not_communicated" in pushed
        assert all(r["resourceType"] == "DetectedIssue" for r in resources[1:])
    finally:
        daemon.stop()


def test_fhir_server_rejection_is_dead_lettered(tmp_path: Path, fhir_server: TestFhirServer) -> None:
    """A 4xx answer (422) from the FHIR server dead-letters the row with the status as its error; the next decision is still sent."""
    fhir_server.status = 422
    fhir_server.start()
    daemon = _outbound_daemon(
        tmp_path,
        f"  fhir-hub:\n    endpoint: tcp:host=127.0.0.1:port={fhir_server.port}\n    fhir: {{version: R5}}\n"
        + _SHORT_RETRY,
    )
    try:
        assert daemon.http_port is not None
        assert post(daemon.http_port, (SAMPLES / "xr-chest-2v-normal.json").read_bytes()).status == 201
        _wait(lambda: _outbox_rows(daemon)[0]["state"] == "dead")
        row = _outbox_rows(daemon)[0]
        assert row["attempts"] == 1 and "422" in row["last_error"]
        assert fhir_server.received[0][0] == "/fhir"
        fhir_server.status = 201
        assert post(daemon.http_port, (SAMPLES / "ct-head-critical-sdh-communicated.json").read_bytes()).status == 201
        _wait(lambda: sorted(r["state"] for r in _outbox_rows(daemon)) == ["dead", "delivered"])
    finally:
        daemon.stop()


# ---------------------------------------------------------------------- TLS


def test_https_with_mutual_tls_refuses_clients_without_a_ca_certificate(tmp_path: Path, pki: Path) -> None:
    """On an ssl: HTTP endpoint a client with a certificate from tls_client_ca gets 201; no certificate or a self-signed one is refused at the handshake, and nothing is stored for it."""
    port = free_port()
    config = tmp_path / "overread.yaml"
    config.write_text(
        f"tls_certificate: {pki / 'server.crt'}\ntls_private_key: {pki / 'server.key'}\ntls_client_ca: {pki / 'ca.crt'}\n"
    )
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(
        tmp_path / "state",
        tmp_path / "logs",
        extra=("--config", str(config), "--http", f"ssl:{port}:interface=127.0.0.1"),
    )
    daemon.start()
    try:
        _wait(lambda: _accepts(port))
        body = (SAMPLES / "xr-chest-2v-normal.json").read_bytes()

        def https_post(who: str | None) -> int:
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=_tls_client(pki, who))
            conn.request(
                "POST", "/fhir/DiagnosticReport", body=body, headers={"Content-Type": FHIR, "Host": "localhost"}
            )
            try:
                return conn.getresponse().status
            finally:
                conn.close()

        for who in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                https_post(who)
        assert daemon.messages() == []
        assert https_post("ris-1") == 201
        assert len(daemon.messages()) == 1
        # Plain HTTP on the TLS port gets no FHIR answer.
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            call(port, "POST", "/fhir/DiagnosticReport", body)
    finally:
        assert daemon.stop() == 0


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _tls_client(pki: Path, who: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.check_hostname = False  # the server certificate names localhost; we connect to 127.0.0.1
    if who:
        context.load_cert_chain(str(pki / f"{who}.crt"), str(pki / f"{who}.key"))
    return context
