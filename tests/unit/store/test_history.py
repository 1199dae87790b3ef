"""report_history(): every stored report of an accession, in storage order, processed messages only."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

from listener.store import ReportRecord, Store
from listener.store.base import MessageRecord

from .records import T0, record


def _report(accession: str, status: str, text: str = "No pneumothorax.") -> ReportRecord:
    doc = {"accession": accession, "status": status, "text": text, "reader": {"id": "R1", "type": "external"}}
    return ReportRecord(
        accession=accession,
        report_json=json.dumps(doc),
        findings_json="[]",
        route_json=json.dumps({"bucket": "release"}),
        bucket="release",
    )


def _save(
    store: Store,
    control_id: str,
    *reports: ReportRecord,
    minutes: int = 0,
    state: str = "processed",
    raw: bytes | None = b"MSH|^~\\&|RIS|HOSP\r",
) -> int:
    return store.save(
        record(control_id, reports=reports, received=T0 + timedelta(minutes=minutes), state=state, raw=raw)
    ).message_pk


def test_history_in_storage_order_with_message_facts(store: Store) -> None:
    """Each report of the accession, with its message's pk, control id, receive time, transport and feed."""
    final_pk = _save(store, "C1", _report("A1", "final"), minutes=5)
    _save(store, "C2", _report("B1", "final"), minutes=6)
    prelim_pk = _save(store, "C3", _report("A1", "preliminary"), minutes=7, raw=None)
    history = store.report_history("A1")
    assert [(e.message_pk, e.control_id, json.loads(e.report_json)["status"]) for e in history] == [
        (final_pk, "C1", "final"),
        (prelim_pk, "C3", "preliminary"),
    ]
    first = history[0]
    assert first.received == T0 + timedelta(minutes=5) and first.received.tzinfo is not None
    assert first.received.utcoffset() == UTC.utcoffset(None)
    assert (first.transport, first.feed, first.bucket, first.seq, first.findings_json) == (
        "mllp",
        "default",
        "release",
        0,
        "[]",
    )
    assert first.raw_kept and not history[1].raw_kept


def test_history_processed_only_exact_and_bounded(store: Store) -> None:
    """Rejected messages, other accessions and an empty accession give nothing; ``limit`` keeps the oldest."""
    _save(store, "C1", _report("A1", "preliminary"), minutes=1)
    _save(store, "C2", _report("A1", "final"), minutes=2, state="rejected")
    _save(store, "C3", _report("A10", "final"), minutes=3)
    _save(store, "C4", _report("A1", "final"), _report("A1", "corrected"), minutes=4)
    assert [json.loads(e.report_json)["status"] for e in store.report_history("A1")] == [
        "preliminary",
        "final",
        "corrected",
    ]
    assert [e.seq for e in store.report_history("A1")] == [0, 0, 1]
    assert len(store.report_history("A1", limit=2)) == 2
    assert store.report_history("A1", limit=0) == ()
    assert store.report_history("") == ()
    assert store.report_history("a1") == ()


def test_history_follows_purge_and_reprocess(store: Store) -> None:
    """Purged raw bytes show as not kept; a reprocess's reports replace the message's earlier ones."""
    pk = _save(store, "C1", _report("A1", "preliminary"))
    assert store.purge_raw(T0 + timedelta(days=1)) == 1
    assert not store.report_history("A1")[0].raw_kept
    again: MessageRecord = record("C1", reports=(_report("A1", "final"),), received=T0)
    store.replace_processing(
        pk, again, now=T0 + timedelta(hours=1), superseded_by="reprocess by test", expected_processing=1
    )
    assert [json.loads(e.report_json)["status"] for e in store.report_history("A1")] == ["final"]


def test_histories_of_many_accessions_match_one_by_one(store: Store) -> None:
    """report_histories gives each accession exactly its report_history, bounded per accession;
    empty, unknown and rejected-only accessions are left out."""
    _save(store, "C1", _report("A1", "preliminary"), minutes=1)
    _save(store, "C2", _report("B1", "final"), _report("A1", "final"), minutes=2)
    _save(store, "C3", _report("A1", "corrected"), minutes=3)
    _save(store, "C4", _report("R1", "final"), minutes=4, state="rejected")
    found = store.report_histories(["B1", "A1", "NONE", "", "R1", "A1"])
    assert list(found) == ["A1", "B1"]
    assert found == {"A1": store.report_history("A1"), "B1": store.report_history("B1")}
    assert store.report_histories(["A1", "B1"], limit=2) == {
        "A1": store.report_history("A1", limit=2),
        "B1": store.report_history("B1"),
    }
    assert store.report_histories([]) == {} and store.report_histories(["A1"], limit=0) == {}
    many = [f"X{n}" for n in range(1100)] + ["A1"]
    assert list(store.report_histories(many)) == ["A1"]
