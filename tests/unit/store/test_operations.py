"""The store behind the operator's tools: lookups by business keys on indexes, numbered
processings (resend of a rejection, reprocess), outbox resend and kick with their events,
destination connection state, and the audit log (docs/operations.md)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.store import SQLiteStore, Store

from .records import T0, item, minutes, record, report


def _rejected(control_id: str = "C1", raw: bytes = b"MSH|bad\r", error: str = "101"):  # type: ignore[no-untyped-def]
    return dataclasses.replace(
        record(control_id, ack=b"MSH|ACK\rMSA|AE|C1\r", ack_code="AE", raw=raw, reports=(), state="rejected"),
        error_code=error,
    )


def test_lookups_by_accession_patient_and_control_id(store: Store) -> None:
    """The filters name the right messages."""
    try:
        patient = dataclasses.replace(report("ACC9"), patient_id="P1", patient_authority="HOSP")
        store.save(record("C1", reports=(patient,)))
        store.save(record("C2", reports=(report("ACC2"),)))
        store.save(record("C3", app="OTHER", reports=(dataclasses.replace(report("ACC9"), patient_id="P1"),)))
        assert [m.control_id for m in store.messages(accession="ACC9")] == ["C1", "C3"]
        assert [m.control_id for m in store.messages(patient_id="P1")] == ["C1", "C3"]
        assert [m.control_id for m in store.messages(patient_id="P1", patient_authority="HOSP")] == ["C1"]
        assert [m.control_id for m in store.messages(control_id="C2")] == ["C2"]
        with pytest.raises(ValueError):
            list(store.messages(patient_authority="HOSP"))
    finally:
        store.close()


def test_sqlite_lookups_use_indexes(tmp_path: Path) -> None:
    """SQLite only: it answers each filter of messages() from an index, never a scan of messages."""
    SQLiteStore(tmp_path / "overread.db").close()
    conn = sqlite3.connect(tmp_path / "overread.db")
    try:
        for where, params in (
            ("m.id IN (SELECT r.message_id FROM reports r WHERE r.accession = ?)", ("ACC9",)),
            (
                "m.id IN (SELECT r.message_id FROM reports r WHERE r.patient_id = ? AND r.patient_authority = ?)",
                ("P1", "HOSP"),
            ),
            ("m.control_id = ?", ("C2",)),
        ):
            plan = " | ".join(
                row[3]
                for row in conn.execute(
                    f"EXPLAIN QUERY PLAN SELECT m.id FROM messages m WHERE m.id > 0 AND {where} ORDER BY m.id", params
                )
            )
            assert "USING" in plan and "SCAN r" not in plan, plan
            assert not any(step.strip() == "SCAN m" for step in plan.split("|")), plan
    finally:
        conn.close()


def test_resend_of_a_rejection_replaces_it_and_keeps_the_old_one_numbered(store: Store) -> None:
    """Rejected, then the same key accepted: processing 2, the rejection kept with its bytes;
    rejected again for the same reason with the same bytes: the stored answer, nothing written;
    an accepted key's resend: the stored answer."""
    try:
        first = store.save(_rejected(raw=b"MSH|old\r"))
        again = store.save(_rejected(raw=b"MSH|old\r"))
        assert again.duplicate and again.message_pk == first.message_pk and again.state == "rejected"
        accepted = store.save(record("C1", raw=b"MSH|new\r", received=T0 + minutes(5), outbox=(item(),)))
        assert not accepted.duplicate and accepted.processing == 2 and accepted.message_pk == first.message_pk
        detail = store.message_detail(first.message_pk)
        assert detail is not None
        assert detail.summary.state == "processed" and detail.summary.processing == 2 and detail.raw == b"MSH|new\r"
        (earlier,) = detail.processings
        assert (earlier.number, earlier.state, earlier.error_code, earlier.superseded_by) == (
            1,
            "rejected",
            "101",
            "resend",
        )
        assert earlier.raw == b"MSH|old\r" and earlier.processed == T0 and earlier.superseded == T0 + minutes(5)
        assert [r.accession for r in detail.reports] == ["ACC1"] and len(detail.outbox) == 1
        resend = store.save(record("C1", raw=b"MSH|newer\r"))
        assert resend.duplicate and resend.ack_code == "AA"
        assert store.message_detail(first.message_pk).summary.processing == 2  # type: ignore[union-attr]
    finally:
        store.close()


def test_replace_processing_refuses_a_stale_caller(store: Store) -> None:
    """An operator's reprocess names the processing it read; if another replaced it meanwhile, it is refused."""
    try:
        pk = store.save(record("C1")).message_pk
        new = record("C1", reports=(report("ACC1"), report("ACC2")))
        result = store.replace_processing(
            pk, new, now=T0 + minutes(1), superseded_by="reprocess by ann", expected_processing=1
        )
        assert result.processing == 2
        with pytest.raises(StoreError, match="processed again meanwhile"):
            store.replace_processing(
                pk, new, now=T0 + minutes(2), superseded_by="reprocess by bob", expected_processing=1
            )
        detail = store.message_detail(pk)
        assert detail is not None and [r.accession for r in detail.reports] == ["ACC1", "ACC2"]
        assert [p.superseded_by for p in detail.processings] == ["reprocess by ann"]
        assert detail.processings[0].raw is None  # same bytes: not kept twice
        assert store.newest_message_pk() == pk
    finally:
        store.close()


def test_outbox_resend_refuses_an_older_decision_and_records_events(store: Store) -> None:
    """Resend copies a delivered row (same MSH-10 and bytes) after the queue; an older decision
    than a delivered or pending later one is refused unless forced; every step is an event."""
    try:
        store.save(record("C1", outbox=(item("ACC1", "O1"),)))
        store.save(record("C2", outbox=(item("ACC1", "O2"),)))
        o1, o2 = (r.id for r in store.outbox_list())
        assert store.outbox_delivered(o1, T0 + minutes(1))
        assert store.outbox_resend([o1], T0 + minutes(2)) == []  # O2 (later) is pending
        assert store.outbox_delivered(o2, T0 + minutes(3))
        assert store.outbox_resend([o1], T0 + minutes(4)) == []  # O2 (later) was delivered
        pairs = store.outbox_resend([o2], T0 + minutes(5))
        assert len(pairs) == 1 and pairs[0][0] == o2
        copy = store.outbox_list("pending")[0]
        assert (copy.control_id, copy.payload, copy.resent_from) == ("O2", b"ORM|O2", o2)
        forced = store.outbox_resend([o1], T0 + minutes(6), force=True, note=" (forced)")
        assert len(forced) == 1
        detail = store.message_detail(store.outbox_list()[0].message_pk)
        assert detail is not None
        events = {row.id: [e.event for e in evs] for row, evs in detail.outbox}
        assert events[o1] == ["delivered", "resent"]
    finally:
        store.close()


def test_kick_makes_waiting_rows_due_and_is_seen_in_destination_state(store: Store) -> None:
    """Kick: rows waiting for a retry time become due now; the destination's state records the request;
    connection failures and recovery are kept per destination."""
    try:
        store.save(record("C1", outbox=(item("ACC1", "O1"),)))
        (row,) = store.outbox_list()
        store.outbox_failed(row.id, T0 + minutes(1), T0 + minutes(60), "AE")
        assert store.outbox_due("ris", T0 + minutes(2)) == []
        store.destination_connect_failed("ris", T0 + minutes(2), 3, "tcp: ConnectionRefusedError", T0 + minutes(30))
        assert store.outbox_kick("ris", T0 + minutes(3)) == 1
        assert [r.id for r in store.outbox_due("ris", T0 + minutes(3))] == [row.id]
        (state,) = store.destination_states("ris")
        assert state.connect_failures == 3 and "Refused" in state.last_connect_error
        assert state.kick_requested_at == T0 + minutes(3)
        store.destination_connected("ris", T0 + minutes(4))
        (state,) = store.destination_states()
        assert state.connect_failures == 0 and state.next_connect_at is None
        detail = store.message_detail(row.message_pk)
        assert detail is not None and [e.event for e in detail.outbox[0][1]] == ["failed", "kicked"]
    finally:
        store.close()


def test_audit_entries_hold_ids_and_counts(store: Store) -> None:
    """Audit entries come back in order, filtered by action and time."""
    try:
        store.record_audit(at=T0, actor="ann", via="cli", action="reprocess", target={"messages": [1, 2]}, rows=2)
        store.record_audit(
            at=T0 + minutes(1), actor="bob", via="cli", action="outbox kick", target={"destination": "ris"}, rows=0
        )
        entries = store.audit()
        assert [(e.actor, e.action, e.rows) for e in entries] == [("ann", "reprocess", 2), ("bob", "outbox kick", 0)]
        assert json.loads(entries[0].target) == {"messages": [1, 2]}
        assert [e.actor for e in store.audit(action="outbox kick")] == ["bob"]
        assert [e.actor for e in store.audit(since=T0 + minutes(1))] == ["bob"]
    finally:
        store.close()


def test_a_rejection_is_replaced_only_while_the_message_was_never_accepted(store: Store) -> None:
    """Rejected again for the same reason with other bytes: the stored answer (an engine resending on
    every NACK does not grow the store). A message that was once accepted and routed, then turned
    rejected by a reprocess, is not processed again by a sender's resend: its routing messages went out."""
    try:
        pk = store.save(_rejected(raw=b"MSH|one\r")).message_pk
        assert store.save(_rejected(raw=b"MSH|two\r")).duplicate
        assert store.message_detail(pk).processings == ()  # type: ignore[union-attr]
        pk2 = store.save(record("C2", outbox=(item("ACC2", "O2"),))).message_pk
        store.replace_processing(
            pk2, _rejected("C2"), now=T0 + minutes(1), superseded_by="reprocess by ann", expected_processing=1
        )
        resend = store.save(record("C2", outbox=(item("ACC2", "O2"),)))
        assert resend.duplicate and resend.state == "rejected"
    finally:
        store.close()


def test_a_refused_body_accepted_on_resend_moves_to_its_identity_key(store: Store) -> None:
    """FHIR: the refusal is kept under a key made from the bytes; the accepted resend takes the
    resource's identity key on the same message (so a later copy with other bytes is a duplicate)."""
    try:
        pk = store.save(_rejected("fhir-body-1")).message_pk
        accepted = store.save(dataclasses.replace(record("fhir-id-1"), replaces="fhir-body-1"))
        assert accepted.message_pk == pk and accepted.processing == 2 and not accepted.duplicate
        assert [m.control_id for m in store.messages()] == ["fhir-id-1"]
        assert store.save(record("fhir-id-1")).duplicate
    finally:
        store.close()


def test_operator_commands_never_migrate_a_store(tmp_path: Path) -> None:
    """`open_store(create=False)` (every operator command) refuses an older schema with the command to run."""
    from listener.store import open_store

    from .v1 import make_v1_store

    make_v1_store(tmp_path / "state")
    with pytest.raises(StoreError, match="overread store migrate"):
        open_store(tmp_path / "state", create=False)
    conn = sqlite3.connect(tmp_path / "state" / "overread.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
