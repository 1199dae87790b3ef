"""Two real daemons on one state directory: the second refuses to start, clearly.

The lock is held for the daemon's life and dropped by the kernel when it exits,
including kill -9, so a restart after a crash is never blocked by a stale file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from listener.cli import EXIT_ERROR
from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, free_port, msa, with_control_id


def _second_daemon(state_dir: Path) -> subprocess.CompletedProcess[str]:
    """``overread serve`` on ``state_dir`` with its own ports; it must exit by itself."""
    cmd = [
        sys.executable,
        "-m",
        "listener",
        "serve",
        "--log-format",
        "json",
        "--state-dir",
        str(state_dir),
        "--mllp",
        f"tcp:{free_port()}:interface=127.0.0.1",
        "--http",
        f"tcp:{free_port()}:interface=127.0.0.1",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)


def test_second_daemon_on_the_same_state_dir_refuses_to_start(tmp_path: Path, oru: bytes) -> None:
    """While one daemon runs, a second on its state directory exits 2 (EXIT_ERROR) naming the directory and pid;
    the first keeps answering; once the first is gone (even by kill -9) a new one starts."""
    (tmp_path / "logs").mkdir()
    first = RunningDaemon(tmp_path / "state", tmp_path / "logs")
    first.start()
    try:
        second = _second_daemon(tmp_path / "state")
        assert second.returncode == EXIT_ERROR, second.stderr[-2000:]
        assert "in use by another overread daemon" in second.stderr
        assert f"pid {first.proc.pid}" in second.stderr  # type: ignore[union-attr]
        assert "Traceback" not in second.stderr
        conn = MllpConnection(first.address)
        try:
            assert msa(conn.request(with_control_id(oru, "LOCK1")))[0] == "AA"
        finally:
            conn.close()
    finally:
        first.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        first.proc.wait(timeout=20)  # type: ignore[union-attr]
    again = RunningDaemon(tmp_path / "state", tmp_path / "logs")
    again.start()
    try:
        conn = MllpConnection(again.address)
        try:
            assert msa(conn.request(with_control_id(oru, "LOCK2")))[0] == "AA"
        finally:
            conn.close()
    finally:
        assert again.stop() == 0
