"""``overread history`` against the real daemon: a preliminary and a final of one accession over MLLP.

The preliminary (OBR-25 and OBX-11 ``P``, an earlier report time) says no
pneumothorax; the final of the same accession adds a large right pneumothorax
(a critical finding). The history shows both versions in clinical order with
a "b" grade and the critical finding added, whichever arrived first. Built
from our own sample (samples/hl7/xr-chest-2v-normal.hl7), edited here.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.conftest import REPO, RunningDaemon, analyst_and_sender, start_configured
from tests.integration.test_http import post
from tests.integration.test_priors import _send, _variant

# XR chest 2 views, accession A2611170088, report time (OBR-22) 2026-11-17 10:34 -06:00.
SAMPLE = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
_OLD_FINDING = b"The lungs are clear. No focal consolidation, pleural effusion or pneumothorax."
_OLD_IMPRESSION = b"No acute cardiopulmonary abnormality."


def _prelim(control_id: str, accession: bytes) -> bytes:
    return _variant(
        SAMPLE,
        control_id,
        (b"A2611170088", accession),
        (b"|CR|F||", b"|CR|P||"),
        (b"||||||F|||", b"||||||P|||"),
        (b"|20261117103400-0600||CR|", b"|20261117093400-0600||CR|"),
    )


def _final(control_id: str, accession: bytes) -> bytes:
    return _variant(
        SAMPLE,
        control_id,
        (b"A2611170088", accession),
        (_OLD_FINDING, b"No focal consolidation or pleural effusion. There is a large right pneumothorax."),
        (_OLD_IMPRESSION, b"Large right pneumothorax."),
    )


def _history(daemon: RunningDaemon, accession: str, fmt: str = "json") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listener", "history", accession, "--format", fmt, "--state-dir", str(daemon.state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _check(doc: dict[str, Any], prelim_id: str, final_id: str) -> None:
    versions = doc["versions"]
    assert [(v["status"], v["message_id"], v["transport"]) for v in versions] == [
        ("preliminary", prelim_id, "mllp"),
        ("final", final_id, "mllp"),
    ]
    assert versions[0]["report_time"] < versions[1]["report_time"]
    assert versions[0]["reader"]["id"] == "R1311" and versions[0]["exam"]["code"] == "71046"
    (pair,) = doc["comparisons"]
    assert (pair["kind"], pair["before"], pair["after"], pair["comparable"]) == ("prelim_to_final", 0, 1, True)
    assert pair["grade"].endswith("b")
    kinds = {(d["kind"], d["concept"]) for d in pair["comparison"]["differences"]}
    assert ("critical_added", "pneumothorax") in kinds, kinds
    added = next(d for d in pair["comparison"]["differences"] if d["kind"] == "critical_added")
    assert any("pneumothorax" in e["text"].lower() for e in added["final"])
    text = json.dumps(doc)
    assert "ZZ9000103" not in text and "ZZDEMO" not in text and "NORA" not in text


def test_prelim_then_final(shared_daemon: RunningDaemon) -> None:
    # On the shared daemon: its own control IDs and accession (H100), looked up by accession.
    daemon = shared_daemon
    _send(daemon, _prelim("HIST-P1", b"H100"))
    _send(daemon, _final("HIST-F1", b"H100"))
    proc = _history(daemon, "H100")
    assert proc.returncode == 0, proc.stderr
    _check(json.loads(proc.stdout), "HIST-P1", "HIST-F1")
    assert not json.loads(proc.stdout)["versions"][1]["out_of_order"]
    text = _history(daemon, "H100", "text")
    assert text.returncode == 0, text.stderr
    assert "prelim_to_final [0] -> [1]: grade 3b" in text.stdout or "grade 2b" in text.stdout
    assert "critical_added pneumothorax" in text.stdout
    assert "ZZ9000103" not in text.stdout and "ZZDEMO" not in text.stdout
    missing = _history(daemon, "NO-SUCH")
    assert missing.returncode == 1 and json.loads(missing.stdout)["versions"] == []


def test_final_received_before_its_prelim(shared_daemon: RunningDaemon) -> None:
    # On the shared daemon: its own control IDs and accession (H200), looked up by accession.
    daemon = shared_daemon
    _send(daemon, _final("HIST-F2", b"H200"))
    _send(daemon, _prelim("HIST-P2", b"H200"))
    proc = _history(daemon, "H200")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    _check(doc, "HIST-P2", "HIST-F2")
    assert doc["versions"][1]["out_of_order"] is True


ANALYST = "history-analyst-token"
SENDER = "history-sender-token"


def _get(daemon: RunningDaemon, path: str, token: str) -> tuple[int, Any]:
    assert daemon.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_fhir_prelim_mllp_final_over_the_api(tmp_path: Path) -> None:
    """A FHIR preliminary naming its order only through basedOn, then the HL7 final: one history, served
    by GET /api/history/<accession> to an operator only, the same document as the CLI's."""
    daemon, config = start_configured(
        tmp_path,
        analyst_and_sender(ANALYST, SENDER, "submit, read, operator"),
    )
    try:
        prelim = json.loads((REPO / "samples/fhir/xr-chest-2v-normal.json").read_text(encoding="utf-8"))
        prelim["status"] = "preliminary"
        prelim["issued"] = "2026-11-17T09:34:00-06:00"
        del prelim["identifier"]  # the accession comes from the basedOn ServiceRequest
        assert daemon.http_port is not None
        reply = post(daemon.http_port, json.dumps(prelim).encode(), token=ANALYST)
        assert reply.status == 201, reply.body
        _send(daemon, _final("HIST-F3", b"A2611170088"))
        status, doc = _get(daemon, "/api/history/A2611170088", ANALYST)
        assert status == 200, doc
        assert [(v["status"], v["transport"]) for v in doc["versions"]] == [("preliminary", "http"), ("final", "mllp")]
        (pair,) = doc["comparisons"]
        assert pair["comparable"] and pair["grade"].endswith("b"), pair
        assert "critical_added" in {d["kind"] for d in pair["comparison"]["differences"]}
        assert "ZZ9000103" not in json.dumps(doc) and "ZZTEST" not in json.dumps(doc)
        assert _get(daemon, "/api/history/A2611170088", SENDER)[0] == 403
        assert _get(daemon, "/api/history/NO-SUCH", ANALYST)[0] == 404
        assert _get(daemon, "/api/history/A26111700%38%38", ANALYST) == (200, doc)  # percent-encoded path
        assert _get(daemon, "/api/history/A2611170088?bogus=1", ANALYST)[0] == 400
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "listener",
                "history",
                "A2611170088",
                "--format",
                "json",
                "--config",
                str(config),
                "--state-dir",
                str(daemon.state_dir),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=True,
        )
        assert json.loads(proc.stdout) == doc
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


def test_final_carrying_a_score_obx_sets_the_explicit_grade(tmp_path: Path) -> None:
    """A feed mapping with ``peer_review_obx``: the final's RADPEER OBX is stored as an explicit score;
    the history's grade is that score, the proposal is kept, and their disagreement flagged. A score
    typed with ``overread outcomes score`` afterwards wins (the latest recorded)."""
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    with (mappings / "default.yaml").open("a", encoding="utf-8") as f:
        f.write("\npeer_review_obx: {code: RADPEER, system: L}\n")
    daemon, _ = start_configured(tmp_path, f"mappings: {mappings}\npolicies: {REPO / 'policies'}\n")
    try:
        _send(daemon, _prelim("HIST-P4", b"H400"))
        score_obx = b"OBX|10|ST|RADPEER^RADPEER score^L||2a||||||F|||20261117110000-0600||R2001^FINAL^READER\r"
        _send(daemon, _final("HIST-F4", b"H400") + score_obx)
        proc = _history(daemon, "H400")
        assert proc.returncode == 0, proc.stderr
        (pair,) = json.loads(proc.stdout)["comparisons"]
        assert pair["comparable"] and pair["proposed_grade"].endswith("b"), pair
        assert (pair["grade"], pair["explicit_grade"], pair["disagreement"]) == ("2a", "2a", True)
        (score,) = pair["scores"]
        assert (score["source"], score["scorer"], score["scored_at"]) == ("obx", "R2001", "2026-11-17T17:00:00Z")
        assert score["message_pk"] == pair["after_message_pk"]
        typed = subprocess.run(
            [sys.executable, "-m", "listener", "outcomes", "score", "H400", "3b", "--note", "critical missed"]
            + ["--scorer", "qa-lead", "--state-dir", str(daemon.state_dir)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )
        assert typed.returncode == 0, typed.stderr
        text = _history(daemon, "H400", "text")
        assert text.returncode == 0, text.stderr
        assert "prelim_to_final [0] -> [1]: grade 3b (explicit; proposed " in text.stdout
        assert "  score 2a via obx  by R2001" in text.stdout and "score 3b via cli  by qa-lead" in text.stdout
        assert "ZZ9000103" not in text.stdout and "ZZDEMO" not in text.stdout
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0
