"""`overread store` beside the real daemon: backup under load, restore, upgrade on start.

Messages come from samples/hl7 (shipped with the repository), their MSH-10 rewritten.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from listener.cli import split_file
from listener.store import schema as store_schema
from listener.store.sqlite import PAGE_SIZE
from listener.store.statedir import LOCK_FILENAME, daemon_holds
from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa, with_control_id
from tests.unit.store.v1 import make_v1_store, table_rows, user_version

SAMPLE = REPO / "samples" / "hl7" / "ct-head-critical-sdh-communicated.hl7"
ACCEPTED = ("AA", "CA")  # CA: an enhanced-mode sample answered with a commit ACK


@pytest.fixture(name="sample")
def fixture_sample() -> bytes:
    """One radiology ORU from samples/hl7."""
    (message,) = split_file(SAMPLE, SAMPLE.read_bytes())
    return message.raw


def overread(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m overread ...` as an operator would (cwd: the repository)."""
    return subprocess.run(
        [sys.executable, "-m", "listener", *argv], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def messages_by_id(state_dir: Path) -> dict[str, dict[str, object]]:
    """`overread messages --format json` of a state directory, by message_id."""
    result = overread("messages", "--format", "json", "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {str(row["message_id"]): row for row in rows}


class Stream:
    """Sends messages one after another on one connection; keeps (control id, time acked)."""

    def __init__(self, address: tuple[str, int], sample: bytes, prefix: str) -> None:
        self.conn = MllpConnection(address, timeout=30)
        self.sample = sample
        self.prefix = prefix
        self.acked: list[tuple[str, float]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                control_id = f"{self.prefix}{n}"
                code, echoed = msa(self.conn.request(with_control_id(self.sample, control_id)))
                if code in ACCEPTED and echoed == control_id:
                    self.acked.append((control_id, time.monotonic()))
                else:
                    self.failures.append(f"{control_id}: {code}")
                n += 1
        except (OSError, ConnectionError) as exc:
            self.failures.append(type(exc).__name__)
        finally:
            self.conn.close()

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert not self.failures, self.failures
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {count} messages acked"
            time.sleep(0.01)


def test_backup_under_load_restores_every_message_committed_before_it(
    daemon: RunningDaemon, sample: bytes, tmp_path: Path
) -> None:
    """While a sender streams messages to the daemon, `overread store backup` (few pages per step,
    so many steps) makes a copy; the stream keeps being answered during the backup. Restored into
    a new state directory, the copy passes `overread store check`, lists every message ACKed before
    the backup began exactly as the live store does (and nothing the live store lacks), has the
    manifest's count and the same hash key, and a daemon on it answers a resend as a duplicate."""
    preload = Stream(daemon.address, sample, "PRE-")
    preload.thread.start()
    preload.wait_for(600)  # a store of a few hundred (compact, 8 KiB) pages: the copy takes many steps
    preload.stop.set()
    preload.thread.join()

    stream = Stream(daemon.address, sample, "LIVE-")
    stream.thread.start()
    stream.wait_for(10)
    acked_before = {cid for cid, _ in preload.acked + stream.acked}
    started = time.monotonic()
    backup = tmp_path / "backup"
    result = overread(
        "store", "backup", str(backup), "--state-dir", str(daemon.state_dir), "--pages", "4", "--format", "json"
    )
    finished = time.monotonic()
    stream.wait_for(len(stream.acked) + 5)
    stream.stop.set()
    stream.thread.join()
    assert result.returncode == 0, result.stderr
    assert not stream.failures, stream.failures
    during = [cid for cid, at in stream.acked if started < at < finished]
    assert during, "the daemon answered nothing while the backup ran"
    manifest = json.loads(result.stdout)
    assert manifest["files"]["overread.db"]["bytes"] > 50 * 4 * PAGE_SIZE, "too small to need many steps"

    restored = tmp_path / "restored"
    result = overread("store", "restore", str(backup), "--state-dir", str(restored))
    assert result.returncode == 0, result.stderr
    result = overread("store", "check", "--state-dir", str(restored))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "integrity_check ok" in result.stdout

    live = messages_by_id(daemon.state_dir)
    copy = messages_by_id(restored)
    assert len(copy) == manifest["message_count"]
    assert acked_before <= set(copy)
    assert all(copy[cid] == live[cid] for cid in copy)
    assert (restored / "hash.key").read_bytes() == (daemon.state_dir / "hash.key").read_bytes()

    (tmp_path / "logs2").mkdir()
    second = RunningDaemon(restored, tmp_path / "logs2")
    second.start()
    try:
        resend = sorted(acked_before)[0]
        conn = MllpConnection(second.address)
        code, echoed = msa(conn.request(with_control_id(sample, resend)))
        conn.close()
        assert (code in ACCEPTED, echoed) == (True, resend)
        assert len(second.messages()) == len(copy)
    finally:
        assert second.stop() == 0


def test_daemon_started_on_a_v1_store_migrates_it_and_logs_each_step(tmp_path: Path) -> None:
    """A store of the previous release (schema 1) is upgraded when the daemon starts: one
    store_migrated line per step ("v1 -> v2: ..."), every message, report and outbox row as
    it was, and `overread store check` then finds the current version and nothing wrong."""
    state = tmp_path / "state"
    db = make_v1_store(state)
    before = table_rows(db)
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(state, tmp_path / "logs")
    daemon.start()
    assert daemon.stop() == 0
    migrated = [line for line in daemon.log_lines() if line.get("event") == "store_migrated"]
    assert [(line["version"], line["reason"]) for line in migrated] == [
        (step.version, step.label) for step in store_schema.MIGRATIONS[1:]
    ]
    assert user_version(db) == store_schema.SCHEMA_VERSION
    assert table_rows(db) == before
    result = overread("store", "check", "--state-dir", str(state), "--format", "json")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["schema_version"] == store_schema.SCHEMA_VERSION


def test_daemon_refuses_a_newer_store_naming_both_versions(tmp_path: Path) -> None:
    """A store written by a newer program stops start-up (non-zero exit) with a message naming
    the file, both versions and the fix; the file keeps its version."""
    state = tmp_path / "state"
    db = make_v1_store(state)
    newer = store_schema.SCHEMA_VERSION + 1
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    result = overread(
        "serve",
        "--mllp",
        "tcp:0:interface=127.0.0.1",
        "--http",
        "off",
        "--state-dir",
        str(state),
        "--log-format",
        "json",
        timeout=60,
    )
    assert result.returncode != 0
    assert str(db) in result.stderr
    assert f"version {newer}" in result.stderr and f"program's {store_schema.SCHEMA_VERSION}" in result.stderr
    assert "upgrade overread" in result.stderr
    assert user_version(db) == newer


def test_restore_is_refused_beside_a_running_daemon(daemon: RunningDaemon, sample: bytes, tmp_path: Path) -> None:
    """`overread store restore --force` into the state directory of a running daemon is refused
    with the lock file named, and the daemon's store is untouched."""
    if not daemon_holds(daemon.state_dir):
        pytest.skip(f"overread serve does not hold {LOCK_FILENAME} in this build")
    conn = MllpConnection(daemon.address)
    assert msa(conn.request(with_control_id(sample, "R1")))[0] in ACCEPTED
    conn.close()
    backup = tmp_path / "backup"
    assert overread("store", "backup", str(backup), "--state-dir", str(daemon.state_dir)).returncode == 0
    result = overread("store", "restore", str(backup), "--state-dir", str(daemon.state_dir), "--force")
    assert result.returncode == 2
    assert str(daemon.state_dir / LOCK_FILENAME) in result.stderr
    assert not list(daemon.state_dir.glob("*.before-restore-*"))
    assert daemon.proc is not None and daemon.proc.poll() is None
