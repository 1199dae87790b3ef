"""`overread check`: the docs/cli.md contract.

What depends on the process runs as a real subprocess: the exit status on hostile input and a
missing file, no colour when stdout is not a terminal, ``explain``; the rest calls the same entry
point (``listener.cli.main``) in process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import CORPUS, REPO, run_cli

REQUIRED_KEYS = {"source", "message_type", "message_id", "accession", "status", "findings", "route", "error"}


def _check(*args: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """``overread check ARGS``: in process, or with ``process`` as a user runs it, in a subprocess."""
    return run_cli("check", *args, process=process)


def test_json_lines_for_every_corpus_file() -> None:
    """Every corpus message gives one valid JSON object; hostile ones an error; exit 2; no traceback."""
    proc = _check("--format", "json", str(CORPUS / "hl7"), process=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    files = sorted((CORPUS / "hl7").rglob("*.hl7"))
    assert {o["source"].split("#")[0] for o in objects} == {str(f) for f in files}
    for obj in objects:
        assert obj.keys() >= REQUIRED_KEYS
        if obj["error"] is None:
            assert obj["findings"] == [] or isinstance(obj["findings"], list)
        else:
            assert obj["error"]["code"] in {"100", "101", "102", "103", "200", "201", "202", "203", "207"}
            assert obj["error"]["message"]


def test_samples_decode_cleanly() -> None:
    """Our own samples all decode (no error objects) with accession, status and sections."""
    proc = _check("--format", "json", str(REPO / "samples" / "hl7"))
    assert proc.returncode in (0, 1), proc.stderr
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(objects) >= 12
    for obj in objects:
        assert obj["error"] is None, obj["source"]
        assert obj["accession"] and obj["status"] != "unknown"
        assert obj["report"]["sections"], obj["source"]


def test_text_format_and_multi_message_file(tmp_path: Path) -> None:
    """Text output names each message; a file with two messages and LF separators gives two."""
    raw = (CORPUS / "hl7/scout/oru_v24_duplicate_pair_a.hl7").read_bytes().replace(b"\r", b"\n")
    path = tmp_path / "two.hl7"
    path.write_bytes(raw + raw)
    proc = _check(str(path), process=True)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a finding of severity error
    assert f"{path}#1 (line 1)" in proc.stdout and f"{path}#2" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour when not a terminal


def test_missing_file_and_bad_config_name_the_file(tmp_path: Path) -> None:
    """A missing input or an invalid config gives exit 2 and a message naming file (and line)."""
    proc = _check(str(tmp_path / "nope.hl7"), process=True)
    assert proc.returncode == 2 and "nope.hl7" in proc.stderr
    bad = tmp_path / "feeds"
    (bad / "feeds").mkdir(parents=True)
    (bad / "default.yaml").write_text((REPO / "mappings/default.yaml").read_text())
    (bad / "feeds" / "x.yaml").write_text("match:\n  sending_application: [X]\nfields:\n  accession: ['OBR-99x']\n")
    proc = _check("--mappings", str(bad), str(CORPUS / "hl7/scout/oru_v24_no_obx.hl7"))
    assert proc.returncode == 2
    assert "x.yaml:4" in proc.stderr and "OBR-99x" in proc.stderr


def test_policy_flag_and_explain(tmp_path: Path) -> None:
    """`check --policy F` decides with F; `explain` names every rule with its verdict."""
    sample = REPO / "samples/hl7/ct-head-wo-overnight-telerad-prelim.hl7"
    proc = _check("--format", "json", str(sample))
    assert json.loads(proc.stdout.splitlines()[0])["route"]["bucket"] == "always_final"
    policy = tmp_path / "routing.yaml"
    policy.write_text(
        'version: "t1"\npools: [none, everything]\nrelease: {pool: none}\n'
        "rules:\n  all_ct_final:\n    bucket: always_final\n    when: {modality: [MR]}\n    pool: everything\n"
    )
    proc = _check("--format", "json", "--policy", str(policy), str(sample))
    route = json.loads(proc.stdout.splitlines()[0])["route"]
    assert route["bucket"] == "release" and route["policy_version"].startswith("t1")
    proc = subprocess.run(
        [sys.executable, "-m", "listener", "explain", str(sample)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "overnight_external_neuro_prelim [always_final] MATCHED" in proc.stdout
    assert "external_peer_review_sample" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text('version: "t1"\npools: [none]\nrelease: {pool: none}\nrules:\n  x:\n    bucket: sometimes\n')
    proc = _check("--policy", str(bad), str(sample))
    assert proc.returncode == 2 and "bad.yaml:6" in proc.stderr


def test_fhir_files_are_checked_by_content() -> None:
    """FHIR JSON files go through the FHIR decoder: samples route, the corpus gives precise issue codes."""
    proc = _check("--format", "json", str(REPO / "samples" / "fhir"))
    assert proc.returncode in (0, 1), proc.stderr
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    assert objects and all(o["error"] is None and o["route"] for o in objects)
    proc = _check("--format", "json", str(CORPUS / "fhir"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [json.loads(line)["error"] for line in proc.stdout.splitlines()]
    assert any(e is None for e in errors)
    for err in errors:
        if err is not None:
            assert err["code"] in {"structure", "required", "value", "not-supported", "invalid", "code-invalid"}
            assert err["location"] or err["code"] == "not-supported"
