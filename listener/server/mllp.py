"""The MLLP server: a thin Twisted shell around the pure framer, pipeline and ACK builder.

Layer: reactor code. ``dataReceived`` does four things: feed the
framer, run the pure pipeline, hand the record to the store's group-commit
writer (off the reactor thread), and write the answer once the commit is done.
The record and its ACK are built by :mod:`listener.intake` (pure, shared with
HTTP and ``overread reprocess``); the save goes through :mod:`listener.server.bridge`.
The reactor thread never reads the store: the duplicate check is the save
itself (the writer thread's insert finds a stored key and returns its answer),
and a memory of recently committed keys answers the common resend at once.

Promises:

* An AA/CA leaves only after the message is durably committed.
* Answers go out in arrival order per connection: every frame takes a slot in
  the connection's queue, and a slot is written only when every slot before it
  has been written, whatever order the commits finish in.
* A duplicate (MSH-3, MSH-4, MSH-10 already stored) gets the stored answer again
  and is never stored twice. Except a message we rejected: it was never
  accepted, so its resend is processed again under the current configuration
  and, when the result differs, replaces the rejection as the message's next
  processing (docs/operations.md, "Reprocessing"). A copy that arrives while the first is still in
  flight (same or another connection) waits for the first and gets its stored
  answer; a copy of a key this process committed recently is answered from
  memory with the stored answer, unprocessed. What is left (a resend after a
  restart or long after, a key stored by another process) goes through the pure
  pipeline and the save finds the key: nothing is written, the stored answer is
  sent (the pipeline's work is wasted, nothing else).
* Unreadable garbage (no MSH) gets a NACK built with ``build_ack(None, ...)``,
  is not stored, and is logged by size and peer only.
* Nothing from a message body reaches a log line: header fields that name
  systems, keyed hashes of the accession and patient id, codes and sizes.
* The daemon closes a connection only for a reason it names: every
  ``connection_closed`` says ``closed_by`` (daemon or peer) and ``reason``
  (docs/operations.md, "A connection closed"). Load alone closes none.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

from listener.destinations import DestinationSettings
from listener.errors import APPLICATION_INTERNAL_ERROR, DATA_TYPE_ERROR, FramingError
from listener.hl7v2.ack import AckErrorDetail, should_send_accept_ack
from listener.hl7v2.mllp import FrameTooLarge, MllpFramer, frame
from listener.hl7v2.segments import MessageHeader, read_header
from listener.intake import (
    QUARANTINE_TEXT,
    MllpChecked,
    Recording,
    Tally,
    ack_builder,
    ack_errors,
    internal_error,
    internal_error_outcome,
    mllp_checked,
    outcome_ack_code,
    quarantine_record,
    report_records,
)
from listener.logs import get_logger, keyed_hash
from listener.pipeline import (
    Outcome,
    Pipeline,
    PriorsFor,
    decode_only,
    process,
    unchecked_outcome,
    version_fields,
    versions_of,
)
from listener.server.bridge import StoreShell, duration_ms, error_type, resend_fields
from listener.server.journal import Journal, journal_key
from listener.server.metrics import Metrics
from listener.server.runner import PipelineTask
from listener.server.wire import send_now
from listener.sites import LiveFigures
from listener.store.base import MessageRecord, SaveResult, Store

if TYPE_CHECKING:
    from listener.server.runner import PipelineRunner

__all__ = ["QUARANTINE_TEXT", "Answer", "Intake", "MllpFactory", "MllpProtocol"]

#: What a first copy settled with, for copies that arrived meanwhile: the
#: stored (code, ACK, state), or None when it could not be stored.
_Settled = tuple[str, bytes, str] | None

#: How many recently committed keys (with their stored answers) Intake keeps in
#: memory to answer resends without processing them (about 300 bytes each).
RECENT_KEYS = 20_000

#: ...and how many bytes those entries (keys plus stored answers) may take.
RECENT_BYTES = 16 * 1024 * 1024


def _entry_size(key: tuple[str, str, str], settled: tuple[str, bytes]) -> int:
    # Approximate bytes held: the strings, the ACK and the dict/tuple overhead.
    return sum(len(k) for k in key) + len(settled[0]) + len(settled[1]) + 300


def _log() -> Any:
    # Looked up at use time: structlog assembles a bound logger from the
    # configuration current at bind time, and cli configures logging later.
    return get_logger("listener.server.mllp")


@dataclass(frozen=True, slots=True)
class Answer:
    """What to write for one frame: the ACK bytes (None: send nothing) and a close flag."""

    ack: bytes | None
    close: bool = False


class Intake(StoreShell):
    """Turns one frame into a stored message and its answer (shared by all connections).

    Args:
        pipeline: the current Pipeline; replaced whole by :meth:`swap_pipeline`.
        store: the durable store.
        hash_key: key for the ``accession_h``/``patient_h`` log hashes.
        call_from_thread: ``reactor.callFromThread``.
        now: the clock (aware UTC datetimes).
        keep_raw: store raw bodies (retention purges them later).
        destinations: where routing messages go; an accepted message's outbox
            rows (one per routed report and destination) are stored with it.
        on_outbox: called on the reactor thread after a commit that stored
            outbox rows (wakes the outbound workers).
        recent_keys: how many recently committed keys to remember (see
            :data:`RECENT_KEYS`).
        recent_bytes: and how many bytes they (with their answers) may take.
        runner: worker threads and the time budget for the pipeline.
        journal: where frames are recorded before the pipeline runs.
        priors_for: looks up a decoded report's prior studies (on the worker
            thread); None: priors unknown.
        live_figures: the cached live peer-review figures for routing, read on
            the reactor as a message starts (listener/server/live_rates.py);
            None: readers.yaml only.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        store: Store,
        *,
        hash_key: bytes,
        call_from_thread: Callable[..., object],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        keep_raw: bool = True,
        metrics: Metrics | None = None,
        destinations: tuple[DestinationSettings, ...] = (),
        on_outbox: Callable[[], object] | None = None,
        recent_keys: int = RECENT_KEYS,
        recent_bytes: int = RECENT_BYTES,
        runner: PipelineRunner | None = None,
        journal: Journal | None = None,
        priors_for: PriorsFor | None = None,
        live_figures: Callable[[], LiveFigures | None] = lambda: None,
    ) -> None:
        super().__init__(
            store,
            hash_key=hash_key,
            call_from_thread=call_from_thread,
            now=now,
            keep_raw=keep_raw,
            metrics=metrics,
            on_outbox=on_outbox,
            runner=runner,
            journal=journal,
        )
        self.priors_for = priors_for
        self.live_figures = live_figures
        self.pipeline = pipeline
        self.destinations = destinations
        #: Keys committed (or found stored by a save) -> the stored (code, ACK),
        #: oldest first; at most ``recent_keys``. Stored rows are never deleted,
        #: so an entry stays true.
        self._recent: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        self._recent_max = recent_keys
        self._recent_max_bytes = recent_bytes
        self._recent_bytes = 0
        #: Builds our ACKs: dated by ``now``, each with a new random MSH-10.
        self._ack = ack_builder(lambda: self.now())
        #: Keys (MSH-3, MSH-4, MSH-10) in flight -> copies waiting for the first's answer.
        self._pending: dict[tuple[str, str, str], list[defer.Deferred[_Settled]]] = {}

    def swap_pipeline(self, pipeline: Pipeline) -> None:
        """Use ``pipeline`` for every message received from now on (atomic)."""
        self.pipeline = pipeline

    def _answer(self, header: MessageHeader | None, code: str, ack: bytes) -> Answer:
        return Answer(ack if should_send_accept_ack(header, code) else None)

    def refuse_oversized(self, error: FrameTooLarge, log: Any) -> Answer:
        """The AR for a frame over the limit, addressed from its head; then close."""
        header = read_header(error.head)
        text = f"Message exceeds the limit of {error.limit} bytes"
        code, ack = self._ack(header, "AR", internal_error(text))
        log.warning(
            "frame_rejected",
            reason="frame_too_large",
            limit=error.limit,
            ack_code=code,
            control_id=header.log_fields()["control_id"] if header else "",
        )
        return Answer(ack if should_send_accept_ack(header, code) else None, close=True)

    def receive(self, raw: bytes, log: Any, released: Callable[[], object] = lambda: None) -> defer.Deferred[Answer]:
        """Process, store and answer one frame.

        Strategy: no store read on the reactor thread. A key committed
        recently by this process is answered at once from memory with its
        stored answer. Otherwise the raw frame is journaled and the pure
        pipeline runs on a worker thread within the time budget
        (:mod:`listener.server.runner`), and the record goes to the
        group-commit writer, whose insert is the duplicate check: a key
        already stored (resend after a restart, another process) writes
        nothing and returns the stored answer. While a key is on its way,
        later copies of it (from any connection) wait for the first copy and
        get its stored answer, so back-to-back copies are processed and
        stored once. Ordering per connection is the protocol's job (its
        answer queue).

        Args:
            raw: the frame's payload.
            log: the connection's bound logger.
            released: called (on the reactor thread) once no worker thread
                runs this frame any more: the protocol then hands over its
                next frame (one frame per connection in the pipeline).

        Returns:
            A Deferred firing with the Answer once the message is durable (at
            once for a recent duplicate or garbage). It never fails.
        """
        started = time.perf_counter()
        received = self.now()
        header = read_header(raw)
        if header is None:
            released()
            outcome = process(raw, self.pipeline, received_at=received)
            code, ack = self._ack(
                None, "AE" if outcome_ack_code(outcome) == "AA" else outcome_ack_code(outcome), ack_errors(outcome)
            )
            log.warning(
                "frame_rejected",
                reason="unreadable",
                bytes=len(raw),
                ack_code=code,
                error_code=outcome.error.hl7_code if outcome.error else "",
            )
            if self.metrics is not None:
                self.metrics.message_answered("mllp", "", code, time.perf_counter() - started)
            return defer.succeed(Answer(ack))

        too_long = header.oversized_field
        if too_long:
            # Never a key, never logged: an AE 102 naming the field (docs/hardening.md).
            released()
            text = f"{too_long} is longer than its limit (docs/hardening.md)"
            code, ack = self._ack(header, "AE", (AckErrorDetail(DATA_TYPE_ERROR, location=too_long, text=text),))
            log.warning(
                "frame_rejected",
                reason="field_too_long",
                location=too_long,
                bytes=len(raw),
                ack_code=code,
                error_code=DATA_TYPE_ERROR,
            )
            if self.metrics is not None:
                self.metrics.message_answered(
                    "mllp",
                    "",
                    code,
                    time.perf_counter() - started,
                    sender=(header.sending_application, header.sending_facility),
                )
            return defer.succeed(self._answer(header, code, ack))

        key = header.key
        mlog = log.bind(control_id=key[2], sender_app=key[0], sender_facility=key[1])
        recent = self._recent.get(key)
        if recent is not None:
            released()
            return defer.succeed(self._duplicate_answer(header, mlog, started, recent[0], recent[1], "stored"))
        waiters = self._pending.get(key)
        if waiters is not None:
            # An earlier copy is still being processed or stored.
            released()
            waiter: defer.Deferred[_Settled] = defer.Deferred()
            waiters.append(waiter)
            copy = waiter.addCallback(self._answer_copy, header, mlog, started)
            return self._track(copy)
        self._pending[key] = []

        def settle(result: tuple[Answer, _Settled] | Failure) -> Answer | Failure:
            settled = None if isinstance(result, Failure) else result[1]
            if settled is not None:
                self._remember(key, settled)
            for copy_waiter in self._pending.pop(key, []):
                copy_waiter.callback(settled)
            return result if isinstance(result, Failure) else result[0]

        done = defer.maybeDeferred(self._process_and_save, raw, header, mlog, started, received, released)
        return self._track(done.addBoth(settle))

    def _remember(self, key: tuple[str, str, str], settled: tuple[str, bytes, str]) -> None:
        recent = self._recent
        if key in recent or settled[2] == "rejected":
            # A rejected message was never accepted: its resend is processed
            # again (docs/operations.md, "Reprocessing"), not answered from memory.
            return
        recent[key] = settled[:2]
        self._recent_bytes += _entry_size(key, recent[key])
        # Bounded in entries and in bytes: keys are capped, ACKs are not tiny.
        while recent and (len(recent) > self._recent_max or self._recent_bytes > self._recent_max_bytes):
            old_key = next(iter(recent))
            self._recent_bytes -= _entry_size(old_key, recent.pop(old_key))

    def _track(self, d: defer.Deferred[Answer]) -> defer.Deferred[Answer]:
        """Keep ``d`` in :attr:`in_flight` (shutdown waits for it) until it fires."""
        return self.in_flight.track(d)

    def _duplicate_answer(
        self, header: MessageHeader, mlog: Any, started: float, code: str, ack: bytes, reason: str
    ) -> Answer:
        # reason: "stored" (committed recently by this process: answered from
        # memory), "in_flight" (waited for an earlier copy), "store_race" (went
        # through the pipeline and the save found the key stored: a resend
        # after a restart or long after, or another process stored it).
        mlog.info("message_duplicate", ack_code=code, reason=reason)
        if self.metrics is not None:
            self.metrics.message_answered(
                "mllp",
                "",
                code,
                time.perf_counter() - started,
                duplicate=True,
                sender=(header.sending_application, header.sending_facility),
            )
        return self._answer(header, code, ack)

    def _store_unavailable(
        self, header: MessageHeader, mlog: Any, started: float, error_type: str, fields: dict[str, Any]
    ) -> Answer:
        nack_code, nack = self._ack(header, "AR", internal_error("Message store unavailable, retry later"))
        mlog.error("store_unavailable", error_type=error_type)
        mlog.info(
            "message_processed",
            ack_code=nack_code,
            duration_ms=duration_ms(started),
            **{**fields, "error_code": APPLICATION_INTERNAL_ERROR, "error_type": error_type, "state": "not_stored"},
        )
        if self.metrics is not None:
            self.metrics.message_answered(
                "mllp",
                str(fields.get("feed", "")),
                nack_code,
                time.perf_counter() - started,
                sender=(header.sending_application, header.sending_facility),
            )
        return self._answer(header, nack_code, nack)

    def _answer_copy(self, settled: _Settled, header: MessageHeader, mlog: Any, started: float) -> Answer:
        """Answer a copy that arrived while the first was in flight: the first's stored answer."""
        if settled is None:
            # The first copy could not be stored: neither is this one (retry later).
            return self._store_unavailable(header, mlog, started, "StoreError", {"message_type": header.message_type})
        code, ack, _ = settled
        return self._duplicate_answer(header, mlog, started, code, ack, "in_flight")

    def _process_and_save(
        self,
        raw: bytes,
        header: MessageHeader,
        mlog: Any,
        started: float,
        received: datetime,
        released: Callable[[], object],
    ) -> defer.Deferred[tuple[Answer, _Settled]]:
        """Journal, process (on a worker, within the budget) and store; the save answers a duplicate."""
        pipeline = self.pipeline
        figures = self.live_figures()
        recording = Recording(self.hash_key, self.destinations, self.keep_raw)

        def checked(outcome: Outcome) -> MllpChecked:
            # The same function a worker process runs on its outcome (listener/server/procworker.py):
            # on a pipeline thread here, or on the reactor for an overrun or an internal error.
            return mllp_checked(
                raw,
                header,
                outcome,
                report_records(outcome),
                ack=self._ack,
                recording=recording,
                received=received,
                versions=version_fields(pipeline),
                hashed=self._hashed,
            )

        def save(result: MllpChecked) -> defer.Deferred[tuple[Answer, _Settled]]:
            record, fields, counted = result
            return self._commit(record, header, mlog, started, fields, counted)

        def bug(failure: Failure) -> MllpChecked:
            # work() itself failed (the journal could not be written, a bug
            # outside process()): an AE 207, stored as rejected.
            return checked(internal_error_outcome(header, "default", error_type(failure), "message"))

        jkey = journal_key("mllp", header.sending_application, header.sending_facility, header.control_id)
        task = PipelineTask(
            raw,
            received,
            figures,
            versions_of(pipeline),
            (jkey, "mllp", raw, ""),
            lambda: decode_only(raw, pipeline, received_at=received),
        )
        answered, finished = self.journaled(
            (jkey, "mllp", raw, ""),
            lambda interrupt: process(
                raw,
                pipeline,
                received_at=received,
                priors_for=self.priors_for,
                interrupt=interrupt,
                live_figures=figures,
            ),
            lambda decoded: unchecked_outcome(decoded, pipeline, received_at=received),
            checked,
            lambda: mlog.warning("pipeline_overrun", duration_ms=duration_ms(started)),
            failed=bug,
            save=save,
            quarantined=lambda crashes: self._quarantine_save(
                raw, header, crashes, mlog, time.perf_counter(), received
            ),
            task=task,
        )
        finished.addBoth(lambda _: released())
        return answered

    def _hashed(self, value: str) -> str:
        """``value``'s keyed hash for a log line (an accession, a patient id)."""
        return keyed_hash(value, self.hash_key)

    def _commit(
        self,
        record: MessageRecord,
        header: MessageHeader,
        mlog: Any,
        started: float,
        fields: dict[str, Any],
        counted: Tally | None,
    ) -> defer.Deferred[tuple[Answer, _Settled]]:
        code, ack = record.ack_code, record.ack

        def duplicate(result: SaveResult) -> tuple[Answer, _Settled]:
            # Stored before (by an earlier run, another process, an HTTP twin).
            return (
                self._duplicate_answer(header, mlog, started, result.ack_code, result.ack, "store_race"),
                (result.ack_code, result.ack, result.state),
            )

        def processed(result: SaveResult) -> tuple[Answer, _Settled]:
            event = "message_quarantined" if record.state == "quarantined" else "message_processed"
            mlog.info(event, ack_code=code, duration_ms=duration_ms(started), **fields, **resend_fields(result))
            if self.metrics is not None:
                self.metrics.message_answered(
                    "mllp",
                    record.feed,
                    code,
                    time.perf_counter() - started,
                    counted,
                    sender=(header.sending_application, header.sending_facility),
                )
            return self._answer(header, code, ack), (code, ack, record.state)

        def unavailable(failure_type: str) -> tuple[Answer, _Settled]:
            return self._store_unavailable(header, mlog, started, failure_type, fields), None

        return self.commit(record, duplicate=duplicate, processed=processed, unavailable=unavailable)

    def quarantine(self, raw: bytes, header: MessageHeader, crashes: int, log: Any) -> defer.Deferred[Answer]:
        """Store a message that crashed the daemon ``crashes`` times, unprocessed, answered AE 207.

        It is kept (raw body included) for ``overread show`` and an
        operator's reprocess; every resend gets the same stored AE.
        """
        key = header.key
        mlog = log.bind(control_id=key[2], sender_app=key[0], sender_facility=key[1])

        def remember(result: tuple[Answer, _Settled]) -> Answer:
            if result[1] is not None:
                self._remember(key, result[1])
            return result[0]

        saved = self._quarantine_save(raw, header, crashes, mlog, time.perf_counter(), self.now())
        return self._track(saved.addCallback(remember))

    def _quarantine_save(
        self, raw: bytes, header: MessageHeader, crashes: int, mlog: Any, started: float, received: datetime
    ) -> defer.Deferred[tuple[Answer, _Settled]]:
        """Store ``raw`` quarantined (its AE 207 for every resend); the answer and what settled."""
        code, ack = self._ack(header, "AE", internal_error(QUARANTINE_TEXT))
        record = quarantine_record(
            "mllp", (header.sending_application, header.sending_facility), header.control_id, raw, received, code, ack
        )
        fields = {
            "message_type": header.message_type,
            "state": "quarantined",
            "error_code": APPLICATION_INTERNAL_ERROR,
            "count": crashes,
        }
        return self._commit(record, header, mlog, started, fields, None)

    def internal_error_answer(self) -> Answer:
        """The AE 207 for a frame whose handling failed unexpectedly (no header to echo)."""
        _, ack = self._ack(None, "AE", internal_error("Internal error, retry later"))
        return Answer(ack)


class _Slot:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.answer: Answer | None = None
        self.done = False


#: Frames a connection may have waiting for the pipeline before we stop
#: reading from it (TCP back-pressure), and their bytes.
MAX_WAITING_FRAMES = 64
MAX_WAITING_BYTES = 16 * 1024 * 1024


@implementer(IHandshakeListener)
class MllpProtocol(Protocol, TimeoutMixin):
    """One MLLP connection: frames in, answers out in arrival order.

    Fairness (docs/hardening.md): a connection has at most one frame on a
    pipeline worker at a time; its next frames wait here, and past
    :data:`MAX_WAITING_FRAMES` we stop reading its socket. So a sender that
    floods slow messages occupies one worker, never all of them, and other
    senders keep their latency.
    """

    # Typed loosely: Twisted's zope interfaces do not type-check without a plugin.
    transport: Any

    def __init__(self, factory: MllpFactory) -> None:
        self.factory = factory
        self.framer = MllpFramer(factory.max_frame_size)
        self.queue: deque[_Slot] = deque()
        #: Frames not yet handed to the intake, with their answer slots.
        self.waiting: deque[tuple[_Slot, bytes]] = deque()
        self.waiting_bytes = 0
        self.in_pipeline = False
        self.paused = False
        self._pumping = False
        self.log: Any = None
        self.peer_host = ""
        self.refused = False
        self.refused_tls = False
        self.tls_ok = False
        self.closing_after_answers = False
        self.reported_discard = False
        #: Why we close this connection ("" while we have not decided to): connection_closed
        #: names it, so every close the daemon makes says why (docs/operations.md).
        self.close_reason = ""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        self.factory.conn_counter += 1
        address = self.transport.getPeer()
        peer = _peer(address)
        self.peer_host = str(getattr(address, "host", "") or type(address).__name__)
        self.log = _log().bind(peer=peer, conn=self.factory.conn_counter)
        reason = self.factory.admit(self.peer_host)
        if reason:
            self.refused = True
            limit = (
                self.factory.max_connections if reason == "max_connections" else self.factory.max_connections_per_peer
            )
            self.log.warning("connection_refused", reason=reason, limit=limit)
            self.transport.loseConnection()
            return
        if self.factory.clock is not None:
            self.callLater = self.factory.clock.callLater  # type: ignore[method-assign]
        self.setTimeout(self.factory.idle_timeout)  # type: ignore[no-untyped-call]
        self.log.info("connection_opened")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        # Nothing may escape: Twisted would drop the connection, and the
        # answers of frames already taken would never be written.
        try:
            self._data_received(data)
        except Exception as exc:  # noqa: BLE001 - logged by type; answers already queued still go out
            self.log.error("message_rejected", reason="internal_error", error_type=type(exc).__name__)
            self._close_after_answers("internal_error")
            self._flush()

    def _data_received(self, data: bytes) -> None:
        if self.refused or self.refused_tls or self.closing_after_answers or self.transport.disconnecting:
            return
        try:
            frames = self.framer.feed(data)
        except FrameTooLarge as exc:
            self._log_restarts()
            for payload in exc.frames:
                self._take(payload)
            slot = _Slot()
            self.queue.append(slot)
            self._close_after_answers("frame_too_large")
            self._resolve(slot, self.factory.intake.refuse_oversized(exc, self.log))
            self._flush()
            return
        except FramingError:
            self._log_restarts()
            self.log.warning("frame_rejected", reason="framing_error", bytes=len(data))
            self._close("framing_error")
            return
        self._log_restarts()
        # Only complete frames count as activity: bytes dripped into a frame or
        # between frames do not, so a drip cannot hold a connection slot.
        if frames:
            self.resetTimeout()  # type: ignore[no-untyped-call]
        if self.framer.discarded_bytes and not self.reported_discard:
            # Once per connection (a sender that adds LF after every frame would
            # otherwise log a line per message); connection_closed has the total.
            self.reported_discard = True
            self.log.warning("frame_discarded_bytes", reason="outside_frame", bytes=self.framer.discarded_bytes)
        if self.framer.discarded_bytes > self.factory.max_frame_size:
            # More junk than one whole frame: not an MLLP sender.
            self.log.warning("frame_rejected", reason="junk_outside_frames", bytes=self.framer.discarded_bytes)
            self._close_after_answers("junk_outside_frames")
        for payload in frames:
            self._take(payload)
        self._flush()

    def _close_after_answers(self, reason: str) -> None:
        """Read nothing more; close once every answer owed is written (``reason`` for connection_closed)."""
        self.closing_after_answers = True
        self.close_reason = self.close_reason or reason

    def _close(self, reason: str, abort: bool = False) -> None:
        """Close now (``abort``: without writing what is buffered); ``reason`` goes to connection_closed."""
        self.close_reason = self.close_reason or reason
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _log_restarts(self) -> None:
        for size in self.framer.take_discarded_partials():
            # A start block inside a frame: the sender restarted; the partial
            # frame before it is dropped, unanswered (docs/hardening.md).
            self.log.warning("frame_rejected", reason="restarted_mid_frame", bytes=size)

    def _take(self, payload: bytes) -> None:
        slot = _Slot()
        self.queue.append(slot)
        if self.factory.intake.closing:
            # Shutting down: no answer (the sender resends after restart).
            self._resolve(slot, Answer(None))
            return
        self.waiting.append((slot, payload))
        self.waiting_bytes += len(payload)
        if not self.paused and (len(self.waiting) > MAX_WAITING_FRAMES or self.waiting_bytes > MAX_WAITING_BYTES):
            self.paused = True
            self.transport.pauseProducing()
        self._pump()

    def _pump(self) -> None:
        """Hand the next waiting frame to the intake when none of ours is on a worker."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self.waiting and not self.in_pipeline:
                slot, payload = self.waiting.popleft()
                self.waiting_bytes -= len(payload)
                if self.factory.intake.closing:
                    # Shutting down: no answer (the sender resends after restart).
                    self._resolve(slot, Answer(None))
                    continue
                self.in_pipeline = True
                try:
                    d = self.factory.intake.receive(payload, self.log, self._released)
                except Exception as exc:  # noqa: BLE001 - receive() never raises by design
                    self.in_pipeline = False
                    self._resolve(slot, self._bug(Failure(exc)))  # type: ignore[no-untyped-call]
                    continue
                d.addErrback(self._bug)
                d.addCallback(self._resolve_later, slot)
        finally:
            self._pumping = False
        if (
            self.paused
            and len(self.waiting) <= MAX_WAITING_FRAMES // 2
            and self.waiting_bytes <= MAX_WAITING_BYTES // 2
        ):
            self.paused = False
            if self.transport is not None and not self.transport.disconnecting:
                self.transport.resumeProducing()

    def _released(self) -> None:
        self.in_pipeline = False
        self._pump()

    def _resolve_later(self, answer: Answer, slot: _Slot) -> None:
        self._resolve(slot, answer)

    def _bug(self, failure: Failure) -> Answer:
        # receive() never fails by design; if it does, answer AE 207 without a
        # header (the sender resends) and keep later answers flowing.
        self.log.error(
            "message_rejected", reason="internal_error", error_type=failure.type.__name__ if failure.type else ""
        )
        try:
            answer: Answer = self.factory.intake.internal_error_answer()
            return answer
        except Exception:  # noqa: BLE001 - last resort: no answer
            return Answer(None)

    def _resolve(self, slot: _Slot, answer: Answer) -> None:
        slot.answer = answer
        slot.done = True
        self._flush()

    def _flush(self) -> None:
        while self.queue and self.queue[0].done:
            slot = self.queue.popleft()
            answer = slot.answer
            if (
                answer is not None
                and answer.ack is not None
                and self.transport is not None
                and not self.transport.disconnecting
            ):
                send_now(self.transport, frame(answer.ack))
                # The idle time starts again at our answer: a sender whose message took
                # long to check has the whole idle_timeout to send its next one.
                self.resetTimeout()  # type: ignore[no-untyped-call]
            if answer is not None and answer.close:
                self._close("frame_too_large")
        if self.closing_after_answers and not self.queue:
            self._close(self.close_reason)

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted IHandshakeListener
        """TLS only: the client certificate chained to our CA; check the allow-list."""
        cert = self.transport.getPeerCertificate()
        subject = str(cert.get_subject().CN or "") if cert is not None else ""
        self.log = self.log.bind(tls_subject=subject)
        if self.factory.allowed_subjects and subject not in self.factory.allowed_subjects:
            self.log.warning("tls_peer_rejected", reason="subject_not_allowed")
            self.refused_tls = True
            self._close("tls_subject_not_allowed", abort=True)
            return
        self.tls_ok = True

    def timeoutConnection(self) -> None:  # noqa: N802 - Twisted API
        if self.queue:
            # The peer is waiting for our answers: not idle. (resetTimeout does
            # nothing once the timer fired, so arm it again.)
            self.setTimeout(self.factory.idle_timeout)  # type: ignore[no-untyped-call]
            return
        self.log.info("connection_timed_out", interval_s=self.factory.idle_timeout)
        self._close("idle_timeout", abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted API
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if self.refused:
            return
        self.factory.release(self.peer_host)
        buffered = self.framer.buffered_bytes  # before feed(b"") clears it
        try:
            self.framer.feed(b"")
        except FramingError:
            self.log.warning("frame_rejected", reason="closed_mid_frame", bytes=buffered)
        if not self.tls_ok and _is_tls_error(reason):
            self.log.warning("tls_handshake_failed", error_type=reason.type.__name__ if reason.type else "")
        closed_by, why = self._closed_by(reason)
        self.log.info(
            "connection_closed",
            closed_by=closed_by,
            reason=why,
            count=len(self.queue),
            bytes=self.framer.discarded_bytes,
        )

    def _closed_by(self, reason: Failure) -> tuple[str, str]:
        """Who ended the connection and why, for connection_closed (docs/operations.md, "A connection closed").

        ``daemon`` with the reason it chose to close, ``tls_handshake_failed`` (``daemon`` or, when the
        sender refused the handshake with an alert, ``peer``), or ``shutdown`` when the
        daemon stopped with the connection open; else ``peer``: ``peer_closed``
        (the sender closed it) or ``connection_lost`` (a reset or a network error).
        """
        if self.close_reason:
            return "daemon", self.close_reason
        closer = "" if self.tls_ok else _handshake_closer(reason)
        if closer:
            # The handshake failed (tls_handshake_failed names the error): our TLS layer ended it
            # (no client certificate, one not from tls_client_ca, no TLS at all), or the sender
            # refused ours with an alert.
            return closer, "tls_handshake_failed"
        if reason.check(ConnectionDone):  # type: ignore[no-untyped-call]
            return "peer", "peer_closed"
        if self.factory.intake.closing:
            return "daemon", "shutdown"
        return "peer", "connection_lost"


class MllpFactory(Factory):
    """Builds :class:`MllpProtocol` connections sharing one :class:`Intake`.

    Connection limits: ``max_connections`` in all, and ``max_connections_per_peer``
    from one peer address, so one misbehaving host cannot take every slot.
    """

    noisy = False
    protocol = MllpProtocol

    def __init__(
        self,
        intake: Intake,
        *,
        max_frame_size: int,
        idle_timeout: float,
        max_connections: int,
        max_connections_per_peer: int | None = None,
        clock: Any = None,
        allowed_subjects: tuple[str, ...] = (),
    ) -> None:
        self.intake = intake
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer or max_connections
        self.clock = clock
        self.allowed_subjects = frozenset(allowed_subjects)
        self.open_count = 0
        self.conn_counter = 0
        self.per_peer: dict[str, int] = {}

    def admit(self, host: str) -> str:
        """Count a new connection from ``host``; return why it is refused ("" if admitted)."""
        if self.open_count >= self.max_connections:
            return "max_connections"
        if self.per_peer.get(host, 0) >= self.max_connections_per_peer:
            return "max_connections_per_peer"
        self.open_count += 1
        self.per_peer[host] = self.per_peer.get(host, 0) + 1
        return ""

    def release(self, host: str) -> None:
        """A connection admitted by :meth:`admit` closed."""
        self.open_count -= 1
        left = self.per_peer.get(host, 0) - 1
        if left > 0:
            self.per_peer[host] = left
        else:
            self.per_peer.pop(host, None)

    def buildProtocol(self, addr: IAddress | None) -> MllpProtocol:  # noqa: N802 - Twisted API
        return MllpProtocol(self)


def _is_tls_error(reason: Failure) -> bool:
    try:
        from OpenSSL.SSL import Error as SSLError
    except ImportError:  # pragma: no cover - pyOpenSSL ships with twisted[tls]
        return False
    return bool(reason.check(SSLError))  # type: ignore[no-untyped-call]


def _handshake_closer(reason: Failure) -> str:
    """Which side's TLS refused the handshake that ``reason`` ended: ``peer`` for an alert it sent
    (OpenSSL names those "... alert ..."), ``daemon`` for any other verdict of our OpenSSL (a
    certificate refused, no TLS at all); "" when ``reason`` is no verdict of either side (not
    OpenSSL's ``Error``, or its ``SysCallError``: a socket error it passes on)."""
    if not _is_tls_error(reason):
        return ""
    from OpenSSL.SSL import SysCallError  # importable: _is_tls_error found OpenSSL's Error

    if reason.check(SysCallError):  # type: ignore[no-untyped-call]
        return ""
    args = reason.value.args if reason.value is not None else ()
    # pyOpenSSL's Error holds a list of (library, function, reason) tuples.
    errors = args[0] if args and isinstance(args[0], list) else []
    alert = any(isinstance(e, tuple) and e and " alert " in f" {e[-1]} " for e in errors)
    return "peer" if alert else "daemon"


def _peer(address: IAddress) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return type(address).__name__
    return f"{host}:{port}"
