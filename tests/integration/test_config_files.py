"""A real daemon never runs on a configuration that silently shrank (missing or empty files)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa, with_control_id

SAMPLES = REPO / "samples" / "hl7"


def _wait_for(daemon: RunningDaemon, event: str, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in daemon.log_lines():
            if line.get("event") == event:
                return line
        time.sleep(0.1)
    raise AssertionError(f"the daemon did not log {event} within {timeout:.0f} s")


def _routes(daemon: RunningDaemon, conn: MllpConnection, suffix: str) -> dict[str, tuple[object, object]]:
    """Send the normal chest X-ray and the uncommunicated pneumothorax; their (bucket, finding_count) as logged."""
    sent = {}
    for name in ("xr-chest-2v-normal", "xr-chest-pneumothorax-no-communication"):
        control_id = f"{name[:10]}-{suffix}"
        raw = (SAMPLES / f"{name}.hl7").read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        assert msa(conn.request(with_control_id(raw, control_id)))[0] in (
            "AA",
            "CA",
        )  # enhanced mode when MSH-15/16 are set
        sent[name] = control_id
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logged = {
            line["control_id"]: (line.get("bucket"), line.get("finding_count"))
            for line in daemon.log_lines()
            if line.get("event") == "message_processed"
        }
        if all(cid in logged for cid in sent.values()):
            return {name: logged[cid] for name, cid in sent.items()}
        time.sleep(0.1)
    raise AssertionError("message_processed lines missing")


def test_sighup_after_deleting_a_terms_file_keeps_the_old_policy(tmp_path: Path) -> None:
    """Deleting policies/terms/negation.yaml and sending SIGHUP: the reload is refused with
    config_invalid naming the file, and the same reports get the same bucket and findings
    as before (not selective overreads, and the pneumothorax's communication finding kept)."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    config = tmp_path / "overread.yaml"
    config.write_text(f"policies: {policies}\n")
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(config), "--http", "off"))
    daemon.start()
    try:
        conn = MllpConnection(daemon.address, timeout=60)
        before = _routes(daemon, conn, "before")
        negation = policies / "terms" / "negation.yaml"
        negation.unlink()
        daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        invalid = _wait_for(daemon, "config_invalid")
        after = _routes(daemon, conn, "after")
        # Renaming the whole policies directory is refused the same way.
        policies.rename(tmp_path / "policies.old")
        daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while sum(line.get("event") == "config_invalid" for line in daemon.log_lines()) < 2:
            assert time.monotonic() < deadline, "second config_invalid not logged"
            time.sleep(0.1)
        renamed = _routes(daemon, conn, "renamed")
        conn.close()
    finally:
        assert daemon.stop() == 0
    assert invalid["path"] == str(negation) and invalid["reason"] == "reload_kept_old"
    assert "not found" in str(invalid["detail"])
    assert before["xr-chest-2v-normal"][0] == "release"
    # The QA finding is there (the SDH sample, once used here, has none: its contradiction was a false alarm).
    assert before["xr-chest-pneumothorax-no-communication"][1]
    assert after == before and renamed == before
    assert "policy_reloaded" not in [line["event"] for line in daemon.log_lines()]


def test_empty_config_file_stops_start_naming_it(tmp_path: Path) -> None:
    """`overread serve --config F` with an empty F exits 2 and names F (it never runs on defaults)."""
    config = tmp_path / "overread.yaml"
    config.write_text("# everything commented out\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "listener",
            "serve",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "state"),
            "--mllp",
            "tcp:0:interface=127.0.0.1",
            "--http",
            "off",
        ],
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{config}:1: the file is empty".encode() in result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("flag", ["--mllp", "--http"])
def test_a_malformed_endpoint_stops_start_naming_it(tmp_path: Path, flag: str) -> None:
    """`--mllp 127.0.0.1:2575` (host:port, not a Twisted endpoint) exits 2 saying how to write it; it never half-starts."""
    endpoints = {"--mllp": "tcp:0:interface=127.0.0.1", "--http": "off"}
    endpoints[flag] = "127.0.0.1:2575"
    args = [a for pair in endpoints.items() for a in pair]
    result = subprocess.run(
        [sys.executable, "-m", "listener", "serve", "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    what = flag.lstrip("-")
    assert f"{what} endpoint '127.0.0.1:2575' is not a server endpoint".encode() in result.stderr
    assert b"tcp:2575:interface=127.0.0.1" in result.stderr


def test_missing_policy_file_stops_start_with_config_invalid(tmp_path: Path) -> None:
    """A required policy file missing at start: exit 2, the file named on stderr and in a config_invalid line."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    (policies / "qa.yaml").unlink()
    config = tmp_path / "overread.yaml"
    config.write_text(f"policies: {policies}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "listener",
            "serve",
            "--config",
            str(config),
            "--log-format",
            "json",
            "--state-dir",
            str(tmp_path / "state"),
            "--mllp",
            "tcp:0:interface=127.0.0.1",
            "--http",
            "off",
        ],
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{policies / 'qa.yaml'}: required file not found".encode() in result.stderr
    assert b'"event":"config_invalid"' in result.stdout and str(policies / "qa.yaml").encode() in result.stdout
