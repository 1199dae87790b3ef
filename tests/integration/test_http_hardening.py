"""The real daemon's HTTP listener against hostile requests: reason phrases, duplicate
credentials, deep nesting, control characters, and connection caps per peer."""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import REPO, RunningDaemon, started

TOKEN = "hardening-token-0123456789abcdef"
SAMPLE = json.loads((REPO / "samples" / "fhir" / "xr-chest-2v-normal.json").read_bytes())
PER_PEER = 4
TOTAL = 12
MAX_BODY = 65536


@pytest.fixture(name="site", scope="module")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One daemon with a client token, a small body cap and small connection caps."""
    root = tmp_path_factory.mktemp("hardening")
    (root / "logs").mkdir()
    (root / "overread.yaml").write_text(
        f"http_clients:\n  ris: {{token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}}}\n"
        f"http_max_body_size: {MAX_BODY}\nhttp_max_connections: {TOTAL}\n"
        f"http_max_connections_per_peer: {PER_PEER}\n"
    )
    with started(
        RunningDaemon(root / "state", root / "logs", extra=("--config", str(root / "overread.yaml")))
    ) as daemon:
        yield daemon


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: list[tuple[str, str]] | None = None
) -> tuple[int, str, bytes]:
    """(status, reason phrase, body) of one request on a fresh connection; headers may repeat."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.reason, response.read()
    finally:
        conn.close()


def post(
    port: int, doc: Any, *, auth: tuple[str, ...] = (f"Bearer {TOKEN}",), content_type: str = "application/fhir+json"
) -> tuple[int, str, bytes]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = [("Content-Type", content_type), *(("Authorization", a) for a in auth)]
    return request(port, "POST", "/fhir/DiagnosticReport", body, headers)


def first_issue(body: bytes) -> tuple[str, str]:
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    return issue["code"], (issue.get("expression") or [""])[0]


def variant(identifier: str) -> dict[str, Any]:
    """The normal chest X-ray with its own id and accession (so it is not a duplicate)."""
    doc = copy.deepcopy(SAMPLE)
    doc["id"] = identifier
    doc["identifier"] = [{"system": "urn:test:accession", "value": identifier}]
    return doc


def test_every_status_carries_its_reason_phrase(site: RunningDaemon) -> None:
    """422, 415, 413, 401 and 201 go out with RFC 9110 reason phrases (422 was "Unknown Status")."""
    port = site.http_port
    assert port is not None
    lab = variant("reason-lab")
    lab["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}]
    assert post(port, lab)[:2] == (422, "Unprocessable Content")
    assert post(port, variant("reason-415"), content_type="text/plain")[:2] == (415, "Unsupported Media Type")
    assert post(port, b"{" + b" " * MAX_BODY + b"}")[:2] == (413, "Content Too Large")
    assert post(port, variant("reason-401"), auth=("Bearer wrong-token-0123456789",))[:2] == (401, "Unauthorized")
    assert post(port, variant("reason-201"))[:2] == (201, "Created")
    assert request(port, "GET", "/healthz")[:2] == (200, "OK")


@pytest.mark.parametrize("order", ["wrong_first", "right_first"])
def test_two_authorization_headers_are_refused(site: RunningDaemon, order: str) -> None:
    """Two Authorization headers (one of them valid) get 400 and an OperationOutcome, and
    nothing is stored: getHeader() alone would take the last one and authenticate it."""
    port = site.http_port
    assert port is not None
    pair = ("Bearer wrong-token-0123456789", f"Bearer {TOKEN}")
    auth = pair if order == "wrong_first" else pair[::-1]
    identifier = f"two-auth-{order}"
    status, reason, body = post(port, variant(identifier), auth=auth)
    assert (status, reason) == (400, "Bad Request")
    assert first_issue(body)[0] == "structure"
    assert TOKEN.encode() not in body
    search = [("Authorization", a) for a in auth]
    assert request(port, "GET", "/fhir/Task?status=requested", headers=search)[0] == 400
    assert not [m for m in site.messages() if identifier in json.dumps(m)]


def _nested_extension(depth: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://example.org/e", "valueString": "leaf"}
    for _ in range(depth):
        ext = {"url": "http://example.org/e", "extension": [ext]}
    return ext


@pytest.mark.parametrize("kind", ["extension", "array", "contained"])
def test_deep_nesting_is_a_400_not_a_500(site: RunningDaemon, kind: str) -> None:
    """Nesting 200 deep (extensions, bare arrays, a contained resource's extensions) is refused
    400 `structure` with a FHIRPath before validation, never a RecursionError (500)."""
    port = site.http_port
    assert port is not None
    doc = variant(f"deep-{kind}")
    if kind == "extension":
        doc["extension"] = [_nested_extension(200)]
        prefix = "DiagnosticReport.extension[0].extension[0]"
    elif kind == "array":
        nested: Any = "x"
        for _ in range(400):
            nested = [nested]
        doc["extension"] = [{"url": "http://example.org/e", "valueString": nested}]
        prefix = "DiagnosticReport.extension[0].valueString[0][0]"
    else:
        doc["contained"][0]["extension"] = [_nested_extension(200)]
        prefix = "DiagnosticReport.contained[0].extension[0]"
    status, reason, body = post(port, doc)
    assert (status, reason) == (400, "Bad Request"), body[:300]
    code, where = first_issue(body)
    assert code == "structure" and where.startswith(prefix)
    errors = [
        line
        for line in site.log_lines()
        if line.get("reason") == "internal_error" or line.get("error_type") == "RecursionError"
    ]
    assert not errors


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x1b"])
def test_control_character_in_a_string_is_refused_with_its_fhirpath(site: RunningDaemon, char: str) -> None:
    """NUL and other C0 controls (not tab/CR/LF) in a FHIR string are a 400 `value` naming the
    FHIRPath of the field, and the value is not echoed."""
    port = site.http_port
    assert port is not None
    doc = variant(f"ctl-{ord(char)}")
    doc["identifier"][0]["value"] = f"ACC{char}MARKER77"
    status, _, body = post(port, doc)
    assert status == 400
    assert first_issue(body) == ("value", "DiagnosticReport.identifier[0].value")
    assert b"MARKER77" not in body
    assert "MARKER77" not in site.stdout()


def test_tab_cr_lf_are_still_accepted(site: RunningDaemon) -> None:
    """FHIR strings allow tab, CR and LF: a report whose text has them is still created."""
    port = site.http_port
    assert port is not None
    doc = variant("ctl-allowed")
    doc["code"]["text"] = "XR chest\t2 views\r\n"
    assert post(port, doc)[0] == 201


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _get_healthz(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_one_peers_idle_connections_do_not_lock_out_another_peer(site: RunningDaemon) -> None:
    """Peer 127.0.0.1 holds many idle connections: past its cap it gets 503 and a close, while
    peer 127.0.0.2 still gets /healthz 200; once the idle ones close, the first peer is served again."""
    port = site.http_port
    assert port is not None
    idle = [_connect(port, "127.0.0.1") for _ in range(PER_PEER)]
    try:
        time.sleep(0.3)  # let the daemon accept them all
        extra = [_connect(port, "127.0.0.1") for _ in range(PER_PEER * 3)]
        for sock in extra:
            answer = _get_healthz(sock)
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer[:80]
            assert b"retry-after: 5" in answer.lower()
            sock.close()
        other = _connect(port, "127.0.0.2")
        answer = _get_healthz(other)
        other.close()
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:80]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the daemon sees the closes a moment later
        sock = _connect(port, "127.0.0.1")
        answer = _get_healthz(sock)
        sock.close()
        if answer.startswith(b"HTTP/1.1 200"):
            break
        assert time.monotonic() < deadline, "the first peer's slots were not released"
        time.sleep(0.1)
    refused = [line for line in site.log_lines() if line["event"] == "connection_refused"]
    assert refused and refused[0]["reason"] == "max_connections_per_peer" and refused[0]["limit"] == PER_PEER
    # Rate-limited: not one line per refused connection.
    assert len(refused) < PER_PEER * 3


def test_a_number_of_too_many_digits_is_a_400_not_a_500(site: RunningDaemon) -> None:
    """An integer longer than Python's int() reads (4300 digits) is refused 400 `structure`
    naming the cause, not answered 500 (which tells the sender to resend for ever); nothing is
    stored and no internal error is logged (docs/http-api.md)."""
    port = site.http_port
    assert port is not None
    identifier = "many-digits"
    body = json.dumps(variant(identifier)).encode()
    body = body[:-1] + b', "extension": [{"url": "http://example.org/n", "valueInteger": ' + b"7" * 5000 + b"}]}"
    status, reason, answer = post(port, body)
    assert (status, reason) == (400, "Bad Request"), answer[:300]
    outcome = json.loads(answer)
    assert outcome["issue"][0]["code"] == "structure"
    assert "digits" in outcome["issue"][0]["diagnostics"]
    assert not [m for m in site.messages() if identifier in json.dumps(m)]
    assert not [line for line in site.log_lines() if line.get("status") == 500]
    assert post(port, variant("after-many-digits"))[0] == 201


def _dripped_until_closed(sock: socket.socket, drips: list[bytes], pause: float) -> bool:
    """Send ``drips`` one by one, ``pause`` seconds apart; True when the daemon closed the
    connection before the last one went out."""
    sock.settimeout(pause)
    for drip in drips:
        try:
            sock.sendall(drip)
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


@pytest.fixture(name="impatient", scope="module")
def fixture_impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One daemon with ``idle_timeout: 1.5``, for the dripping tests (neither changes its state)."""
    root = tmp_path_factory.mktemp("impatient")
    (root / "logs").mkdir()
    (root / "overread.yaml").write_text("idle_timeout: 1.5\n")
    with started(
        RunningDaemon(root / "state", root / "logs", extra=("--config", str(root / "overread.yaml")))
    ) as daemon:
        yield daemon


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_request_dripped_byte_by_byte_is_closed_after_the_idle_timeout(impatient: RunningDaemon, where: str) -> None:
    """A slowloris client that sends one more header line (or one more body byte) every 0.3 s
    never completes a request: the daemon closes it `idle_timeout` after the connection opened,
    as it does an MLLP sender's drips (docs/configuration.md, idle_timeout), instead of counting
    each drip as activity and keeping the slot for ever. A complete request on another
    connection is still answered."""
    port = impatient.http_port
    assert port is not None
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        head = b"POST /fhir/DiagnosticReport HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
        if where == "headers":
            sock.sendall(head)
            drips = [b"X-Drip-%d: x\r\n" % n for n in range(60)]
        else:
            sock.sendall(head + b"Content-Length: 1000\r\n\r\n")
            drips = [b" "] * 60
        # 60 drips 0.3 s apart: 18 s, twelve times the idle timeout.
        assert _dripped_until_closed(sock, drips, 0.3)
    finally:
        sock.close()
    assert request(port, "GET", "/healthz")[0] == 200
