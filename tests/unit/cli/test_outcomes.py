"""`overread outcomes score|import`: explicit scores stored, audited, an invalid file names file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.cli import main
from listener.scores_cli import ScoreFileError, read_scores_csv
from listener.store import SQLiteStore

HEADER = "accession,grade,scorer,note,scored_at\n"


@pytest.fixture(name="state_dir")
def fixture_state_dir(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    SQLiteStore.in_state_dir(state).close()
    return state


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["outcomes", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _stored(state_dir: Path, accession: str) -> list[tuple[str, str, str, str]]:
    store = SQLiteStore.in_state_dir(state_dir)
    try:
        return [(s.score.grade, s.score.source, s.score.scorer, s.score.note) for s in store.scores(accession)]
    finally:
        store.close()


def test_score_is_stored_and_audited(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        capsys, "score", "A1", "2B", "--note", "missed effusion", "--scorer", "dr-b", "--state-dir", str(state_dir)
    )
    assert status == 0, err
    assert out == "recorded: accession A1 grade 2b by dr-b\n"
    assert "no report of accession 'A1' is stored yet" in err
    assert _stored(state_dir, "A1") == [("2b", "cli", "dr-b", "missed effusion")]
    status, out, _ = run(
        capsys,
        "score",
        "A1",
        "2b",
        "--note",
        "again",
        "--scorer",
        "dr-b",
        "--at",
        "2026-11-17T10:00:00Z",
        "--state-dir",
        str(state_dir),
    )
    assert status == 0
    store = SQLiteStore.in_state_dir(state_dir)
    try:
        audit = store.audit(action="outcomes score")
    finally:
        store.close()
    assert len(audit) == 2 and audit[0].via == "cli" and '"grade": "2b"' in audit[0].target
    # The same score at the same time is stored once.
    status, out, _ = run(
        capsys,
        "score",
        "A1",
        "2b",
        "--scorer",
        "dr-b",
        "--at",
        "2026-11-17T12:00:00+02:00",
        "--state-dir",
        str(state_dir),
    )
    assert status == 0 and out.startswith("already recorded")


def test_score_refuses_a_bad_grade_or_time(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "score", "A1", "4", "--state-dir", str(state_dir))
    assert status == 2 and "grade must be one of 1, 2a, 2b, 3a, 3b" in err
    status, _, err = run(capsys, "score", "A1", "1", "--at", "2026-11-17T10:00", "--state-dir", str(state_dir))
    assert status == 2 and "--at" in err
    assert _stored(state_dir, "A1") == []


def test_import_stores_every_row(state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "scores.csv"
    f.write_text(
        HEADER + 'A1,1,dr-a,,2026-11-17T10:00:00Z\n\nA2,3B,dr-a,"missed, bleed",2026-11-17T11:00:00-06:00\n',
        encoding="utf-8",
    )
    status, out, err = run(capsys, "import", str(f), "--state-dir", str(state_dir))
    assert status == 0, err
    assert out == f"imported 2 scores from {f}\n"
    assert _stored(state_dir, "A2") == [("3b", "csv", "dr-a", "missed, bleed")]
    status, out, _ = run(capsys, "import", str(f), "--state-dir", str(state_dir))
    assert out == f"imported 0 scores from {f} (2 already stored)\n"


@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        ("A1,2c,dr,,2026-11-17T10:00:00Z\n", 2, "grade must be one of"),
        (",2b,dr,,2026-11-17T10:00:00Z\n", 2, "accession is empty"),
        ("A1,2b,dr,,2026-11-17T10:00:00Z\nA2,1,dr,,2026-11-17 10:00\n", 3, "scored_at must be an ISO 8601 time"),
        ("A1,2b,dr,,2026-11-17T10:00:00Z,extra\n", 2, "more values than columns"),
    ],
)
def test_import_error_names_file_and_line_and_stores_nothing(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, where: int, what: str
) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(HEADER + "A9,1,dr,,2026-11-17T09:00:00Z\n" + body, encoding="utf-8")
    status, _, err = run(capsys, "import", str(f), "--state-dir", str(state_dir))
    assert status == 2
    assert f"{f}:{where + 1}: {what}" in err and "nothing stored" in err
    assert _stored(state_dir, "A9") == []


def test_import_header_errors(tmp_path: Path) -> None:
    f = tmp_path / "h.csv"
    f.write_text("accession,grade,reader,scored_at\n", encoding="utf-8")
    with pytest.raises(ScoreFileError, match=r"h\.csv:1: unknown column 'reader'"):
        read_scores_csv(f)
    f.write_text("accession,grade\n", encoding="utf-8")
    with pytest.raises(ScoreFileError, match=r"h\.csv:1: missing column 'scored_at'"):
        read_scores_csv(f)
    f.write_text("", encoding="utf-8")
    with pytest.raises(ScoreFileError, match=r"h\.csv:1: empty file"):
        read_scores_csv(f)
    with pytest.raises(ScoreFileError, match="cannot be read"):
        read_scores_csv(tmp_path / "missing.csv")
