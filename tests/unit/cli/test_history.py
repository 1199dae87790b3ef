"""history_document() and the text view: versions re-decoded from raw bytes, compared, no patient data."""

from __future__ import annotations

import io
import json
from datetime import timedelta

from listener.history import HistoryContext, history_document
from listener.history_cli import write_history_text
from listener.outcomes import load_outcome_rules
from listener.pipeline import Pipeline
from listener.views import reader_label
from tests.conftest import RECEIVED
from tests.unit.store.memory import MemoryStore
from tests.unit.store.records import CHEST as SAMPLE
from tests.unit.store.records import CHEST_PNEUMOTHORAX as FINAL
from tests.unit.store.records import CHEST_PRELIM as PRELIM
from tests.unit.store.records import processed, save_processed

CORRECTED = FINAL.replace(b"|CR|F||", b"|CR|C||").replace(b"|20261117103400-0600||CR|", b"|20261117113400-0600||CR|")


def _store(
    store: MemoryStore, pipeline: Pipeline, raw: bytes, control_id: str, minutes: int, keep_raw: bool = True
) -> None:
    save_processed(
        store, processed(pipeline, raw, control_id, RECEIVED + timedelta(minutes=minutes), keep_raw=keep_raw)
    )


def _context(pipeline: Pipeline) -> HistoryContext:
    return HistoryContext(pipeline, load_outcome_rules(), {})


def test_final_and_correction_compared(pipeline: Pipeline) -> None:
    store = MemoryStore()
    try:
        _store(store, pipeline, CORRECTED, "C3", 1)
        _store(store, pipeline, FINAL, "C2", 2)
        _store(store, pipeline, PRELIM, "C1", 3)
        doc = history_document(store, "A2611170088", _context(pipeline))
        assert [v["status"] for v in doc["versions"]] == ["preliminary", "final", "corrected"]
        assert [(c["kind"], c["before"], c["after"]) for c in doc["comparisons"]] == [
            ("prelim_to_final", 0, 1),
            ("correction", 1, 2),
        ]
        first, second = doc["comparisons"]
        assert first["comparable"] and first["grade"].endswith("b")
        assert "critical_added" in {d["kind"] for d in first["comparison"]["differences"]}
        assert second["comparable"] and second["grade"] == "1"
        assert doc["truncated"] is False
        out = io.StringIO()
        write_history_text(out, doc)
        text = out.getvalue()
        assert "prelim_to_final [0] -> [1]: grade" in text and "critical_added pneumothorax" in text
        # The message never says internal or external: no "(unknown)" beside the routed type (docs/cli.md).
        readers = [
            line.split("  exam ")[0].strip() for line in text.splitlines() if line.lstrip().startswith("reader ")
        ]
        assert len(readers) == 3 and all(r.startswith("reader ") and "(unknown)" not in r for r in readers)
        for secret in ("ZZ9000103", "ZZDEMO", "NORA"):
            assert secret not in text and secret not in json.dumps(doc)
        assert len(history_document(store, "A2611170088", _context(pipeline), limit=2)["versions"]) == 2
        assert history_document(store, "A2611170088", _context(pipeline), limit=2)["truncated"] is True
    finally:
        store.close()


def test_purged_raw_is_not_comparable(pipeline: Pipeline) -> None:
    store = MemoryStore()
    try:
        _store(store, pipeline, PRELIM, "C1", 1, keep_raw=False)
        _store(store, pipeline, FINAL, "C2", 2)
        doc = history_document(store, "A2611170088", _context(pipeline))
        (pair,) = doc["comparisons"]
        assert (pair["comparable"], pair["reason"], pair["grade"]) == (False, "not comparable: raw purged", None)
        out = io.StringIO()
        write_history_text(out, doc)
        assert "not comparable: raw purged" in out.getvalue() and "raw purged" in out.getvalue()
        assert history_document(store, "NONE", _context(pipeline))["versions"] == []
    finally:
        store.close()


def test_explicit_scores_override_the_proposal_and_disagreement_is_flagged(pipeline: Pipeline) -> None:
    """A score typed or imported grades the prelim-to-final pair; the latest one wins, the proposal is kept."""
    from datetime import UTC, datetime

    from listener.store import ScoreRecord

    store = MemoryStore()
    try:
        _store(store, pipeline, PRELIM, "C1", 1)
        _store(store, pipeline, FINAL, "C2", 2)
        at = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
        store.record_scores([ScoreRecord("A2611170088", "2a", "csv", at, "dr-peer", "minor")])
        (pair,) = history_document(store, "A2611170088", _context(pipeline))["comparisons"]
        assert pair["proposed_grade"] == "3b" and pair["explicit_grade"] == "2a" and pair["grade"] == "2a"
        assert pair["disagreement"] is True
        assert [(s["grade"], s["source"], s["scorer"], s["note"]) for s in pair["scores"]] == [
            ("2a", "csv", "dr-peer", "minor")
        ]
        store.record_scores([ScoreRecord("A2611170088", "3b", "cli", at, "dr-lead", "")])
        doc = history_document(store, "A2611170088", _context(pipeline))
        (pair,) = doc["comparisons"]
        assert (pair["grade"], pair["proposed_grade"], pair["disagreement"]) == ("3b", "3b", False)
        assert doc["unpaired_scores"] == [] and doc["document_version"] == 2
        out = io.StringIO()
        write_history_text(out, doc)
        text = out.getvalue()
        assert "prelim_to_final [0] -> [1]: grade 3b (explicit; proposed 3b)" in text
        assert "  score 2a via csv  by dr-peer  at 2026-11-18T09:00:00Z: minor\n" in text
        # Without any pair (one version only), the score is listed apart.
        store.record_scores([ScoreRecord("B1", "1", "cli", at, "dr-lead", "")])
        _store(store, pipeline, SAMPLE.replace(b"A2611170088", b"B1"), "C3", 3)
        lone = history_document(store, "B1", _context(pipeline))
        assert lone["comparisons"] == [] and [s["grade"] for s in lone["unpaired_scores"]] == ["1"]
    finally:
        store.close()


def test_a_pair_not_comparable_takes_the_explicit_grade_without_disagreement(pipeline: Pipeline) -> None:
    from datetime import UTC, datetime

    from listener.store import ScoreRecord

    store = MemoryStore()
    try:
        _store(store, pipeline, PRELIM, "C1", 1, keep_raw=False)
        _store(store, pipeline, FINAL, "C2", 2)
        store.record_scores([ScoreRecord("A2611170088", "2b", "cli", datetime(2026, 11, 18, tzinfo=UTC), "dr-x", "")])
        doc = history_document(store, "A2611170088", _context(pipeline))
        (pair,) = doc["comparisons"]
        assert (pair["comparable"], pair["grade"], pair["proposed_grade"], pair["disagreement"]) == (
            False,
            "2b",
            None,
            False,
        )
        out = io.StringIO()
        write_history_text(out, doc)
        assert "not comparable: raw purged; explicit grade 2b\n  score 2b via cli  by dr-x" in out.getvalue()
    finally:
        store.close()


def test_the_reader_label_leaves_out_an_unknown_type() -> None:
    """`show` and `history` print id and name; a type only when the report carried one."""
    assert reader_label({"id": "R1311", "name": "SAMUEL DELACROIX", "type": "unknown"}) == "R1311 SAMUEL DELACROIX"
    assert reader_label({"id": "NT7741", "name": "", "type": "external"}) == "NT7741 (external)"
    assert reader_label({"id": "", "name": "", "type": ""}) == "-"
