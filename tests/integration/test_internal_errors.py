"""Internal errors thrown at the real daemon from outside: a receipt journal that cannot be written.

docs/hardening.md, "Internal errors": the MLLP protocol's last-resort handler (an exception
escaping the handling of received bytes: ``message_rejected`` with ``reason=internal_error``, the
answers owed written, then the connection closed) cannot be reached by any input: every step of
that handling is either total over its input (the framer, the header reader, the ACK builder,
checked by property tests and the fuzzer) or already inside a narrower handler. The nearest fault
a sender or an operator can cause is the journal's: every message is written to
``<state>/journal/<n>.slot`` before the pipeline runs, so a journal that refuses writes (here the
files and their directory made immutable under the running daemon, ``chattr +i``: root cannot
write them either) makes the work fail outside the pipeline. Each such message must be answered
AE 207 (CE in enhanced mode), addressed to it, stored as rejected (so its resend is processed
again), on a connection that stays open; other connections are answered; once the journal can be
written again the resends are accepted; and no log line quotes the message.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa, with_control_id

NORMAL = (REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7").read_bytes()
#: What the sample says of its patient and report: none of it may reach a log line.
PATIENT_DATA = ("ZZDEMO", "ZZ9000103", "19820409", "The lungs are clear", "LINDQVIST")


def sample(control_id: str) -> bytes:
    return with_control_id(NORMAL.replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r") + b"\r", control_id)


def _chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.mark.parametrize("workers", ["0", None], ids=["threads", "processes"])
def test_an_unwritable_journal_answers_ae_207_and_keeps_serving(tmp_path: Path, workers: str | None) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr (e2fsprogs)")
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = RunningDaemon(tmp_path / "state", logs, workers=workers)
    daemon.start()
    journal = daemon.state_dir / "journal"
    locked: list[Path] = []
    try:
        first = MllpConnection(daemon.address, timeout=60)
        other = MllpConnection(daemon.address, timeout=60)
        assert msa(first.request(sample("BEFORE-1"))) in (("AA", "BEFORE-1"), ("CA", "BEFORE-1"))
        locked = [*journal.iterdir(), journal]
        try:
            _chattr("+i", locked)
        except (subprocess.CalledProcessError, OSError):
            pytest.skip("cannot make files immutable here (needs root on ext2/3/4, xfs, btrfs)")
        answers = [(first, "FAULT-1"), (other, "FAULT-2"), (first, "FAULT-3")]
        for conn, control_id in answers:
            ack = conn.request(sample(control_id))
            # Addressed to the message (MSA-2), AE in original mode or CE in enhanced mode, ERR 207.
            assert msa(ack) in (("AE", control_id), ("CE", control_id)), ack
            assert b"|207^" in ack, ack
        _chattr("-i", locked)
        locked = []
        # The same connections, still open, and the same messages sent again: accepted now.
        for conn, control_id in answers:
            assert msa(conn.request(sample(control_id))) in (("AA", control_id), ("CA", control_id))
        first.close()
        other.close()
    finally:
        if locked:
            _chattr("-i", locked)
        status = daemon.stop()
    assert status == 0
    stored = {m["message_id"]: m for m in daemon.messages()}
    assert {k: stored[k]["state"] for k in ("BEFORE-1", "FAULT-1", "FAULT-2", "FAULT-3")} == dict.fromkeys(
        ("BEFORE-1", "FAULT-1", "FAULT-2", "FAULT-3"), "processed"
    )
    lines = daemon.log_lines()
    faults = [line for line in lines if line.get("event") == "message_processed" and line.get("error_code") == "207"]
    assert {line["control_id"] for line in faults} == {"FAULT-1", "FAULT-2", "FAULT-3"}
    assert {line["error_type"] for line in faults} == {"PermissionError"}
    assert not [
        line for line in lines if line.get("event") == "connection_closed" and line.get("reason") != "peer_closed"
    ]
    text = daemon.stdout() + daemon.stderr()
    assert not [word for word in PATIENT_DATA if word in text]
