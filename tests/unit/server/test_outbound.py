"""The outbound worker with StringTransport and task.Clock: no reactor, no sockets.

The store is the real SQLite store (its outbox ordering is part of what is
tested); its calls run synchronously in place of ``deferToThread``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from listener.destinations import DestinationSettings, RetrySettings
from listener.hl7v2.mllp import MllpFramer, frame
from listener.hl7v2.segments import read_header
from listener.outbox import backoff_delay, judge, next_attempt_at, read_ack
from listener.server.outbound import OutboundWorker, RisClientProtocol
from listener.store import MessageRecord, OutboxItem, SQLiteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RETRY = RetrySettings(max_attempts=4, backoff_base_seconds=2.0, backoff_max_seconds=30.0, ack_timeout_seconds=10.0)


def payload(control_id: str) -> bytes:
    """A routing message stand-in whose MSH-10 is ``control_id``."""
    return f"MSH|^~\\&|OVERREAD|READCO|RIS|HOSP|20260302090000||ORM^O01|{control_id}|P|2.5.1\rORC|SC\r".encode()


def ack(control_id: str, code: str = "AA", error: str = "") -> bytes:
    """A RIS answer to ``control_id``."""
    err = f"ERR|||{error}^x^HL70357|E\r" if error else ""
    return f"MSH|^~\\&|RIS|HOSP|OVERREAD|READCO|20260302090001||ACK^O01|A{control_id}|P|2.5.1\rMSA|{code}|{control_id}\r{err}".encode()


class FakeRis:
    """Hands out connected protocols on StringTransports, or refuses while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.tls = False  # transports say they are TLS; the handshake completes only when a test says so
        self.connections: list[tuple[RisClientProtocol, StringTransport]] = []
        self.attempts = 0

    def connect(self, factory: Factory) -> defer.Deferred[Any]:
        self.attempts += 1
        if self.down:
            return defer.fail(ConnectionRefusedError("refused"))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        if self.tls:
            directlyProvides(transport, ISSLTransport)
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))  # type: ignore[arg-type]
        return defer.succeed(protocol)

    @property
    def current(self) -> tuple[RisClientProtocol, StringTransport]:
        return self.connections[-1]

    def sent(self) -> list[str]:
        """MSH-10 of every message written, over all connections, in order."""
        out = []
        for _, transport in self.connections:
            for p in MllpFramer().feed(transport.value()):
                header = read_header(p)
                assert header is not None
                out.append(header.control_id)
        return out

    def answer(self, control_id: str, code: str = "AA") -> None:
        protocol, _ = self.current
        protocol.dataReceived(frame(ack(control_id, code)))


class Harness:
    """A worker over a real store, a Clock and a FakeRis."""

    def __init__(
        self, store: SQLiteStore, retry: RetrySettings = RETRY, rand: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.store = store
        self.clock = Clock()
        self.ris = FakeRis()
        self.settings = DestinationSettings(name="ris", endpoint="tcp:host=ris.test:port=6661", retry=retry)
        self.worker = OutboundWorker(
            self.settings,
            store,
            reactor=self.clock,
            connect=self.ris.connect,
            run_in_thread=lambda f, *a: defer.maybeDeferred(f, *a),
            now=lambda: T0 + timedelta(seconds=self.clock.seconds()),
            rand=rand,
            poll_interval=60.0,
        )
        self.seq = 0

    def add(self, *rows: tuple[str, str]) -> None:
        """Store one message whose outbox holds ``(accession, control_id)`` rows."""
        self.seq += 1
        self.store.save(
            MessageRecord(
                control_id=f"M{self.seq}",
                sender_application="APP",
                sender_facility="FAC",
                feed="default",
                received=T0,
                raw=None,
                transport="mllp",
                state="processed",
                ack_code="AA",
                ack=b"",
                outbox=tuple(OutboxItem("ris", acc, cid, payload(cid)) for acc, cid in rows),
            )
        )

    def state(self, control_id: str) -> tuple[str, int]:
        row = next(r for r in self.store.outbox_list() if r.control_id == control_id)
        return row.state, row.attempts


@pytest.fixture(name="harness")
def fixture_harness(tmp_path: Path) -> Iterator[Harness]:
    """A harness over a fresh store, closed afterwards."""
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    yield Harness(store)
    store.close()


# ----------------------------------------------------------------- pure parts


def test_backoff_doubles_then_caps() -> None:
    """With no jitter draw the delay is half of base*2**(n-1), capped at the max's half."""
    delays = [backoff_delay(n, RETRY, 0.0) for n in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]


def test_backoff_jitter_stays_within_half_and_whole_ceiling() -> None:
    """Every draw lands in [ceiling/2, ceiling]; the cap is never exceeded, even for huge counts."""
    for n in (1, 2, 3, 5, 10, 1000, 10**9):
        ceiling = min(RETRY.backoff_max_seconds, RETRY.backoff_base_seconds * 2 ** min(n - 1, 64))
        for r in (0.0, 0.25, 0.5, 0.999999, 1.0):
            assert ceiling / 2 <= backoff_delay(n, RETRY, r) <= ceiling


def test_backoff_refuses_bad_draw_and_naive_time() -> None:
    """A draw outside [0, 1] and a naive datetime are programming errors."""
    with pytest.raises(ValueError):
        backoff_delay(1, RETRY, 1.5)
    with pytest.raises(ValueError):
        next_attempt_at(1, datetime(2026, 1, 1), RETRY, 0.5)


def test_next_attempt_at_adds_the_delay() -> None:
    """next_attempt_at is last_at plus backoff_delay, deterministic for a given draw."""
    assert next_attempt_at(3, T0, RETRY, 0.5) == T0 + timedelta(seconds=6.0)
    assert next_attempt_at(0, T0, RETRY, 0.0) == T0 + timedelta(seconds=1.0)


def test_judge_verdicts() -> None:
    """AA/CA deliver, AE retries until max_attempts, AR dead-letters unless on_reject: retry."""
    assert judge("AA", 1, RETRY) == "delivered"
    assert judge("CA", 9, RETRY) == "delivered"
    assert judge("AE", 3, RETRY) == "retry"
    assert judge("AE", 4, RETRY) == "dead"
    assert judge("ack_timeout", 1, RETRY) == "retry"
    assert judge("AR", 1, RETRY) == "dead"
    assert judge("CR", 1, RETRY) == "dead"
    lenient = RetrySettings(max_attempts=4, on_reject="retry")
    assert judge("AR", 1, lenient) == "retry"
    assert judge("AR", 4, lenient) == "dead"


def test_read_ack_uses_the_answer_separators() -> None:
    """MSA-1, MSA-2 and ERR-3 are read with the answer's own delimiters; junk gives None."""
    assert read_ack(ack("X1", "AE", "207")) is not None
    answer = read_ack(ack("X1", "AE", "207"))
    assert answer is not None and (answer.code, answer.control_id, answer.error_code) == ("AE", "X1", "207")
    odd = b"MSH#$~\\&#RIS\nMSA#aa#X2\n"
    parsed = read_ack(odd)
    assert parsed is not None and (parsed.code, parsed.control_id) == ("AA", "X2")
    assert read_ack(b"garbage") is None
    assert read_ack(b"MSH|^~\\&|RIS\rPID|1\r") is None


# ---------------------------------------------------------------------- worker


def test_delivered_on_aa(harness: Harness) -> None:
    """A row is written framed, and marked delivered (one attempt) when its AA comes back."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    assert harness.ris.sent() == ["R1"]
    assert harness.state("R1") == ("pending", 0)
    harness.ris.answer("R1", "AA")
    assert harness.state("R1") == ("delivered", 1)


def test_answer_for_another_message_is_ignored(harness: Harness) -> None:
    """Only the ACK whose MSA-2 is the row's MSH-10 settles it; a stray one changes nothing."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    harness.ris.answer("OTHER", "AA")
    assert harness.state("R1") == ("pending", 0)
    harness.ris.answer("R1", "CA")
    assert harness.state("R1") == ("delivered", 1)


def test_retry_on_ae_follows_the_backoff_schedule(harness: Harness) -> None:
    """AE schedules the next attempt at next_attempt_at(...); the row is resent then, and not before."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    harness.ris.answer("R1", "AE")
    row = harness.store.outbox_list()[0]
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.next_attempt_at == T0 + timedelta(seconds=1.0)  # base 2 s, no jitter draw: 1 s
    assert row.last_error == "AE"
    harness.clock.advance(0.9)
    assert harness.ris.sent() == ["R1"]
    harness.clock.advance(0.1)
    assert harness.ris.sent() == ["R1", "R1"]
    harness.ris.answer("R1", "AE")
    second = harness.store.outbox_list()[0]
    assert second.next_attempt_at == T0 + timedelta(seconds=1.0 + 2.0)
    harness.clock.advance(2.0)
    harness.ris.answer("R1", "AA")
    assert harness.state("R1") == ("delivered", 3)


def test_dead_letter_on_ar(harness: Harness) -> None:
    """AR dead-letters the row at once, keeping the answer code as its error."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    harness.ris.current[0].dataReceived(frame(ack("R1", "AR", "200")))
    row = harness.store.outbox_list()[0]
    assert (row.state, row.attempts, row.last_error) == ("dead", 1, "AR (ERR-3 200)")


def test_ar_retried_when_configured(tmp_path: Path) -> None:
    """With on_reject: retry an AR is retried like an AE."""
    store = SQLiteStore.in_state_dir(tmp_path / "s")
    try:
        h = Harness(store, RetrySettings(max_attempts=3, backoff_base_seconds=1.0, on_reject="retry"))
        h.add(("ACC1", "R1"))
        h.worker.start()
        h.ris.answer("R1", "AR")
        assert h.state("R1") == ("pending", 1)
    finally:
        store.close()


def test_ack_timeout_retries_on_a_new_connection(harness: Harness) -> None:
    """No answer within ack_timeout: the connection is aborted, the row retried on a fresh one."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    first_protocol, first_transport = harness.ris.current
    harness.clock.advance(10.0)
    assert first_transport.disconnecting
    first_protocol.connectionLost()
    assert harness.state("R1") == ("pending", 1)
    assert harness.store.outbox_list()[0].last_error == "no answer within 10 s"
    harness.clock.advance(1.0)
    assert len(harness.ris.connections) == 2
    # A late answer on the old connection does not settle the new attempt twice.
    harness.ris.answer("R1", "AA")
    assert harness.state("R1") == ("delivered", 2)


def test_connection_lost_mid_attempt_counts_as_a_failed_attempt(harness: Harness) -> None:
    """The RIS dropping the connection before answering is a failed attempt, retried with backoff."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    harness.ris.current[0].connectionLost()
    assert harness.state("R1") == ("pending", 1)
    harness.clock.advance(1.0)
    harness.ris.answer("R1", "AA")
    assert harness.state("R1") == ("delivered", 2)


def test_refused_connection_backs_off_without_charging_rows(harness: Harness) -> None:
    """While the RIS refuses connections the worker backs off; rows keep attempts 0 and go out once it is up."""
    harness.ris.down = True
    harness.add(("ACC1", "R1"), ("ACC2", "R2"))
    harness.worker.start()
    assert harness.ris.attempts == 1
    harness.clock.advance(0.99)
    assert harness.ris.attempts == 1
    harness.clock.advance(0.01)
    assert harness.ris.attempts == 2
    for _ in range(10):
        harness.clock.advance(30)
    assert harness.state("R1") == ("pending", 0)
    # A row that was never written is not held: another daemon could send it now.
    assert [r.lease_holder for r in harness.store.outbox_list()] == ["", ""]
    harness.ris.down = False
    harness.clock.advance(30)
    harness.ris.answer("R1")
    harness.ris.answer("R2")
    assert harness.ris.sent() == ["R1", "R2"]
    assert [harness.state(c) for c in ("R1", "R2")] == [("delivered", 1), ("delivered", 1)]


def test_tls_handshake_failure_is_a_connect_failure(harness: Harness) -> None:
    """A TLS connection lost before its handshake completes (bad certificate) backs off like a refusal; rows keep attempts 0."""
    from OpenSSL.SSL import Error as SSLError

    from listener.server.outbound import TlsHandshakeFailed

    harness.ris.tls = True
    harness.add(("ACC1", "R1"), ("ACC2", "R2"))
    harness.worker.start()
    for n in range(1, 6):  # more failures than max_attempts (4)
        protocol, transport = harness.ris.current
        assert transport.value() == b"", "nothing is written before the handshake"
        protocol.connectionLost(Failure(SSLError([("SSL routines", "", "certificate verify failed")])))
        assert harness.worker.connect_failures == n
        harness.clock.advance(30)
    assert [harness.state(c) for c in ("R1", "R2")] == [("pending", 0), ("pending", 0)]
    protocol, transport = harness.ris.current
    protocol.handshakeCompleted()  # the certificate was fixed
    harness.ris.answer("R1")
    harness.ris.answer("R2")
    assert harness.ris.sent() == ["R1", "R2"]
    assert [harness.state(c) for c in ("R1", "R2")] == [("delivered", 1), ("delivered", 1)]
    assert harness.worker.connect_failures == 0
    assert issubclass(TlsHandshakeFailed, ConnectionError)


def test_tls_handshake_timeout_is_a_connect_failure(harness: Harness) -> None:
    """A handshake that does not finish within ack_timeout aborts the connection and backs off without charging the row."""
    harness.ris.tls = True
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    protocol, transport = harness.ris.current
    harness.clock.advance(RETRY.ack_timeout_seconds - 0.1)
    assert not transport.disconnecting and harness.worker.connect_failures == 0
    harness.clock.advance(0.1)
    assert transport.disconnecting  # aborted (StringTransport records the abort as disconnecting)
    protocol.connectionLost(Failure(ConnectionError("aborted")))
    assert harness.worker.connect_failures == 1
    assert harness.state("R1") == ("pending", 0)


def test_order_kept_per_accession(harness: Harness) -> None:
    """A later decision for an accession waits while an earlier one is in flight or waiting to retry."""
    harness.add(("ACC1", "A1"))
    harness.add(("ACC1", "A2"), ("ACC2", "B1"))
    harness.worker.start()
    assert harness.ris.sent() == ["A1"]
    harness.ris.answer("A1", "AE")  # A1 waits 1 s for its retry; A2 must not overtake it
    assert harness.ris.sent() == ["A1", "B1"]
    harness.ris.answer("B1")
    assert harness.ris.sent() == ["A1", "B1"]
    harness.clock.advance(1.0)
    assert harness.ris.sent() == ["A1", "B1", "A1"]
    harness.ris.answer("A1")
    assert harness.ris.sent() == ["A1", "B1", "A1", "A2"]
    harness.ris.answer("A2")
    assert [harness.state(c)[0] for c in ("A1", "A2", "B1")] == ["delivered"] * 3


def test_one_message_in_flight(harness: Harness) -> None:
    """With many rows due, only one is written until its answer comes back."""
    harness.add(*((f"ACC{i}", f"R{i}") for i in range(5)))
    harness.worker.start()
    harness.worker.wake()
    harness.clock.advance(1)
    assert harness.ris.sent() == ["R0"]
    for i in range(5):
        harness.ris.answer(f"R{i}")
    assert harness.ris.sent() == [f"R{i}" for i in range(5)]
    assert len(harness.ris.connections) == 1


def test_poison_is_dead_lettered_without_blocking_others(harness: Harness) -> None:
    """A row the RIS keeps refusing (AE) dies after max_attempts; other accessions flow meanwhile."""
    harness.add(("BAD", "P1"))
    harness.worker.start()
    harness.add(("OK1", "G1"))
    harness.worker.wake()
    harness.ris.answer("P1", "AE")
    harness.ris.answer("G1")
    assert harness.state("G1") == ("delivered", 1)
    harness.add(("OK2", "G2"))
    harness.worker.wake()
    harness.ris.answer("G2")
    for _ in range(3):
        harness.clock.advance(30)
        harness.ris.answer("P1", "AE")
    assert harness.state("P1") == ("dead", 4)
    assert harness.state("G2") == ("delivered", 1)
    harness.add(("BAD", "P2"))  # a later decision for the dead row's accession still goes
    harness.worker.wake()
    harness.ris.answer("P2")
    assert harness.state("P2") == ("delivered", 1)


def test_restart_resumes_pending_rows(tmp_path: Path) -> None:
    """A new worker over the same store sends what an earlier one left unanswered, with the same MSH-10,
    once the dead one's lease (30 s) has expired."""
    store = SQLiteStore.in_state_dir(tmp_path / "s")
    try:
        first = Harness(store)
        first.add(("ACC1", "R1"))
        first.worker.start()
        assert first.ris.sent() == ["R1"]  # sent, then the process "dies" before the answer
        second = Harness(store)
        second.worker.start()
        assert second.ris.sent() == []  # still leased to the first process
        second.clock.advance(30.0)
        second.worker.wake()
        assert second.ris.sent() == ["R1"]
        second.ris.answer("R1")
        assert second.state("R1") == ("delivered", 1)
    finally:
        store.close()


def test_a_daemon_starting_on_a_state_directory_releases_its_dead_predecessors_leases(tmp_path: Path) -> None:
    """The `instance` file names the last daemon of the state directory: its leases are released, only its."""
    from listener.server.daemon import INSTANCE_FILE, _release_previous_run

    state = tmp_path / "s"
    store = SQLiteStore.in_state_dir(state)
    try:
        harness = Harness(store)
        harness.add(("ACC1", "R1"), ("ACC2", "R2"))
        later = T0 + timedelta(seconds=30)
        assert store.outbox_claim("ris", "dead-one", T0, later, 1)
        assert store.outbox_claim("ris", "other-daemon", T0, later, 1)
        (state / INSTANCE_FILE).write_text("dead-one\n", encoding="utf-8")
        _release_previous_run(state, store, "new-one")
        assert [(r.control_id, r.lease_holder) for r in store.outbox_list()] == [("R1", ""), ("R2", "other-daemon")]
        assert (state / INSTANCE_FILE).read_text(encoding="utf-8") == "new-one\n"
        assert (state / INSTANCE_FILE).stat().st_mode & 0o077 == 0
    finally:
        store.close()


def test_stop_waits_for_the_answer_then_closes(harness: Harness) -> None:
    """stop() fires once the attempt in flight is settled, then closes the connection."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    stopped: list[None] = []
    harness.worker.stop().addCallback(stopped.append)
    assert not stopped
    harness.ris.answer("R1")
    assert stopped == [None]
    assert harness.ris.current[1].disconnecting
    assert harness.state("R1") == ("delivered", 1)


def test_stop_drops_an_unanswered_attempt_without_charging_it(harness: Harness) -> None:
    """After the grace period shutdown drops the attempt; the row keeps attempts 0 for the next run."""
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    stopped: list[None] = []
    harness.worker.stop().addCallback(stopped.append)
    harness.clock.advance(5.0)
    protocol, transport = harness.ris.current
    assert transport.disconnecting
    protocol.connectionLost()
    assert stopped == [None]
    assert harness.state("R1") == ("pending", 0)


def _row(harness: Harness, control_id: str) -> Any:
    return next(r for r in harness.store.outbox_list() if r.control_id == control_id)


def test_the_row_in_flight_is_leased_and_renewed_then_released_at_stop(tmp_path: Path) -> None:
    """The worker claims under its instance id; renewals keep another instance off it; stop() gives it back."""
    store = SQLiteStore.in_state_dir(tmp_path / "s")
    try:
        _leased_renewed_released(Harness(store, RetrySettings(ack_timeout_seconds=60.0)))
    finally:
        store.close()


def _leased_renewed_released(harness: Harness) -> None:
    harness.add(("ACC1", "R1"))
    harness.worker.start()
    assert harness.ris.sent() == ["R1"]
    row = _row(harness, "R1")
    assert (row.lease_holder, row.lease_expires) == (harness.worker.holder, T0 + timedelta(seconds=30))
    for _ in range(5):  # renewed at 10 s and at 20 s: expires at 50 s now
        harness.clock.advance(5.0)
    assert _row(harness, "R1").lease_expires == T0 + timedelta(seconds=50)
    later = T0 + timedelta(seconds=31)
    assert harness.store.outbox_claim("ris", "other", later, later + timedelta(seconds=30)) == []
    stopped: list[None] = []
    harness.worker.stop().addCallback(stopped.append)
    harness.clock.advance(5.0)
    protocol, _ = harness.ris.current
    protocol.connectionLost()
    assert stopped == [None]
    row = _row(harness, "R1")
    assert (row.state, row.attempts, row.lease_holder, row.lease_expires) == ("pending", 0, "", None)


def test_a_result_after_the_lease_was_taken_over_is_not_recorded(harness: Harness) -> None:
    """Another instance took the row while our attempt was in flight: our AA does not overwrite its claim."""
    harness.add(("ACC1", "R1"), ("ACC1", "R2"))
    harness.worker.start()
    assert harness.ris.sent() == ["R1"]
    # As if our lease had lapsed (a hung process) and another daemon claimed the row.
    assert harness.store.outbox_release(harness.worker.holder) == 1
    (claim,) = harness.store.outbox_claim("ris", "other", T0, T0 + timedelta(seconds=30))
    assert claim.row.control_id == "R1"
    harness.ris.answer("R1", "AA")
    row = _row(harness, "R1")
    assert (row.state, row.attempts, row.lease_holder) == ("pending", 0, "other")
    # Nor does the worker go on to R2 while R1 is the other instance's.
    assert harness.ris.sent() == ["R1"]


def test_a_worker_that_lost_its_lease_before_sending_sends_nothing(harness: Harness) -> None:
    """The lease lapsed while the connection opened (a stall): another daemon owns the row now, so nothing is written."""
    harness.ris.tls = True  # the connection opens only when the test completes the handshake
    harness.add(("ACC1", "R1"), ("ACC1", "R2"))
    harness.worker.start()
    protocol, transport = harness.ris.current
    assert harness.store.outbox_release(harness.worker.holder) == 1
    (claim,) = harness.store.outbox_claim("ris", "other", T0, T0 + timedelta(seconds=30))
    assert claim.row.control_id == "R1"
    protocol.handshakeCompleted()
    assert transport.value() == b"" and harness.ris.sent() == []
    row = _row(harness, "R1")
    assert (row.state, row.attempts, row.lease_holder) == ("pending", 0, "other")


def test_a_row_left_by_a_dead_instance_is_taken_over_after_expiry(harness: Harness) -> None:
    """A row leased by an instance that died is sent once its lease expires, and the takeover is counted."""
    counted: list[int] = []
    harness.worker.on_takeover = lambda: counted.append(1)
    harness.add(("ACC1", "R1"))
    assert harness.store.outbox_claim("ris", "dead-instance", T0, T0 + timedelta(seconds=30))
    harness.worker.start()
    assert harness.ris.sent() == []
    harness.clock.advance(30.0)
    harness.worker.wake()
    assert harness.ris.sent() == ["R1"]
    assert (harness.worker.takeovers, counted) == (1, [1])
    harness.ris.answer("R1", "AA")
    assert harness.state("R1") == ("delivered", 1)


# ------------------------------------------------------ outbox rows at intake


class RecordingStore:
    """Keeps submitted records and commits them at once."""

    def __init__(self) -> None:
        self.saved: list[MessageRecord] = []

    def find_duplicate(self, app: str, fac: str, control_id: str) -> None:
        return None

    def submit(self, record: MessageRecord) -> Any:
        from concurrent.futures import Future

        from listener.store import SaveResult

        self.saved.append(record)
        future: Future[SaveResult] = Future()
        future.set_result(SaveResult(len(self.saved), False, record.ack, record.ack_code))
        return future


def _intake(
    pipeline: Any, destinations: tuple[DestinationSettings, ...], woken: list[int]
) -> tuple[Any, RecordingStore]:
    from listener.server.mllp import Intake

    store = RecordingStore()
    intake = Intake(
        pipeline,
        store,
        hash_key=b"k" * 32,
        call_from_thread=lambda f, *a: f(*a),  # type: ignore[arg-type]
        now=lambda: T0,
        destinations=destinations,
        on_outbox=lambda: woken.append(1),
    )
    return intake, store


def _oru(corpus: Path, control_id: str) -> bytes:
    raw = (corpus / "hl7" / "scout" / "oru_v27_prelim_xr_chest.hl7").read_bytes()
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields[9] = control_id.encode()
    segments[0] = b"|".join(fields)
    return b"\r".join(segments)


def test_accepted_message_stores_its_routing_messages(pipeline: Any, corpus: Path) -> None:
    """An AA message carries one outbox row per destination, stable MSH-10, and wakes the workers after commit."""
    from listener.outbox import control_id_for, decision_id_for
    from listener.server.mllp import Answer

    woken: list[int] = []
    dests = (DestinationSettings("ris", "tcp:host=a:port=1"), DestinationSettings("pacs", "tcp:host=b:port=2"))
    intake, store = _intake(pipeline, dests, woken)
    answers: list[Answer] = []
    intake.receive(_oru(corpus, "C1"), _NullLog()).addCallback(answers.append)
    (record,) = store.saved
    assert record.ack_code == "AA"
    assert [(o.destination, o.accession) for o in record.outbox] == [("ris", "620943148"), ("pacs", "620943148")]
    decision = decision_id_for("SOMERIS", "ABCHOSP", "C1", 0)
    assert record.outbox[0].control_id == control_id_for(decision, "ris")
    header = read_header(record.outbox[0].payload)
    assert header is not None and header.control_id == record.outbox[0].control_id
    assert woken == [1]


def test_rejected_message_and_unwanted_release_store_no_routing_message(pipeline: Any, corpus: Path) -> None:
    """A message answered AE/AR gets no outbox row; nor does a RELEASE for a destination with send_release off."""
    from listener.destinations import MessageSettings

    woken: list[int] = []
    quiet = DestinationSettings("ris", "tcp:host=a:port=1", message=MessageSettings(send_release=False))
    intake, store = _intake(pipeline, (DestinationSettings("ris", "tcp:host=a:port=1"),), woken)
    bad = b"\r".join(s for s in _oru(corpus, "C2").split(b"\r") if not s.startswith((b"OBR", b"OBX", b"ORC")))
    intake.receive(bad, _NullLog())
    assert store.saved[0].ack_code in ("AE", "AR") and store.saved[0].outbox == ()
    intake2, store2 = _intake(pipeline, (quiet,), woken)
    intake2.receive(_oru(corpus, "C3"), _NullLog())
    assert store2.saved[0].ack_code == "AA" and store2.saved[0].outbox == ()
    assert woken == []


class _NullLog:
    """A logger that drops everything (bind returns itself)."""

    def bind(self, **_: object) -> _NullLog:
        return self

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def test_client_endpoint_from_destination_string() -> None:
    """A tcp: destination is a HostnameEndpoint on the destination's own resolver; host and port parse in both forms."""
    from twisted.internet.endpoints import HostnameEndpoint

    from listener.server.outbound import _host_port, client_endpoint

    endpoint = client_endpoint(
        Clock(), DestinationSettings("ris", "tcp:host=127.0.0.1:port=6661"), resolver=_NeverResolves()
    )
    assert isinstance(endpoint, HostnameEndpoint)
    assert _host_port("tls:host=ris.example:port=6662") == ("ris.example", 6662)
    assert _host_port("ssl:ris.example:6663") == ("ris.example", 6663)


class _NeverResolves:
    """A DNS server that never answers: resolutions are started and never finish."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolveHostName(  # noqa: N802 - Twisted IHostnameResolver
        self,
        receiver: Any,
        hostName: str,  # noqa: N803 - Twisted API
        portNumber: int = 0,  # noqa: N803 - Twisted API
        addressTypes: Any = None,  # noqa: N803 - Twisted API
        transportSemantics: str = "TCP",  # noqa: N803 - Twisted API
    ) -> Any:
        self.asked.append(hostName)
        receiver.resolutionBegan(object())
        return receiver


def test_stop_cancels_a_connection_stuck_in_dns(tmp_path: Path) -> None:
    """A hung name lookup holds only its worker, and shutdown drops it after the grace without charging the row."""
    from listener.server.outbound import _STOP_GRACE, client_endpoint

    store = SQLiteStore.in_state_dir(tmp_path / "state")
    try:
        harness = Harness(store)
        resolver = _NeverResolves()
        endpoint = client_endpoint(harness.clock, harness.settings, resolver=resolver)
        harness.worker.connect = endpoint.connect
        harness.add(("ACC1", "R1"))
        harness.worker.start()
        assert resolver.asked == ["ris.test"]
        stopped: list[object] = []
        harness.worker.stop().addBoth(stopped.append)
        assert not stopped  # still waiting for the lookup
        harness.clock.advance(_STOP_GRACE + 0.1)
        assert stopped == [None]
        assert harness.state("R1") == ("pending", 0)
        assert harness.worker.connect_failures == 0
    finally:
        store.close()


def test_own_resolver_runs_on_a_daemon_thread_named_for_the_destination() -> None:
    """Resolution happens on the destination's own daemon thread, not the reactor's pool."""
    import threading

    from listener.server.outbound import own_resolver

    seen: list[threading.Thread] = []
    resolver = own_resolver(Clock(), "ris")
    pool = resolver._getThreadPool()  # type: ignore[attr-defined]
    done = threading.Event()
    pool.callInThread(lambda: (seen.append(threading.current_thread()), done.set()))
    assert done.wait(5)
    assert seen[0].daemon and "overread-dns-ris" in seen[0].name
    assert pool.max == 1


def test_client_endpoint_with_client_certificate(tmp_path: Path) -> None:
    """TLS settings load our certificate and key and the RIS CA into a TLS-wrapped endpoint."""
    from twisted.internet import reactor

    from listener.destinations import TlsSettings
    from listener.server.outbound import client_endpoint
    from tests.integration.test_tls import _issue, _write

    ca, ca_key = _issue("Test CA", None, None, ca=True)
    _write(tmp_path / "ca", ca)
    cert, key = _issue("overread", ca_key, ca.subject)
    _write(tmp_path / "client", cert, key)
    tls = TlsSettings(
        certificate=str(tmp_path / "client.crt"), private_key=str(tmp_path / "client.key"), ca=str(tmp_path / "ca.crt")
    )
    endpoint = client_endpoint(reactor, DestinationSettings("ris", "tls:host=localhost:port=6661", tls=tls))
    assert type(endpoint).__name__ == "_WrapperEndpoint"
