"""Hostile input thrown at the real daemon (issue 9): each attack that once froze it, or stored
one patient's report under another, has a regression test here.

Every message comes from ``samples/`` (we wrote them), changed by the test. See
docs/hardening.md for what each defence promises.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from listener.hl7v2.mllp import START_BLOCK, frame
from listener.server.journal import Journal
from listener.server.mllp import QUARANTINE_TEXT
from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    message_ids,
    msa,
    new_messages,
    with_control_id,
)

SAMPLES = REPO / "samples"
NORMAL = (SAMPLES / "hl7" / "xr-chest-2v-normal.hl7").read_bytes()
SDH = (SAMPLES / "hl7" / "ct-head-critical-sdh-communicated.hl7").read_bytes()
RUN_ON = "no pneumothorax left right "


def sample(control_id: str, raw: bytes = NORMAL) -> bytes:
    """A sample with its own MSH-10, CR segment separators."""
    return with_control_id(raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r", control_id)


def run_on(control_id: str, repeats: int) -> bytes:
    """The issue's repro: ``no pneumothorax left right`` x N after "The lungs are clear." (no sentence break)."""
    raw = sample(control_id)
    return raw.replace(b"The lungs are clear.", b"The lungs are clear. " + (RUN_ON * repeats).encode())


def tag() -> str:
    """A suffix for a test's control IDs on the shared daemon: what it sends is no other test's (not a duplicate)."""
    return uuid.uuid4().hex[:6].upper()


def accepted(ack: bytes, control_id: str) -> bool:
    """AA, or CA where the sample asks for enhanced-mode accept ACKs (MSH-15 AL)."""
    code, echoed = msa(ack)
    return code in ("AA", "CA") and echoed == control_id


def start(tmp_path: Path, config: str = "", name: str = "d", workers: str | None = "0") -> RunningDaemon:
    logs = tmp_path / f"logs-{name}"
    logs.mkdir()
    extra: tuple[str, ...] = ()
    if config:
        path = tmp_path / f"{name}.yaml"
        path.write_text(config)
        extra = ("--config", str(path))
    daemon = RunningDaemon(tmp_path / f"state-{name}", logs, extra=extra, workers=workers)
    daemon.start()
    return daemon


def http_get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes, float]:
    """Status, body and seconds taken of one GET."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def events(daemon: RunningDaemon, name: str) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines() if line.get("event") == name]


def wait_for(predicate, timeout: float = 30, step: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


# ---------------------------------------------------------------- 1. linear time and a budget


def test_slow_report_is_stored_unchecked_and_blocks_no_other_sender(tmp_path: Path) -> None:
    """A report that takes long to check is answered AA unchecked; meanwhile others get their ACKs and /healthz.

    Before: the pipeline ran on the reactor thread, and a 13.8 KB run-on
    report held every sender and /healthz for 45 s.
    """
    daemon = start(tmp_path, "pipeline_budget: 0.2\n")
    try:
        slow = MllpConnection(daemon.address, timeout=120)
        slow.send(run_on("SLOW-1", 60_000))  # 1.6 MB of run-on dictation
        time.sleep(0.1)
        other = MllpConnection(daemon.address, timeout=20)
        for i in range(3):
            started = time.monotonic()
            assert accepted(other.request(sample(f"FAST-{i}")), f"FAST-{i}")
            # Generous: the point is "not blocked behind the slow report" (minutes, if it were).
            assert time.monotonic() - started < 10
        assert daemon.http_port is not None
        status, _, took = http_get(daemon.http_port, "/healthz")
        assert status == 200 and took < 10
        assert accepted(slow.receive(), "SLOW-1")
        slow.close()
        other.close()
        assert wait_for(lambda: any(e.get("control_id") == "SLOW-1" for e in events(daemon, "message_processed")))
        line = next(e for e in events(daemon, "message_processed") if e.get("control_id") == "SLOW-1")
        assert line["qa"] == "timeout"
        assert line["bucket"] == "selective_overread"
        assert line["state"] == "processed"
        stored = {m["message_id"]: m for m in daemon.messages()}
        assert stored["SLOW-1"]["state"] == "processed"
    finally:
        assert daemon.stop() == 0


def test_slow_fhir_report_is_answered_unchecked(tmp_path: Path) -> None:
    """The same over FHIR: a long presentedForm is answered 201, routed as unchecked, and /healthz answers meanwhile."""
    daemon = start(tmp_path, "pipeline_budget: 0.2\n")
    try:
        doc = json.loads((SAMPLES / "fhir" / "xr-chest-2v-normal.json").read_text())
        text = "FINDINGS: The lungs are clear. " + RUN_ON * 40_000 + "\nIMPRESSION: No acute abnormality.\n"
        doc["presentedForm"] = [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}]
        doc["id"] = "slow-fhir-1"
        body = json.dumps(doc).encode()
        assert daemon.http_port is not None
        result: dict[str, object] = {}

        def post() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=120)  # type: ignore[arg-type]
            conn.request("POST", "/fhir/DiagnosticReport", body=body, headers={"Content-Type": "application/fhir+json"})
            response = conn.getresponse()
            result["status"], result["body"] = response.status, response.read()
            conn.close()

        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(0.2)
        status, _, took = http_get(daemon.http_port, "/healthz")
        assert status == 200 and took < 10
        poster.join(120)
        assert result["status"] == 201
        line = next(e for e in events(daemon, "message_processed") if e.get("status") == 201)
        assert line["bucket"] == "selective_overread"
    finally:
        assert daemon.stop() == 0


def test_sigterm_is_honoured_while_a_slow_report_runs(tmp_path: Path) -> None:
    """SIGTERM during a long check: the daemon exits 0 within its stop time (it once ignored SIGTERM for 15 min)."""
    daemon = start(tmp_path, "pipeline_budget: 30\n")
    conn = MllpConnection(daemon.address, timeout=60)
    conn.send(run_on("SLOW-TERM", 140_000))  # 3.8 MB
    time.sleep(0.5)
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=60) == 0
    assert time.monotonic() - started < 45
    conn.close()
    # Whatever was answered AA is stored; nothing half-written.
    for m in daemon.messages():
        assert m["state"] in ("processed", "rejected")


# ---------------------------------------------------------------- 2. receipt and quarantine


def _journal(daemon: RunningDaemon) -> int:
    """How many messages the daemon's journal holds entries for (read from its files)."""
    return Journal(daemon.state_dir / "journal").pending()


def test_message_that_kills_the_daemon_twice_is_quarantined_not_looped(tmp_path: Path) -> None:
    """kill -9 inside the pipeline, twice: the third start stores it quarantined and answers AE 207 for good."""
    daemon = start(tmp_path, "pipeline_budget: 600\n")
    poison = run_on("POISON-1", 140_000)
    try:
        for attempt in (1, 2):
            conn = MllpConnection(daemon.address, timeout=60)
            conn.send(poison)
            # The journal entry is written before the pipeline runs; wait for it, then kill.
            assert wait_for(lambda: bool(_journal(daemon)), timeout=30, step=0.005)
            conn.sock.setblocking(False)
            try:
                early = conn.sock.recv(100)
            except BlockingIOError:
                early = b""
            assert early == b"", "the poison message was processed before the kill: make it slower"
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(10)
            conn.close()
            daemon.start()
            if attempt == 1:
                assert wait_for(lambda: bool(events(daemon, "message_interrupted")))
                assert events(daemon, "message_interrupted")[-1]["count"] == 1
        # Third start: quarantined at start-up, before any resend.
        assert wait_for(lambda: bool(events(daemon, "message_quarantined")))
        assert not _journal(daemon)
        stored = {m["message_id"]: m for m in daemon.messages()}
        assert stored["POISON-1"]["state"] == "quarantined"
        # The sender's resend gets the stored AE 207 at once, unprocessed.
        conn = MllpConnection(daemon.address, timeout=20)
        ack = conn.request(poison)
        assert msa(ack) in (("AE", "POISON-1"), ("CE", "POISON-1"))
        assert b"|207" in ack and QUARANTINE_TEXT.encode() in ack
        # ...and the daemon is not looping: other messages flow.
        assert accepted(conn.request(sample("AFTER-1")), "AFTER-1")
        conn.close()
    finally:
        assert daemon.stop() == 0


# ---------------------------------------------------------------- 3. one frame, one message, one patient


@pytest.mark.parametrize("first,second", [(NORMAL, SDH), (SDH, NORMAL)], ids=["normal-then-sdh", "sdh-then-normal"])
def test_frame_restarted_mid_frame_never_stores_a_chimera(
    shared_daemon: RunningDaemon, first: bytes, second: bytes
) -> None:
    """0x0B + A[:400] + 0x0B + B + 0x1C 0x0D: the partial A is dropped, B is stored as itself, A's resend is processed."""
    daemon, t = shared_daemon, tag()
    id_a, id_b = f"CHIMERA-A-{t}", f"CHIMERA-B-{t}"
    logged_before = len(daemon.log_lines())
    a, b = sample(id_a, first), sample(id_b, second)
    conn = MllpConnection(daemon.address)
    conn.send_raw(START_BLOCK + a[:400] + frame(b))
    assert accepted(conn.receive(), id_b)
    assert accepted(conn.request(a), id_a)
    conn.close()

    def ours() -> list[dict[str, object]]:  # this test's lines: the daemon is shared
        return daemon.log_lines()[logged_before:]

    assert wait_for(lambda: sum(e.get("event") == "message_processed" for e in ours()) >= 2)
    processed = {e["control_id"]: e for e in ours() if e.get("event") == "message_processed"}
    assert set(processed) == {id_a, id_b}
    # Each stored under its own patient: the hashes differ and match a clean send of each.
    assert processed[id_a]["patient_h"] != processed[id_b]["patient_h"]
    restarted = [e for e in ours() if e.get("event") == "frame_rejected" and e.get("reason") == "restarted_mid_frame"]
    assert restarted and restarted[0]["bytes"] == 400


# ---------------------------------------------------------------- 4. every frame gets an answer


@pytest.mark.parametrize("head", [b"MSH\r", b"MSH\n", b"MSH\r\n", b"MSH", b"MSH|", b"MSH|^"])
def test_truncated_msh_is_answered_and_earlier_acks_come_first(shared_daemon: RunningDaemon, head: bytes) -> None:
    """A good frame, then ``MSH\\rPID|1`` in the same write: the good ACK, then a NACK; the connection lives on."""
    t = tag()
    conn = MllpConnection(shared_daemon.address)
    conn.send_raw(frame(sample(f"GOOD-1-{t}")) + START_BLOCK + head + b"PID|1\x1c\r")
    assert accepted(conn.receive(), f"GOOD-1-{t}")
    nack = conn.receive()
    assert msa(nack)[0] in ("AE", "AR", "CE", "CR")
    assert accepted(conn.request(sample(f"GOOD-2-{t}")), f"GOOD-2-{t}")
    conn.close()


# ---------------------------------------------------------------- 5. bounded everything


def test_overlong_header_keys_are_refused_and_bounded(shared_daemon: RunningDaemon) -> None:
    """MSH-10 of 1 MB (and MSH-3 of 10 KB): AE 102 naming the field, nothing stored, no log line over 4 KB."""
    daemon, t = shared_daemon, tag()
    before, logged_before = message_ids(daemon), len(daemon.stdout().splitlines())
    conn = MllpConnection(daemon.address, timeout=30)
    for i in range(5):
        ack = conn.request(sample(f"K{i}-{t}-" + "X" * 1_000_000))
        assert msa(ack)[0] in ("AE", "CE")
        assert b"MSH-10" in ack and b"|102" in ack
        assert len(ack) < 2000
    raw = sample(f"LONG-APP-{t}")
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields[2] = b"A" * 10_000
    ack = conn.request(b"|".join(fields) + b"\r" + b"\r".join(segments[1:]))
    assert msa(ack)[0] in ("AE", "CE") and b"MSH-3" in ack
    assert accepted(conn.request(sample(f"OK-1-{t}")), f"OK-1-{t}")
    conn.close()
    assert [m["message_id"] for m in new_messages(daemon, before)] == [f"OK-1-{t}"]
    logged = daemon.stdout().splitlines()[logged_before:]
    assert logged and max(len(line) for line in logged) < 4096


def _connect_from(source: str, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(address)
    return sock


def test_one_peers_many_dripping_connections_never_lock_out_another_peer(tmp_path: Path) -> None:
    """500 connections from 127.0.0.2, dripping a LF each: 127.0.0.1 still gets AA; the drippers are cut off."""
    daemon = start(tmp_path, "idle_timeout: 2\nmax_connections: 100\nmax_connections_per_peer: 20\n")
    attackers: list[socket.socket] = []
    try:
        for _ in range(500):
            try:
                attackers.append(_connect_from("127.0.0.2", daemon.address))
            except OSError:
                pass
        for _ in range(4):
            for sock in attackers:
                try:
                    sock.send(b"\n")
                except OSError:
                    pass
            good = MllpConnection(daemon.address, timeout=10)
            assert msa(good.request(sample(f"GOOD-{time.monotonic_ns()}")))[0] in ("AA", "CA")
            good.close()
            time.sleep(0.7)
        refused = [e for e in events(daemon, "connection_refused") if e.get("reason") == "max_connections_per_peer"]
        assert refused
        # Every accepted dripper was cut off by the idle timeout (drips are not activity).
        assert wait_for(lambda: len(events(daemon, "connection_timed_out")) >= 20, timeout=10)
    finally:
        for sock in attackers:
            sock.close()
        assert daemon.stop() == 0


# ---------------------------------------------------------------- 7. health that tells the truth


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk test needs a small filesystem")


def test_full_store_is_reported_unhealthy_until_space_returns(tmp_path: Path) -> None:
    """Disk full: saves answer AR 207, /healthz 503 with the reason, overread_store_up 0, failures counted;
    when space comes back, health comes back."""
    state = tmp_path / "small"
    _mount_tmpfs(state, "2m")
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "small.yaml"
    config.write_text("health_probe_interval: 0.5\n")
    daemon = RunningDaemon(state, logs, extra=("--config", str(config)))
    try:
        daemon.start()
        # Space to give back later (the store was created first).
        (state / "ballast").write_bytes(b"\0" * 600_000)
        assert daemon.http_port is not None
        assert http_get(daemon.http_port, "/healthz")[0] == 200
        conn = MllpConnection(daemon.address, timeout=30)
        codes = []
        filler = "The heart is normal. " * 1500  # 31 KB in short sentences: quick to check
        for i in range(200):
            raw = sample(f"FILL-{i}").replace(b"The lungs are clear.", b"The lungs are clear. " + filler.encode())
            code = msa(conn.request(raw))[0]
            codes.append(code)
            if code in ("AR", "CR"):
                break
        assert {"AR", "CR"} & set(codes), "the small filesystem never filled up"
        conn.close()
        status, body, _ = http_get(daemon.http_port, "/healthz")
        assert status == 503
        assert "SQLITE_FULL" in json.loads(body)["reason"] or "full" in json.loads(body)["reason"].lower()
        _, metrics, _ = http_get(daemon.http_port, "/metrics")
        text = metrics.decode()
        assert "overread_store_up 0.0" in text
        failures = [line for line in text.splitlines() if line.startswith("overread_store_save_failures_total ")]
        assert failures and float(failures[0].split()[1]) >= 1
        # Space comes back: the next probe and save succeed, and health says so.
        (state / "ballast").unlink()
        conn = MllpConnection(daemon.address, timeout=30)
        assert accepted(conn.request(sample("AFTER-FULL")), "AFTER-FULL")
        conn.close()
        assert wait_for(lambda: http_get(daemon.http_port, "/healthz")[0] == 200, timeout=10)  # type: ignore[arg-type]
    finally:
        try:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop(signal.SIGKILL)
        finally:
            subprocess.run(["umount", "-l", str(state)], capture_output=True)


def _orders(control_id: str, count: int) -> bytes:
    """The normal sample's patient with ``count`` orders (its OBR and one short report row each),
    accessions ORD1, ORD2..."""
    segments = sample(control_id).split(b"\r")
    patient = [s for s in segments if s[:3] in (b"MSH", b"PID", b"PV1")]
    obr = next(s for s in segments if s.startswith(b"OBR")).split(b"|")
    groups = []
    for n in range(1, count + 1):
        obr[1], obr[2], obr[3] = str(n).encode(), b"", f"ORD{n}".encode()
        groups += [b"|".join(obr), b"OBX|1|TX|18782-3^Findings^LN||No fracture.||||||F"]
    return b"\r".join(patient + groups)


def test_a_message_of_more_than_fifty_orders_is_refused_before_its_reports_are_decoded(
    shared_daemon: RunningDaemon,
) -> None:
    """An ORU of 20,000 OBR groups (2 MB) cost a minute of decoding and storing, during which
    another sender's message waited for its answer. Past 50 orders (the limit of DiagnosticReports in one
    FHIR Bundle) the message is refused AE 100 at the 51st OBR before any report is decoded, and
    stored rejected; 50 orders are still taken (docs/hl7-input.md)."""
    daemon, t = shared_daemon, tag()
    many, fifty = f"MANY-ORDERS-{t}", f"FIFTY-ORDERS-{t}"
    conn = MllpConnection(daemon.address, timeout=120)
    ack = conn.request(_orders(many, 5_000))
    assert msa(ack) in (("AE", many), ("CE", many)), ack[:300]
    assert b"OBR^51|100^" in ack
    assert accepted(conn.request(_orders(fifty, 50)), fifty)
    conn.close()
    stored = {m["message_id"]: m for m in daemon.messages()}
    assert stored[many]["state"] == "rejected" and stored[many]["report_count"] == 0
    assert stored[fifty]["state"] == "processed" and stored[fifty]["report_count"] == 50


def _on_a_terminal(*argv: str) -> bytes:
    """What ``overread ARGV`` writes to a terminal (a pseudo-terminal as its standard output)."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "listener", *argv], stdout=follower, stderr=subprocess.DEVNULL, cwd=REPO
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
        return b"".join(chunks)
    finally:
        os.close(leader)


def test_a_senders_escape_sequences_are_shown_not_run_on_the_operators_terminal(shared_daemon: RunningDaemon) -> None:
    """MSH-3 and MSH-10 holding terminal escape sequences (a colour, a window title, clear screen)
    were printed as they came by `overread show` and `overread messages` on the operator's
    terminal; they are now shown as \\xNN there, and a pipe still gets the stored bytes
    (docs/cli.md, "Output on a terminal")."""
    daemon = shared_daemon
    control_id = f"TTY-{tag()}\x1b]0;owned\x07\x1b[2J"
    raw = sample(control_id).replace(b"|HALCYON_RIS|", b"|RIS\x1b[31mRED|")
    conn = MllpConnection(daemon.address)
    assert msa(conn.request(raw))[0] in ("AA", "CA")
    conn.close()
    state = ("--state-dir", str(daemon.state_dir))
    shown = _on_a_terminal("show", "--no-raw", control_id, *state)
    listed = _on_a_terminal("messages", "--format", "text", *state)
    for output in (shown, listed):
        assert b"\x1b" not in output and b"\x07" not in output
        assert b"RIS\\x1b[31mRED" in output
    piped = subprocess.run(
        [sys.executable, "-m", "listener", "messages", "--format", "json", *state],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=True,
    ).stdout
    ours = [doc for doc in map(json.loads, piped.splitlines()) if doc["message_id"] == control_id]
    assert [doc["sender"]["application"] for doc in ours] == ["RIS\x1b[31mRED"]
