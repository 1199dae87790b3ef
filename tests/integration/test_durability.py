"""kill -9 during a flood loses nothing that was ACKed; patient data never leaks."""

from __future__ import annotations

import random
import signal
import socket
import threading
import time
from pathlib import Path

from tests.integration.conftest import MllpConnection, RunningDaemon, msa, with_control_id

CONNECTIONS = 4
PER_CONNECTION = 500
WINDOW = 16


def _flood(address: tuple[str, int], oru: bytes, conn_no: int, acked: list[str], stop: threading.Event) -> None:
    try:
        conn = MllpConnection(address, timeout=15)
    except OSError:
        return
    sent = 0
    received = 0
    try:
        while received < PER_CONNECTION:
            while sent < PER_CONNECTION and sent - received < WINDOW:
                conn.send(with_control_id(oru, f"K{conn_no}-{sent}"))
                sent += 1
            code, control = msa(conn.receive())
            received += 1
            if code in ("AA", "CA"):
                acked.append(control)
    except (OSError, ConnectionError):
        pass
    finally:
        conn.close()


def test_kill_9_during_flood_loses_no_acked_message(tmp_path: Path, oru: bytes) -> None:
    """4 connections send 2,000 messages; SIGKILL at a random moment; after a restart
    every control id that got AA is listed by `overread messages`, and none twice."""
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs")
    daemon.start()
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_flood, args=(daemon.address, oru, n, acked, stop), daemon=True)
        for n in range(CONNECTIONS)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    # Kill once some ACKs went out, at a random point of the flood.
    target = random.randint(50, CONNECTIONS * PER_CONNECTION - 200)
    while len(acked) < target and any(t.is_alive() for t in threads) and time.monotonic() - started < 60:
        time.sleep(0.001)
    daemon.stop(signal.SIGKILL)
    for t in threads:
        t.join(timeout=30)
    acked_now = list(acked)
    assert acked_now, "no message was acknowledged before the kill"
    daemon.start()
    try:
        listed = [m["message_id"] for m in daemon.messages()]
    finally:
        assert daemon.stop() == 0
    assert len(listed) == len(set(listed)), "a message was stored twice"
    missing = set(acked_now) - set(listed)
    assert not missing, f"{len(missing)} ACKed messages lost, e.g. {sorted(missing)[:3]}"


MARKER = "QZXCANARY"


def _canary(oru: bytes, control_id: str, bad_date: bool) -> bytes:
    segments = oru.split(b"\r")
    out = []
    for seg in segments:
        fields = seg.split(b"|")
        if seg.startswith(b"PID"):
            fields[3] = f"{MARKER}MRN^^^ABC^MR".encode()
            fields[5] = f"{MARKER}NAME^{MARKER}GIVEN".encode()
            fields[7] = (f"{MARKER}19" if bad_date else "19470205").encode()
            fields[11] = f"{MARKER} STREET^^CITY".encode()
        elif seg.startswith(b"OBX") and len(fields) > 5:
            fields[5] = f"Report text {MARKER} findings".encode()
        out.append(b"|".join(fields))
    return with_control_id(b"\r".join(out), control_id)


def test_canary_marker_never_reaches_logs_or_nacks(daemon: RunningDaemon, oru: bytes) -> None:
    """Markers in PID-3/5/7/11 and OBX-5 appear in no log line (stdout, stderr) and no ACK/NACK."""
    conn = MllpConnection(daemon.address)
    answers = [
        conn.request(_canary(oru, "CAN1", bad_date=False)),
        conn.request(_canary(oru, "CAN2", bad_date=True)),
        conn.request(_canary(oru, "CAN1", bad_date=False)),  # duplicate
        conn.request(MARKER.encode() + b"|garbage\r"),  # no MSH: garbage NACK
    ]
    conn.close()
    for ack in answers:
        assert MARKER.encode() not in ack
    assert msa(answers[0])[0] == "AA"
    time.sleep(0.3)
    daemon.stop()
    assert MARKER not in daemon.stdout()
    assert MARKER not in daemon.stderr()
    assert any(line["event"] == "message_processed" for line in daemon.log_lines())


def test_max_connections_refuses_extra_peers(tmp_path: Path, oru: bytes) -> None:
    """Beyond max_connections a new connection is closed at once; existing ones keep working."""
    (tmp_path / "logs").mkdir()
    config = tmp_path / "overread.yaml"
    config.write_text("max_connections: 2\nidle_timeout: 1.5\n")
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(config)))
    daemon.start()
    try:
        # start() itself opened and closed one probe connection; let it be counted out.
        time.sleep(0.2)
        a = MllpConnection(daemon.address)
        b = MllpConnection(daemon.address)
        time.sleep(0.2)
        c = socket.create_connection(daemon.address, timeout=5)
        assert c.recv(10) == b""  # closed by the daemon
        c.close()
        assert msa(a.request(with_control_id(oru, "MC1")))[0] == "AA"
        # Idle connections are timed out after idle_timeout.
        time.sleep(2.5)
        b.sock.settimeout(5)
        try:
            assert b.sock.recv(10) == b""
        except ConnectionResetError:
            pass  # aborted: a reset is as good as a close
        a.close()
        b.close()
    finally:
        assert daemon.stop() == 0


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_and_slow_drip_are_timed_out(tmp_path: Path, oru: bytes) -> None:
    """200 idle connections and a sender dripping one frame byte by byte are closed after
    idle_timeout, while a normal sender keeps getting AA throughout."""
    (tmp_path / "logs").mkdir()
    config = tmp_path / "overread.yaml"
    config.write_text("max_connections: 300\nidle_timeout: 1.5\n")
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(config)))
    daemon.start()
    try:
        idle = [socket.create_connection(daemon.address, timeout=5) for _ in range(200)]
        drip = socket.create_connection(daemon.address, timeout=5)
        payload = b"\x0b" + with_control_id(oru, "DRIP1")
        normal = MllpConnection(daemon.address)
        started = time.monotonic()
        i = 0
        drip_closed = False
        while time.monotonic() - started < 3.0:
            try:
                drip.sendall(payload[i : i + 1])
            except OSError:
                drip_closed = True
                break
            i += 1
            if i % 10 == 0:
                assert msa(normal.request(with_control_id(oru, f"NORMAL{i}")))[0] == "AA"
            time.sleep(0.02)
        assert drip_closed or _closed(drip)
        assert all(_closed(s) for s in idle)
        for s in idle:
            s.close()
        drip.close()
        normal.close()
    finally:
        assert daemon.stop() == 0
    assert "DRIP1" not in {m["message_id"] for m in daemon.messages()}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set size
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_50_mb_frame_is_refused_without_memory_growth(daemon: RunningDaemon, oru: bytes) -> None:
    """A 50 MB frame gets AR naming the 4 MiB limit and a close; the daemon's peak RSS grows
    by far less than 50 MB, and other senders are still served."""
    assert daemon.proc is not None
    warm = MllpConnection(daemon.address)
    assert msa(warm.request(with_control_id(oru, "WARM")))[0] == "AA"
    warm.close()
    before = _rss_kib(daemon.proc.pid)
    sock = socket.create_connection(daemon.address, timeout=20)
    received = bytearray()

    def read() -> None:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                received.extend(data)
        except OSError:
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    chunk = b"OBX|1|TX|||" + b"x" * (1024 * 1024 - 12) + b"\r"
    try:
        sock.sendall(b"\x0b" + with_control_id(oru, "HUGE"))
        for _ in range(50):
            sock.sendall(chunk)
        sock.sendall(b"\x1c\r")
    except OSError:
        pass  # closed by the daemon: expected
    reader.join(timeout=20)
    sock.close()
    after = _rss_kib(daemon.proc.pid)
    assert received, "no answer to the oversized frame"
    code, control = msa(bytes(received[1:-2]))
    assert (code, control) == ("AR", "HUGE")
    assert b"4194304" in received
    assert after - before < 20 * 1024, f"peak RSS grew by {after - before} KiB"
    other = MllpConnection(daemon.address)
    assert msa(other.request(with_control_id(oru, "AFTERHUGE")))[0] == "AA"
    other.close()
