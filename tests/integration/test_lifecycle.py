"""Daemon lifecycle: READY=1 to NOTIFY_SOCKET, SIGHUP reload (good and bad), config errors."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, free_port, msa, with_control_id


def test_ready_is_sent_to_notify_socket(tmp_path: Path) -> None:
    """With NOTIFY_SOCKET set, the daemon sends READY=1 once it listens, STOPPING=1 on SIGTERM."""
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(20)
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "listener", "serve", "--log-format", "json", "--mllp",
         f"tcp:{port}:interface=127.0.0.1", "--http", "off", "--state-dir", str(tmp_path / "state")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        datagram = listener.recv(4096)
        assert datagram.split(b"\n")[0] == b"READY=1"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        proc.send_signal(signal.SIGTERM)
        assert listener.recv(4096).startswith(b"STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()


def _wait_for_event(daemon: RunningDaemon, event: str, timeout: float = 60.0) -> None:
    """Wait until the daemon has logged ``event`` (a reload loads every policy file: seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.get("event") == event for line in daemon.log_lines()):
            return
        time.sleep(0.1)
    raise AssertionError(f"the daemon did not log {event} within {timeout:.0f} s")


def test_sighup_reload_keeps_old_pipeline_on_bad_file(tmp_path: Path, oru: bytes) -> None:
    """SIGHUP with a broken mapping logs config_invalid and keeps serving; fixing it reloads."""
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    config = tmp_path / "overread.yaml"
    config.write_text(f"mappings: {mappings}\n")
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(config)))
    daemon.start()
    try:
        good = (mappings / "default.yaml").read_text()
        (mappings / "default.yaml").write_text(good + "\nbogus_key: 1\n")
        daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        _wait_for_event(daemon, "config_invalid")
        conn = MllpConnection(daemon.address)
        assert msa(conn.request(with_control_id(oru, "HUP1")))[0] == "AA"
        (mappings / "default.yaml").write_text(good)
        daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        _wait_for_event(daemon, "policy_reloaded")
        assert msa(conn.request(with_control_id(oru, "HUP2")))[0] == "AA"
        conn.close()
    finally:
        assert daemon.stop() == 0
    events = [line for line in daemon.log_lines() if line["event"] in ("config_invalid", "policy_reloaded")]
    assert [e["event"] for e in events] == ["config_invalid", "policy_reloaded"]
    assert str(events[0]["path"]).endswith("default.yaml") and events[0]["line"]


def test_bad_config_file_fails_start_with_file_and_line(tmp_path: Path) -> None:
    """An invalid daemon config stops `overread serve` with exit 2 and names file:line."""
    config = tmp_path / "overread.yaml"
    config.write_text("mllp: tcp:2575\nmax_connections: zero\n")
    result = subprocess.run([sys.executable, "-m", "listener", "serve", "--config", str(config)],
                            capture_output=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert f"{config}:2".encode() in result.stderr
