"""The real daemon looks up a report's prior studies in its store: the comparison rules that need them fire.

A prior chest radiograph is sent first; a later chest radiograph of the same
patient saying "COMPARISON: None." then carries ``comparison.none_with_priors``
(read back with ``overread show``), and the same report of another patient, or
of the same number under another assigning authority, does not. The first
report of a patient cites a comparison date the store cannot know (nothing of
the patient on record: priors unknown, no finding); a second study of the same
patient citing that date, when the store does hold the patient's earlier study
of another date, carries ``comparison.prior_not_found``.
"""

from __future__ import annotations

import json
import subprocess

from tests.conftest import cli_json_lines, run_cli
from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa
from tests.integration.test_http import post

SAMPLES = REPO / "samples"
# XR chest 2 views, 2026-11-17, patient ZZ9000103^^^LEMC, accession A2611170088.
PRIOR = (SAMPLES / "hl7/xr-chest-2v-normal.hl7").read_bytes()
# XR chest 2 views, 2026-11-19, patient ZZ9000104^^^LEMC, "COMPARISON: None.", accession A2611190301.
NEW = (SAMPLES / "hl7/xr-chest-pneumothorax-no-communication.hl7").read_bytes()


def _cli_show(daemon: RunningDaemon, which: str) -> subprocess.CompletedProcess[str]:
    """``overread show WHICH --format json --no-raw`` on the daemon's store, through ``listener.cli.main``
    in this process (:func:`run_cli`: the same code without a second of start-up per call)."""
    proc = run_cli("show", which, "--format", "json", "--no-raw", "--state-dir", str(daemon.state_dir))
    assert proc.returncode == 0, proc.stderr
    return proc


def _rules(daemon: RunningDaemon, control_id: str) -> set[str]:
    """The rule ids of the findings stored for one message (``overread show --format json``)."""
    proc = _cli_show(daemon, control_id)
    detail = json.loads(proc.stdout)
    return {f["rule"] for report in detail["reports"] for f in report["findings"]}


def _send(daemon: RunningDaemon, raw: bytes) -> None:
    conn = MllpConnection(daemon.address)
    try:
        code, _ = msa(conn.request(raw))
    finally:
        conn.close()
    assert code in ("AA", "CA")  # the samples ask for enhanced-mode accept acknowledgements (MSH-15 AL)


def _variant(raw: bytes, control_id: str, *replacements: tuple[bytes, bytes]) -> bytes:
    """``raw`` with another MSH-10 (and the given byte replacements)."""
    for old, new in replacements:
        raw = raw.replace(old, new)
    fields = raw.split(b"\r", 1)[0].split(b"|")
    return raw.replace(fields[9], control_id.encode(), 1)


def test_none_with_priors_fires_for_the_same_patient_only(daemon: RunningDaemon) -> None:
    _send(daemon, _variant(PRIOR, "PRIOR-1", (b"ZZ9000103^^^LEMC", b"ZZ9000104^^^LEMC")))
    _send(daemon, _variant(NEW, "NEW-SAME"))
    _send(
        daemon, _variant(PRIOR, "PRIOR-2", (b"ZZ9000103^^^LEMC", b"ZZ9000104^^^LEMC"), (b"A2611170088", b"A2611170089"))
    )
    _send(
        daemon, _variant(NEW, "NEW-OTHER", (b"ZZ9000104^^^LEMC", b"ZZ9000199^^^LEMC"), (b"A2611190301", b"A2611190399"))
    )
    _send(
        daemon,
        _variant(
            NEW, "NEW-AUTHORITY", (b"ZZ9000104^^^LEMC", b"ZZ9000104^^^ELSEWHERE"), (b"A2611190301", b"A2611190398")
        ),
    )
    assert "comparison.none_with_priors" in _rules(daemon, "NEW-SAME")
    assert "comparison.none_with_priors" not in _rules(daemon, "NEW-OTHER")
    assert "comparison.none_with_priors" not in _rules(daemon, "NEW-AUTHORITY")
    # The first report of the patient: nothing on record, priors unknown, the comparison date it
    # cites (2023-02-07) is not questioned. The second one cites the same date while the store
    # holds the patient's studies of other dates: not found.
    first = _rules(daemon, "PRIOR-1")
    assert "comparison.prior_not_found" not in first and "comparison.none_with_priors" not in first
    assert "comparison.prior_not_found" in _rules(daemon, "PRIOR-2")
    assert not [line for line in daemon.log_lines() if line.get("event") == "prior_lookup_failed"]
    # `overread reprocess` finds the same priors (what was stored before the original receipt):
    # nothing changes, and a report received after the prior keeps its finding.
    changes = cli_json_lines(
        "reprocess", "NEW-SAME", "PRIOR-1", "--format", "json", "--state-dir", str(daemon.state_dir)
    )
    assert [(c["message_id"], c["changed"]) for c in changes] == [("NEW-SAME", False), ("PRIOR-1", False)]
    assert "comparison.none_with_priors" in _rules(daemon, "NEW-SAME")
    assert "comparison.prior_not_found" not in _rules(daemon, "PRIOR-1")


def test_fhir_report_gets_priors_from_the_store(daemon: RunningDaemon) -> None:
    """The FHIR intake looks priors up the same way: a prior POSTed first, then the new report."""
    assert daemon.http_port is not None
    prior = (SAMPLES / "fhir/xr-chest-2v-normal.json").read_bytes().replace(b"ZZ9000103", b"ZZ9000104")
    new = (SAMPLES / "fhir/xr-chest-pneumothorax-no-communication.json").read_bytes()
    assert post(daemon.http_port, prior).status == 201
    reply = post(daemon.http_port, new)
    assert reply.status == 201
    rules = {f["rule"] for m in daemon.messages() if m["transport"] == "http" for f in _show(daemon, m)}
    assert "comparison.none_with_priors" in rules


def _show(daemon: RunningDaemon, message: dict[str, object]) -> list[dict[str, object]]:
    proc = _cli_show(daemon, f"pk:{message['message_pk']}")
    return [f for report in json.loads(proc.stdout)["reports"] for f in report["findings"]]
