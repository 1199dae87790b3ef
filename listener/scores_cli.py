"""``overread outcomes score`` and ``overread outcomes import``: explicit peer-review scores.

Layer: CLI (I/O for users). A score an operator types, or a peer-review
programme's CSV export, is stored as an explicit score of its accession
(:meth:`listener.store.base.Store.record_scores`); ``overread history`` then
shows it, and it overrides the proposed grade (docs/outcomes.md, "Explicit
scores"; docs/cli.md). Both commands are recorded in the audit log with the
OS user (docs/operations.md, "Audit").

Exit status: 0 stored (or already stored); 2 usage error, an invalid file or no store.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

from listener.cli_common import os_actor
from listener.config import Config
from listener.errors import StoreError
from listener.store.base import SCORE_GRADES, ScoreGrade, ScoreRecord

__all__ = ["CSV_COLUMNS", "ScoreFileError", "add_outcomes_parser", "cmd_outcomes", "parse_grade", "read_scores_csv"]

_EXIT_OK, _EXIT_ERROR = 0, 2

#: The columns of an import file, in any order; ``accession``, ``grade`` and ``scored_at`` need a value.
CSV_COLUMNS = ("accession", "grade", "scorer", "note", "scored_at")
_REQUIRED = ("accession", "grade", "scored_at")


class ScoreFileError(Exception):
    """An import file that is not valid: the text names the file and the line."""


def parse_grade(text: str) -> ScoreGrade | None:
    """A RADPEER grade from text (``2b``, ``2B``, `` 1 ``), or None when it is none."""
    grade = text.strip().lower()
    return cast(ScoreGrade, grade) if grade in SCORE_GRADES else None


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.utcoffset() is not None else None


def read_scores_csv(path: Path) -> tuple[ScoreRecord, ...]:
    """Every score of a CSV export (header line first, UTF-8), all valid or none.

    Raises:
        ScoreFileError: the file cannot be read, a column is missing or
            unknown, or a row is invalid; ``FILE:LINE: what`` (the first problem).
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScoreFileError(f"{name}: cannot be read ({type(exc).__name__})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not header:
        raise ScoreFileError(f"{name}:1: empty file; the first line names the columns {', '.join(CSV_COLUMNS)}")
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise ScoreFileError(f"{name}:1: unknown column {unknown[0]!r} (known: {', '.join(CSV_COLUMNS)})")
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise ScoreFileError(f"{name}:1: missing column {missing[0]!r}")
    reader.fieldnames = header
    out: list[ScoreRecord] = []
    for row in reader:
        line = reader.line_num
        if None in row:
            raise ScoreFileError(f"{name}:{line}: more values than columns")
        values = {k: (v or "").strip() for k, v in row.items()}
        if not any(values.values()):
            continue
        if not values.get("accession"):
            raise ScoreFileError(f"{name}:{line}: accession is empty")
        grade = parse_grade(values.get("grade", ""))
        if grade is None:
            raise ScoreFileError(f"{name}:{line}: grade must be one of {', '.join(SCORE_GRADES)}")
        scored_at = _parse_time(values.get("scored_at", ""))
        if scored_at is None:
            raise ScoreFileError(f"{name}:{line}: scored_at must be an ISO 8601 time with an offset")
        out.append(
            ScoreRecord(
                accession=values["accession"],
                grade=grade,
                source="csv",
                scored_at=scored_at,
                scorer=values.get("scorer", ""),
                note=values.get("note", ""),
            )
        )
    return tuple(out)


def add_outcomes_parser(sub: Any) -> None:
    """Register ``overread outcomes`` (``score`` and ``import``)."""
    p = sub.add_parser(
        "outcomes",
        help="explicit peer-review scores: type one, or import a CSV export",
        description="Store explicit RADPEER scores of accessions. An explicit score overrides the grade "
        "the comparison proposes in `overread history`; both are kept, and a disagreement is flagged.",
    )
    osub = p.add_subparsers(dest="outcomes_command", required=True)

    def common(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--config", metavar="F", help="daemon config file (its state_dir is used)")
        cmd.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")

    score = osub.add_parser(
        "score",
        help="record an explicit score of one accession",
        epilog="exit status: 0 recorded (or already recorded); 2 usage error or no store",
    )
    common(score)
    score.add_argument("accession", metavar="ACCESSION", help="the accession number, exact")
    score.add_argument("grade", metavar="GRADE", help=f"RADPEER grade: {', '.join(SCORE_GRADES)}")
    score.add_argument("--note", default="", help="free text kept with the score")
    score.add_argument("--scorer", default=None, metavar="NAME", help="who scored (default: the OS user)")
    score.add_argument(
        "--at", default=None, metavar="TIME", help="when it was scored, ISO 8601 with offset (default: now)"
    )

    imp = osub.add_parser(
        "import",
        help="import scores from a CSV file (columns accession, grade, scorer, note, scored_at)",
        epilog="exit status: 0 imported (scores already stored are skipped); 2 invalid file (nothing stored) or no store",
    )
    common(imp)
    imp.add_argument("file", metavar="FILE.csv", help="UTF-8 CSV with a header line")


def cmd_outcomes(
    args: argparse.Namespace, config: Config, out: TextIO, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> int:
    """Run ``overread outcomes score`` or ``overread outcomes import``."""
    command = f"outcomes {args.outcomes_command}"
    actor = os_actor()
    at = now()
    scores: Sequence[ScoreRecord]
    if args.outcomes_command == "score":
        grade = parse_grade(args.grade)
        if grade is None:
            return _fail(command, f"grade must be one of {', '.join(SCORE_GRADES)}")
        if not args.accession.strip():
            return _fail(command, "the accession is empty")
        scored_at = at
        if args.at is not None:
            parsed = _parse_time(args.at)
            if parsed is None:
                return _fail(command, f"--at: {args.at!r} is not an ISO 8601 time with an offset")
            scored_at = parsed
        scorer = actor if args.scorer is None else args.scorer
        scores = (ScoreRecord(args.accession.strip(), grade, "cli", scored_at, scorer, args.note),)
        target: dict[str, Any] = {"accession": args.accession.strip(), "grade": grade}
    else:
        try:
            scores = read_scores_csv(Path(args.file))
        except ScoreFileError as exc:
            return _fail(command, f"{exc}; nothing stored")
        target = {"file": Path(args.file).name, "accessions": sorted({s.accession for s in scores})}
    from listener.store import open_store

    try:
        store = open_store(config, create=False)
    except StoreError as exc:
        return _fail(command, str(exc))
    try:
        new = store.record_scores(scores)
        store.record_audit(at=at, actor=actor, via="cli", action=command, target=target, rows=new)
        if args.outcomes_command == "score" and not store.report_history(scores[0].accession, limit=1):
            sys.stderr.write(
                f"overread {command}: note: no report of accession {scores[0].accession!r} is stored yet\n"
            )
    except StoreError as exc:
        return _fail(command, str(exc))
    finally:
        store.close()
    if args.outcomes_command == "score":
        s = scores[0]
        state = "recorded" if new else "already recorded"
        out.write(f"{state}: accession {s.accession} grade {s.grade} by {s.scorer or '-'}\n")
    else:
        skipped = len(scores) - new
        out.write(
            f"imported {new} score{'s' if new != 1 else ''} from {args.file}"
            + (f" ({skipped} already stored)" if skipped else "")
            + "\n"
        )
    return _EXIT_OK


def _fail(command: str, text: str) -> int:
    sys.stderr.write(f"overread {command}: {text}\n")
    return _EXIT_ERROR
