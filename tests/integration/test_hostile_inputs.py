"""Inputs thrown at the real daemon that tests/integration/test_hardening.py and its neighbours did
not try (docs/hardening.md, "Thrown at the real daemon, 2026-12-07"): a message ended by 0x1C
without a start block, thousands of connections opened and closed, a FHIR POST declaring a
Content-Length of 31 digits with no body, and JSON nested 10,000 deep. Each is answered or dropped
as documented, and another sender is served right after it."""

from __future__ import annotations

import hashlib
import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    msa,
    post_report,
    start_configured,
    with_control_id,
)

NORMAL = (REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7").read_bytes()
TOKEN = "hostile-inputs-token-0123456789ab"
PER_PEER = 8


def sample(control_id: str) -> bytes:
    return with_control_id(NORMAL.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r", control_id)


def accepted(conn: MllpConnection, control_id: str) -> bool:
    return msa(conn.request(sample(control_id))) in (("AA", control_id), ("CA", control_id))


@pytest.fixture(name="site", scope="module")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config = f"http_clients:\n  ris: {{token_sha256: {digest}}}\nmax_connections_per_peer: {PER_PEER}\n"
    daemon, _ = start_configured(tmp_path_factory.mktemp("hostile"), config)
    try:
        yield daemon
    finally:
        assert daemon.stop() == 0


def test_a_message_ended_without_a_start_block_is_dropped_and_the_next_frame_answered(site: RunningDaemon) -> None:
    """MLLP needs 0x0B before a frame: a whole message sent with only its 0x1C 0x0D end is bytes
    outside any frame, discarded unanswered (counted in ``frame_discarded_bytes``, never stored);
    the frame that follows on the same connection is answered."""
    conn = MllpConnection(site.address, timeout=30)
    try:
        headless = sample("NO-START-1") + b"\x1c\r"
        conn.send_raw(headless)
        assert accepted(conn, "NO-START-2")
        assert conn.pending == []  # one answer only: the framed message's
    finally:
        conn.close()
    stored = {m["message_id"] for m in site.messages()}
    assert "NO-START-2" in stored and "NO-START-1" not in stored
    discarded = [line for line in site.log_lines() if line.get("event") == "frame_discarded_bytes"]
    assert discarded and discarded[-1]["bytes"] == len(headless)


def test_thousands_of_connections_opened_and_closed_leave_no_slot_taken(site: RunningDaemon) -> None:
    """2,000 connections from one peer, one after another, each closed at once (every third with a
    reset): each is let go, so afterwards the peer can still hold ``max_connections_per_peer``
    connections at once and each is answered, and the daemon holds no descriptor for the closed ones."""
    assert site.proc is not None
    fds = Path(f"/proc/{site.proc.pid}/fd")
    before = len(list(fds.iterdir()))
    for i in range(2000):
        sock = socket.create_connection(site.address, timeout=10)
        if i % 3 == 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    # Closes the daemon has not read yet still count against the peer: wait until every one was.
    conns: list[MllpConnection] = []
    try:
        for attempt in range(200):
            conn = MllpConnection(site.address, timeout=10)
            try:
                if accepted(conn, f"AFTER-CHURN-{attempt}"):
                    conns.append(conn)
                    break
            except ConnectionError:
                pass
            conn.close()
            threading.Event().wait(0.1)
        assert conns, "the peer was refused for good after its connections closed"
        for n in range(1, PER_PEER):
            conn = MllpConnection(site.address, timeout=10)
            conns.append(conn)
            assert accepted(conn, f"AT-ONCE-{n}")
    finally:
        for conn in conns:
            conn.close()
    # The descriptors of the 2,000 closed connections are gone (a few may be the last ones closing).
    assert len(list(fds.iterdir())) < before + PER_PEER + 10


def _post_raw(port: int, head: bytes) -> bytes:
    """Send ``head`` (a request without its body) and read the answer until the daemon closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer
    finally:
        sock.close()


def test_a_content_length_of_thirty_one_digits_is_refused_at_once(site: RunningDaemon) -> None:
    """A POST declaring a body of 10**30 bytes, and sending none: 413 on the headers alone (no wait
    for a body that never comes, no overflow), the connection closed, and the next sender served."""
    assert site.http_port is not None
    head = (
        "POST /fhir/DiagnosticReport HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {10**30}\r\n\r\n"
    ).encode()
    assert _post_raw(site.http_port, head).startswith(b"HTTP/1.1 413 ")
    conn = MllpConnection(site.address, timeout=30)
    try:
        assert accepted(conn, "AFTER-HUGE-LENGTH")
    finally:
        conn.close()


@pytest.mark.parametrize("opening", [b"[", b'{"a":'], ids=["arrays", "objects"])
def test_json_nested_ten_thousand_deep_is_a_400(site: RunningDaemon, opening: bytes) -> None:
    """10,000 levels (past the JSON parser's own recursion limit): 400, never a 500,
    no internal error logged, and /healthz still answers."""
    assert site.http_port is not None
    closing = b"]" if opening == b"[" else b"}"
    body = opening * 10_000 + (b"" if opening == b"[" else b"1") + closing * 10_000
    assert post_report(site, body, TOKEN) == (400, "")
    conn = http.client.HTTPConnection("127.0.0.1", site.http_port, timeout=30)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    errors = [
        line
        for line in site.log_lines()
        if line.get("reason") == "internal_error" or line.get("error_type") == "RecursionError"
    ]
    assert not errors
