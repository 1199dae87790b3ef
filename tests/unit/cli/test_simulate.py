"""``overread simulate`` on a real SQLite store holding real messages (docs/simulate.md).

The store is the one tests/unit/cli/test_scorecard.py builds: the chest X-ray
sample, edited. A Nocturna reader (NT7741, external) sends three
preliminaries S1-S3 at 16:40 UTC on Tuesday 2026-11-17 (10:40 in Chicago,
inside the reading hours); the Lakeshore reader (R1311) finals S1 and S2 two
hours later, S1 adding a large pneumothorax the preliminary denied (grade 3b),
S2 unchanged (grade 1). Messages are decoded by the pipeline and saved as the
daemon saves them; the command grades the pairs from their raw bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from listener.cli import main
from listener.pipeline import Pipeline
from tests.conftest import REPO
from tests.unit.cli.test_scorecard import WINDOW, graded_store

STRICTER = str(REPO / "samples/policies/stricter.yaml")
LOOSER = str(REPO / "samples/policies/looser.yaml")


@pytest.fixture(name="state_dir", scope="module")
def fixture_state_dir(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline) -> Path:
    return graded_store(tmp_path_factory.mktemp("simulate") / "state", pipeline)


def run(capsys: pytest.CaptureFixture[str], state_dir: Path, *argv: str) -> tuple[int, str, str]:
    status = main(["simulate", "--state-dir", str(state_dir), *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_stricter_json(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, state_dir, "--policy", STRICTER, *WINDOW, "--format", "json")
    assert status == 0, err
    doc = json.loads(out)
    assert doc["document_version"] == 1
    assert doc["window"] == {"since": "2026-11-17T00:00:00+00:00", "until": "2026-11-18T00:00:00+00:00"}
    base, cand = doc["baseline"], doc["candidate"]
    assert (base["name"], base["reports"], cand["reports"]) == ("current", 5, 5)
    # Current policy: only the final affirming a pneumothorax gets a second look (critical finding).
    assert base["buckets"]["selective_overread"] == {"count": 1, "share": 0.2}
    assert base["workload"] == {"reads": 1, "minutes": 3.0}  # one XR at 3 minutes (policies/workload.yaml)
    # Stricter: + every external preliminary (three): 4 reads, 12 minutes.
    assert cand["buckets"]["selective_overread"] == {"count": 4, "share": 0.8}
    assert cand["workload"] == {"reads": 4, "minutes": 12.0}
    assert doc["delta"]["workload"] == {"reads": 3, "minutes": 9.0}
    # All arrive on a Tuesday between 10:40 and 12:42 Chicago time: nobody waits.
    assert cand["turnaround"]["queued"] == 0
    # The 3b of S1 (its preliminary P1): released unseen today, sent by the stricter policy.
    assert base["discrepancies"]["3b"] == {"sent": 0, "unseen": 1}
    assert cand["discrepancies"]["3b"] == {"sent": 1, "unseen": 0}
    [listed] = doc["discrepancy_cases"]
    assert (listed["accession"], listed["grade"], listed["control_id"], listed["reader"]) == (
        "S1",
        "3b",
        "P1",
        "NT7741",
    )
    assert (listed["baseline"], listed["candidate"]) == ("release", "selective_overread")
    assert cand["by"]["group"]["Nocturna Teleradiology"]["selective_overread"]["count"] == 3
    # No patient data: the sample's patient name, MRN and birth date are nowhere in the output.
    for value in ("ZZDEMO", "NORA", "ZZ9000103", "1982"):
        assert value not in out


def test_looser_table(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, state_dir, "--policy", LOOSER, *WINDOW)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "window 2026-11-17T00:00:00+00:00 to 2026-11-18T00:00:00+00:00"
    reads = next(line for line in lines if line.startswith("  second reads"))
    assert reads.split() == ["second", "reads", "1", "0", "-1"]
    unseen = next(line for line in lines if line.startswith("  grade 3b unseen"))
    assert unseen.split()[-3:] == ["1", "1", "0"]
    assert any(line.startswith("  3b  S1  prelim_to_final  message P1") for line in lines)


def test_byte_identical(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for fmt in ("json", "json", "table", "table"):
        status, out, err = run(capsys, state_dir, "--policy", STRICTER, *WINDOW, "--format", fmt)
        assert status == 0, err
        outs.append(out.encode())
    assert outs[0] == outs[1] and outs[2] == outs[3]


def test_baseline_file_against_itself(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, state_dir, "--policy", LOOSER, "--baseline", LOOSER, *WINDOW, "--format", "json")
    assert status == 0, err
    doc = json.loads(out)
    assert doc["baseline"]["name"] == "baseline"
    assert all(v == 0 for v in doc["delta"]["buckets"].values())
    assert doc["delta"]["workload"] == {"reads": 0, "minutes": 0.0}


def test_bad_candidate_names_file_and_line(state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "candidate.yaml"
    text = (REPO / "samples/policies/stricter.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() == "bucket: always_final")
    lines[index] = lines[index].replace("always_final", "always_finals")
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, out, err = run(capsys, state_dir, "--policy", str(bad), *WINDOW)
    assert status == 2 and out == ""
    assert f"{bad}:{index + 1}" in err and "always_finals" in err


def test_bad_workload_and_missing_files(state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "workload.yaml"
    bad.write_text('reading_hours:\n  from: "8"\n', encoding="utf-8")
    status, _, err = run(capsys, state_dir, "--policy", STRICTER, "--workload", str(bad), *WINDOW)
    assert status == 2 and f"{bad}:2" in err
    status, _, err = run(capsys, state_dir, "--policy", str(tmp_path / "nope.yaml"), *WINDOW)
    assert status == 2 and "no such file" in err
    status, _, err = run(capsys, state_dir, "--policy", STRICTER, "--since", "yesterday")
    assert status == 2 and "--since" in err
