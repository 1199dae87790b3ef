"""``overread feedback --group NAME``: the document an overread group sends its teleradiology provider.

Layer: CLI (I/O for users). The document comes from
:func:`listener.feedback.feedback_document`, the HTML and PDF from
:mod:`listener.feedback_render`. docs/cli.md ("feedback") and
docs/outcomes.md ("Feedback to the provider").

Patient names and identifiers are never written: accessions and exams only,
and the document says so.

Exit status: 0 written; 1 no reader of that group in readers.yaml; 2 usage
error, an invalid policy file, no store, or PDF output unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from listener.cli_common import parse_window
from listener.config import Config
from listener.errors import StoreError

__all__ = ["add_feedback_parser", "cmd_feedback"]

_EXIT_OK, _EXIT_UNKNOWN_GROUP, _EXIT_ERROR = 0, 1, 2


def add_feedback_parser(sub: Any) -> None:
    """Add ``feedback`` to the top-level subparsers."""
    p = sub.add_parser(
        "feedback",
        help="the feedback document for an external reading group (HTML, PDF or JSON)",
        description="Write the document an overread group sends its teleradiology provider for a window: volume "
        "and turnaround against the contract targets of policies/outcomes.yaml, discrepancy rates with "
        "Wilson 95%% intervals and their weekly trend, each discrepancy case with the preliminary and final "
        "excerpts side by side, QA defect categories with an example each, and the recurring operational "
        "defects. Patient names and identifiers never appear: accessions and exams only.",
        epilog="exit status: 0 written; 1 no reader of that group in readers.yaml; 2 usage error, an invalid "
        "policy file, no store, or PDF output unavailable",
    )
    p.add_argument("--config", metavar="F", help="daemon config file (its state_dir and policies are used)")
    p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")
    p.add_argument("--group", required=True, metavar="NAME", help="a group of policies/readers.yaml (case ignored)")
    p.add_argument("--since", default="30d", metavar="TIME", help="window start (ISO 8601 with offset, or Nd; 30d)")
    p.add_argument("--until", metavar="TIME", help="window end, excluded (ISO 8601 with offset, or Nd; default now)")
    p.add_argument("--format", choices=("html", "pdf", "json"), default="html")
    p.add_argument("--output", metavar="FILE", help="write to FILE (default standard output)")
    p.add_argument(
        "--min-reads", type=int, default=30, metavar="N", help="graded reads a rate needs (default 30; fewer: said)"
    )


def _write(args: argparse.Namespace, data: bytes, out: TextIO) -> None:
    if args.output:
        Path(args.output).write_bytes(data)
        return
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        buffer.write(data)
        buffer.flush()
    else:
        out.write(data.decode("utf-8"))


def cmd_feedback(args: argparse.Namespace, config: Config, out: TextIO, *, now: datetime | None = None) -> int:
    """Write the feedback document of ``--group``."""
    from listener.feedback import feedback_document
    from listener.feedback_render import PdfUnavailable, pdf_engine, render_html, render_pdf
    from listener.history import outcome_rules_file
    from listener.history_cli import history_context
    from listener.outcomes.contracts import contract_for, load_contracts
    from listener.sites import load_directory
    from listener.store import open_store

    now = now or datetime.now(UTC)
    window = parse_window(args, now)
    if isinstance(window, str):
        sys.stderr.write(f"overread feedback: {window}\n")
        return _EXIT_ERROR
    since, until = window.get("since", now), window.get("until", now)
    if since >= until:
        sys.stderr.write("overread feedback: --since must be before --until\n")
        return _EXIT_ERROR
    if args.min_reads < 1:
        sys.stderr.write("overread feedback: --min-reads takes 1 or more\n")
        return _EXIT_ERROR
    if args.format == "pdf" and not args.output and out.isatty():
        sys.stderr.write("overread feedback: PDF is binary: give --output FILE or redirect standard output\n")
        return _EXIT_ERROR
    if args.format == "pdf":
        try:
            pdf_engine()  # before the long work: a host without Pango is told at once
        except PdfUnavailable as exc:
            sys.stderr.write(f"overread feedback: {exc}\n")
            return _EXIT_ERROR
    directory = load_directory(config.policies_dir)
    group = args.group.strip()
    groups = sorted({r.group for r in directory.readers.values() if r.group})
    if group.casefold() not in {g.casefold() for g in groups}:
        sys.stderr.write(
            f"overread feedback: no reader of group {group!r} in readers.yaml (groups: {', '.join(groups) or 'none'})\n"
        )
        return _EXIT_UNKNOWN_GROUP
    group = next(g for g in groups if g.casefold() == group.casefold())
    contract = contract_for(load_contracts(outcome_rules_file(config)), group)
    ctx = history_context(config)
    try:
        store = open_store(config, create=False)
    except StoreError as exc:
        sys.stderr.write(f"overread feedback: {exc}\n")
        return _EXIT_ERROR
    try:
        doc = feedback_document(
            store, ctx, directory, group, since=since, until=until, contract=contract, min_reads=args.min_reads
        )
    except StoreError as exc:
        sys.stderr.write(f"overread feedback: {exc}\n")
        return _EXIT_ERROR
    finally:
        store.close()
    if args.format == "json":
        data = (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    elif args.format == "html":
        data = render_html(doc).encode("utf-8")
    else:
        try:
            data = render_pdf(doc)
        except PdfUnavailable as exc:
            sys.stderr.write(f"overread feedback: {exc}\n")
            return _EXIT_ERROR
    _write(args, data, out)
    if args.output:
        sys.stderr.write(
            f"overread feedback: {group}: {len(doc['cases'])} discrepancy case(s), "
            f"{doc['volume']['reads']} read(s); wrote {args.format} to {args.output}\n"
        )
    return _EXIT_OK
