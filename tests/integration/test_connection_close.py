"""Every MLLP connection's end says who ended it and why (docs/operations.md, "A connection closed").

A real daemon on a loopback port; each connection is told apart in the log by its own port. A sender
that sees its connection closed must find, in the daemon's ``connection_closed`` line for its
address, whether the daemon closed it (and the limit or rule that made it) or the sender's side did.
"""

from __future__ import annotations

import signal
import socket
import struct
import time
from pathlib import Path

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa, with_control_id

NORMAL = (REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7").read_bytes()
#: Small enough for an oversized frame and a run of junk to stay cheap.
MAX_FRAME = 8192


def sample(control_id: str) -> bytes:
    return with_control_id(NORMAL.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r", control_id)


def peer_of(conn: MllpConnection) -> str:
    """How the daemon's log names ``conn`` (its local address), read while it is open."""
    host, port = conn.sock.getsockname()[:2]
    return f"{host}:{port}"


def closed_line(daemon: RunningDaemon, peer: str, timeout: float = 30) -> dict[str, object]:
    """The daemon's connection_closed line for the connection ``peer``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in daemon.log_lines():
            if line.get("event") == "connection_closed" and line.get("peer") == peer:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no connection_closed for {peer}")


def test_connection_closed_names_who_closed_it_and_why(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "d.yaml"
    config.write_text(f"max_frame_size: {MAX_FRAME}\nidle_timeout: 3\n")
    daemon = RunningDaemon(tmp_path / "state", logs, extra=("--config", str(config)))
    daemon.start()
    try:
        # The sender closes after its answer: the peer's doing.
        polite = MllpConnection(daemon.address)
        name = peer_of(polite)
        assert msa(polite.request(sample("CLOSE-PEER-1")))[0] in ("AA", "CA")
        polite.close()
        line = closed_line(daemon, name)
        assert (line["closed_by"], line["reason"]) == ("peer", "peer_closed")

        # The sender resets its connection (SO_LINGER 0): the peer's doing, not a clean close.
        rude = MllpConnection(daemon.address)
        name = peer_of(rude)
        assert msa(rude.request(sample("CLOSE-RESET-1")))[0] in ("AA", "CA")
        rude.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()
        line = closed_line(daemon, name)
        assert (line["closed_by"], line["reason"]) == ("peer", "connection_lost")

        # A frame over max_frame_size: answered AR, then the daemon closes.
        big = MllpConnection(daemon.address)
        name = peer_of(big)
        big.send(sample("CLOSE-BIG-1") + b"X" * (MAX_FRAME + 100))
        assert msa(big.receive())[0] in ("AR", "CR")
        assert big.receive_until_closed() == []
        big.close()
        line = closed_line(daemon, name)
        assert (line["closed_by"], line["reason"]) == ("daemon", "frame_too_large")

        # More bytes outside frames than one frame's limit: the daemon closes.
        junk = MllpConnection(daemon.address)
        name = peer_of(junk)
        junk.send_raw(b"x" * (MAX_FRAME + 100))
        assert junk.receive_until_closed() == []
        junk.close()
        line = closed_line(daemon, name)
        assert (line["closed_by"], line["reason"]) == ("daemon", "junk_outside_frames")

        # Silent past idle_timeout: the daemon closes.
        idle = MllpConnection(daemon.address)
        name = peer_of(idle)
        assert msa(idle.request(sample("CLOSE-IDLE-1")))[0] in ("AA", "CA")
        line = closed_line(daemon, name)
        idle.close()
        assert (line["closed_by"], line["reason"]) == ("daemon", "idle_timeout")
    finally:
        assert daemon.stop() == 0


def test_a_pipelined_flood_ends_only_by_the_senders_or_the_shutdown(tmp_path: Path) -> None:
    """8 connections, 16 frames each in flight, on 2 worker processes: every answer comes back in
    order on its own connection, each connection_closed says the sender closed it, and the one
    still open at SIGTERM says the daemon's shutdown closed it."""
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = RunningDaemon(tmp_path / "state", logs, workers="2")
    daemon.start()
    conns = [MllpConnection(daemon.address, timeout=120) for _ in range(8)]
    names = [peer_of(conn) for conn in conns]
    try:
        per, window = 40, 16
        sent = [0] * len(conns)
        got: list[list[str]] = [[] for _ in conns]
        while any(len(g) < per for g in got):
            for i, conn in enumerate(conns):
                while sent[i] < per and sent[i] - len(got[i]) < window:
                    conn.send(sample(f"FLOOD-{i}-{sent[i]}"))
                    sent[i] += 1
                if len(got[i]) < per:
                    got[i].append(msa(conn.receive())[1])
        for i, ids in enumerate(got):
            assert ids == [f"FLOOD-{i}-{n}" for n in range(per)]
        for conn in conns[1:]:
            conn.close()
        for name in names[1:]:
            line = closed_line(daemon, name)
            assert (line["closed_by"], line["reason"]) == ("peer", "peer_closed")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        line = closed_line(daemon, names[0], timeout=1)
        assert (line["closed_by"], line["reason"]) == ("daemon", "shutdown")
    finally:
        for conn in conns:
            conn.close()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
