"""The FHIR side of the outbound queue: outbox rows POSTed to a FHIR server with twisted.web's Agent.

Layer: reactor code. A FHIR destination (``fhir:`` in ``destinations.yaml``)
is sent by the same :class:`~listener.server.outbound.OutboundWorker` as an
MLLP one, with the same retry rules: only the connection differs. The
worker's ``connect`` is :func:`fhir_connector`, which fires with a
:class:`FhirSession` standing in for the MLLP client protocol; its ``send``
POSTs the row's payload (a transaction Bundle built by
:func:`listener.fhir.encode.push_bundle`) to the server's base and turns the
HTTP status into the answer code the pure :func:`listener.outbox.judge` reads:

* 2xx: ``AA`` (delivered);
* 408, 429 and 5xx: ``AE`` (retried with backoff);
* any other status (400, 401, 403, 404, 409, 412, 422, a redirect): ``AR``
  (dead-lettered, or retried with ``on_reject: retry``); the status is kept as
  the row's error code;
* no answer within ``ack_timeout_seconds``: an ACK timeout (retried);
* a refused connection: the destination backs off without charging the rows,
  as for MLLP (``connect`` opens and closes a TCP connection to find out; the
  POST itself uses a fresh connection).

The Bundle's entries are conditional creates, so a resend after a lost answer
creates nothing twice at a conforming server. The server's answer body is read
(at most 64 KiB kept) and dropped: it is never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from listener.destinations import DestinationSettings
from listener.outbox import AckAnswer
from listener.server.outbound import AckTimeout, _host_port, client_endpoint

__all__ = ["FhirSession", "answer_code", "fhir_connector", "push_url"]

_MAX_ANSWER_KEPT = 64 * 1024
_RETRY_STATUSES = frozenset({408, 429})


def answer_code(status: int) -> str:
    """The answer code :func:`listener.outbox.judge` reads for an HTTP status."""
    if 200 <= status < 300:
        return "AA"
    if status in _RETRY_STATUSES or status >= 500:
        return "AE"
    return "AR"


def push_url(settings: DestinationSettings) -> bytes:
    """The URL the Bundle is POSTed to: ``http(s)://host:port<base>``."""
    host, port = _host_port(settings.endpoint)
    scheme = "http" if settings.endpoint.split(":", 1)[0] == "tcp" else "https"
    netloc = f"[{host}]" if ":" in host else host
    base = settings.fhir.base if settings.fhir is not None else "/fhir"
    return f"{scheme}://{netloc}:{port}{base}".encode("ascii")


class _Drain(Protocol):
    """Reads an answer body, keeps its start, fires when it ends."""

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.kept = b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        room = _MAX_ANSWER_KEPT - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted API
        if not self.done.called:
            self.done.callback(self.kept)


class _OneEndpoint:
    """An endpoint factory for Agent that always gives the destination's endpoint (TLS and resolver included)."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: Any) -> Any:  # noqa: N802 - Twisted API
        return self.endpoint


class FhirSession:
    """What the worker holds as its "connection" to a FHIR destination: sends rows as POSTs.

    Mirrors the MLLP client protocol's surface: ``send``, ``lost`` and
    ``transport.loseConnection()`` (which cancels a POST in flight).
    """

    def __init__(self, agent: Any, url: bytes) -> None:
        self.agent = agent
        self.url = url
        self.lost = False
        self.transport = self
        self._pending: defer.Deferred[Any] | None = None

    def loseConnection(self) -> None:  # noqa: N802 - stands in for ITransport
        self.lost = True
        if self._pending is not None and not self._pending.called:
            self._pending.cancel()

    def send(self, control_id: str, payload: bytes, *, timeout: float, clock: Any) -> defer.Deferred[AckAnswer]:
        """POST ``payload``; fire with the answer code for its status (AckTimeout when none comes)."""
        headers = Headers(
            {
                b"content-type": [b"application/fhir+json; charset=utf-8"],
                b"accept": [b"application/fhir+json"],
                b"prefer": [b"return=minimal"],
                b"x-request-id": [control_id.encode("ascii", "replace")],
            }
        )

        @defer.inlineCallbacks
        def exchange() -> Any:
            response = yield self.agent.request(b"POST", self.url, headers, FileBodyProducer(BytesIO(payload)))  # type: ignore[no-untyped-call]
            body: defer.Deferred[bytes] = defer.Deferred()
            response.deliverBody(_Drain(body))
            yield body
            return AckAnswer(answer_code(int(response.code)), control_id, str(response.code))

        d: defer.Deferred[Any] = exchange()
        self._pending = d
        d.addTimeout(timeout, clock)

        def failed(failure: Failure) -> Failure:
            if failure.check(defer.TimeoutError):  # type: ignore[no-untyped-call]
                failure = Failure(AckTimeout())  # type: ignore[no-untyped-call]
            self.lost = True  # the next row starts with a fresh reachability check
            return failure

        def done(result: Any) -> Any:
            self._pending = None
            return result

        return d.addErrback(failed).addBoth(done)


def fhir_connector(
    reactor: Any, settings: DestinationSettings, endpoint: Any = None
) -> Callable[[Factory], defer.Deferred[FhirSession]]:
    """The worker's ``connect`` for a FHIR destination.

    Args:
        reactor: the reactor.
        settings: the destination (its ``fhir`` block set).
        endpoint: the client endpoint; by default :func:`client_endpoint` (own
            resolver, connect timeout, TLS for ``ssl:``/``tls:``).

    Returns:
        A callable ignoring the MLLP factory it is given: it checks the server
        is reachable (a TCP connection opened and closed) and fires with a
        :class:`FhirSession`, or fails as a refused MLLP connection would.
    """
    if endpoint is None:
        endpoint = client_endpoint(reactor, settings)
    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
    agent = Agent.usingEndpointFactory(reactor, _OneEndpoint(endpoint), pool=pool)  # type: ignore[no-untyped-call]
    url = push_url(settings)

    def connect(_factory: Factory) -> defer.Deferred[FhirSession]:
        d: defer.Deferred[Any] = endpoint.connect(Factory.forProtocol(Protocol))

        def opened(probe: Any) -> FhirSession:
            probe.transport.loseConnection()
            return FhirSession(agent, url)

        return d.addCallback(opened)

    return connect
