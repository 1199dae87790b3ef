"""``overread scorecard`` on a real SQLite store holding real messages (docs/cli.md, "scorecard").

The store holds our chest X-ray sample, edited: a Nocturna reader (NT7741)
sends three preliminaries 30 minutes after the exam; the Lakeshore reader
(R1311) finals two of them 120 minutes later, one adding a large
pneumothorax the preliminary denied (a critical finding added: grade 3b),
one unchanged (grade 1). Messages are decoded by the pipeline and saved the
way the daemon saves them; the command decodes and compares them again.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listener.cli import main
from listener.pipeline import Pipeline
from listener.store import SQLiteStore
from tests.conftest import REPO
from tests.unit.store.records import processed, save_processed

SAMPLE = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
# The exam (OBR-7) is at 10:06 -06:00; the preliminary is reported at 10:36, the final at 12:36.
_REPORT_TIME = b"|20261117103400-0600||CR|"
PRELIM = (
    SAMPLE.replace(b"|CR|F||", b"|CR|P||")
    .replace(b"||||||F|||", b"||||||P|||")
    .replace(_REPORT_TIME, b"|20261117103600-0600||CR|")
    .replace(b"R1311", b"NT7741")
)
FINAL = SAMPLE.replace(_REPORT_TIME, b"|20261117123600-0600||CR|")
FINAL_PNEUMOTHORAX = FINAL.replace(
    b"No focal consolidation, pleural effusion or pneumothorax.",
    b"No focal consolidation or pleural effusion. There is a large right pneumothorax.",
).replace(b"No acute cardiopulmonary abnormality.", b"Large right pneumothorax.")
RECEIVED = datetime(2026, 11, 17, 16, 40, tzinfo=UTC)
WINDOW = ("--since", "2026-11-17T00:00:00Z", "--until", "2026-11-18T00:00:00Z")


def _save(store: SQLiteStore, pipeline: Pipeline, raw: bytes, accession: str, control_id: str, minutes: int) -> None:
    raw = raw.replace(b"A2611170088", accession.encode())
    received = RECEIVED + timedelta(minutes=minutes)
    save_processed(store, processed(pipeline, raw, control_id, received, app="HALCYON_RIS", facility="LEMC"))


def graded_store(state: Path, pipeline: Pipeline) -> Path:
    """The store this module's docstring describes, in state directory ``state`` (also test_simulate's)."""
    store = SQLiteStore.in_state_dir(state)
    try:
        _save(store, pipeline, PRELIM, "S1", "P1", 0)
        _save(store, pipeline, FINAL_PNEUMOTHORAX, "S1", "F1", 120)
        _save(store, pipeline, PRELIM, "S2", "P2", 1)
        _save(store, pipeline, FINAL, "S2", "F2", 121)
        _save(store, pipeline, PRELIM, "S3", "P3", 2)
    finally:
        store.close()
    return state


@pytest.fixture(name="state_dir", scope="module")
def fixture_state_dir(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline) -> Path:
    return graded_store(tmp_path_factory.mktemp("scorecard") / "state", pipeline)


def run(capsys: pytest.CaptureFixture[str], state_dir: Path, *argv: str) -> tuple[int, str, str]:
    status = main(["scorecard", "--state-dir", str(state_dir), *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_json_by_reader(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, state_dir, *WINDOW, "--min-reads", "2", "--format", "json")
    assert status == 0, err
    doc = json.loads(out)
    assert (doc["document_version"], doc["by"], doc["min_reads"]) == (1, "reader", 2)
    assert doc["window"] == {"since": "2026-11-17T00:00:00+00:00", "until": "2026-11-18T00:00:00+00:00"}
    assert [(r["key"], r["reads"], r["overread"], r["graded"]) for r in doc["rows"]] == [
        ("NT7741", 3, 2, 2),
        ("R1311", 2, 0, 0),
    ]
    nt, r1311 = doc["rows"]
    assert nt["group"] == "Nocturna Teleradiology" and r1311["group"] == "Lakeshore Radiology"
    assert (nt["prelims"], nt["finals"], nt["too_few"], nt["note"]) == (3, 0, False, "")
    d = nt["discrepancies"]
    assert (d["any"]["count"], d["significant"]["count"], d["3b"]["count"]) == (1, 1, 1)
    assert d["any"]["rate"] == 0.5
    # Wilson 95% for 1 of 2.
    assert (d["any"]["low"], d["any"]["high"]) == (pytest.approx(0.094531, abs=1e-6), pytest.approx(0.905469, abs=1e-6))
    assert nt["interpretive_share"] == 1.0 and nt["operational_share"] == 0.0
    assert nt["turnaround"] == {
        "prelim_minutes": {"count": 3, "median": 30.0, "p90": 30.0},
        "prelim_to_final_minutes": {"count": 2, "median": 120.0, "p90": 120.0},
    }
    assert nt["corrected"] == {"count": 0, "of": 0, "rate": None}
    assert nt["addendum"] == {"count": 0, "of": 3, "rate": 0.0}
    assert nt["disagreements"] == 0
    assert r1311["too_few"] and r1311["note"] == "no graded reads: too few for a rate (needs 2)"
    assert r1311["discrepancies"]["any"]["rate"] is None
    for secret in ("ZZ9000103", "ZZDEMO", "NORA"):
        assert secret not in out


def test_reader_and_group_keep_one_row(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, state_dir, *WINDOW, "--reader", "nt7741", "--min-reads", "1", "--format", "json")
    assert status == 0, err
    doc = json.loads(out)
    assert doc["by"] == "reader" and doc["only"] == "nt7741"
    assert [r["key"] for r in doc["rows"]] == ["NT7741"]
    status, out, err = run(capsys, state_dir, *WINDOW, "--group", "Nocturna Teleradiology", "--format", "json")
    assert status == 0, err
    (row,) = json.loads(out)["rows"]
    assert (row["key"], row["readers"], row["reads"], row["graded"]) == ("Nocturna Teleradiology", ["NT7741"], 3, 2)
    assert row["too_few"] and row["note"] == "2 graded reads: too few for a rate (needs 30)"
    status, out, err = run(capsys, state_dir, *WINDOW, "--reader", "R9999")
    assert status == 1
    assert "--reader 'R9999' has no read between 2026-11-17T00:00:00+00:00 and 2026-11-18T00:00:00+00:00" in err


def test_by_modality_text(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, state_dir, *WINDOW, "--by", "modality", "--min-reads", "2")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("scorecard by modality, 2026-11-17T00:00:00+00:00 to 2026-11-18T00:00:00+00:00")
    assert lines[1].split()[:4] == ["modality", "reads", "overread", "graded"]
    assert lines[2].split()[:4] == ["XR", "5", "2", "2"]
    assert "1/2 50.0% [9.5-90.5]" in lines[2]
    assert "95% Wilson interval" in out


def test_csv(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, state_dir, *WINDOW, "--by", "group", "--min-reads", "1", "--format", "csv")
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["key"], r["reads"], r["graded"], r["significant_count"]) for r in rows] == [
        ("Nocturna Teleradiology", "3", "2", "1"),
        ("Lakeshore Radiology", "2", "0", "0"),
    ]
    assert rows[0]["significant_rate"] == "0.5" and rows[0]["prelim_to_final_minutes_median"] == "120"


def test_empty_window(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        capsys, state_dir, "--since", "2026-10-01T00:00:00Z", "--until", "2026-11-01T00:00:00Z", "--format", "json"
    )
    assert status == 0, err
    assert json.loads(out)["rows"] == []
    status, out, _ = run(capsys, state_dir, "--since", "2026-10-01T00:00:00Z", "--until", "2026-11-01T00:00:00Z")
    assert status == 0 and "no reads in the window" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--since", "yesterday"), "--since: 'yesterday' is not an ISO 8601 time with an offset (or Nd, Nh)"),
        (("--until", "2026-11-18T00:00:00"), "--until: '2026-11-18T00:00:00' is not an ISO 8601 time"),
        (("--since", "2026-11-18T00:00:00Z", "--until", "2026-11-17T00:00:00Z"), "must be before --until"),
        (("--min-reads", "0"), "--min-reads takes 1 or more"),
    ],
)
def test_bad_options(state_dir: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str) -> None:
    status, out, err = run(capsys, state_dir, *argv)
    assert status == 2 and out == ""
    assert err.startswith("overread scorecard: ") and message in err


def test_reader_and_by_exclude_each_other(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scorecard", "--state-dir", str(state_dir), "--reader", "R1", "--by", "site"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, tmp_path / "nothing-here")
    assert status == 2 and out == ""
    assert err.startswith("overread scorecard: ")
