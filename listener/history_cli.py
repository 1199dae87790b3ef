"""``overread history ACCESSION``: an accession's report versions and what changed between them.

Layer: CLI (I/O for users). The document comes from :mod:`listener.history`;
this module loads what it needs from the config, opens the store and prints
it. See docs/cli.md ("history") and docs/outcomes.md ("Report history").

Patient names and identifiers are never printed: the accession, the exam and
the readers only.

Exit status: 0 shown; 1 no report of that accession; 2 usage error or no store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from listener.config import Config
from listener.errors import StoreError
from listener.fhir.decode import FhirClient
from listener.history import HistoryContext, history_document, outcome_rules_file
from listener.outcomes import load_outcome_rules
from listener.pipeline import Pipeline
from listener.store.base import HISTORY_LIMIT
from listener.views import reader_label

__all__ = ["add_history_parser", "cmd_history", "history_context", "write_history_text"]

_EXIT_OK, _EXIT_NOT_FOUND, _EXIT_ERROR = 0, 1, 2


def history_context(
    config: Config, pipeline: Pipeline | None = None, clients: Mapping[str, FhirClient] | None = None
) -> HistoryContext:
    """Load what :func:`~listener.history.history_document` needs: the pipeline, the grading rules and
    the FHIR clients of ``config`` (a given pipeline or clients are used as they are).

    Raises:
        ConfigError: a policy file does not validate.
    """
    if pipeline is None:
        from listener.assemble import build_pipeline

        pipeline = build_pipeline(config)
    if clients is None:
        from listener.server.http import clients_from_config

        clients = {c.fhir.name: c.fhir for c in clients_from_config(config.http_clients).values()}
    return HistoryContext(pipeline, load_outcome_rules(outcome_rules_file(config)), clients)


def _excerpt(evidence: list[dict[str, Any]]) -> str:
    if not evidence:
        return "-"
    first = evidence[0]
    more = f" (+{len(evidence) - 1} more)" if len(evidence) > 1 else ""
    return f"{first.get('section') or '-'} [{first.get('start')}-{first.get('end')}] {first.get('text')!r}{more}"


def _write_scores(out: TextIO, scores: list[dict[str, Any]]) -> None:
    for s in scores:
        out.write(
            f"  score {s['grade']:<2} via {s['source']}  by {s['scorer'] or '-'}  at {s['scored_at']}"
            + (f": {s['note']}" if s["note"] else "")
            + "\n"
        )


def write_history_text(out: TextIO, doc: dict[str, Any]) -> None:
    """``overread history --format text``: the chain for people."""
    versions = doc["versions"]
    out.write(
        f"accession {doc['accession']}: {len(versions)} version{'s' if len(versions) != 1 else ''},"
        f" {len(doc['comparisons'])} comparison{'s' if len(doc['comparisons']) != 1 else ''}"
        + ("  (more stored: list truncated)" if doc["truncated"] else "")
        + "\n"
    )
    for v in versions:
        reader = v["reader"]
        who = reader_label(reader)
        exam = " ".join(x for x in (v["exam"]["code"], v["exam"]["text"], v["exam"]["modality"]) if x) or "-"
        out.write(
            f"[{v['position']}] {v['status']:<11} report {v['report_time'] or '-'}  received {v['received']}"
            f"  via {v['transport']}  message {v['message_pk']} ({v['message_id']})\n"
        )
        out.write(
            f"    reader {who}  exam {exam}  route {v['bucket'] or '-'}"
            + ("  raw purged" if not v["raw_kept"] else "")
            + ("  (received before an earlier version: out of order)" if v["out_of_order"] else "")
            + "\n"
        )
    for c in doc["comparisons"]:
        head = f"{c['kind']} [{c['before']}] -> [{c['after']}]"
        if not c["comparable"]:
            out.write(f"{head}: {c['reason']}" + (f"; explicit grade {c['grade']}" if c["scores"] else "") + "\n")
            _write_scores(out, c["scores"])
            continue
        comp = c["comparison"]
        grade = f"grade {c['grade']}"
        if c["scores"]:
            grade += f" (explicit; proposed {c['proposed_grade']}" + (", disagreement)" if c["disagreement"] else ")")
        out.write(
            f"{head}: {grade}  ({comp['interpretive']} interpretive,"
            f" {comp['operational']} operational; rules {comp['rules_version']})\n"
        )
        _write_scores(out, c["scores"])
        for d in comp["differences"]:
            out.write(
                f"  {d['grade']:<2} {d['category']:<12} {d['kind']} {d['concept'] or '-'}"
                + (f": {d['detail']}" if d["detail"] else "")
                + "\n"
            )
            out.write(f"       before: {_excerpt(d['prelim'])}\n")
            out.write(f"       after:  {_excerpt(d['final'])}\n")
    if doc["unpaired_scores"]:
        out.write("scores of no compared pair:\n")
        _write_scores(out, doc["unpaired_scores"])


def add_history_parser(sub: Any) -> None:
    """Add ``history`` to the top-level subparsers."""
    p = sub.add_parser(
        "history",
        help="an accession's report versions (prelim, final, corrections) and what changed",
        description="Print every stored report of ACCESSION in clinical order (preliminary, final, corrections), "
        "with reader, report time, receive time and transport, and compare each final with the last "
        "preliminary and each correction with the version it replaces (grade and differences with "
        "evidence). Versions are decoded again from their stored raw bytes with the current "
        "configuration. Patient names and identifiers are never printed.",
        epilog="exit status: 0 shown; 1 no report of that accession; 2 usage error or no store",
    )
    p.add_argument("--config", metavar="F", help="daemon config file (its state_dir and policies are used)")
    p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")
    p.add_argument("accession", metavar="ACCESSION", help="the accession number, exact")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument(
        "--limit",
        type=int,
        default=HISTORY_LIMIT,
        metavar="N",
        help=f"read at most N stored reports (default {HISTORY_LIMIT})",
    )


def cmd_history(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """Print an accession's history."""
    from listener.store import open_store

    if args.limit < 1:
        sys.stderr.write("overread history: --limit takes 1 or more\n")
        return _EXIT_ERROR
    ctx = history_context(config)
    try:
        store = open_store(config, create=False)
    except StoreError as exc:
        sys.stderr.write(f"overread history: {exc}\n")
        return _EXIT_ERROR
    try:
        doc = history_document(store, args.accession, ctx, limit=args.limit)
    except StoreError as exc:
        sys.stderr.write(f"overread history: {exc}\n")
        return _EXIT_ERROR
    finally:
        store.close()
    if args.format == "json":
        out.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    else:
        write_history_text(out, doc)
    if not doc["versions"]:
        sys.stderr.write(f"overread history: no stored report of accession {args.accession!r}\n")
        return _EXIT_NOT_FOUND
    return _EXIT_OK
