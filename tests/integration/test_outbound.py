"""End to end: the real daemon sends routing messages to a test RIS (tests/integration/ris.py).

Short retry settings (0.2 s base, 1 s cap, 1-2 s ACK timeout) keep each test to
seconds; the daemon's poll interval is its default.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, free_port, msa, with_control_id
from tests.integration.ris import TestRis


def write_config(tmp_path: Path, ris_port: int, *, ack_timeout: float = 1.0, max_attempts: int = 5) -> Path:
    """A daemon config whose one destination is the test RIS, with short retries."""
    dest = tmp_path / "destinations.yaml"
    dest.write_text(
        "version: 1\n"
        "destinations:\n"
        "  ris:\n"
        f"    endpoint: tcp:host=127.0.0.1:port={ris_port}\n"
        "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n"
        f"    retry: {{max_attempts: {max_attempts}, backoff_base_seconds: 0.2, backoff_max_seconds: 1,"
        f" ack_timeout_seconds: {ack_timeout}, on_reject: dead_letter}}\n",
        encoding="utf-8",
    )
    config = tmp_path / "overread.yaml"
    config.write_text("destinations: destinations.yaml\n", encoding="utf-8")
    return config


def message(oru: bytes, control_id: str, accession: str) -> bytes:
    """The corpus ORU with its own MSH-10 and accession (ORC-3/OBR-3)."""
    return with_control_id(oru, control_id).replace(b"|620943148|", f"|{accession}|".encode())


def outbox(daemon: RunningDaemon, *args: str) -> list[dict[str, object]]:
    """``overread outbox list --format json`` as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "listener", "outbox", "list", "--format", "json", "--state-dir", str(daemon.state_dir), *args],
        capture_output=True, cwd=REPO, timeout=60, check=True,
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


def send_all(daemon: RunningDaemon, messages: list[bytes]) -> list[str]:
    """Send each message on one connection; return the MSA-1 codes."""
    conn = MllpConnection(daemon.address)
    try:
        return [msa(conn.request(m))[0] for m in messages]
    finally:
        conn.close()


def wait_until(condition: object, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until true (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(name="ris")
def fixture_ris() -> Iterator[TestRis]:
    """A test RIS on a free port, not yet listening (the test starts it)."""
    ris = TestRis(free_port())
    yield ris
    ris.stop()


def start_daemon(tmp_path: Path, config: Path) -> RunningDaemon:
    """A daemon using ``config``, with its logs under tmp_path/logs."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    daemon = RunningDaemon(tmp_path / "state", logs, extra=("--config", str(config)))
    daemon.start()
    return daemon


def stop_daemon(daemon: RunningDaemon) -> None:
    """SIGTERM; the daemon must exit 0 and log only listed events."""
    if daemon.proc is not None and daemon.proc.poll() is None:
        assert daemon.stop() == 0
    assert not [line for line in daemon.log_lines() if line.get("event") == "event_unlisted"]


def test_ris_down_then_up_delivers_everything_in_order(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """RIS down while messages arrive; once it is up, every routing message arrives, in order per accession."""
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        accessions = ["ACCA", "ACCB", "ACCA", "ACCC", "ACCA", "ACCB"]
        codes = send_all(daemon, [message(oru, f"DOWN{i}", acc) for i, acc in enumerate(accessions)])
        assert codes == ["AA"] * 6
        time.sleep(3.0)  # several connection attempts refused meanwhile
        rows = outbox(daemon)
        assert [r["state"] for r in rows] == ["pending"] * 6
        assert all(r["attempts"] == 0 for r in rows), "a down RIS must not use up the rows' attempts"
        ris.start()
        ris.wait_for(lambda: len(ris.applied) == 6)
        rows = outbox(daemon)
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)))
        arrival = ris.received_ids()
        for acc in set(accessions):
            stored_order = [r["control_id"] for r in rows if r["accession"] == acc]
            assert [c for c in arrival if c in stored_order] == stored_order
        assert sorted(ris.applied) == sorted(r["control_id"] for r in rows)
        events = [line["event"] for line in daemon.log_lines()]
        assert events.count("outbox_delivered") == 6
        assert "outbox_retry_scheduled" in events
    finally:
        stop_daemon(daemon)


def test_ae_then_aa_is_retried(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """An AE is retried with backoff; the same MSH-10 is delivered on the second attempt."""
    ris.script.extend(["AE"])
    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        assert send_all(daemon, [message(oru, "AE1", "ACC1")]) == ["AA"]
        ris.wait_for(lambda: len(ris.applied) == 1)
        wait_until(lambda: outbox(daemon)[0]["state"] == "delivered")
        (row,) = outbox(daemon)
        assert row["attempts"] == 2
        assert ris.received_ids() == [row["control_id"], row["control_id"]]
    finally:
        stop_daemon(daemon)


def test_ar_is_dead_lettered_visible_and_retryable(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """AR dead-letters the row (listed by `overread outbox list --state dead`); `retry --all-dead` sends it again."""
    ris.mode = "AR"
    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        assert send_all(daemon, [message(oru, "AR1", "ACC1")]) == ["AA"]
        wait_until(lambda: len(outbox(daemon, "--state", "dead")) == 1)
        (dead,) = outbox(daemon, "--state", "dead")
        assert (dead["attempts"], dead["last_error"]) == (1, "AR")
        assert ris.applied == []
        assert any(line["event"] == "outbox_dead_lettered" for line in daemon.log_lines())
        ris.mode = "AA"
        retried = subprocess.run(
            [sys.executable, "-m", "listener", "outbox", "retry", "--all-dead", "--state-dir", str(daemon.state_dir)],
            capture_output=True, cwd=REPO, timeout=60, check=True,
        )
        assert json.loads(retried.stdout) == {"revived": [dead["id"]]}
        ris.wait_for(lambda: ris.applied == [dead["control_id"]])
        wait_until(lambda: outbox(daemon)[0]["state"] == "delivered")
    finally:
        stop_daemon(daemon)


def test_kill9_mid_delivery_delivers_each_row_exactly_once(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """Killed (-9) while the RIS holds a message unanswered: after restart every row reaches the RIS once (MSH-10 dedup)."""
    ris.mode = "stall"
    ris.start()
    config = write_config(tmp_path, ris.port, ack_timeout=30.0)
    daemon = start_daemon(tmp_path, config)
    assert send_all(daemon, [message(oru, f"K{i}", f"ACC{i % 2}") for i in range(4)]) == ["AA"] * 4
    ris.wait_for(lambda: len(ris.received) >= 1)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    first = ris.received_ids()[0]
    ris.mode = "AA"
    daemon.start()
    try:
        ris.wait_for(lambda: len(ris.applied) == 4)
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)))
        rows = outbox(daemon)
        assert len(rows) == 4
        assert sorted(ris.applied) == sorted(r["control_id"] for r in rows)
        assert ris.received_ids().count(first) == 2  # resent with the same MSH-10, applied once
        assert [m["message_id"] for m in daemon.messages()] == [f"K{i}" for i in range(4)]
    finally:
        stop_daemon(daemon)


def test_kill9_while_ris_down_resumes_after_restart(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """Rows queued while the RIS is down survive kill -9 and go out once the daemon is back and the RIS is up."""
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    assert send_all(daemon, [message(oru, f"D{i}", "ACC1") for i in range(3)]) == ["AA"] * 3
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    ris.start()
    daemon.start()
    try:
        ris.wait_for(lambda: len(ris.applied) == 3)
        rows = outbox(daemon)
        assert ris.applied == [r["control_id"] for r in rows]  # one accession: stored order
    finally:
        stop_daemon(daemon)


def test_no_routing_message_for_a_message_not_accepted(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """Messages answered AE/AR (undecodable, unsupported) leave no outbox row and send nothing to the RIS."""
    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        bad_type = with_control_id(oru, "BAD1").replace(b"|ORU^R01|", b"|ZZZ^Z99|", 1)
        no_obr = b"\r".join(s for s in with_control_id(oru, "BAD2").split(b"\r") if not s.startswith((b"OBR", b"OBX", b"ORC")))
        codes = send_all(daemon, [bad_type, no_obr, message(oru, "GOOD1", "ACC9")])
        assert codes[0] in ("AE", "AR") and codes[1] in ("AE", "AR") and codes[2] == "AA"
        ris.wait_for(lambda: len(ris.applied) == 1)
        rows = outbox(daemon)
        assert len(rows) == 1 and rows[0]["accession"] == "ACC9"
        time.sleep(0.5)
        assert len(ris.received) == 1
    finally:
        stop_daemon(daemon)
