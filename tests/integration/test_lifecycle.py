"""Daemon lifecycle: READY/WATCHDOG/RELOADING/STOPPING to NOTIFY_SOCKET, SIGTERM mid-burst, SIGHUP reload (good and bad), config errors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    REPO,
    START_TIMEOUT,
    MllpConnection,
    RunningDaemon,
    default_workers,
    free_port,
    msa,
    running,
    with_control_id,
)


def _next_state(listener: socket.socket, skip: bytes = b"WATCHDOG=1") -> bytes:
    """The next datagram that is not a watchdog ping."""
    while True:
        datagram = listener.recv(4096)
        if datagram != skip:
            return datagram


def test_ready_watchdog_reload_and_stopping_reach_notify_socket(tmp_path: Path) -> None:
    """With NOTIFY_SOCKET and WATCHDOG_USEC set (as systemd does for Type=notify and
    WatchdogSec=), the daemon sends READY=1 once it listens, WATCHDOG=1 pings, RELOADING=1 then
    READY=1 around a SIGHUP reload, and STOPPING=1 on SIGTERM, then exits 0."""
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(max(30, START_TIMEOUT))  # READY=1 comes once the daemon listens
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "listener",
            "serve",
            "--log-format",
            "json",
            "--mllp",
            f"tcp:{port}:interface=127.0.0.1",
            "--http",
            "off",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        datagram = _next_state(listener)
        assert datagram.split(b"\n")[0] == b"READY=1"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert listener.recv(4096) == b"WATCHDOG=1"  # the first ping follows READY at once
        proc.send_signal(signal.SIGHUP)
        assert _next_state(listener).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        reloaded = _next_state(listener)
        assert reloaded.startswith(b"READY=1\nSTATUS=") and b"reloaded" in reloaded
        proc.send_signal(signal.SIGTERM)
        assert _next_state(listener).startswith(b"STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()


def test_sigterm_during_a_burst_answers_what_it_took_and_exits_zero(tmp_path: Path, oru: bytes) -> None:
    """SIGTERM right after a burst of pipelined frames: the daemon answers the frames it had
    taken (each ACKed one is stored), sends nothing it did not store, refuses new
    connections once stopped, logs the connection closed by its shutdown, and exits 0."""
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--http", "off"), workers=None)
    daemon.start()
    workers = default_workers(daemon)
    conn = MllpConnection(daemon.address, timeout=30)
    host, port = conn.sock.getsockname()[:2]
    ids = [f"BURST{i:03d}" for i in range(300)]
    conn.send_raw(b"".join(b"\x0b" + with_control_id(oru, cid) + b"\x1c\r" for cid in ids))
    first = msa(conn.receive())  # the daemon is busy with the burst
    daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    answered = [first, *(msa(ack) for ack in conn.receive_until_closed())]
    conn.close()
    # The SIGTERM above is the only one: the daemon closes the connection while it exits, and
    # a second SIGTERM sent now could land after the interpreter has put back the default handler.
    assert daemon.wait() == 0
    assert not [pid for pid in workers if running(pid)], "a worker process outlived the daemon's exit"
    assert all(code == "AA" for code, _ in answered)
    acked = [cid for _, cid in answered]
    assert acked == ids[: len(acked)], "answers left in arrival order, with no gap"
    stored = {m["message_id"] for m in daemon.messages()}
    assert set(acked) <= stored
    try:
        socket.create_connection(daemon.address, timeout=2).close()
        refused = False
    except OSError:
        refused = True
    assert refused
    events = [line["event"] for line in daemon.log_lines()]
    assert events.index("daemon_stopping") < events.index("store_closed") < events.index("daemon_stopped")
    # The connection the shutdown ended says so, once (docs/operations.md, "A connection closed").
    closed = [
        (line["closed_by"], line["reason"])
        for line in daemon.log_lines()
        if line["event"] == "connection_closed" and line.get("peer") == f"{host}:{port}"
    ]
    assert closed == [("daemon", "shutdown")]


def test_sigterm_sent_again_and_again_while_it_exits_still_exits_zero(tmp_path: Path, oru: bytes) -> None:
    """An impatient operator: SIGTERM, then SIGTERM again and again until the process is gone. Every
    signal after the first finds the daemon stopping or stopped, and none kills it with the default
    action once the interpreter's exit has put that back: the exit status is still 0."""
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--http", "off"))
    daemon.start()
    conn = MllpConnection(daemon.address)
    assert msa(conn.request(with_control_id(oru, "AGAIN1")))[0] == "AA"
    conn.close()
    assert daemon.proc is not None
    sent = 0
    while daemon.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            daemon.proc.send_signal(signal.SIGTERM)
            sent += 1
        time.sleep(0.001)
    assert daemon.wait() == 0, (sent, daemon.stderr()[-1500:])
    assert sent > 1
    lines = daemon.log_lines()
    assert [line["event"] for line in lines].count("daemon_stopped") == 1
    # The signals after the first change nothing and log nothing (no error, no critical line).
    assert not [line for line in lines if line["level"] in ("error", "critical")]
    assert [m["message_id"] for m in daemon.messages()] == ["AGAIN1"]


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
    result = subprocess.run(
        [sys.executable, "-m", "listener", "serve", "--config", str(config)], capture_output=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 2
    assert f"{config}:2".encode() in result.stderr


@pytest.mark.parametrize("taken", ["mllp", "http"])
def test_a_taken_port_stops_start_naming_that_endpoint_and_what_to_do(tmp_path: Path, taken: str) -> None:
    """A port another process holds (a second `make run`): exit 1 and one `daemon_stopping` line
    naming the endpoint that is taken, never the other one, with the system's reason and the
    options that choose other endpoints (docs/configuration.md, "Endpoints")."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    endpoints = {"mllp": f"tcp:{free_port()}:interface=127.0.0.1", "http": f"tcp:{free_port()}:interface=127.0.0.1"}
    endpoints[taken] = f"tcp:{busy}:interface=127.0.0.1"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "listener", "serve", "--log-format", "json", "--state-dir", str(tmp_path / "s")]
            + ["--mllp", endpoints["mllp"], "--http", endpoints["http"]],
            capture_output=True,
            cwd=REPO,
            timeout=120,
        )
    finally:
        holder.close()
    assert result.returncode == 1
    lines = [json.loads(line) for line in (result.stdout + result.stderr).decode().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("reason") == "listen_failed"]
    assert [line["endpoint"] for line in failed] == [endpoints[taken]]
    assert failed[0]["detail"].startswith("Address already in use: ")
    assert "--mllp/--http" in failed[0]["detail"] and "make run ARGS=" in failed[0]["detail"]


def test_sighup_storm_during_traffic_neither_deadlocks_nor_piles_up_reloads(tmp_path: Path, oru: bytes) -> None:
    """SIGHUPs landing while the daemon logs every message: it keeps answering, coalesces the
    reloads (a burst costs at most two loads, not one per signal) and stops cleanly.

    A signal handler that logged itself could interrupt the main thread inside the log
    writer's lock and deadlock; the handler now only hands the work to the reactor.
    """
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--http", "off"))
    daemon.start()
    conn = MllpConnection(daemon.address, timeout=60)
    signals = 25
    ids = [f"STORM{i:03d}" for i in range(200)]
    try:
        conn.send_raw(b"".join(b"\x0b" + with_control_id(oru, cid) + b"\x1c\r" for cid in ids))
        for _ in range(signals):
            daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            time.sleep(0.01)
        codes = [msa(conn.receive())[0] for _ in ids]
        assert codes == ["AA"] * len(ids)
        _wait_for_event(daemon, "policy_reloaded")
        assert msa(conn.request(with_control_id(oru, "STORM-AFTER")))[0] == "AA"
        conn.close()
    finally:
        assert daemon.stop(timeout=60) == 0
    events = [line["event"] for line in daemon.log_lines()]
    assert events.count("signal_received") >= 1
    assert 1 <= events.count("policy_reloaded") <= 2
    assert events.count("policy_reloaded") < events.count("signal_received") or events.count("signal_received") <= 2
