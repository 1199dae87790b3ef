"""``overread history ACCESSION``: an accession's report versions and what changed between them.

Layer: shell (store reads, decoding, CLI output). The chain's order and the
pairs come from the pure :mod:`listener.outcomes.history`; each pair is
compared by :func:`listener.outcomes.compare` on the versions re-decoded from
their stored raw bytes through the current configuration, the way
``overread reprocess`` decodes them (:mod:`listener.reprocess`). The same
document is served by ``GET /api/history/<accession>`` (docs/http-api.md).
See docs/cli.md ("history") and docs/outcomes.md ("Report history").

Patient data: the document names the accession, the exam and the readers;
the patient's name and identifiers are never in it. Evidence excerpts are
report text, as ``overread show`` prints it.

Exit status: 0 shown; 1 no report of that accession; 2 usage error or no store.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from listener.config import Config
from listener.errors import StoreError
from listener.fhir.decode import DEFAULT_CLIENT, FhirClient
from listener.model import Finding, Report
from listener.outcomes import DEFAULT_OUTCOMES_FILE, OutcomeRules, compare, load_outcome_rules
from listener.outcomes.history import VersionChain, build_chain
from listener.pipeline import Pipeline, process, process_fhir
from listener.store.base import HISTORY_LIMIT, HistoryEntry, Store

__all__ = ["HistoryContext", "add_history_parser", "cmd_history", "history_context", "history_document",
           "write_history_text"]

#: The version of the history document's layout (docs/cli.md).
DOCUMENT_VERSION = 1
_FHIR_MEDIA_TYPE = "application/fhir+json"
_EXIT_OK, _EXIT_NOT_FOUND, _EXIT_ERROR = 0, 1, 2


@dataclass(frozen=True, slots=True)
class HistoryContext:
    """What re-decoding and comparing need: the pipeline, the grading rules, the FHIR clients by name."""

    pipeline: Pipeline
    rules: OutcomeRules
    clients: Mapping[str, FhirClient]


def outcome_rules_file(config: Config) -> Path:
    """``outcomes.yaml`` of the configured policies directory, else the shipped one."""
    local = Path(config.policies_dir) / "outcomes.yaml"
    return local if local.is_file() else DEFAULT_OUTCOMES_FILE


def history_context(config: Config, pipeline: Pipeline | None = None,
                    clients: Mapping[str, FhirClient] | None = None) -> HistoryContext:
    """Load what :func:`history_document` needs from the config (the daemon passes its own pipeline and clients).

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


def _decode(entry: HistoryEntry, raw: bytes, ctx: HistoryContext) -> tuple[Report, tuple[Finding, ...]] | str:
    """The entry's report and QA findings decoded again from ``raw``, or why not."""
    if entry.transport == "mllp":
        outcome = process(raw, ctx.pipeline, received_at=entry.received)
    else:
        sender = (json.loads(entry.report_json).get("sender") or {})
        name, facility = str(sender.get("application") or ""), str(sender.get("facility") or "")
        known = ctx.clients.get(name)
        client = dataclasses.replace(known or DEFAULT_CLIENT, name=name or DEFAULT_CLIENT.name, facility=facility,
                                     feed=ctx.pipeline.mappings.for_sender(name, facility).name)
        outcome = process_fhir(raw, ctx.pipeline, received_at=entry.received, media_type=_FHIR_MEDIA_TYPE,
                               client=client)
    if entry.seq >= len(outcome.reports):
        return "not comparable: the stored body no longer decodes to this report"
    result = outcome.reports[entry.seq]
    stored_accession = str(json.loads(entry.report_json).get("accession") or "")
    if result.report.accession != stored_accession:
        return "not comparable: the stored body decodes to another accession with the current configuration"
    return result.report, result.findings


def history_document(store: Store, accession: str, ctx: HistoryContext, *,
                     limit: int = HISTORY_LIMIT) -> dict[str, Any]:
    """The history document of ``accession`` (docs/cli.md, "history"): versions and comparisons.

    Raises:
        StoreError: the store cannot be read.
    """
    entries = store.report_history(accession, limit=limit + 1)
    truncated = len(entries) > limit
    entries = entries[:limit]
    chain: VersionChain = build_chain(accession, entries)
    by_key = {(e.message_pk, e.seq): e for e in entries}
    decoded: dict[int, tuple[Report, tuple[Finding, ...]] | str] = {}

    def version(position: int) -> tuple[Report, tuple[Finding, ...]] | str:
        if position not in decoded:
            v = chain.versions[position]
            raw = store.message_raw(v.message_pk) if v.raw_kept else None
            if raw is None:
                decoded[position] = "not comparable: raw purged"
            else:
                decoded[position] = _decode(by_key[(v.message_pk, v.seq)], raw, ctx)
        return decoded[position]

    comparisons = []
    qa = ctx.pipeline.qa
    for pair in chain.pairs:
        item: dict[str, Any] = {
            "kind": pair.kind, "before": pair.before, "after": pair.after,
            "before_message_pk": chain.versions[pair.before].message_pk,
            "after_message_pk": chain.versions[pair.after].message_pk,
            "comparable": False, "reason": "", "grade": None, "comparison": None,
        }
        before, after = version(pair.before), version(pair.after)
        if isinstance(before, str) or isinstance(after, str):
            item["reason"] = before if isinstance(before, str) else after
        elif qa is None:
            item["reason"] = "not comparable: no QA vocabularies configured"
        else:
            result = compare(before[0], after[0], terms=qa.terms, rules=ctx.rules, qa_findings=(before[1], after[1]))
            item.update(comparable=True, grade=result.grade, comparison=result.to_json())
        comparisons.append(item)
    return {
        "document_version": DOCUMENT_VERSION,
        "accession": accession,
        "versions": [v.to_json() for v in chain.versions],
        "comparisons": comparisons,
        "truncated": truncated,
    }


def _excerpt(evidence: list[dict[str, Any]]) -> str:
    if not evidence:
        return "-"
    first = evidence[0]
    more = f" (+{len(evidence) - 1} more)" if len(evidence) > 1 else ""
    return f"{first.get('section') or '-'} [{first.get('start')}-{first.get('end')}] {first.get('text')!r}{more}"


def write_history_text(out: TextIO, doc: dict[str, Any]) -> None:
    """``overread history --format text``: the chain for people."""
    versions = doc["versions"]
    out.write(f"accession {doc['accession']}: {len(versions)} version{'s' if len(versions) != 1 else ''},"
              f" {len(doc['comparisons'])} comparison{'s' if len(doc['comparisons']) != 1 else ''}"
              + ("  (more stored: list truncated)" if doc["truncated"] else "") + "\n")
    for v in versions:
        reader = v["reader"]
        who = (reader["id"] or "-") + (f" {reader['name']}" if reader["name"] else "") + f" ({reader['type'] or '-'})"
        exam = " ".join(x for x in (v["exam"]["code"], v["exam"]["text"], v["exam"]["modality"]) if x) or "-"
        out.write(f"[{v['position']}] {v['status']:<11} report {v['report_time'] or '-'}  received {v['received']}"
                  f"  via {v['transport']}  message {v['message_pk']} ({v['message_id']})\n")
        out.write(f"    reader {who}  exam {exam}  route {v['bucket'] or '-'}"
                  + ("  raw purged" if not v["raw_kept"] else "")
                  + ("  (received before an earlier version: out of order)" if v["out_of_order"] else "") + "\n")
    for c in doc["comparisons"]:
        head = f"{c['kind']} [{c['before']}] -> [{c['after']}]"
        if not c["comparable"]:
            out.write(f"{head}: {c['reason']}\n")
            continue
        comp = c["comparison"]
        out.write(f"{head}: grade {c['grade']}  ({comp['interpretive']} interpretive,"
                  f" {comp['operational']} operational; rules {comp['rules_version']})\n")
        for d in comp["differences"]:
            out.write(f"  {d['grade']:<2} {d['category']:<12} {d['kind']} {d['concept'] or '-'}"
                      + (f": {d['detail']}" if d["detail"] else "") + "\n")
            out.write(f"       before: {_excerpt(d['prelim'])}\n")
            out.write(f"       after:  {_excerpt(d['final'])}\n")


def add_history_parser(sub: Any) -> None:
    """Add ``history`` to the top-level subparsers."""
    p = sub.add_parser(
        "history", help="an accession's report versions (prelim, final, corrections) and what changed",
        description="Print every stored report of ACCESSION in clinical order (preliminary, final, corrections), "
                    "with reader, report time, receive time and transport, and compare each final with the last "
                    "preliminary and each correction with the version it replaces (grade and differences with "
                    "evidence). Versions are decoded again from their stored raw bytes with the current "
                    "configuration. Patient names and identifiers are never printed.",
        epilog="exit status: 0 shown; 1 no report of that accession; 2 usage error or no store")
    p.add_argument("--config", metavar="F", help="daemon config file (its state_dir and policies are used)")
    p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")
    p.add_argument("accession", metavar="ACCESSION", help="the accession number, exact")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--limit", type=int, default=HISTORY_LIMIT, metavar="N",
                   help=f"read at most N stored reports (default {HISTORY_LIMIT})")


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
