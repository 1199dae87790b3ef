"""``overread scorecard``: what overreads found, per reader, group, site, modality or body region.

Layer: CLI (I/O for users). The graded chains come from the store through
:func:`listener.outcome_data.collect`; the figures from the pure
:func:`listener.outcomes.scorecard.scorecard`. See docs/cli.md ("scorecard")
and docs/outcomes.md ("Scorecards").

Patient names and identifiers are never printed: reader ids, groups, sites,
modalities and body regions only.

Exit status: 0 shown; 1 ``--reader``/``--group`` has no read in the window;
2 usage error or no store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from listener.cli_common import parse_window
from listener.config import Config
from listener.errors import StoreError
from listener.outcomes.scorecard import BY, Scorecard, render_csv, render_text
from listener.sites import EMPTY_DIRECTORY

__all__ = ["DEFAULT_SINCE", "add_scorecard_parser", "cmd_scorecard", "subject_of"]

_EXIT_OK, _EXIT_NOT_FOUND, _EXIT_ERROR = 0, 1, 2
#: The window's start when ``--since`` is not given.
DEFAULT_SINCE = "90d"


def add_scorecard_parser(sub: Any) -> None:
    """Add ``scorecard`` to the top-level subparsers."""
    p = sub.add_parser(
        "scorecard",
        help="discrepancy rates, turnaround and QA defects per reader, group, site, modality or body region",
        description="Scorecards over a window: reads, finals overread, discrepancy rates by RADPEER grade with "
        "a Wilson 95%% interval, interpretive vs operational share, QA defect rate per category, prelim "
        "turnaround and prelim-to-final time (median, p90), corrected and addendum rates. A rate over fewer "
        "than --min-reads graded reads is not given: the row says so. Patient data is never printed.",
        epilog="exit status: 0 shown; 1 --reader/--group has no read in the window; 2 usage error or no store",
    )
    p.add_argument("--config", metavar="F", help="daemon config file (its state_dir and policies are used)")
    p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")
    subject = p.add_mutually_exclusive_group()
    subject.add_argument("--reader", metavar="R", help="one reader (by reader, only R; case ignored)")
    subject.add_argument("--group", metavar="G", help="one group of readers.yaml (by group, only G; case ignored)")
    subject.add_argument("--by", choices=BY, default=None, help="one row per reader (default), group, site...")
    p.add_argument(
        "--since", metavar="TIME", default=DEFAULT_SINCE, help=f"window start, ISO 8601 or Nd (default {DEFAULT_SINCE})"
    )
    p.add_argument("--until", metavar="TIME", help="window end, excluded (default now)")
    p.add_argument(
        "--min-reads",
        type=int,
        default=30,
        metavar="N",
        help="graded reads (or reads, finals) below which no rate is given (default 30)",
    )
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")


def subject_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(by, only)`` from ``--reader``, ``--group`` or ``--by``."""
    if args.reader is not None:
        return "reader", args.reader
    if args.group is not None:
        return "group", args.group
    return args.by or "reader", None


def write_scorecard(out: TextIO, card: Scorecard, fmt: str) -> None:
    """Print ``card`` as text, JSON or CSV."""
    if fmt == "json":
        out.write(json.dumps(card.to_json(), ensure_ascii=False, indent=2) + "\n")
    elif fmt == "csv":
        out.write(render_csv(card))
    else:
        out.write(render_text(card))


def cmd_scorecard(args: argparse.Namespace, config: Config, out: TextIO, now: datetime | None = None) -> int:
    """Print the scorecard of the stored reports."""
    from listener.history_cli import history_context
    from listener.outcome_data import collect
    from listener.store import open_store

    def fail(text: str) -> int:
        sys.stderr.write(f"overread scorecard: {text}\n")
        return _EXIT_ERROR

    if args.min_reads < 1:
        return fail("--min-reads takes 1 or more")
    now = now or datetime.now(UTC)
    window = parse_window(args, now)
    if isinstance(window, str):
        return fail(window)
    since, until = window["since"], window.get("until", now)
    if since >= until:
        return fail(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    by, only = subject_of(args)
    ctx = history_context(config)
    directory = ctx.pipeline.qa.directory if ctx.pipeline.qa is not None else EMPTY_DIRECTORY
    try:
        store = open_store(config, create=False)
    except StoreError as exc:
        return fail(str(exc))
    try:
        collected = collect(store, ctx, since=since, until=until)
    except StoreError as exc:
        return fail(str(exc))
    finally:
        store.close()
    card = collected.scorecard(
        by=by, directory=directory, since=since, until=until, min_reads=args.min_reads, only=only
    )
    write_scorecard(out, card, args.format)
    if only is not None and not card.rows:
        option = "--reader" if by == "reader" else "--group"
        sys.stderr.write(f"overread scorecard: {option} {only!r} has no read between {since.isoformat()}")
        sys.stderr.write(f" and {until.isoformat()}\n")
        return _EXIT_NOT_FOUND
    return _EXIT_OK
