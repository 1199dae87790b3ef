"""The outbound queue's sender: one worker per destination, MLLP to the RIS.

Layer: reactor code. The decisions (backoff, verdicts, ACK reading) are the
pure functions of :mod:`listener.outbox`; this module connects, frames, waits
and records.

Promises:

* One message in flight per destination: the worker holds one connection and
  sends the next row only after the previous one's result is committed.
* Per-accession order: each row comes from ``Store.outbox_claim``, taken
  *after* the previous attempt was recorded, which hands out only the oldest
  pending row of each accession; a row waiting for its retry time blocks its own
  accession and nothing else.
* The answer is matched by MSA-2 == the row's MSH-10. AA/CA: delivered; AE/CE,
  an ACK timeout, a lost connection or an unreadable answer: retry with
  backoff; AR/CR: dead letter (or retry, ``on_reject: retry``); after
  ``max_attempts`` the row is dead-lettered and the others go on.
* A refused connection is the RIS's state, not the row's: the worker backs off
  its *connection* attempts (same schedule) and the rows keep their attempts,
  so a RIS down for hours does not dead-letter the queue. Over TLS the
  connection counts as open only once the handshake has completed, so a
  certificate problem (expired, untrusted, wrong name) is a connect failure
  too, not a failed attempt of every row.
* Restart-safe: the rows are in the store; ``start()`` sends whatever is due.
  A row the RIS took just before a crash is sent again with the same MSH-10.
* Leases (docs/outbound.md, "Leases"): rows are taken with
  ``Store.outbox_claim`` under this process's instance id, for
  ``lease_seconds``; the lease is renewed every third of that while the
  attempt is in flight, the result is recorded only while the lease is still
  ours, and ``stop()`` releases what is left. Any number of daemons on one
  store then send each row from one of them at a time, and an accession's
  next row only after its previous one was recorded; a daemon killed with its
  rows leased leaves them to the others once the leases expire.
* The reactor never waits on the store: reads and updates run on threads
  (``run_in_thread``, ``deferToThread`` in the daemon).
* A slow or dead DNS server stalls only its own destination: host names are
  resolved on the destination's own one-thread pool (daemon threads), never
  on the reactor's pool that runs the pipeline, reloads and the HTTP intake;
  shutdown cancels a connection attempt still resolving after the grace.
* Wakes when the MLLP side commits rows (:meth:`OutboundWorker.wake`), at each
  row's retry time, and on a periodic poll (rows revived by ``overread outbox
  retry``, rows left by a previous run).
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet._resolver import GAIResolver
from twisted.internet.interfaces import (
    IHandshakeListener,
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer  # type: ignore[import-untyped]

from listener.destinations import DestinationSettings
from listener.errors import FramingError, StoreError
from listener.hl7v2.mllp import MllpFramer, frame
from listener.logs import get_logger
from listener.outbox import AckAnswer, judge, next_attempt_at, read_ack
from listener.store.base import OutboxRow, Store

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "AckTimeout",
    "AnswerUnreadable",
    "OutboundWorker",
    "TlsHandshakeFailed",
    "RisClientProtocol",
    "client_endpoint",
    "instance_id",
    "own_resolver",
]

#: Seconds between polls of the store (rows revived by an operator, restarts).
DEFAULT_POLL_INTERVAL = 2.0
#: Largest answer accepted from a RIS.
_MAX_ANSWER_SIZE = 1024 * 1024
#: How long shutdown waits for an attempt in flight before dropping it.
_STOP_GRACE = 5.0
#: Seconds a claim on an outbox row lasts unless renewed (``outbox.lease_seconds``).
DEFAULT_LEASE_SECONDS = 30.0


def instance_id() -> str:
    """An id for this daemon process, unique among the daemons sharing a store: ``host:pid:random``.

    The host and pid tell an operator which daemon holds a row (``overread
    outbox list``); the random part keeps a restarted process that reuses a
    pid (in a container, always pid 1) apart from its dead predecessor.
    """
    host = socket.gethostname()[:64] or "localhost"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


RunInThread = Callable[..., "defer.Deferred[Any]"]
Connect = Callable[[Factory], "defer.Deferred[Any]"]


def _log() -> Any:
    return get_logger("listener.server.outbound")


class AckTimeout(Exception):
    """The RIS did not answer within ``ack_timeout_seconds``."""


class AnswerUnreadable(Exception):
    """The RIS answered something that is not an ACK (no MSH or no MSA)."""


class TlsHandshakeFailed(ConnectionError):
    """The TLS handshake with the RIS failed or did not finish in time (a connect failure)."""


@implementer(IHandshakeListener)
class RisClientProtocol(Protocol):
    """One connection to a RIS: send a framed message, fire with its matching ACK.

    Answers whose MSA-2 names another message (a late answer to an attempt we
    gave up on) are ignored. Only one message is outstanding at a time. Over
    TLS, :meth:`ready` fires once the handshake has completed.
    """

    transport: Any

    def __init__(self) -> None:
        self.framer = MllpFramer(_MAX_ANSWER_SIZE)
        self.waiting: defer.Deferred[AckAnswer] | None = None
        self.expected = ""
        self.timer: Any = None  # IDelayedCall (zope interfaces do not type-check)
        self.lost = False
        self.handshake_done = False
        self._ready: defer.Deferred[None] | None = None
        self._ready_timer: Any = None

    def ready(self, *, timeout: float, clock: IReactorTime) -> defer.Deferred[None]:
        """Fires when messages can be sent: at once over TCP, after the handshake over TLS.

        Fails with :class:`TlsHandshakeFailed` when the connection is lost
        before the handshake completes (a refused or unverifiable certificate)
        or the handshake takes longer than ``timeout`` (the connection is then
        aborted). Cancelling it aborts the connection.
        """
        if self.lost:
            return defer.fail(TlsHandshakeFailed("connection lost before it was ready"))
        if self.handshake_done or not ISSLTransport.providedBy(self.transport):
            return defer.succeed(None)

        def cancel(_: object) -> None:
            self._ready = None
            self._stop_ready_timer()
            self.transport.abortConnection()

        d: defer.Deferred[None] = defer.Deferred(canceller=cancel)
        self._ready = d
        timer: Any = clock
        self._ready_timer = timer.callLater(timeout, self._handshake_timed_out)
        return d

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted API (IHandshakeListener)
        self.handshake_done = True
        self._stop_ready_timer()
        d, self._ready = self._ready, None
        if d is not None:
            d.callback(None)

    def _stop_ready_timer(self) -> None:
        if self._ready_timer is not None and self._ready_timer.active():
            self._ready_timer.cancel()
        self._ready_timer = None

    def _handshake_timed_out(self) -> None:
        self._ready_timer = None
        d, self._ready = self._ready, None
        self.transport.abortConnection()
        if d is not None:
            d.errback(Failure(TlsHandshakeFailed("TLS handshake not finished in time")))  # type: ignore[no-untyped-call]

    def send(
        self, control_id: str, payload: bytes, *, timeout: float, clock: IReactorTime
    ) -> defer.Deferred[AckAnswer]:
        """Write one message; the Deferred fires with its ACK.

        Fails with :class:`AckTimeout` (the connection is then aborted),
        :class:`AnswerUnreadable` (aborted too), or the reason the connection
        was lost.
        """
        assert self.waiting is None, "one message in flight per connection"
        d: defer.Deferred[AckAnswer] = defer.Deferred()
        if self.lost:
            d.errback(Failure(ConnectionError("connection lost")))  # type: ignore[no-untyped-call]
            return d
        self.waiting = d
        self.expected = control_id
        timer: Any = clock
        self.timer = timer.callLater(timeout, self._timed_out)
        self.transport.write(frame(payload))
        return d

    def _finish(self) -> defer.Deferred[AckAnswer] | None:
        d, self.waiting = self.waiting, None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        return d

    def _fail(self, exc: BaseException, *, abort: bool) -> None:
        d = self._finish()
        if abort and not self.lost:
            self.transport.abortConnection()
        if d is not None:
            d.errback(Failure(exc))  # type: ignore[no-untyped-call]

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(AckTimeout("no answer in time"), abort=True)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        try:
            frames = self.framer.feed(data)
        except FramingError:
            self._fail(AnswerUnreadable("framing error"), abort=True)
            return
        for payload in frames:
            answer = read_ack(payload)
            if answer is None:
                self._fail(AnswerUnreadable("no MSA"), abort=True)
                return
            if self.waiting is None or answer.control_id != self.expected:
                continue  # a late answer to an attempt already given up
            d = self._finish()
            assert d is not None
            d.callback(answer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted API
        self.lost = True
        self._stop_ready_timer()
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.errback(Failure(TlsHandshakeFailed("connection lost during the TLS handshake")))  # type: ignore[no-untyped-call]
        self._fail(ConnectionError("connection lost"), abort=False)


class _RisFactory(Factory):
    noisy = False
    protocol = RisClientProtocol

    def buildProtocol(self, addr: Any) -> RisClientProtocol:  # noqa: N802 - Twisted API
        return RisClientProtocol()


class OutboundWorker:
    """Sends one destination's outbox rows, one at a time, oldest first.

    Args:
        settings: the destination (its name, retry settings).
        store: the durable store (only its outbox methods are used).
        reactor: the clock for timers (``task.Clock`` in tests).
        connect: opens a connection with a factory; fires with the protocol
            (``client_endpoint(...).connect`` in the daemon).
        run_in_thread: runs a blocking store call off the reactor thread.
        now: aware UTC wall-clock time, for the store's timestamps.
        rand: the jitter draw in [0, 1).
        poll_interval: seconds between polls of the store.
        holder: this daemon's instance id, the lease holder of the rows it claims
            (one per process, shared by its workers; :func:`instance_id`).
        lease_seconds: how long a claim lasts unless renewed.
        on_takeover: called once per row claimed after another holder's lease
            expired (the daemon counts them in a metric).
    """

    def __init__(
        self,
        settings: DestinationSettings,
        store: Store,
        *,
        reactor: IReactorTime,
        connect: Connect,
        run_in_thread: RunInThread,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rand: Callable[[], float] = random.random,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        holder: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        on_takeover: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.holder = holder or instance_id()
        self.lease = timedelta(seconds=lease_seconds)
        self.on_takeover = on_takeover
        self.takeovers = 0  # rows claimed from an expired lease of another instance
        self.name = settings.name
        self.store = store
        # Typed loosely: Twisted's zope interfaces do not type-check without a plugin.
        self.reactor: Any = reactor
        self.connect = connect
        self.run_in_thread = run_in_thread
        self.now = now
        self.rand = rand
        self.poll_interval = poll_interval
        self.log = _log().bind(destination=settings.name)
        self.running = False
        self.stopping = False
        self.protocol: RisClientProtocol | None = None
        self._connecting: defer.Deferred[Any] | None = None
        self.connect_failures = 0
        self.connect_after = 0.0  # reactor seconds before which no connection is tried
        self._busy = False
        self._again = False
        self._idle: list[defer.Deferred[None]] = []
        self._timer: Any = None  # IDelayedCall
        self._poller: LoopingCall | None = None
        self.sent = 0  # messages written (for tests and metrics)
        #: The newest ``overread outbox kick`` acted on (older requests are not new).
        self._kick_seen: datetime = now()
        self._connected_once = False

    # ----------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start polling (the first poll runs at once: rows left by a previous run)."""
        self.running = True
        self._poller = LoopingCall(self.wake)
        self._poller.clock = self.reactor
        self._poller.start(self.poll_interval, now=True)

    def stop(self) -> defer.Deferred[None]:
        """Stop sending; fires once no attempt is in flight and the connection is closed.

        An attempt still waiting for its ACK after a short grace is dropped
        without being recorded: the row stays pending with its attempts
        unchanged and is sent again (same MSH-10) after the restart.
        """
        self.running = False
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        d = self._when_idle()
        if self._busy:
            grace = self.reactor.callLater(_STOP_GRACE, self._abort_in_flight)

            def cancel_grace(result: None) -> None:
                if grace.active():
                    grace.cancel()

            d.addCallback(cancel_grace)
        d.addCallback(lambda _: self._disconnect())
        d.addCallback(lambda _: self._release())
        return d

    def _release(self, *, quiet: bool = False) -> defer.Deferred[None]:
        """Give back this instance's leases on the destination's rows (a failure is logged, not fatal).

        The worker has at most one row claimed per destination, so this is the
        row in flight or just claimed. ``quiet``: not logged (a refused
        connection, which the connection backoff already logs).
        """
        d = self.run_in_thread(self.store.outbox_release, self.holder, self.name)

        def released(count: int) -> None:
            if count and not quiet:
                self.log.info("outbox_leases_released", count=count)

        def failed(failure: Failure) -> None:
            self.log.error(
                "store_unavailable", reason="outbox_release", error_type=failure.type.__name__ if failure.type else ""
            )

        d.addCallbacks(released, failed)
        return d

    def _abort_in_flight(self) -> None:
        self.stopping = True
        if self._connecting is not None:
            self._connecting.cancel()  # still resolving or connecting
        self._disconnect()

    def _disconnect(self) -> None:
        if self.protocol is not None and not self.protocol.lost:
            self.protocol.transport.loseConnection()
        self.protocol = None

    def _when_idle(self) -> defer.Deferred[None]:
        if not self._busy:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d

    # ----------------------------------------------------------------- wake

    def wake(self) -> None:
        """Send whatever is due now (called on commit, on timers and by the poll)."""
        if not self.running:
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        self._again = False
        d = self._drain()
        d.addErrback(self._bug)
        d.addBoth(self._drained)

    def _drained(self, _: object) -> None:
        self._busy = False
        if self._again and self.running:
            self.wake()
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    def _bug(self, failure: Failure) -> None:
        self.log.error(
            "store_unavailable", reason="outbound_worker", error_type=failure.type.__name__ if failure.type else ""
        )

    def _wake_at(self, delay: float) -> None:
        """Make sure the worker wakes within ``delay`` seconds."""
        if not self.running:
            return
        when = self.reactor.seconds() + max(delay, 0.0)
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= when:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(delay, 0.0), self.wake)

    @defer.inlineCallbacks
    def _drain(self) -> Any:
        """Send due rows one by one until none is due, the RIS is unreachable, or we stop."""
        while self.running:
            if self.reactor.seconds() < self.connect_after:
                kicked = yield self._kicked()
                if not kicked:
                    self._wake_at(self.connect_after - self.reactor.seconds())
                    return
                self.connect_after = 0.0
                self.log.info("outbox_kicked", attempts=self.connect_failures)
            now = self.now()
            try:
                claims = yield self.run_in_thread(
                    self.store.outbox_claim, self.name, self.holder, now, now + self.lease, 1
                )
            except StoreError as exc:
                self.log.error("store_unavailable", reason="outbox_claim", error_type=type(exc).__name__)
                return
            if not claims:
                return
            claim = claims[0]
            if claim.taken_over_from:
                self.takeovers += 1
                self.on_takeover()
                self.log.warning(
                    "outbox_lease_taken_over",
                    control_id=claim.row.control_id,
                    instance=self.holder,
                    previous_instance=claim.taken_over_from,
                )
            if not self.running:  # stopped while claiming: give it back now, not at expiry
                return
            sent = yield self._attempt(claim.row)
            if not sent:
                return

    @defer.inlineCallbacks
    def _kicked(self) -> Any:
        """True once per new ``overread outbox kick`` recorded in the store (docs/operations.md)."""
        try:
            states = yield self.run_in_thread(self.store.destination_states, self.name)
        except StoreError:
            return False
        requested = states[0].kick_requested_at if states else None
        if requested is None or requested <= self._kick_seen:
            return False
        self._kick_seen = requested
        return True

    def _record(self, what: str, call: Callable[..., Any], *args: Any) -> None:
        """Record the connection state in the store, in the background (a failure is logged, not fatal)."""
        d = self.run_in_thread(call, *args)
        d.addErrback(
            lambda f: self.log.error("store_unavailable", reason=what, error_type=f.type.__name__ if f.type else "")
        )

    # -------------------------------------------------------------- attempt

    @defer.inlineCallbacks
    def _connection(self) -> Any:
        if self.protocol is not None and not self.protocol.lost:
            return self.protocol
        self.protocol = None
        self._connecting = self.connect(_RisFactory())
        try:
            protocol = yield self._connecting
            if isinstance(protocol, RisClientProtocol):
                # Over TLS: not open until the handshake is done (certificate problems are connect failures).
                self._connecting = protocol.ready(timeout=self.settings.retry.ack_timeout_seconds, clock=self.reactor)
                yield self._connecting
        finally:
            self._connecting = None
        self.protocol = protocol
        self.log.info("connection_opened", endpoint=self.settings.endpoint)
        return protocol

    @defer.inlineCallbacks
    def _attempt(self, row: OutboxRow) -> Any:
        """Send one claimed row and record the result. Returns False to stop this round.

        The lease is renewed from the connection attempt (whose timeout is
        ``ack_timeout_seconds``, possibly longer than the lease) to the answer.
        A row that was never written (no connection) is released at once, so
        it does not wait for its lease to expire at the next attempt, here or
        at another daemon.
        """
        renewer = LoopingCall(self._renew, row)
        renewer.clock = self.reactor
        renewer.start(self.lease.total_seconds() / 3, now=False)
        try:
            result = yield self._send(row, renewer)
        finally:
            if renewer.running:
                renewer.stop()
        return result

    @defer.inlineCallbacks
    def _send(self, row: OutboxRow, renewer: LoopingCall) -> Any:
        retry = self.settings.retry
        try:
            protocol = yield self._connection()
        except Exception as exc:  # noqa: BLE001 - any connect failure (refused, DNS, TLS, timeout)
            renewer.stop()
            yield self._release(quiet=True)
            if not self.stopping:
                self._connect_failed(exc)
            return False
        if self.connect_failures or not self._connected_once:
            # Also the first connection of this process: a failure count left by an earlier run is cleared.
            self._connected_once = True
            self._record("destination_connected", self.store.destination_connected, self.name, self.now())
        self.connect_failures = 0
        # The lease is confirmed (and extended) right before the bytes leave: a worker that
        # stalled past its lease (a paused VM, a store it could not reach to renew) must not
        # send a row another daemon has taken over and perhaps sent, with the accession's
        # next row after it (docs/outbound.md, "Leases").
        try:
            held = yield self.run_in_thread(self.store.outbox_renew, row.id, self.holder, self.now() + self.lease)
        except StoreError as exc:
            renewer.stop()
            self.log.error("store_unavailable", reason="outbox_renew", error_type=type(exc).__name__)
            self._wake_at(self.poll_interval)
            return False
        if not held:
            renewer.stop()
            self.log.warning("outbox_lease_lost", control_id=row.control_id, instance=self.holder, reason="before_send")
            return True
        self.sent += 1
        try:
            answer = yield protocol.send(
                row.control_id, row.payload, timeout=retry.ack_timeout_seconds, clock=self.reactor
            )
        except AckTimeout:
            result, error = "ack_timeout", f"no answer within {retry.ack_timeout_seconds:g} s"
        except AnswerUnreadable:
            result, error = "unreadable_ack", "answer without MSH/MSA"
        except Exception as exc:  # noqa: BLE001 - the connection was lost or failed
            result, error = "connection_lost", f"connection lost ({type(exc).__name__})"
        else:
            result = answer.code
            error = f"{answer.code}" + (f" (ERR-3 {answer.error_code})" if answer.error_code else "")
        renewer.stop()
        if self.stopping and result in ("connection_lost", "ack_timeout"):
            return False  # dropped by shutdown: not the row's fault, leave it as it was
        attempts = row.attempts + 1
        verdict = judge(result, attempts, retry)
        now = self.now()
        try:
            if verdict == "delivered":
                recorded = yield self.run_in_thread(
                    partial(self.store.outbox_delivered, holder=self.holder), row.id, now
                )
                if recorded:
                    self.log.info("outbox_delivered", control_id=row.control_id, attempts=attempts, ack_code=result)
            elif verdict == "dead":
                recorded = yield self.run_in_thread(
                    partial(self.store.outbox_dead, holder=self.holder), row.id, now, error
                )
                if recorded:
                    self.log.warning(
                        "outbox_dead_lettered",
                        control_id=row.control_id,
                        attempts=attempts,
                        reason=result if result in ("ack_timeout", "connection_lost", "unreadable_ack") else "rejected",
                        ack_code=result if len(result) == 2 else "",
                    )
            else:
                due = next_attempt_at(attempts, now, retry, self.rand())
                recorded = yield self.run_in_thread(
                    partial(self.store.outbox_failed, holder=self.holder), row.id, now, due, error
                )
                if recorded:
                    self.log.info(
                        "outbox_retry_scheduled",
                        control_id=row.control_id,
                        attempts=attempts,
                        next_attempt_at=due.isoformat(),
                        reason=result if len(result) > 2 else "answer",
                        ack_code=result if len(result) == 2 else "",
                    )
                self._wake_at((due - now).total_seconds())
        except StoreError as exc:
            # Not recorded: the row stays as it was and is sent again (same MSH-10).
            self.log.error("store_unavailable", reason="outbox_update", error_type=type(exc).__name__)
            self._wake_at(self.poll_interval)
            return False
        if not recorded:
            # Our lease expired and another instance took the row over: its result stands, not ours.
            self.log.warning("outbox_lease_lost", control_id=row.control_id, instance=self.holder, reason=result)
        return True

    def _renew(self, row: OutboxRow) -> None:
        """Extend the lease of the row in flight (every third of ``lease_seconds``; failures are logged)."""
        d = self.run_in_thread(self.store.outbox_renew, row.id, self.holder, self.now() + self.lease)

        def renewed(ok: bool) -> None:
            if not ok:
                self.log.warning("outbox_lease_lost", control_id=row.control_id, instance=self.holder, reason="renew")

        def failed(failure: Failure) -> None:
            self.log.error(
                "store_unavailable", reason="outbox_renew", error_type=failure.type.__name__ if failure.type else ""
            )

        d.addCallbacks(renewed, failed)

    def _connect_failed(self, exc: BaseException) -> None:
        self.connect_failures += 1
        now = self.now()
        due = next_attempt_at(self.connect_failures, now, self.settings.retry, self.rand())
        delay = (due - now).total_seconds()
        self.connect_after = self.reactor.seconds() + delay
        self.log.warning(
            "outbox_retry_scheduled",
            reason="connect_failed",
            error_type=type(exc).__name__,
            attempts=self.connect_failures,
            next_attempt_at=due.isoformat(),
            endpoint=self.settings.endpoint,
        )
        # Shown by `overread outbox list` (our words and the exception's class and text: a
        # socket or TLS error, never message content).
        text = f"{self.settings.endpoint}: {type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")
        self._record(
            "destination_connect_failed",
            self.store.destination_connect_failed,
            self.name,
            now,
            self.connect_failures,
            text,
            due,
        )
        self._wake_at(delay)


# ------------------------------------------------------------------ endpoints


class _DaemonThread(threading.Thread):
    """A thread that never holds up the process exit (a hung getaddrinfo)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class _DaemonThreadPool(ThreadPool):
    """A thread pool whose threads never hold up the process exit."""

    threadFactory = _DaemonThread  # noqa: N815 - Twisted API


@implementer(IReactorPluggableNameResolver)
class _OwnResolverReactor:
    """The reactor, except that host names resolve on a pool of their own."""

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:  # noqa: N802 - Twisted API
        old, self.nameResolver = self.nameResolver, resolver
        return old

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def own_resolver(reactor: Any, name: str) -> IHostnameResolver:
    """A getaddrinfo resolver on a one-thread daemon pool named for the destination.

    One thread: a dead DNS server blocks at most one resolution per
    destination; the next attempt waits behind it instead of taking another
    thread. The pool is never joined, so shutdown does not wait for it.
    """
    pool = _DaemonThreadPool(minthreads=0, maxthreads=1, name=f"overread-dns-{name}")
    pool.start()
    resolver: Any = GAIResolver(reactor, getThreadPool=lambda: pool)  # an IHostnameResolver (zope: untyped)
    return resolver  # type: ignore[no-any-return]


def client_endpoint(reactor: Any, settings: DestinationSettings, resolver: IHostnameResolver | None = None) -> Any:
    """The Twisted client endpoint for a destination.

    A ``HostnameEndpoint`` for the endpoint's host and port (IPv4 and IPv6,
    connect timeout = the ACK timeout) resolving names with ``resolver``
    (default: :func:`own_resolver`, a pool of the destination's own), wrapped
    in TLS for ``ssl:``/``tls:`` endpoints: with ``tls:`` settings presenting
    our client certificate and trusting the given CA, otherwise trusting the
    system roots.
    """
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    host, port = _host_port(settings.endpoint)
    if resolver is None:
        resolver = own_resolver(reactor, settings.name)
    tcp: Any = HostnameEndpoint(
        _OwnResolverReactor(reactor, resolver), host, port, timeout=settings.retry.ack_timeout_seconds
    )
    if settings.endpoint.split(":", 1)[0] == "tcp":
        return tcp
    from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, platformTrust

    client = None
    trust: Any = platformTrust()  # type: ignore[no-untyped-call]
    if settings.tls is not None:
        cert = Path(settings.tls.certificate).read_bytes()
        key = Path(settings.tls.private_key).read_bytes()
        client = PrivateCertificate.loadPEM(cert + b"\n" + key)  # type: ignore[no-untyped-call]
        if settings.tls.ca:
            trust = Certificate.loadPEM(Path(settings.tls.ca).read_bytes())
    options = optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)
    return wrapClientTLS(options, tcp)


def _host_port(endpoint: str) -> tuple[str, int]:
    """Host and port of ``tcp|ssl|tls:HOST:PORT`` or ``...:host=H:port=P`` (checked at load)."""
    import re

    parts = re.split(r"(?<!\\):", endpoint)[1:]
    positional = [p for p in parts if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts if "=" in p)
    host = keywords.get("host", positional[0] if positional else "").replace("\\:", ":")
    port = keywords.get("port", positional[1] if len(positional) > 1 else "0")
    return host, int(port)
