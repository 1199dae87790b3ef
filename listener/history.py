"""An accession's history document: its report versions and each pair compared (shell).

Layer: shell over the store interface; no Twisted, no logging, no CLI. The
chain's order and the pairs come from the pure :mod:`listener.outcomes.history`;
each pair is compared by :func:`listener.outcomes.compare` on the versions
decoded again from their stored raw bytes through the given pipeline, the way
``overread reprocess`` decodes them (:mod:`listener.reprocess`). Served by
``overread history`` (:mod:`listener.history_cli`) and
``GET /api/history/<accession>`` (:mod:`listener.server.http`); see
docs/cli.md and docs/outcomes.md ("Report history").

Patient data: the document names the accession, the exam and the readers;
the patient's name and identifiers are never in it. Evidence excerpts are
report text, as ``overread show`` prints it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listener.config import Config
from listener.fhir.decode import DEFAULT_CLIENT, FhirClient
from listener.model import Finding, Report
from listener.outcomes import DEFAULT_OUTCOMES_FILE, OutcomeRules, compare
from listener.outcomes.history import VersionChain, build_chain
from listener.pipeline import Pipeline, process, process_fhir
from listener.store.base import HISTORY_LIMIT, HistoryEntry, Store, StoredScore

__all__ = ["DOCUMENT_VERSION", "HistoryContext", "history_document", "outcome_rules_file"]

#: The version of the history document's layout (docs/cli.md).
DOCUMENT_VERSION = 2
_FHIR_MEDIA_TYPE = "application/fhir+json"


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


def _decode(entry: HistoryEntry, raw: bytes, ctx: HistoryContext) -> tuple[Report, tuple[Finding, ...]] | str:
    """The entry's report and QA findings decoded again from ``raw``, or why not."""
    if entry.transport == "mllp":
        outcome = process(raw, ctx.pipeline, received_at=entry.received)
    else:
        sender = json.loads(entry.report_json).get("sender") or {}
        name, facility = str(sender.get("application") or ""), str(sender.get("facility") or "")
        known = ctx.clients.get(name)
        client = dataclasses.replace(
            known or DEFAULT_CLIENT,
            name=name or DEFAULT_CLIENT.name,
            facility=facility,
            feed=ctx.pipeline.mappings.for_sender(name, facility).name,
        )
        outcome = process_fhir(
            raw, ctx.pipeline, received_at=entry.received, media_type=_FHIR_MEDIA_TYPE, client=client
        )
    if entry.seq >= len(outcome.reports):
        return "not comparable: the stored body no longer decodes to this report"
    result = outcome.reports[entry.seq]
    stored_accession = str(json.loads(entry.report_json).get("accession") or "")
    if result.report.accession != stored_accession:
        return "not comparable: the stored body decodes to another accession with the current configuration"
    return result.report, result.findings


def score_json(stored: StoredScore) -> dict[str, Any]:
    """One explicit score in the history document (no patient data: the scorer is an id or a name of staff)."""
    s = stored.score
    return {
        "id": stored.id,
        "grade": s.grade,
        "source": s.source,
        "scorer": s.scorer,
        "note": s.note,
        "scored_at": s.scored_at.isoformat().replace("+00:00", "Z"),
        "message_pk": stored.message_pk,
    }


def _pair_of_score(stored: StoredScore, pairs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pair a score grades: the one whose later version its message carried, else the
    first ``prelim_to_final`` pair, else the only pair; None when no pair fits."""
    if stored.message_pk is not None:
        for item in pairs:
            if item["after_message_pk"] == stored.message_pk:
                return item
    first = next((item for item in pairs if item["kind"] == "prelim_to_final"), None)
    if first is None and len(pairs) == 1:
        first = pairs[0]
    return first


def _apply_scores(scores: tuple[StoredScore, ...], comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put each explicit score on its pair; the latest recorded one sets the pair's grade.

    Returns the scores no pair fits.
    """
    unplaced = []
    for stored in scores:
        item = _pair_of_score(stored, comparisons)
        if item is None:
            unplaced.append(score_json(stored))
        else:
            item["scores"].append(score_json(stored))
    for item in comparisons:
        if not item["scores"]:
            continue
        explicit = item["scores"][-1]["grade"]
        item["explicit_grade"] = explicit
        item["grade"] = explicit
        item["disagreement"] = item["proposed_grade"] is not None and item["proposed_grade"] != explicit
    return unplaced


def history_document(
    store: Store, accession: str, ctx: HistoryContext, *, limit: int = HISTORY_LIMIT
) -> dict[str, Any]:
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
            "kind": pair.kind,
            "before": pair.before,
            "after": pair.after,
            "before_message_pk": chain.versions[pair.before].message_pk,
            "after_message_pk": chain.versions[pair.after].message_pk,
            "comparable": False,
            "reason": "",
            "grade": None,
            "proposed_grade": None,
            "explicit_grade": None,
            "disagreement": False,
            "scores": [],
            "comparison": None,
        }
        before, after = version(pair.before), version(pair.after)
        if isinstance(before, str) or isinstance(after, str):
            item["reason"] = before if isinstance(before, str) else after
        elif qa is None:
            item["reason"] = "not comparable: no QA vocabularies configured"
        else:
            result = compare(before[0], after[0], terms=qa.terms, rules=ctx.rules, qa_findings=(before[1], after[1]))
            item.update(comparable=True, grade=result.grade, proposed_grade=result.grade, comparison=result.to_json())
        comparisons.append(item)
    unplaced = _apply_scores(store.scores(accession, limit=limit), comparisons)
    return {
        "document_version": DOCUMENT_VERSION,
        "accession": accession,
        "versions": [v.to_json() for v in chain.versions],
        "comparisons": comparisons,
        "unpaired_scores": unplaced,
        "truncated": truncated,
    }
