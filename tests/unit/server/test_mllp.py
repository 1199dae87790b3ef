"""The MLLP protocol with StringTransport and task.Clock: no reactor, no sockets."""

from __future__ import annotations

from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from listener.errors import StoreError
from listener.hl7v2.mllp import MllpFramer, frame
from listener.pipeline import Pipeline
from listener.server.mllp import Intake, MllpFactory, MllpProtocol
from listener.store.base import MessageRecord, SaveResult

NOW = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


class FakeStore:
    """Records submits; futures resolve only when the test says so."""

    def __init__(self) -> None:
        self.saved: list[MessageRecord] = []
        self.futures: list[Future[SaveResult]] = []
        self.fail = False

    def find_duplicate(self, app: str, fac: str, control_id: str) -> SaveResult | None:
        for i, rec in enumerate(self.saved):
            if (rec.sender_application, rec.sender_facility, rec.control_id) == (app, fac, control_id):
                return SaveResult(i, True, rec.ack, rec.ack_code)
        return None

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        if self.fail:
            raise StoreError("store closed")
        future: Future[SaveResult] = Future()
        self.saved.append(record)
        self.futures.append(future)
        return future

    def commit(self, index: int) -> None:
        rec = self.saved[index]
        self.futures[index].set_result(SaveResult(index, False, rec.ack, rec.ack_code))


def _oru(corpus: Path, control_id: str) -> bytes:
    raw = (corpus / "hl7" / "scout" / "oru_v27_prelim_xr_chest.hl7").read_bytes()
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields[9] = control_id.encode()
    segments[0] = b"|".join(fields)
    return b"\r".join(segments)


def _acks(data: bytes) -> list[tuple[str, str]]:
    out = []
    for payload in MllpFramer().feed(data):
        msa = next(s for s in payload.split(b"\r") if s.startswith(b"MSA")).decode().split("|")
        out.append((msa[1], msa[2]))
    return out


@pytest.fixture(name="setup")
def fixture_setup(pipeline: Pipeline) -> tuple[FakeStore, MllpProtocol, StringTransport, Clock]:
    """A protocol on a StringTransport, its fake store and a Clock for timeouts."""
    store = FakeStore()
    clock = Clock()
    intake = Intake(pipeline, store, hash_key=b"k" * 32, call_from_thread=lambda f, *a: f(*a), now=lambda: NOW)  # type: ignore[arg-type]
    factory = MllpFactory(intake, max_frame_size=64 * 1024, idle_timeout=30, max_connections=2, clock=clock)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return store, proto, transport, clock


def test_ack_waits_for_commit_and_keeps_arrival_order(setup, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """No ACK before the commit; a later commit finishing first waits for the earlier one."""
    store, proto, transport, _ = setup
    proto.dataReceived(frame(_oru(corpus, "A1")) + frame(_oru(corpus, "A2")))
    assert len(store.saved) == 2
    assert transport.value() == b""
    store.commit(1)
    assert transport.value() == b""
    store.commit(0)
    assert _acks(transport.value()) == [("AA", "A1"), ("AA", "A2")]


def test_store_failure_answers_ar_207(setup, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """When the store refuses the record, the sender gets AR with ERR 207 (retry later)."""
    store, proto, transport, _ = setup
    store.fail = True
    proto.dataReceived(frame(_oru(corpus, "S1")))
    ack = transport.value()
    assert _acks(ack) == [("AR", "S1")]
    assert b"207^" in ack


def test_close_mid_frame_stores_nothing(setup, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """A connection lost inside a frame leaves no message and writes nothing."""
    store, proto, transport, _ = setup
    data = frame(_oru(corpus, "M1"))
    proto.dataReceived(data[: len(data) // 2])
    proto.connectionLost()
    assert store.saved == []
    assert transport.value() == b""


def test_idle_timeout_closes_connection(setup) -> None:  # type: ignore[no-untyped-def]
    """After idle_timeout seconds without a complete frame the connection is aborted.

    Bytes that complete no frame (a start block, a drip inside a frame, LFs
    between frames) do not count as activity: a drip cannot hold a slot.
    """
    _, proto, transport, clock = setup
    clock.advance(20)
    assert not transport.disconnecting
    proto.dataReceived(b"\n")
    clock.advance(5)
    proto.dataReceived(b"\x0b")
    clock.advance(4)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_oversized_frame_answers_earlier_frames_then_ar_and_closes(setup, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """Good frames before a frame over the limit are answered first, then AR naming the limit."""
    store, proto, transport, _ = setup
    big = _oru(corpus, "BIG") + b"OBX|1|TX|||" + b"x" * 70000 + b"\r"
    proto.dataReceived(frame(_oru(corpus, "G1")) + b"\x0b" + big)
    assert len(store.saved) == 1
    store.commit(0)
    data = transport.value()
    assert _acks(data) == [("AA", "G1"), ("AR", "BIG")]
    assert b"65536" in data
    assert transport.disconnecting


def test_duplicate_in_store_is_reanswered_without_processing(setup, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """A frame whose key is stored gets the stored ACK bytes and no second record."""
    store, proto, transport, _ = setup
    proto.dataReceived(frame(_oru(corpus, "D1")))
    store.commit(0)
    first = transport.value()
    transport.clear()
    proto.dataReceived(frame(_oru(corpus, "D1")))
    assert len(store.saved) == 1
    assert transport.value() == first


def test_garbage_gets_nack_and_is_not_stored(setup) -> None:  # type: ignore[no-untyped-def]
    """A frame with no MSH is answered AE with an empty MSA-2 and never stored."""
    store, proto, transport, _ = setup
    proto.dataReceived(frame(b"hello there\r"))
    assert store.saved == []
    assert _acks(transport.value()) == [("AE", "")]


def test_slow_drip_inside_a_frame_times_out(setup, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """Bytes dripping into one open frame do not count as activity: the connection is cut."""
    store, proto, transport, clock = setup
    data = frame(_oru(corpus, "DRIP"))
    for i in range(40):
        proto.dataReceived(data[i : i + 1])
        clock.advance(1)
    assert transport.disconnecting
    assert store.saved == []


def test_waiting_for_our_answer_is_not_idle(setup, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """While a commit is pending the idle timer does not close the connection."""
    store, proto, transport, clock = setup
    proto.dataReceived(frame(_oru(corpus, "W1")))
    clock.advance(100)
    assert not transport.disconnecting
    store.commit(0)
    assert _acks(transport.value()) == [("AA", "W1")]
    clock.advance(31)
    assert transport.disconnecting


def test_connections_over_the_limit_are_closed(pipeline: Pipeline) -> None:
    """The (max_connections + 1)-th connection is closed at once; closing one frees a place."""
    intake = Intake(pipeline, FakeStore(), hash_key=b"k" * 32, call_from_thread=lambda f, *a: f(*a), now=lambda: NOW)  # type: ignore[arg-type]
    factory = MllpFactory(intake, max_frame_size=1024, idle_timeout=30, max_connections=1, clock=Clock())
    first, second, third = (factory.buildProtocol(None) for _ in range(3))
    t1, t2, t3 = StringTransport(), StringTransport(), StringTransport()
    first.makeConnection(t1)
    second.makeConnection(t2)
    assert not t1.disconnecting and t2.disconnecting
    second.connectionLost()
    first.connectionLost()
    third.makeConnection(t3)
    assert not t3.disconnecting


class CountingStore(FakeStore):
    """A FakeStore that counts duplicate lookups (the Intake must make none) and can hold
    keys stored before this Intake existed: their saves answer as the store's unique key does."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.earlier: dict[tuple[str, str, str], SaveResult] = {}

    def find_duplicate(self, app: str, fac: str, control_id: str) -> SaveResult | None:
        self.lookups += 1
        return super().find_duplicate(app, fac, control_id)

    def commit(self, index: int) -> None:
        rec = self.saved[index]
        found = self.earlier.get((rec.sender_application, rec.sender_facility, rec.control_id))
        if found is not None:
            self.futures[index].set_result(found)
        else:
            super().commit(index)


@pytest.fixture(name="shared")
def fixture_shared(pipeline: Pipeline) -> tuple[CountingStore, MllpFactory]:
    """An Intake on a counting store, shared by the connections a test opens."""
    store = CountingStore()
    intake = Intake(
        pipeline,
        store,
        hash_key=b"k" * 32,
        call_from_thread=lambda f, *a: f(*a),
        now=lambda: NOW,  # type: ignore[arg-type]
        recent_keys=4,
    )
    factory = MllpFactory(intake, max_frame_size=64 * 1024, idle_timeout=30, max_connections=4, clock=Clock())
    return store, factory


def _connect(factory: MllpFactory) -> tuple[MllpProtocol, StringTransport]:
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_reactor_never_reads_the_store_and_order_holds(shared, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """dataReceived never reads the store (no duplicate lookup); commits finishing in
    reverse order still give ACKs in arrival order, each after its commit."""
    store, factory = shared
    proto, transport = _connect(factory)
    proto.dataReceived(frame(_oru(corpus, "L1")) + frame(_oru(corpus, "L2")))
    assert [r.control_id for r in store.saved] == ["L1", "L2"]
    store.commit(1)
    assert transport.value() == b""
    store.commit(0)
    assert _acks(transport.value()) == [("AA", "L1"), ("AA", "L2")]
    assert store.lookups == 0


def test_copy_arriving_while_first_is_in_flight_gets_first_ack(shared, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """A second copy of a key (same connection or another) that arrives before the first is
    committed is not processed or stored: it gets the first's exact ACK bytes. A copy arriving
    after the commit is answered from memory with the same bytes, again without a save."""
    store, factory = shared
    one, t1 = _connect(factory)
    two, t2 = _connect(factory)
    one.dataReceived(frame(_oru(corpus, "R1")))
    one.dataReceived(frame(_oru(corpus, "R1")))
    two.dataReceived(frame(_oru(corpus, "R1")))
    assert len(store.saved) == 1
    assert t1.value() == b"" and t2.value() == b""
    store.commit(0)
    first_ack = MllpFramer().feed(t1.value())
    assert len(first_ack) == 2 and first_ack[0] == first_ack[1] == store.saved[0].ack
    assert MllpFramer().feed(t2.value()) == [store.saved[0].ack]
    two.dataReceived(frame(_oru(corpus, "R1")))
    assert MllpFramer().feed(t2.value())[-1] == store.saved[0].ack
    assert len(store.saved) == 1 and store.lookups == 0


def test_key_stored_before_is_answered_with_the_stored_ack(shared, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """A resend of a key stored before this Intake existed (or forgotten since) reaches the
    save, which finds the key: the sender gets the stored ACK bytes, not the new one, and a
    copy waiting meanwhile gets them too; later copies are answered from memory."""
    store, factory = shared
    stored_ack = b"MSH|^~\\&|OVR|HOSP|RIS|HOSP|20260101000000||ACK^R01|OLD1|P|2.7\rMSA|AE|S1"
    proto, transport = _connect(factory)
    raw = _oru(corpus, "S1")
    header = raw.split(b"\r")[0].split(b"|")
    store.earlier[(header[2].decode(), header[3].decode(), "S1")] = SaveResult(7, True, stored_ack, "AE")
    proto.dataReceived(frame(raw) + frame(raw))
    assert len(store.saved) == 1 and store.saved[0].ack != stored_ack
    store.commit(0)
    proto.dataReceived(frame(raw))
    assert MllpFramer().feed(transport.value()) == [stored_ack] * 3
    assert len(store.saved) == 1


def test_memory_of_recent_keys_is_bounded(shared, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """Past ``recent_keys`` commits the oldest key is forgotten: its resend reaches the save
    again (where the store's unique key answers it), the newer keys are still answered at once."""
    store, factory = shared
    proto, transport = _connect(factory)
    for n in range(5):
        proto.dataReceived(frame(_oru(corpus, f"M{n}")))
        store.commit(n)
    proto.dataReceived(frame(_oru(corpus, "M4")) + frame(_oru(corpus, "M1")))
    assert len(store.saved) == 5
    proto.dataReceived(frame(_oru(corpus, "M0")))
    assert len(store.saved) == 6 and store.saved[5].control_id == "M0"


def test_copy_of_a_message_that_could_not_be_stored_gets_ar_207(shared, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    """When the first copy's save fails, a copy waiting for it is told to retry (AR 207) too,
    and the key is not remembered: the next resend is processed and stored."""
    store, factory = shared
    proto, transport = _connect(factory)
    store.fail = True
    proto.dataReceived(frame(_oru(corpus, "F1")) + frame(_oru(corpus, "F1")))
    assert _acks(transport.value()) == [("AR", "F1"), ("AR", "F1")]
    assert transport.value().count(b"207^") == 2
    assert store.saved == []
    store.fail = False
    transport.clear()
    proto.dataReceived(frame(_oru(corpus, "F1")))
    store.commit(0)
    assert _acks(transport.value()) == [("AA", "F1")]


def test_processing_failure_answers_ae_207_and_logs_the_type_only(pipeline: Pipeline, corpus: Path) -> None:
    """A bug inside the pipeline (here the route decider raising an error that quotes patient
    data) gives AE with ERR 207, the message is stored `rejected` with error code 207, and the
    log names the exception type only."""
    import dataclasses

    from structlog.testing import capture_logs

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("LYNN AMANDA 19470205")

    store = FakeStore()
    intake = Intake(
        dataclasses.replace(pipeline, decide_route=broken),
        store,
        hash_key=b"k" * 32,  # type: ignore[arg-type]
        call_from_thread=lambda f, *a: f(*a),
        now=lambda: NOW,
    )
    factory = MllpFactory(intake, max_frame_size=64 * 1024, idle_timeout=30, max_connections=2, clock=Clock())
    with capture_logs() as logs:
        proto, transport = _connect(factory)
        proto.dataReceived(frame(_oru(corpus, "P1")))
        store.commit(0)
    ack = transport.value()
    assert _acks(ack) == [("AE", "P1")]
    assert b"|207^" in ack and b"LYNN" not in ack
    assert (store.saved[0].state, store.saved[0].error_code) == ("rejected", "207")
    processed = [e for e in logs if e["event"] == "message_processed"]
    assert processed and processed[0]["error_type"] == "RuntimeError" and processed[0]["error_code"] == "207"
    assert processed[0]["state"] == "rejected"
    assert "LYNN" not in repr(logs)


def test_bytes_outside_frames_are_logged_once_per_connection(pipeline: Pipeline, corpus: Path) -> None:
    """Junk between frames (a stray LF after each end block) is logged once as
    frame_discarded_bytes; connection_closed carries the total; the frames are still answered."""
    from structlog.testing import capture_logs

    store = FakeStore()
    intake = Intake(pipeline, store, hash_key=b"k" * 32, call_from_thread=lambda f, *a: f(*a), now=lambda: NOW)  # type: ignore[arg-type]
    factory = MllpFactory(intake, max_frame_size=64 * 1024, idle_timeout=30, max_connections=2, clock=Clock())
    with capture_logs() as logs:
        proto, transport = _connect(factory)
        proto.dataReceived(b"junk" + frame(_oru(corpus, "J1")) + b"\n")
        proto.dataReceived(frame(_oru(corpus, "J2")) + b"\n")
        store.commit(0)
        store.commit(1)
        proto.connectionLost()
    assert _acks(transport.value()) == [("AA", "J1"), ("AA", "J2")]
    discarded = [e for e in logs if e["event"] == "frame_discarded_bytes"]
    assert len(discarded) == 1 and discarded[0]["bytes"] == 5  # "junk" and the first LF
    closed = [e for e in logs if e["event"] == "connection_closed"]
    assert closed[0]["bytes"] == 6


@pytest.mark.parametrize(
    ("error", "closed"),
    [
        ("verify", ("daemon", "tls_handshake_failed")),
        ("alert", ("peer", "tls_handshake_failed")),
        ("reset", ("peer", "connection_lost")),
    ],
)
def test_a_tls_error_before_the_handshake_ends_names_who_closed(setup, error: str, closed: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    """An OpenSSL failure of our own (a certificate we refuse) is the daemon's close, an alert the
    sender sent is its own; a socket error OpenSSL only passes on (no verdict of either TLS side)
    is a lost connection. Each is logged once, and connectionLost never fails on one."""
    from OpenSSL.SSL import Error, SysCallError
    from structlog.testing import capture_logs
    from twisted.python.failure import Failure

    exc = {
        "verify": Error([("SSL routines", "", "certificate verify failed")]),
        "alert": Error([("SSL routines", "", "tlsv1 alert unknown ca")]),
        "reset": SysCallError(104, "ECONNRESET"),
    }[error]
    _, proto, _, _ = setup
    with capture_logs() as logs:
        proto.connectionLost(Failure(exc))
    assert [(e["closed_by"], e["reason"]) for e in logs if e["event"] == "connection_closed"] == [closed]
