"""The outbound queue: per-accession order, backoff, dead letter, retry, purge, stats."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.store import Store

from .records import T0, item, minutes, record


def _enqueue(store: Store, *rows: tuple[str, str], destination: str = "ris") -> list[int]:
    """Save one message per (accession, control id); return the outbox ids in order."""
    for accession, control_id in rows:
        store.save(record(f"M-{control_id}", outbox=(item(accession, control_id, destination),)))
    return [r.id for r in store.outbox_list(destination=destination)][-len(rows) :]


def _due(store: Store, now: object = T0, destination: str = "ris") -> list[str]:
    return [r.control_id for r in store.outbox_due(destination, now, 100)]  # type: ignore[arg-type]


def test_due_gives_only_the_oldest_pending_row_per_accession(store: Store) -> None:
    """Two rows of one accession: only the first is due; other accessions are independent."""
    _enqueue(store, ("A", "a1"), ("B", "b1"), ("A", "a2"), ("B", "b2"), ("C", "c1"))
    assert _due(store) == ["a1", "b1", "c1"]


def test_rows_of_one_message_keep_their_order(store: Store) -> None:
    """Several outbox items of one message for one accession go out in the record's order."""
    store.save(record("M1", outbox=(item("A", "first"), item("A", "second"), item("A", "third"))))
    sent = []
    for _ in range(3):
        (row,) = store.outbox_due("ris", T0)
        sent.append(row.control_id)
        assert store.outbox_delivered(row.id, T0)
    assert sent == ["first", "second", "third"]


def test_rows_are_not_due_before_their_time(store: Store) -> None:
    """A row stored at T0 is not due at T0 - 1s (the time comes from the caller)."""
    _enqueue(store, ("A", "a1"))
    assert _due(store, T0 - timedelta(seconds=1)) == []
    assert _due(store, T0) == ["a1"]


def test_backing_off_head_blocks_its_accession_only(store: Store) -> None:
    """While the head of A waits for its retry time, A's later row waits too; B goes on."""
    a1, _, _ = _enqueue(store, ("A", "a1"), ("A", "a2"), ("B", "b1"))
    assert store.outbox_failed(a1, T0, T0 + minutes(5), "timeout")
    assert _due(store, T0 + minutes(1)) == ["b1"]
    assert _due(store, T0 + minutes(5)) == ["a1", "b1"]
    (row,) = [r for r in store.outbox_list() if r.id == a1]
    assert (row.attempts, row.last_error, row.next_attempt_at) == (1, "timeout", T0 + minutes(5))


def test_delivery_moves_the_head(store: Store) -> None:
    """Once the head is delivered the next row of its accession is due; delivered_at is set."""
    a1, _ = _enqueue(store, ("A", "a1"), ("A", "a2"))
    assert store.outbox_delivered(a1, T0 + minutes(1))
    assert _due(store) == ["a2"]
    (row,) = store.outbox_list("delivered")
    assert (row.id, row.attempts, row.delivered_at) == (a1, 1, T0 + minutes(1))


def test_dead_row_does_not_block_later_rows(store: Store) -> None:
    """A dead-lettered head stops blocking: the next row of its accession becomes due."""
    a1, _ = _enqueue(store, ("A", "a1"), ("A", "a2"))
    assert store.outbox_dead(a1, T0, "AR from RIS")
    assert _due(store) == ["a2"]
    (dead,) = store.outbox_list("dead")
    assert (dead.id, dead.attempts, dead.last_error) == (a1, 1, "AR from RIS")


def test_updates_only_touch_pending_rows(store: Store) -> None:
    """delivered/failed/dead on a row that is not pending (or unknown) change nothing."""
    (a1,) = _enqueue(store, ("A", "a1"))
    assert store.outbox_delivered(a1, T0)
    assert not store.outbox_delivered(a1, T0)
    assert not store.outbox_failed(a1, T0, T0, "late")
    assert not store.outbox_dead(a1, T0, "late")
    assert not store.outbox_delivered(9999, T0)
    (row,) = store.outbox_list()
    assert (row.state, row.attempts, row.last_error) == ("delivered", 1, "")


def test_error_text_is_bounded(store: Store) -> None:
    """A huge error text is cut, so a chatty RIS cannot bloat the queue."""
    (a1,) = _enqueue(store, ("A", "a1"))
    store.outbox_failed(a1, T0, T0, "x" * 10_000)
    assert len(store.outbox_list()[0].last_error) == 500


def test_retry_puts_a_dead_row_back_before_later_rows(store: Store) -> None:
    """A revived dead row is due now with attempts reset, ahead of its accession's later rows."""
    a1, a2 = _enqueue(store, ("A", "a1"), ("A", "a2"))
    store.outbox_failed(a1, T0, T0, "AE")
    store.outbox_dead(a1, T0, "AE")
    assert store.outbox_retry([a1], T0 + minutes(10)) == (a1,)
    assert _due(store, T0 + minutes(10)) == ["a1"]
    row = store.outbox_list("pending")[0]
    assert (row.id, row.attempts, row.next_attempt_at) == (a1, 0, T0 + minutes(10))
    assert store.outbox_retry([a1, a2, 12345], T0) == ()  # not dead: skipped


def test_superseded_dead_row_needs_force(store: Store) -> None:
    """A dead row whose accession later had a row delivered stays dead unless forced."""
    a1, a2, b1 = _enqueue(store, ("A", "a1"), ("A", "a2"), ("B", "b1"))
    store.outbox_dead(a1, T0, "AR")
    store.outbox_delivered(a2, T0)
    store.outbox_dead(b1, T0, "AR")
    assert store.outbox_retry(None, T0) == (b1,)
    assert [r.id for r in store.outbox_list("dead")] == [a1]
    assert store.outbox_retry([a1], T0, force=True) == (a1,)
    assert store.outbox_list("dead") == []


def test_dead_row_with_only_pending_successors_is_retried_first(store: Store) -> None:
    """Later rows still pending do not supersede: the revived row goes out first."""
    a1, _, _ = _enqueue(store, ("A", "a1"), ("A", "a2"), ("A", "a3"))
    store.outbox_dead(a1, T0, "AR")
    assert _due(store) == ["a2"]
    assert store.outbox_retry(None, T0) == (a1,)
    assert _due(store) == ["a1"]


def test_destinations_are_separate_queues(store: Store) -> None:
    """Each destination has its own heads; the same accession is ordered per destination."""
    store.save(record("M1", outbox=(item("A", "r1", "ris"), item("A", "p1", "pacs"))))
    store.save(record("M2", outbox=(item("A", "r2", "ris"), item("A", "p2", "pacs"))))
    assert _due(store, destination="ris") == ["r1"]
    assert _due(store, destination="pacs") == ["p1"]
    assert store.outbox_list(destination="pacs", limit=1)[0].control_id == "p1"


def test_due_limit(store: Store) -> None:
    """outbox_due returns at most `limit` heads, oldest first."""
    _enqueue(store, *[(f"A{n}", f"c{n}") for n in range(10)])
    assert [r.control_id for r in store.outbox_due("ris", T0, limit=3)] == ["c0", "c1", "c2"]


def test_purge(store: Store) -> None:
    """Purge deletes delivered rows delivered before the cut-off and the dead ids named; never pending."""
    a1, a2, b1, c1 = _enqueue(store, ("A", "a1"), ("A", "a2"), ("B", "b1"), ("C", "c1"))
    store.outbox_delivered(a1, T0)
    store.outbox_delivered(a2, T0 + minutes(60))
    store.outbox_dead(b1, T0, "AR")
    assert store.outbox_purge(delivered_before=T0 + minutes(30), dead_ids=[b1, c1]) == 2
    assert [r.id for r in store.outbox_list()] == [a2, c1]
    assert store.outbox_purge(delivered_before=T0 + minutes(61)) == 1
    assert [r.id for r in store.outbox_list()] == [c1]


def test_ids_are_not_reused_after_purge(store: Store) -> None:
    """An id an operator saw always means the same row, even after the newest row is purged."""
    (a1,) = _enqueue(store, ("A", "a1"))
    store.outbox_delivered(a1, T0)
    store.outbox_purge(delivered_before=T0 + minutes(1))
    (a2,) = _enqueue(store, ("A", "a2"))
    assert a2 > a1


def test_stats(store: Store, new_store: Callable[[], Store]) -> None:
    """Depth by destination and state, and the age of the oldest pending row."""
    store.save(record("M1", received=T0, outbox=(item("A", "a1"), item("B", "b1", "pacs"))))
    store.save(record("M2", received=T0 + minutes(5), outbox=(item("A", "a2"), item("C", "c1"))))
    ids = {r.control_id: r.id for r in store.outbox_list()}
    store.outbox_delivered(ids["a1"], T0)
    stats = store.outbox_stats(T0 + minutes(10))
    by_key = {(d.destination, d.state): (d.count, d.oldest_age) for d in stats.depth}
    assert by_key == {
        ("pacs", "pending"): (1, minutes(10)),
        ("ris", "delivered"): (1, minutes(10)),
        ("ris", "pending"): (2, minutes(5)),
    }
    assert stats.oldest_pending_age == minutes(10)
    assert stats.count("pending") == 3 and stats.count("pending", "ris") == 2
    assert new_store().outbox_stats(T0).oldest_pending_age is None


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    accessions=st.lists(st.sampled_from("ABC"), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_outcomes_never_break_accession_order(
    new_store: Callable[[], Store], accessions: list[str], seed: int
) -> None:
    """Whatever mix of success, retry and dead letter, no row is sent while an older row
    of its accession is pending, and each accession's deliveries go out in id order."""
    rnd = random.Random(seed)
    store = new_store()
    try:
        ids = _enqueue(store, *[(acc, f"{acc}{n}") for n, acc in enumerate(accessions)])
        assert len(ids) == len(accessions)
        now = T0
        delivered: dict[str, list[int]] = {}
        for _ in range(200):
            due = store.outbox_due("ris", now)
            if not due and not store.outbox_list("pending"):
                break
            for row in due:
                older_pending = [
                    r for r in store.outbox_list("pending") if r.accession == row.accession and r.id < row.id
                ]
                assert older_pending == []
                outcome = rnd.choice(["ok", "ok", "retry", "dead"])
                if outcome == "ok":
                    store.outbox_delivered(row.id, now)
                    delivered.setdefault(row.accession, []).append(row.id)
                elif outcome == "retry":
                    store.outbox_failed(row.id, now, now + minutes(rnd.randint(0, 3)), "AE")
                else:
                    store.outbox_dead(row.id, now, "AR")
            now += minutes(1)
        assert store.outbox_list("pending") == []
        for sent in delivered.values():
            assert sent == sorted(sent)
    finally:
        store.close()


# ------------------------------------------------------------------ leases (docs/outbound.md, "Leases")

LEASE = timedelta(seconds=30)


def _claim(store: Store, holder: str, now: object = T0, destination: str = "ris") -> list[str]:
    until = now + LEASE  # type: ignore[operator]
    return [c.row.control_id for c in store.outbox_claim(destination, holder, now, until, 100)]  # type: ignore[arg-type]


def test_a_claim_leases_the_due_rows_to_one_holder(store: Store) -> None:
    """A claim hands out what outbox_due would, leased until the given time; nobody else gets them meanwhile."""
    _enqueue(store, ("A", "a1"), ("B", "b1"), ("A", "a2"))
    assert _claim(store, "one") == ["a1", "b1"]
    assert _claim(store, "two") == []
    assert _claim(store, "one") == []  # a holder's own unexpired lease is not handed out twice
    leased = {r.control_id: (r.lease_holder, r.lease_expires) for r in store.outbox_list()}
    assert leased == {"a1": ("one", T0 + LEASE), "b1": ("one", T0 + LEASE), "a2": ("", None)}
    # outbox_due is a read: it ignores leases.
    assert _due(store) == ["a1", "b1"]


def test_a_later_row_is_not_claimable_while_the_leased_head_is_undelivered(store: Store) -> None:
    """Per-accession order across holders: a2 waits while a1 is leased elsewhere, and goes once a1 is recorded."""
    a1, _, b1 = _enqueue(store, ("A", "a1"), ("A", "a2"), ("B", "b1"))
    (claim,) = store.outbox_claim("ris", "one", T0, T0 + LEASE, 1)
    assert claim.row.id == a1 and claim.row.lease_holder == "one" and claim.taken_over_from == ""
    assert _claim(store, "two") == ["b1"]
    assert store.outbox_delivered(a1, T0, holder="one")
    assert _claim(store, "two") == ["a2"]
    (row,) = [r for r in store.outbox_list() if r.id == a1]
    assert (row.state, row.lease_holder, row.lease_expires) == ("delivered", "", None)
    assert b1 in {r.id for r in store.outbox_list() if r.lease_holder == "two"}


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_record(store: Store) -> None:
    """After expiry another holder takes the row (an event says so); the old holder's results are refused."""
    (a1,) = _enqueue(store, ("A", "a1"))
    assert _claim(store, "one") == ["a1"]
    assert _claim(store, "two", T0 + LEASE - timedelta(microseconds=1)) == []
    later = T0 + LEASE
    (claim,) = store.outbox_claim("ris", "two", later, later + LEASE, 1)
    assert (claim.row.id, claim.row.lease_holder, claim.taken_over_from) == (a1, "two", "one")
    assert not store.outbox_renew(a1, "one", later + LEASE * 2)
    assert not store.outbox_delivered(a1, later, holder="one")
    assert not store.outbox_failed(a1, later, later + LEASE, "timeout", holder="one")
    assert not store.outbox_dead(a1, later, "AR", holder="one")
    (row,) = store.outbox_list()
    assert (row.state, row.attempts, row.lease_holder) == ("pending", 0, "two")
    assert store.outbox_delivered(a1, later, holder="two")
    detail = store.message_detail(row.message_pk)
    assert detail is not None
    events = [(e.event, e.detail) for e in detail.outbox[0][1]]
    assert ("lease_taken_over", "from one") in events and events[-1] == ("delivered", "")


def test_a_renewed_lease_is_not_taken_over(store: Store) -> None:
    """Renewing moves the expiry; only the holder can renew, and only a pending row."""
    (a1,) = _enqueue(store, ("A", "a1"))
    _claim(store, "one")
    assert store.outbox_renew(a1, "one", T0 + LEASE * 3)
    assert not store.outbox_renew(a1, "two", T0 + LEASE * 9)
    assert _claim(store, "two", T0 + LEASE * 2) == []
    (row,) = store.outbox_list()
    assert row.lease_expires == T0 + LEASE * 3
    assert store.outbox_delivered(a1, T0, holder="one")
    assert not store.outbox_renew(a1, "one", T0 + LEASE * 4)


def test_release_frees_only_the_holders_pending_rows(store: Store) -> None:
    """A clean shutdown releases its leases (of one destination or all): the rows go at once, no takeover."""
    _enqueue(store, ("A", "a1"), ("B", "b1"))
    _enqueue(store, ("C", "c1"), destination="fhir")
    _claim(store, "one")
    _claim(store, "one", destination="fhir")
    assert store.outbox_release("other") == 0
    assert store.outbox_release("one", "ris") == 2
    assert [(r.control_id, r.lease_holder) for r in store.outbox_list()] == [("a1", ""), ("b1", ""), ("c1", "one")]
    claims = store.outbox_claim("ris", "two", T0, T0 + LEASE, 10)
    assert [(c.row.control_id, c.taken_over_from) for c in claims] == [("a1", ""), ("b1", "")]
    assert store.outbox_release("one") == 1


def test_a_recorded_failure_drops_the_lease(store: Store) -> None:
    """failed/dead end the holder's claim: at its retry time the row is anybody's, with no takeover."""
    a1, b1 = _enqueue(store, ("A", "a1"), ("B", "b1"))
    _claim(store, "one")
    assert store.outbox_failed(a1, T0, T0 + minutes(1), "AE", holder="one")
    assert store.outbox_dead(b1, T0, "AR", holder="one")
    (row,) = store.outbox_list("pending")
    assert (row.attempts, row.lease_holder, row.lease_expires) == (1, "", None)
    assert _claim(store, "two") == []
    claims = store.outbox_claim("ris", "two", T0 + minutes(1), T0 + minutes(2), 10)
    assert [(c.row.id, c.taken_over_from) for c in claims] == [(a1, "")]


def test_concurrent_claims_never_share_a_row(store: Store) -> None:
    """Claimants on threads, each with its own holder id, deliver every row exactly once, accessions in order."""
    import threading

    rows = [(f"A{i % 7}", f"r{i}") for i in range(60)]
    _enqueue(store, *rows)
    delivered: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(holder: str) -> None:
        try:
            while True:
                claims = store.outbox_claim("ris", holder, T0, T0 + LEASE, 2)
                if not claims:
                    if not store.outbox_list("pending"):
                        return
                    continue
                for c in claims:
                    with lock:
                        delivered.append((c.row.accession, c.row.control_id))
                    assert store.outbox_delivered(c.row.id, T0, holder=holder)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"h{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(c for _, c in delivered) == sorted(c for _, c in rows)
    for accession in {a for a, _ in rows}:
        sent = [int(c[1:]) for a, c in delivered if a == accession]
        assert sent == sorted(sent)
