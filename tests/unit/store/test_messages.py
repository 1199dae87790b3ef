"""Saving messages: round trips, duplicates, errors that never quote data."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.store import MessageRecord, SaveResult, SQLiteStore, Store

from .records import POISON, T0, item, poison_reports, record, report


def test_save_round_trip(store: Store) -> None:
    """What save() takes comes back from messages(), message_raw() and outbox_list()."""
    rec = record(
        "C1",
        reports=(report("A1"), report("A2")),
        outbox=(item("A1", "O1"), item("A2", "O2")),
    )
    result = store.save(rec)
    assert result.duplicate is False
    assert (result.ack, result.ack_code) == (rec.ack, "AA")

    (summary,) = store.messages()
    assert summary.message_pk == result.message_pk
    assert (summary.control_id, summary.sender_application, summary.sender_facility) == (
        "C1",
        "RIS",
        "HOSP",
    )
    assert (summary.feed, summary.transport, summary.state) == ("default", "mllp", "processed")
    assert (summary.ack_code, summary.error_code) == ("AA", "")
    assert summary.received == T0
    assert summary.report_count == 2
    assert summary.raw_kept is True
    assert store.message_raw(result.message_pk) == rec.raw

    rows = store.outbox_list()
    assert [(r.accession, r.control_id, r.payload) for r in rows] == [
        ("A1", "O1", b"ORM|O1"),
        ("A2", "O2", b"ORM|O2"),
    ]
    assert all(r.state == "pending" and r.attempts == 0 for r in rows)
    assert all(r.created == T0 and r.next_attempt_at == T0 for r in rows)


def test_rejected_message_without_raw_or_reports(store: Store) -> None:
    """A rejected message is stored with its error code even with no reports and no raw bytes."""
    rec = MessageRecord(
        control_id="BAD1",
        sender_application="RIS",
        sender_facility="",
        feed="default",
        received=T0,
        raw=None,
        transport="http",
        state="rejected",
        ack_code="AE",
        ack=b'{"resourceType": "OperationOutcome"}',
        error_code="101",
    )
    pk = store.save(rec).message_pk
    (summary,) = store.messages()
    assert (summary.state, summary.ack_code, summary.error_code) == ("rejected", "AE", "101")
    assert (summary.report_count, summary.raw_kept, summary.transport) == (0, False, "http")
    assert store.message_raw(pk) is None
    assert store.message_raw(pk + 1000) is None


def test_times_are_stored_in_utc() -> None:
    """An aware time in another zone comes back as the same instant in UTC."""
    local = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert record(received=local).received == local


def test_times_round_trip_in_utc(store: Store) -> None:
    """The store returns UTC datetimes equal to the instant it was given, to the microsecond."""
    local = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    store.save(record(received=local))
    (summary,) = store.messages()
    assert summary.received == local
    assert summary.received.utcoffset() == timedelta(0)


def test_naive_datetime_and_unknown_values_are_refused() -> None:
    """Caller bugs (naive time, unknown transport or state) fail when the record is built."""
    with pytest.raises(ValueError, match="aware"):
        record(received=datetime(2024, 5, 1, 12, 0))
    with pytest.raises(ValueError, match="state"):
        record(state="done")
    with pytest.raises(ValueError, match="transport"):
        MessageRecord("C", "A", "F", "f", T0, None, "ftp", "processed", "AA", b"")  # type: ignore[arg-type]


def test_messages_paging_cursor_since_and_limit(store: Store) -> None:
    """messages() pages past its internal page size and honours after, since and limit."""
    futures = [store.submit(record(f"C{i:04d}", received=T0 + timedelta(seconds=i))) for i in range(1203)]
    pks = [f.result().message_pk for f in futures]
    assert [m.message_pk for m in store.messages()] == pks
    assert [m.control_id for m in store.messages(limit=3)] == ["C0000", "C0001", "C0002"]
    assert [m.message_pk for m in store.messages(after=pks[1199])] == pks[1200:]
    since = [m.control_id for m in store.messages(since=T0 + timedelta(seconds=600))]
    assert since[0] == "C0600" and len(since) == 603
    assert len(list(store.messages(after=pks[100], limit=700))) == 700


def test_messages_newest_first_pages_back_without_repeats_or_gaps(store: Store) -> None:
    """newest_first lists the largest message_pk first, past the internal page size; paging on
    with before= reaches every message once; after and before bound it from both sides."""
    futures = [store.submit(record(f"N{i:04d}", received=T0 + timedelta(seconds=i))) for i in range(1203)]
    pks = [f.result().message_pk for f in futures]
    newest = list(reversed(pks))
    assert [m.message_pk for m in store.messages(newest_first=True)] == newest
    assert [m.control_id for m in store.messages(newest_first=True, limit=2)] == ["N1202", "N1201"]
    seen: list[int] = []
    before: int | None = None
    while True:
        page = [m.message_pk for m in store.messages(newest_first=True, before=before, limit=50)]
        seen.extend(page)
        if len(page) < 50:
            break
        before = page[-1]
    assert seen == newest
    assert [m.message_pk for m in store.messages(before=pks[3])] == pks[:3]
    assert [m.message_pk for m in store.messages(newest_first=True, before=pks[3])] == [pks[2], pks[1], pks[0]]
    assert [m.message_pk for m in store.messages(after=pks[5], before=pks[9], newest_first=True)] == [
        pks[8],
        pks[7],
        pks[6],
    ]
    window = [
        m.control_id
        for m in store.messages(
            newest_first=True, since=T0 + timedelta(seconds=600), until=T0 + timedelta(seconds=700), limit=3
        )
    ]
    assert window == ["N0699", "N0698", "N0697"]


def test_messages_newest_first_with_report_filters(store: Store) -> None:
    """newest_first keeps the accession, patient and bucket filters and the before cursor."""
    ids = [
        store.save(record(f"F{i}", received=T0 + timedelta(minutes=i), reports=(report("ACC7"),))).message_pk
        for i in range(4)
    ]
    store.save(record("OTHER", received=T0 + timedelta(minutes=9), reports=(report("ACC8"),)))

    def listed(**filters: object) -> list[int]:
        return [m.message_pk for m in store.messages(newest_first=True, **filters)]  # type: ignore[arg-type]

    assert listed(accession="ACC7") == ids[::-1]
    assert listed(accession="ACC7", before=ids[2]) == [ids[1], ids[0]]
    assert listed(bucket="release", limit=2)[1:] == [ids[3]]
    assert listed(bucket="selective_overread") == []
    assert listed(accession="ACC7", bucket="release", before=ids[1]) == [ids[0]]


def test_buckets_of(store: Store) -> None:
    """buckets_of() gives each listed message's distinct current buckets, sorted, leaving out
    empty buckets, messages without reports and unknown message_pks."""
    two = store.save(
        record(
            "B1",
            reports=(
                replace(report("X1"), bucket="selective_overread"),
                report("X2"),
                replace(report("X3"), bucket="selective_overread"),
            ),
        )
    ).message_pk
    one = store.save(record("B2", reports=(report("X4"),))).message_pk
    none = store.save(record("B3", reports=())).message_pk
    empty = store.save(record("B4", reports=(replace(report("X5"), bucket=""),))).message_pk
    assert store.buckets_of([two, one, none, empty, 999_999, one]) == {
        two: ("release", "selective_overread"),
        one: ("release",),
    }
    assert store.buckets_of([]) == {}
    many = [store.save(record(f"M{i}", reports=(report(f"Y{i}"),))).message_pk for i in range(620)]
    assert store.buckets_of(many) == dict.fromkeys(many, ("release",))


def test_messages_filters(store: Store) -> None:
    """messages() filters on state, ACK code, sender, control id, transport and a time window,
    combined with each other and with the cursor and limit."""
    store.save(record("A1", received=T0))
    store.save(record("A2", app="PACS", received=T0 + timedelta(minutes=1)))
    store.save(record("A3", facility="CLINIC", ack_code="AE", state="rejected", received=T0 + timedelta(minutes=2)))
    store.save(record("A4", ack_code="AR", state="rejected", received=T0 + timedelta(minutes=3)))

    def ids(**filters: object) -> list[str]:
        return [m.control_id for m in store.messages(**filters)]  # type: ignore[arg-type]

    assert ids(state="rejected") == ["A3", "A4"]
    assert ids(ack_code="AE") == ["A3"]
    assert ids(sender_application="PACS") == ["A2"]
    assert ids(sender_application="RIS", sender_facility="HOSP") == ["A1", "A4"]
    assert ids(control_id="A3") == ["A3"]
    assert ids(transport="http") == []
    assert ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == ["A2", "A3"]
    assert ids(state="rejected", limit=1) == ["A3"]
    first = next(store.messages(state="rejected"))
    assert ids(state="rejected", after=first.message_pk) == ["A4"]
    with pytest.raises(ValueError):
        list(store.messages(until=datetime(2026, 1, 1)))


def test_keys_are_searched_as_typed_text_in_any_stored_form(store: Store) -> None:
    """The MSH keys are stored as the latin-1 reading of their bytes (one character a byte): a
    search by the text as typed finds a UTF-8 message's key (its bytes) and a latin-1 one's
    (the text itself), and no other (listener/hl7v2/keys.py)."""
    utf8 = "é-ü-1".encode().decode("latin-1")
    store.save(record(utf8, app="Zürich".encode().decode("latin-1")))
    store.save(record("é", app="Zürich"))
    store.save(record("e"))

    def ids(**filters: object) -> list[str]:
        return [m.control_id for m in store.messages(**filters)]  # type: ignore[arg-type]

    assert utf8 == "Ã©-Ã¼-1"
    assert ids(control_id="é-ü-1") == [utf8]
    assert ids(control_id="é") == ["é"]
    assert ids(control_id="Ã©-Ã¼-1") == [utf8]  # the stored form, typed, still finds it
    assert ids(sender_application="Zürich") == [utf8, "é"]
    assert ids(sender_application="Zürich", control_id="é") == ["é"]
    assert ids(control_id="ü") == []
    zurich = "Zürich".encode().decode("latin-1")
    # The duplicate key stays byte-exact: only the stored form is the same message.
    assert store.find_duplicate(zurich, "HOSP", utf8) is not None
    assert store.find_duplicate(zurich, "HOSP", "é-ü-1") is None


def test_find_duplicate(store: Store) -> None:
    """find_duplicate() knows nothing before a save and gives the stored answer after it."""
    assert store.find_duplicate("RIS", "HOSP", "C1") is None
    pk = store.save(record("C1", ack=b"FIRST")).message_pk
    found = store.find_duplicate("RIS", "HOSP", "C1")
    assert found is not None
    assert (found.message_pk, found.duplicate, found.ack, found.ack_code) == (pk, True, b"FIRST", "AA")
    # The key is all three parts.
    assert store.find_duplicate("RIS", "OTHER", "C1") is None
    assert store.find_duplicate("PACS", "HOSP", "C1") is None


def test_sequential_duplicate_writes_nothing(store: Store) -> None:
    """Saving a key twice returns the first answer and adds no message, report or outbox row."""
    first = store.save(record("C1", ack=b"FIRST", outbox=(item(),)))
    again = store.save(record("C1", ack=b"SECOND", ack_code="AE", outbox=(item(control_id="X"),)))
    assert again.duplicate is True
    assert (again.message_pk, again.ack, again.ack_code) == (first.message_pk, b"FIRST", "AA")
    assert len(list(store.messages())) == 1
    assert [r.control_id for r in store.outbox_list()] == ["OUT1"]


def test_same_control_id_from_other_senders_is_not_a_duplicate(store: Store) -> None:
    """MSH-10 is unique per (application, facility) only."""
    assert not store.save(record("C1", app="RIS", facility="A")).duplicate
    assert not store.save(record("C1", app="RIS", facility="B")).duplicate
    assert not store.save(record("C1", app="PACS", facility="A")).duplicate
    assert len(list(store.messages())) == 3


def test_racing_duplicates_in_threads(store: Store) -> None:
    """Threads saving one key at once: exactly one writes, all get the winner's answer."""
    barrier = threading.Barrier(16)
    results = []
    lock = threading.Lock()

    def save(n: int) -> None:
        barrier.wait()
        result = store.save(record("RACE", ack=f"ACK{n}".encode(), outbox=(item(),)))
        with lock:
            results.append(result)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if not r.duplicate]
    assert len(winners) == 1
    assert {(r.message_pk, r.ack) for r in results} == {(winners[0].message_pk, winners[0].ack)}
    assert len(list(store.messages())) == 1
    assert len(store.outbox_list()) == 1


def test_racing_duplicates_across_two_stores(db_path: Path) -> None:
    """SQLite only (one file, two processes' connections). Two stores (two writer connections, as two processes would have) racing on one key."""
    db_path.parent.mkdir(parents=True)
    stores = [SQLiteStore(db_path), SQLiteStore(db_path)]
    try:
        for round_ in range(20):
            barrier = threading.Barrier(2)
            results = []

            def save(
                store: SQLiteStore,
                n: int,
                key: str = f"K{round_}",
                barrier: threading.Barrier = barrier,
                results: list[SaveResult] = results,
            ) -> None:
                barrier.wait()
                results.append(store.save(record(key, ack=f"ACK{n}".encode())))

            threads = [threading.Thread(target=save, args=(s, n)) for n, s in enumerate(stores)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(r.duplicate for r in results) == [False, True]
            assert len({r.ack for r in results}) == 1
        assert len(list(stores[0].messages())) == 20
    finally:
        for s in stores:
            s.close()


def test_failed_save_keeps_nothing_and_quotes_nothing(sqlite_store: SQLiteStore) -> None:
    """SQLite only (the failure is a trigger on its writer connection). A save failing half-way raises a StoreError without SQLite's text, and leaves no row."""
    marker = "DOE^JANE^MARKER"
    store = sqlite_store
    poison_reports(store, f"value {marker} refused")
    with pytest.raises(StoreError) as info:
        store.save(record("C1", reports=(report("A0"), report(POISON)), outbox=(item(),)))
    error = info.value
    assert marker not in str(error)
    assert str(error) == "save failed (IntegrityError SQLITE_CONSTRAINT_TRIGGER)"
    assert (error.error_type, error.error_code) == ("IntegrityError", "SQLITE_CONSTRAINT_TRIGGER")
    assert error.__cause__ is None and error.__context__ is None
    # Nothing of the failed save remains: not the message, not its first report, not its outbox row.
    assert list(store.messages()) == []
    assert store.outbox_list() == []
    assert store.find_duplicate("RIS", "HOSP", "C1") is None


def test_closed_store_refuses_work(new_store: Callable[[], Store]) -> None:
    """After close(): health() is False and saving raises StoreError; close() is idempotent."""
    store = new_store()
    assert store.health() is True
    store.close()
    store.close()
    assert store.health() is False
    with pytest.raises(StoreError, match="closed"):
        store.save(record())
    with pytest.raises(StoreError):
        store.find_duplicate("RIS", "HOSP", "C1")


def test_data_survives_reopen(db_path: Path) -> None:
    """SQLite only (a file). A closed and reopened store still has its messages and outbox rows."""
    store = SQLiteStore.in_state_dir(db_path.parent)
    store.save(record("C1", outbox=(item(),)))
    store.close()
    again = SQLiteStore.in_state_dir(db_path.parent)
    try:
        assert [m.control_id for m in again.messages()] == ["C1"]
        assert again.find_duplicate("RIS", "HOSP", "C1") is not None
        assert len(again.outbox_list("pending")) == 1
    finally:
        again.close()
