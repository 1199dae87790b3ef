"""An accession's history document: its report versions and each pair compared (shell).

Layer: shell over the store interface; no Twisted, no logging, no CLI. The
chain's order and the pairs come from the pure :mod:`listener.outcomes.history`;
each pair is compared by :func:`listener.outcome_data.compare_chains` (from the
comparisons cache, else by :func:`listener.outcomes.compare` on the versions
decoded again from their stored raw bytes through the given pipeline, the way
``overread reprocess`` decodes them, :mod:`listener.reprocess`). Served by
``overread history`` (:mod:`listener.history_cli`) and
``GET /api/history/<accession>`` (:mod:`listener.server.http`); see
docs/cli.md and docs/outcomes.md ("Report history").

Patient data: the document names the accession, the exam and the readers;
the patient's name and identifiers are never in it. Evidence excerpts are
report text, as ``overread show`` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from listener.config import Config
from listener.outcome_data import HistoryContext, compare_chains, place_scores
from listener.outcomes import DEFAULT_OUTCOMES_FILE
from listener.outcomes.history import VersionChain, build_chain
from listener.store.base import HISTORY_LIMIT, Store, StoredScore

__all__ = ["DOCUMENT_VERSION", "HistoryContext", "history_document", "outcome_rules_file", "score_json"]

#: The version of the history document's layout (docs/cli.md).
DOCUMENT_VERSION = 2


def outcome_rules_file(config: Config) -> Path:
    """``outcomes.yaml`` of the configured policies directory, else the shipped one."""
    local = Path(config.policies_dir) / "outcomes.yaml"
    return local if local.is_file() else DEFAULT_OUTCOMES_FILE


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


def history_document(
    store: Store, accession: str, ctx: HistoryContext, *, limit: int = HISTORY_LIMIT
) -> dict[str, Any]:
    """The history document of ``accession`` (docs/cli.md, "history"): versions and comparisons.

    Each pair is compared by :func:`listener.outcome_data.compare_chains`
    (from the comparisons cache when it holds the pair) and its explicit
    scores placed by :func:`listener.outcome_data.place_scores`: the same
    grading as scorecards read.

    Raises:
        StoreError: the store cannot be read.
    """
    entries = store.report_history(accession, limit=limit + 1)
    truncated = len(entries) > limit
    entries = entries[:limit]
    chain: VersionChain = build_chain(accession, entries)
    (compared,) = compare_chains(store, [(chain, entries)], ctx)
    comparisons: list[dict[str, Any]] = []
    for c in compared.pairs:
        pair = c.pair
        comparisons.append(
            {
                "kind": pair.kind,
                "before": pair.before,
                "after": pair.after,
                "before_message_pk": chain.versions[pair.before].message_pk,
                "after_message_pk": chain.versions[pair.after].message_pk,
                "comparable": c.comparable,
                "reason": c.reason,
                "grade": c.comparison["grade"] if c.comparison is not None else None,
                "proposed_grade": c.comparison["grade"] if c.comparison is not None else None,
                "explicit_grade": None,
                "disagreement": False,
                "scores": [],
                "comparison": c.comparison,
            }
        )
    placed, unplaced = place_scores(store.scores(accession, limit=limit), chain)
    for item, scores in zip(comparisons, placed, strict=True):
        if not scores:
            continue
        item["scores"] = [score_json(s) for s in scores]
        explicit = scores[-1].score.grade
        item["explicit_grade"] = explicit
        item["grade"] = explicit
        item["disagreement"] = item["proposed_grade"] is not None and item["proposed_grade"] != explicit
    return {
        "document_version": DOCUMENT_VERSION,
        "accession": accession,
        "versions": [v.to_json() for v in chain.versions],
        "comparisons": comparisons,
        "unpaired_scores": [score_json(s) for s in unplaced],
        "truncated": truncated,
    }
