"""The HTTP listener: FHIR intake and searches, health and metrics, as a twisted.web Resource tree.

Layer: reactor code. The tree::

    /healthz                  GET   store reachable and reactor alive: 200 / 503 JSON
    /metrics                  GET   Prometheus text
    /fhir                     POST  a Bundle (batch, transaction, collection, document)
    /fhir/DiagnosticReport    POST  one DiagnosticReport
    /fhir/Observation         POST  an explicit peer-review score (``score`` permission)
    /fhir/QuestionnaireResponse POST  the same, as a questionnaire's answers
    /fhir/Task                GET   ?status=requested&owner=<pool>   (searchset)
    /fhir/DetectedIssue       GET   ?implicated=DiagnosticReport/<id> | ?implicated:identifier=<accession>
    /api/messages             GET   ?accession= &patient_id= [&authority=] &message_id= &state= &sender=
                                    &since= &until= &after= &before= &order= &limit=   (JSON, like `overread messages`)
    /api/messages/<pk>        GET   everything about one message (JSON, like `overread show`)
    /api/audit                GET   ?since= &action= &limit=          (JSON, like `overread audit`)
    /api/history/<accession>  GET   an accession's report versions and comparisons (JSON, like
                                    `overread history --format json`)
    /api/scorecard            GET   ?by= &only= &since= &until= &min_reads=   (JSON, like
                                    `overread scorecard --format json`)
    /console/...              GET, POST  the web console (HTML; listener/console, docs/console.md)

The ``/api`` queries are read-only and need the ``operator`` permission, never given by
default nor to anonymous callers (docs/http-api.md).

Promises:

* A body over ``max_body_size`` is refused with 413 as soon as its
  Content-Length (or, when chunked, its running size) says so: bytes after the
  limit are read and dropped, never buffered, and the connection closes.
* With ``http_clients`` configured, every ``/fhir`` call needs ``Authorization:
  Bearer <token>``: 401 without a known token, 403 when the client may not do
  that (``allow: [submit, read]``). ``/healthz`` and ``/metrics`` are open
  (codes and counts only). Scores need ``score``, never given by default nor
  to anonymous callers.
* Every 4xx/5xx body is an OperationOutcome naming an issue code and a FHIRPath,
  never a value from the request. Store reads run on threads. Every status
  line carries its RFC 9110 reason phrase (:func:`reason_phrase`).
* A request with more than one ``Authorization`` header is refused (400).
* At most ``max_connections`` connections at once, and ``max_connections_per_peer``
  from one host; more get 503 and are closed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer, threads
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from listener.config import DEFAULT_HTTP_MAX_CONNECTIONS, DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER, HttpClient
from listener.console import Console, ConsoleDeps, build_console
from listener.console.whatif import WhatIfJobs
from listener.errors import StoreError
from listener.fhir.decode import DEFAULT_CLIENT, FhirClient
from listener.fhir.encode import Issue
from listener.fhir.score import RESOURCE_TYPES as SCORE_RESOURCE_TYPES
from listener.logs import get_logger
from listener.outcomes import DEFAULT_OUTCOMES_FILE, OutcomeRules
from listener.server.http_intake import FHIR_JSON, HttpAnswer, HttpIntake, outcome_answer
from listener.server.http_routes import endpoint_of, method_of, route_of
from listener.server.http_scores import record_fhir_score
from listener.server.http_search import detected_issue_bundle, task_bundle, worklist_bundle
from listener.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from listener.server.metrics import Metrics
from listener.store.base import HISTORY_LIMIT as _HISTORY_LIMIT
from listener.store.base import ReportReader, Store

__all__ = ["Access", "ApiClient", "build_site", "clients_from_config"]

_JSON = "application/json"
_DEFAULT_COUNT = 100
_MAX_COUNT = 1000
_HEALTH_TIMEOUT_S = 5.0
#: After a 413, bytes still arriving are dropped for at most this long / this many, then the connection is cut.
_LINGER_S = 30.0
_LINGER_BYTES = 256 * 1024 * 1024
#: Task.status values; only ``requested`` Tasks exist (a route is a standing request).
_TASK_STATUSES = frozenset(
    {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    }
)


def _log() -> Any:
    return get_logger("listener.server.http")


@dataclass(frozen=True, slots=True)
class ApiClient:
    """An authenticated caller: its FHIR settings and what it may do."""

    fhir: FhirClient
    allow: frozenset[str]


ANONYMOUS = ApiClient(DEFAULT_CLIENT, frozenset({"submit", "read"}))


def clients_from_config(clients: Iterable[HttpClient]) -> dict[str, ApiClient]:
    """Map each configured token's SHA-256 (hex) to its client."""
    out = {}
    for c in clients:
        versions = ("R4", "R5", "STU3") if c.fhir_version == "STU3" else ("R4", "R5")
        fhir = FhirClient(
            name=c.name,
            facility=c.facility,
            version=c.fhir_version,
            versions=versions,
            accept_extra_fields=c.accept_extra_fields,
        )
        out[c.token_sha256] = ApiClient(fhir, frozenset(c.allow))
    return out


class Access:
    """Bearer-token authentication and per-client permissions.

    Args:
        clients: token SHA-256 -> client; empty: no authentication (every caller
            is the anonymous ``fhir`` client, allowed everything).
    """

    def __init__(self, clients: dict[str, ApiClient]) -> None:
        self.clients = clients

    def check(self, request: Any, permission: str) -> ApiClient | HttpAnswer:
        """The caller, or the 400/401/403 answer to send."""
        # getHeader() returns the last of several headers, and proxies and
        # frameworks disagree on which one counts: a request carrying more than
        # one set of credentials is refused whatever they say, never
        # authenticated by one of them (also without http_clients, so a client
        # learns of its mistake before tokens are configured).
        if len(request.requestHeaders.getRawHeaders(b"authorization") or ()) > 1:
            return outcome_answer(400, (Issue("error", "structure", "send exactly one Authorization header"),))
        if not self.clients:
            return ANONYMOUS
        raw = request.getHeader(b"authorization")
        header = (raw.decode("latin-1") if isinstance(raw, bytes) else raw or "").strip()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return outcome_answer(
                401,
                (Issue("error", "login", "a bearer token is required"),),
                (("WWW-Authenticate", 'Bearer realm="overread"'),),
            )
        # Looked up by the token's hash: the secret is never compared byte by byte.
        client = self.clients.get(hashlib.sha256(token.strip().encode("utf-8", "replace")).hexdigest())
        if client is None:
            return outcome_answer(
                401,
                (Issue("error", "login", "the bearer token is not valid"),),
                (("WWW-Authenticate", 'Bearer realm="overread", error="invalid_token"'),),
            )
        if permission not in client.allow:
            # The permission to add, as the console says it (docs/configuration.md, "HTTP clients and tokens").
            return outcome_answer(
                403,
                (
                    Issue(
                        "error",
                        "forbidden",
                        f"this client may not {permission}: {permission} is not in its allow: list (http_clients)",
                    ),
                ),
            )
        return client


# ------------------------------------------------------------- body size cap


class _Discard:
    """A write-only sink standing in for the request body once it is over the limit."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


class CappedRequest(Request):
    """A Request that refuses a body over the site's limit before buffering it."""

    channel: Any
    content: Any
    too_large = False
    body_bytes = 0
    #: Per-request state of our resources: start time, bound logger, client id, client gone.
    ov_started: float | None = None
    ov_log: Any = None
    ov_client = ""
    ov_gone = False
    ov_pk: bytes | None = None

    def _limit(self) -> int:
        return int(self.channel.site.max_body_size)

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted API
        self.ov_started = time.perf_counter()
        if length is not None and length > self._limit():
            self._refuse(length)
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        if self.too_large:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self._limit():
            self.content.close()
            self._refuse(self.body_bytes)
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def _refuse(self, size: int) -> None:
        self.too_large = True
        self.content = _Discard()
        limit = self._limit()
        answer = outcome_answer(413, (Issue("error", "too-costly", f"the body exceeds the limit of {limit} bytes"),))
        # The request line is parsed, but Request.method/path are set only once the body is in.
        path = bytes(getattr(self.channel, "_path", b"")).partition(b"?")[0].decode("utf-8", "replace")
        _log().warning(
            "message_rejected",
            reason="body_too_large",
            bytes=size,
            limit=limit,
            status=413,
            route=route_of(path),
            peer=_peer(self),
        )
        site = self.channel.site
        if site.metrics is not None:
            site.metrics.http_requests.labels(endpoint_of(path), "413").inc()
        self.channel.refuse(answer)

    def process(self) -> None:
        if self.too_large:
            return  # answered already, by _refuse
        super().process()  # type: ignore[no-untyped-call]


class CappedChannel(HTTPChannel):
    """An HTTPChannel that can answer a request early and drop the rest of its body."""

    refused = False
    site: Any
    transport: Any
    callLater: Any  # noqa: N815 - Twisted API
    dropped = 0

    def refuse(self, answer: HttpAnswer) -> None:
        """Write ``answer`` now, then drop incoming bytes until the peer closes (or the linger limit)."""
        self.refused = True
        self.dropped = 0
        head = [
            f"HTTP/1.1 {answer.status} {reason_phrase(answer.status)}",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in answer.headers]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + answer.body)
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        # Half-close: the peer reads our answer and EOF while it finishes sending; closing
        # outright would reset the connection and could discard the answer unread.
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            self.transport.loseConnection()
        self.linger = self.callLater(_LINGER_S, self.transport.abortConnection)

    def _send100Continue(self) -> None:  # noqa: N802 - HTTPChannel hook
        if not self.refused:  # a refused body must not be invited
            super()._send100Continue()  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        if self.refused:
            self.dropped += len(data)
            if self.dropped > _LINGER_BYTES:
                self.transport.abortConnection()
            return
        # HTTPChannel.dataReceived restarts the idle timer on every byte, so a client that
        # drips a header line or a body byte now and then would hold its slot for ever. The
        # timer runs instead from the connection's start or our last answer (HTTPChannel
        # stops it while a request is answered and starts it again after): bytes dripped
        # inside a request do not count, as for MLLP (docs/configuration.md, idle_timeout).
        LineReceiver.dataReceived(self, data)  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:  # noqa: N802 - Twisted API
        if self.refused:
            return  # keep reading (and dropping); never pause the peer
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted API
        linger = getattr(self, "linger", None)
        if linger is not None and linger.active():
            linger.cancel()
        peer, self.ov_peer = self.ov_peer, None
        if peer is not None:
            self.site.connection_closed(peer)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    #: The peer key this connection is counted under by ApiSite (None once released).
    ov_peer: str | None = None


class _Overflow(Protocol):
    """A connection over the caps: answered 503 at once and closed, never parsed.

    The answer goes out before the request is read: an HTTP client reads it
    as the response to whatever it sends, and the socket is freed at once
    rather than held until the idle timeout.
    """

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        answer = outcome_answer(
            503, (Issue("error", "throttled", "too many connections; retry later"),), (("Retry-After", "5"),)
        )
        head = [
            f"HTTP/1.1 503 {reason_phrase(503)}",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in answer.headers]
        transport: Any = self.transport
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + answer.body)
        transport.loseConnection()


#: At most one ``connection_refused`` line per this many seconds (with the count
#: since the last one): a flood of refused connections must not flood the log.
_REFUSAL_LOG_INTERVAL_S = 10.0


#: The reason phrase of every status we send, in RFC 9110's words. Twisted's
#: table lacks 422 and 429 (it sends "Unknown Status") and has older names for
#: 413 and 422; the stdlib's (3.11) still says "Request Entity Too Large".
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
_CLASS_REASONS = {1: "Informational", 2: "Success", 3: "Redirection", 4: "Client Error", 5: "Server Error"}


def reason_phrase(status: int) -> str:
    """The reason phrase for ``status``: RFC 9110's, else the stdlib's, else its class ("Client Error")."""
    phrase = _REASONS.get(status)
    if phrase is not None:
        return phrase
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _CLASS_REASONS.get(status // 100, "Status")


class ApiSite(Site):
    """The Site: capped requests and connections, no access log (we log ``http_request`` ourselves,
    with the route label instead of the path, never the query string: docs/monitoring.md).

    Connections are counted in total and per peer host (``max_connections``,
    ``max_connections_per_peer``): one peer holding many idle connections
    reaches its own cap long before the total one, so it cannot lock another
    peer out of ``/healthz`` or the API. A connection over either cap gets a
    503 and is closed (see :class:`_Overflow`).
    """

    noisy = False
    displayTracebacks = False  # noqa: N815 - Twisted API
    requestFactory = CappedRequest  # noqa: N815 - Twisted API
    reactor: Any

    def __init__(
        self,
        resource: Resource,
        *,
        max_body_size: int,
        metrics: Metrics | None,
        timeout: float,
        max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS,
        max_connections_per_peer: int = DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER,
    ) -> None:
        super().__init__(resource, timeout=timeout)  # type: ignore[no-untyped-call]
        self.max_body_size = max_body_size
        self.metrics = metrics
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.open_connections = 0
        self.open_by_peer: dict[str, int] = {}
        self._refused_since_log = 0
        self._refusal_logged_at: float | None = None

    def protocol(self) -> CappedChannel:  # type: ignore[override]
        return CappedChannel()  # type: ignore[no-untyped-call]

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted API
        # Unix-socket peers have no host: they share one key (a local proxy is one peer).
        peer = str(getattr(addr, "host", None) or type(addr).__name__)
        if self.open_connections >= self.max_connections:
            return self._refuse(peer, "max_connections", self.max_connections)
        if self.open_by_peer.get(peer, 0) >= self.max_connections_per_peer:
            return self._refuse(peer, "max_connections_per_peer", self.max_connections_per_peer)
        channel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        channel.ov_peer = peer
        self.open_connections += 1
        self.open_by_peer[peer] = self.open_by_peer.get(peer, 0) + 1
        return channel

    def connection_closed(self, peer: str) -> None:
        """A counted connection of ``peer`` ended (CappedChannel.connectionLost)."""
        self.open_connections -= 1
        left = self.open_by_peer.get(peer, 0) - 1
        if left > 0:
            self.open_by_peer[peer] = left
        else:
            self.open_by_peer.pop(peer, None)

    def _refuse(self, peer: str, reason: str, limit: int) -> _Overflow:
        self._refused_since_log += 1
        now = float(self.reactor.seconds())
        if self._refusal_logged_at is None or now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL_S:
            _log().warning("connection_refused", peer=peer, reason=reason, limit=limit, count=self._refused_since_log)
            self._refusal_logged_at = now
            self._refused_since_log = 0
        return _Overflow()

    def log(self, request: Any) -> None:
        pass


# ------------------------------------------------------------------- helpers


def _path(request: Any) -> str:
    return (request.path or b"").decode("utf-8", "replace")


def _route(request: Any) -> str:
    """The request's route label for log lines: never its path as sent (listener/server/http_routes.py)."""
    return route_of(_path(request))


def _peer(request: Any) -> str:
    peer = request.getClientAddress()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else type(peer).__name__


def _base_url(request: Any) -> str:
    raw = request.getHeader(b"host") or b""
    host = raw.decode("latin-1").strip() if isinstance(raw, bytes) else str(raw).strip()
    host = host or "localhost"
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{host}/fhir"


#: ``_format`` values and Accept media types we can answer (FHIR JSON only).
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
_ANY_TYPES = frozenset({"*/*", "application/*"})
_VERSION_PARAMS = {"4.0": "R4", "4.0.0": "R4", "4.0.1": "R4", "4.3": "R4", "4.3.0": "R4", "5.0": "R5", "5.0.0": "R5"}
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,40}$")


def negotiate(request: Any) -> str | HttpAnswer:
    """The FHIR version to answer in ("R4" or "R5"), or the 406 to send.

    ``_format`` (json / application/fhir+json / application/json) wins over
    ``Accept``; an Accept naming only types we cannot produce (XML, Turtle,
    HTML) is refused rather than answered in a format the client did not ask
    for. A ``fhirVersion`` parameter on the chosen JSON type picks R4 (4.0,
    4.3) or R5 (5.0); any other version is refused.
    """
    raw_format = (request.args.get(b"_format") or [b""])[0].decode("latin-1").strip().lower()
    if raw_format:
        essence, _, params = raw_format.replace(" ", "+").partition(";")
        if essence not in _JSON_FORMATS:
            return outcome_answer(
                406, (Issue("error", "not-supported", "only FHIR JSON is served: _format=json", "_format"),)
            )
        return _version_from(params)
    header = request.getHeader(b"accept")
    text = (header.decode("latin-1") if isinstance(header, bytes) else header or "").strip()
    if not text:
        return "R4"
    ranges: list[tuple[str, str]] = []
    for item in text.split(","):
        essence, _, params = item.strip().lower().partition(";")
        if re.search(r"(?:^|;)\s*q\s*=\s*0(?:\.0*)?\s*(?:;|$)", params):
            continue  # q=0: "not acceptable"
        ranges.append((essence.strip(), params))
    for essence, params in ranges:
        if essence in _JSON_FORMATS:
            return _version_from(params)
    if any(essence in _ANY_TYPES for essence, _ in ranges):
        return "R4"
    return outcome_answer(406, (Issue("error", "not-supported", "only application/fhir+json is served; see Accept"),))


def _version_from(params: str) -> str | HttpAnswer:
    for part in params.split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip() == "fhirversion":
            version = _VERSION_PARAMS.get(value.strip().strip('"'))
            if version is None:
                return outcome_answer(
                    406, (Issue("error", "not-supported", "fhirVersion must be 4.0 (R4) or 5.0 (R5)"),)
                )
            return version
    return "R4"


class _Endpoint(Resource):
    """A leaf answering a fixed set of methods; others get 405 with an OperationOutcome."""

    isLeaf = True  # noqa: N815 - Twisted API
    methods: tuple[bytes, ...] = (b"GET",)
    #: What a path below this one gets (404).
    below = "no such endpoint"

    def __init__(self, api: Api) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api = api

    def render(self, request: Any) -> Any:
        if request.ov_started is None:
            request.ov_started = time.perf_counter()
        if any(request.postpath or ()):  # a leaf has no children: /fhir/DiagnosticReport/x is not ours
            self.api.send(request, outcome_answer(404, (Issue("error", "not-found", self.below),)))
            return NOT_DONE_YET
        method = b"GET" if request.method == b"HEAD" and b"GET" in self.methods else request.method
        if method not in self.methods:
            allow = ", ".join(m.decode() for m in self.methods)
            self.api.send(
                request, outcome_answer(405, (Issue("error", "not-supported", f"use {allow}"),), (("Allow", allow),))
            )
            return NOT_DONE_YET
        self.api.handle(self, request, method)
        return NOT_DONE_YET

    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        raise NotImplementedError


class _NotFound(_Endpoint):
    methods = (b"GET", b"POST", b"PUT", b"DELETE", b"PATCH")

    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        return defer.succeed(outcome_answer(404, (Issue("error", "not-found", "no such endpoint"),)))


class _Tree(Resource):
    """An inner node; unknown children are a 404 OperationOutcome."""

    def __init__(self, api: Api) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api = api

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 - Twisted API
        return _NotFound(self.api)


class _Health(_Endpoint):
    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        api = self.api

        def checked(reason: str) -> HttpAnswer:
            ok = not reason
            stopping = api.intake.closing
            body: dict[str, Any] = {
                "status": "ok" if ok and not stopping else "unavailable",
                "store": "ok" if ok else "unavailable",
                "reactor": "stopping" if stopping else "ok",
                "in_flight": len(api.intake.in_flight),
            }
            if reason:
                # Our own words and an SQLite result code name (SQLITE_FULL...), never stored data.
                body["reason"] = reason
            return HttpAnswer(
                200 if ok and not stopping else 503, json.dumps(body).encode(), (("Cache-Control", "no-store"),), _JSON
            )

        def reason() -> str:
            health_reason = getattr(api.store, "health_reason", None)
            if health_reason is not None:
                return str(health_reason())
            return "" if api.store.health() else "store unavailable"

        d = api.run_in_thread(reason)
        d.addTimeout(_HEALTH_TIMEOUT_S, api.reactor)
        return d.addErrback(lambda _f: "store did not answer in time").addCallback(checked)


class _Metrics(_Endpoint):
    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        if self.api.metrics is None:
            return defer.succeed(outcome_answer(404, (Issue("error", "not-found", "metrics are off"),)))
        d = self.api.run_in_thread(self.api.metrics.render)
        return d.addCallback(lambda text: HttpAnswer(200, text, (), METRICS_CONTENT_TYPE))


class _Post(_Endpoint):
    methods = (b"POST",)
    below = (
        "reports are not read back (the id in Location names them in searches): "
        "GET /fhir/DetectedIssue?implicated=DiagnosticReport/<id> or /fhir/Task"
    )

    def __init__(self, api: Api, expected: str) -> None:
        super().__init__(api)
        self.expected = expected

    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        access = self.api.access.check(request, "submit")
        if isinstance(access, HttpAnswer):
            return defer.succeed(access)
        request.ov_client = access.fhir.name
        wanted = negotiate(request)
        if isinstance(wanted, HttpAnswer):
            return defer.succeed(wanted)  # before the body is processed: nothing is stored
        if self.api.intake.closing:
            return defer.succeed(
                outcome_answer(
                    503, (Issue("error", "transient", "shutting down; retry later"),), (("Retry-After", "5"),)
                )
            )
        content_type = request.getHeader(b"content-type")
        if content_type is None:
            return defer.succeed(
                outcome_answer(415, (Issue("error", "not-supported", "content type must be application/fhir+json"),))
            )
        request.content.seek(0)
        body = request.content.read()
        return self.api.intake.receive(body, content_type.decode("latin-1"), self.expected, access.fhir, request.ov_log)


class _ScorePost(_Endpoint):
    """``POST /fhir/Observation`` and ``/fhir/QuestionnaireResponse``: one explicit score
    (:mod:`listener.server.http_scores`), read, stored and audited on a thread."""

    methods = (b"POST",)
    below = "scores are not read back: GET /api/history/<accession> lists them"

    def __init__(self, api: Api, expected: str) -> None:
        super().__init__(api)
        self.expected = expected

    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        if not self.api.access.clients:
            # Without http_clients every caller is anonymous, and scores come only from a named client.
            return defer.succeed(
                outcome_answer(
                    403, (Issue("error", "forbidden", "scores need http_clients with a client allowed 'score'"),)
                )
            )
        access = self.api.access.check(request, "score")
        if isinstance(access, HttpAnswer):
            return defer.succeed(access)
        request.ov_client = access.fhir.name
        wanted = negotiate(request)
        if isinstance(wanted, HttpAnswer):
            return defer.succeed(wanted)
        intake = self.api.intake
        if intake.closing:
            return defer.succeed(
                outcome_answer(
                    503, (Issue("error", "transient", "shutting down; retry later"),), (("Retry-After", "5"),)
                )
            )
        content_type = request.getHeader(b"content-type")
        if content_type is None:
            return defer.succeed(
                outcome_answer(415, (Issue("error", "not-supported", "content type must be application/fhir+json"),))
            )
        request.content.seek(0)
        body = request.content.read()
        # The client's feed mapping says which Observation codes and linkIds carry the score.
        mapping = intake.pipeline().mappings.for_sender(access.fhir.name, access.fhir.facility)
        work = functools.partial(
            record_fhir_score,
            self.api.store,
            body,
            content_type.decode("latin-1"),
            self.expected,
            client=dataclasses.replace(access.fhir, feed=mapping.name),
            settings=mapping.peer_review_fhir,
            now=datetime.now(UTC),
        )
        d = self.api.run_in_thread(work)
        return intake.in_flight.track(d)


class _Search(_Endpoint):
    def __init__(self, api: Api, kind: str) -> None:
        super().__init__(api)
        self.kind = kind

    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        access = self.api.access.check(request, "read")
        if isinstance(access, HttpAnswer):
            return defer.succeed(access)
        request.ov_client = access.fhir.name
        version = negotiate(request)
        if isinstance(version, HttpAnswer):
            return defer.succeed(version)
        try:
            params = {k.decode("utf-8"): [v.decode("utf-8") for v in vs] for k, vs in request.args.items()}
        except UnicodeDecodeError:
            return defer.succeed(outcome_answer(400, (Issue("error", "structure", "search parameters are not UTF-8"),)))
        known = _SEARCH_PARAMS[self.kind]
        unknown = sorted(k for k in params if k not in known)
        if unknown and _strict(request):
            name = unknown[0] if _PARAM_NAME.match(unknown[0]) else ""
            return defer.succeed(
                outcome_answer(
                    400,
                    (
                        Issue(
                            "error",
                            "not-supported",
                            f"unknown search parameter{' ' + name if name else ''}; {self.kind} takes {', '.join(sorted(known))}",
                            name,
                        ),
                    ),
                )
            )
        count_text = (params.get("_count") or [str(_DEFAULT_COUNT)])[0]
        if not count_text.isdigit() or not 0 < int(count_text) <= _MAX_COUNT:
            return defer.succeed(
                outcome_answer(400, (Issue("error", "value", f"_count must be 1 to {_MAX_COUNT}", "_count"),))
            )
        count = int(count_text)
        base = _base_url(request)
        queries = self.api.queries
        if self.kind == "Task":
            status = (params.get("status") or ["requested"])[0]
            if status not in _TASK_STATUSES:
                return defer.succeed(
                    outcome_answer(400, (Issue("error", "code-invalid", "status is not a Task status", "status"),))
                )
            owner = (params.get("owner") or params.get("owner:identifier") or [None])[0]
            pool = owner.rpartition("|")[2] if owner is not None else None
            used = {k: v[0] for k, v in params.items() if k in ("status", "owner", "owner:identifier")}
            used["_count"] = str(count)
            if status not in ("requested", "completed"):  # the only states our Tasks take
                return defer.succeed(
                    _bundle_answer(_with_self(task_bundle((), base, version=version), base, "Task", used), version)
                )
            d = self.api.run_in_thread(
                lambda: _with_self(
                    worklist_bundle(queries.tasks(status=status, pool=pool, limit=count), base, version=version),
                    base,
                    "Task",
                    used,
                )
            )
        else:
            implicated = (params.get("implicated") or [None])[0]
            by_identifier = (params.get("implicated:identifier") or [None])[0]
            fhir_id = implicated.rstrip("/").rpartition("DiagnosticReport/")[2] if implicated is not None else None
            if implicated is not None and not fhir_id:
                return defer.succeed(
                    outcome_answer(
                        400, (Issue("error", "value", "implicated must be DiagnosticReport/<id>", "implicated"),)
                    )
                )
            accession = by_identifier.rpartition("|")[2] if by_identifier is not None else None
            used = {k: v[0] for k, v in params.items() if k in ("implicated", "implicated:identifier")}
            used["_count"] = str(count)
            d = self.api.run_in_thread(
                lambda: _with_self(
                    detected_issue_bundle(
                        queries.with_findings(fhir_id=fhir_id, accession=accession, limit=count), base, version=version
                    ),
                    base,
                    "DetectedIssue",
                    used,
                )
            )
        return d.addCallback(_bundle_answer, version)


#: Search parameters each type takes (anything else is ignored, or refused with ``Prefer: handling=strict``).
_SEARCH_PARAMS = {
    "Task": frozenset({"status", "owner", "owner:identifier", "_count", "_format"}),
    "DetectedIssue": frozenset({"implicated", "implicated:identifier", "_count", "_format"}),
}


def _strict(request: Any) -> bool:
    raw = request.getHeader(b"prefer")
    text = (raw.decode("latin-1") if isinstance(raw, bytes) else raw or "").lower()
    return any(part.strip().replace(" ", "") == "handling=strict" for part in text.split(","))


def _with_self(bundle: dict[str, Any], base: str, kind: str, used: dict[str, str]) -> dict[str, Any]:
    """Add the ``self`` link naming the parameters that were applied (FHIR's way of saying which were ignored)."""
    query = urlencode(sorted(used.items()))
    return {**bundle, "link": [{"relation": "self", "url": f"{base}/{kind}?{query}"}]}


def _bundle_answer(bundle: dict[str, Any], version: str = "R4") -> HttpAnswer:
    content_type = FHIR_JSON if version == "R4" else "application/fhir+json; fhirVersion=5.0; charset=utf-8"
    return HttpAnswer(
        200,
        json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        (("Cache-Control", "no-store"),),
        content_type,
    )


# ------------------------------------------------------------ operator queries


def _api_error(status: int, text: str) -> HttpAnswer:
    return HttpAnswer(status, json.dumps({"error": text}).encode(), (("Cache-Control", "no-store"),), _JSON)


def _api_json(data: Any) -> HttpAnswer:
    return HttpAnswer(
        200, json.dumps(data, ensure_ascii=False).encode("utf-8"), (("Cache-Control", "no-store"),), _JSON
    )


_MESSAGE_PARAMS = frozenset(
    {
        "accession",
        "patient_id",
        "authority",
        "message_id",
        "state",
        "sender",
        "facility",
        "transport",
        "since",
        "until",
        "after",
        "before",
        "order",
        "limit",
    }
)
_AUDIT_PARAMS = frozenset({"since", "action", "limit"})
_HISTORY_PARAMS = frozenset({"limit"})
_SCORECARD_PARAMS = frozenset({"by", "only", "since", "until", "min_reads"})
#: The scorecard's window start when ``since`` is not given (as ``overread scorecard``).
_SCORECARD_SINCE_DAYS = 90


class _ApiQuery(_Endpoint):
    """``GET /api/messages[/<pk>]`` and ``GET /api/audit``: the CLI's read-only queries as JSON."""

    def __init__(self, api: Api, kind: str) -> None:
        super().__init__(api)
        self.kind = kind

    def render(self, request: Any) -> Any:
        # /api/messages/<pk> and /api/history/<accession> are the paths below a leaf we answer.
        rest = [p for p in (request.postpath or ()) if p]
        if self.kind in ("messages", "history") and len(rest) == 1:
            request.ov_pk = rest[0]
            request.postpath = []
        else:
            request.ov_pk = None
        return super().render(request)

    def answer(self, request: Any, method: bytes) -> defer.Deferred[HttpAnswer]:
        from listener.cli_common import parse_time

        if not self.api.access.clients:
            # Without http_clients every caller is anonymous: the message browser (patient data of
            # every sender) is not served to anonymous callers (docs/http-api.md).
            return defer.succeed(_api_error(403, "/api needs http_clients with a client allowed 'operator'"))
        access = self.api.access.check(request, "operator")
        if isinstance(access, HttpAnswer):
            return defer.succeed(access)
        request.ov_client = access.fhir.name
        try:
            params = {k.decode("utf-8"): v[-1].decode("utf-8") for k, v in request.args.items()}
        except UnicodeDecodeError:
            return defer.succeed(_api_error(400, "query parameters are not UTF-8"))
        known = {"messages": _MESSAGE_PARAMS, "history": _HISTORY_PARAMS, "scorecard": _SCORECARD_PARAMS}.get(
            self.kind, _AUDIT_PARAMS
        )
        unknown = sorted(k for k in params if k not in known)
        if unknown:
            return defer.succeed(_api_error(400, f"unknown parameter; this query takes {', '.join(sorted(known))}"))
        now = datetime.now(UTC)
        window: dict[str, datetime] = {}
        for name in ("since", "until"):
            if name in params:
                try:
                    window[name] = parse_time(params[name], now)
                except (ValueError, OverflowError):
                    return defer.succeed(_api_error(400, f"{name} must be ISO 8601 with an offset, or Nd"))
        if self.kind == "scorecard":
            return self._scorecard(params, window, now)
        numbers: dict[str, int] = {}
        for name in ("after", "before", "limit"):
            if name in params:
                if not (params[name].isascii() and params[name].isdigit() and len(params[name]) <= 18):
                    return defer.succeed(_api_error(400, f"{name} must be a whole number"))
                numbers[name] = int(params[name])
        limit = min(numbers.get("limit", _DEFAULT_COUNT), _MAX_COUNT)
        store = self.api.store
        if self.kind == "history":
            return self._history(request, min(numbers.get("limit", _HISTORY_LIMIT), _HISTORY_LIMIT))
        if self.kind == "audit":

            def audit() -> HttpAnswer:
                from listener.views import audit_dict

                return _api_json(
                    [
                        audit_dict(e, when=datetime.isoformat)
                        for e in store.audit(since=window.get("since"), action=params.get("action"), limit=limit)
                    ]
                )

            return self.api.run_in_thread(audit)
        pk_text = request.ov_pk
        if pk_text is not None:
            pk = pk_text.decode("ascii", "replace")
            if not (pk.isascii() and pk.isdigit() and len(pk) <= 18):
                return defer.succeed(_api_error(404, "a message is named by its message_pk (a number)"))

            def one() -> HttpAnswer:
                from listener.views import detail_dict

                detail = store.message_detail(int(pk))
                return _api_json(detail_dict(detail)) if detail is not None else _api_error(404, "no such message")

            return self.api.run_in_thread(one)
        if "authority" in params and "patient_id" not in params:
            return defer.succeed(_api_error(400, "authority narrows patient_id: give both"))
        order = params.get("order", "oldest")
        if order not in ("oldest", "newest"):
            return defer.succeed(_api_error(400, "order must be oldest or newest"))

        def listing() -> HttpAnswer:
            from listener.views import message_dict

            rows = store.messages(
                after=numbers.get("after"),
                before=numbers.get("before"),
                newest_first=order == "newest",
                limit=limit,
                state=params.get("state"),
                sender_application=params.get("sender"),
                sender_facility=params.get("facility"),
                control_id=params.get("message_id"),
                transport=params.get("transport"),
                accession=params.get("accession"),
                patient_id=params.get("patient_id"),
                patient_authority=params.get("authority"),
                since=window.get("since"),
                until=window.get("until"),
            )
            return _api_json([message_dict(m) for m in rows])

        return self.api.run_in_thread(listing)

    def _history(self, request: Any, limit: int) -> defer.Deferred[HttpAnswer]:
        """``GET /api/history/<accession>``: the document ``overread history --format json`` prints."""
        if request.ov_pk is None:
            return defer.succeed(_api_error(404, "name the accession: /api/history/<accession>"))
        try:
            # Twisted has percent-decoded the path segment already.
            accession = request.ov_pk.decode("utf-8")
        except UnicodeDecodeError:
            return defer.succeed(_api_error(400, "the accession is not UTF-8"))
        pipeline = self.api.intake.pipeline()
        clients = self.api.fhir_clients()
        api = self.api

        def history() -> HttpAnswer:
            from listener.history import HistoryContext, history_document

            context = HistoryContext(pipeline, api.rules(), clients)
            doc = history_document(api.store, accession, context, limit=limit)
            return _api_json(doc) if doc["versions"] else _api_error(404, "no stored report of that accession")

        return self.api.run_in_thread(history)

    def _scorecard(
        self, params: dict[str, str], window: dict[str, datetime], now: datetime
    ) -> defer.Deferred[HttpAnswer]:
        """``GET /api/scorecard``: the document ``overread scorecard --format json`` prints."""
        from listener.outcomes.scorecard import BY

        by = params.get("by", "reader")
        if by not in BY:
            return defer.succeed(_api_error(400, f"by must be one of {', '.join(BY)}"))
        text = params.get("min_reads", "30")
        if not (text.isascii() and text.isdigit() and len(text) <= 9 and int(text) >= 1):
            return defer.succeed(_api_error(400, "min_reads must be a whole number, 1 or more"))
        min_reads = int(text)
        only = params.get("only")
        if only is not None and not only.strip():
            return defer.succeed(_api_error(400, "only must name a subject (a reader id, group, site...)"))
        since = window.get("since", now - timedelta(days=_SCORECARD_SINCE_DAYS))
        until = window.get("until", now)
        if since >= until:
            return defer.succeed(_api_error(400, "since must be before until"))
        pipeline = self.api.intake.pipeline()
        clients = self.api.fhir_clients()
        api = self.api

        def card() -> HttpAnswer:
            from listener.outcome_data import HistoryContext, collect
            from listener.sites import EMPTY_DIRECTORY

            found = collect(api.store, HistoryContext(pipeline, api.rules(), clients), since=since, until=until)
            directory = pipeline.qa.directory if pipeline.qa is not None else EMPTY_DIRECTORY
            result = found.scorecard(
                by=by, directory=directory, since=since, until=until, min_reads=min_reads, only=only
            )
            return _api_json(result.to_json())

        return self.api.run_in_thread(card)


# ---------------------------------------------------------------------- api


class Api:
    """What the resources share: intake, access, store, queries, metrics, the reactor."""

    def __init__(
        self,
        *,
        intake: HttpIntake,
        access: Access,
        store: Store,
        queries: ReportReader,
        metrics: Metrics | None,
        reactor: Any,
        run_in_thread: Callable[..., defer.Deferred[Any]],
        outcome_rules_file: Path = DEFAULT_OUTCOMES_FILE,
        whatif: WhatIfJobs | None = None,
    ) -> None:
        self.intake = intake
        #: The console's what-if jobs (the daemon's shutdown stops them); None: no what-ifs.
        self.whatif = whatif
        #: policies/outcomes.yaml for /api/history, loaded on first use.
        self.outcome_rules_file = outcome_rules_file
        self.outcome_rules: OutcomeRules | None = None
        self.access = access
        self.store = store
        self.queries = queries
        self.metrics = metrics
        self.reactor = reactor
        self.run_in_thread = run_in_thread

    def rules(self) -> OutcomeRules:
        """The grading rules of policies/outcomes.yaml, loaded on first use (blocking: call on a thread)."""
        from listener.outcomes import load_outcome_rules

        if self.outcome_rules is None:
            self.outcome_rules = load_outcome_rules(self.outcome_rules_file)
        return self.outcome_rules

    def fhir_clients(self) -> dict[str, FhirClient]:
        """The live FHIR clients by name (what re-decoding a stored FHIR body needs)."""
        return {c.fhir.name: c.fhir for c in self.access.clients.values()}

    def handle(self, endpoint: _Endpoint, request: Any, method: bytes) -> None:
        """Bind the request's logger, compute the answer, send it (never lets a failure escape)."""
        request.ov_log = _log().bind(peer=_peer(request), method=method_of(request.method), route=_route(request))

        def gone(_failure: Failure) -> None:
            request.ov_gone = True

        request.notifyFinish().addErrback(gone)
        d = defer.maybeDeferred(endpoint.answer, request, method)

        def broken(failure: Failure) -> HttpAnswer:
            is_store = failure.check(StoreError) is not None  # type: ignore[no-untyped-call]
            request.ov_log.error(
                "store_unavailable" if is_store else "message_rejected",
                reason="internal_error",
                error_type=failure.type.__name__ if failure.type else "",
            )
            if is_store:
                return outcome_answer(
                    503,
                    (Issue("error", "transient", "message store unavailable; retry later"),),
                    (("Retry-After", "5"),),
                )
            return outcome_answer(500, (Issue("error", "exception", "internal error"),))

        d.addErrback(broken).addCallback(lambda answer: self.send(request, answer))

    def send(self, request: Any, answer: HttpAnswer) -> None:
        """Write ``answer`` unless the client went away; log ``http_request`` and count it."""
        if request.finished or request.ov_gone:
            return
        request.setResponseCode(answer.status, reason_phrase(answer.status).encode("ascii"))
        request.setHeader(b"content-type", answer.content_type.encode("ascii"))
        request.setHeader(b"content-length", str(len(answer.body)).encode("ascii"))
        request.setHeader(b"x-content-type-options", b"nosniff")
        for name, value in answer.headers:
            if name.lower() == "set-cookie":
                # One header line per cookie (setHeader would keep only the last).
                request.responseHeaders.addRawHeader(b"set-cookie", value.encode("ascii"))
            else:
                request.setHeader(name.encode("ascii"), value.encode("ascii"))
        request.write(answer.body)
        request.finish()
        started = request.ov_started
        duration = round((time.perf_counter() - started) * 1000, 3) if started is not None else 0.0
        log = request.ov_log or _log().bind(peer=_peer(request), route=_route(request))
        log.info(
            "http_request",
            method=method_of(request.method),
            status=answer.status,
            duration_ms=duration,
            bytes=len(answer.body),
            sender_app=request.ov_client,
        )
        if self.metrics is not None:
            self.metrics.http_requests.labels(endpoint_of(_path(request)), str(answer.status)).inc()


def build_site(
    *,
    intake: HttpIntake,
    store: Store,
    queries: ReportReader,
    clients: dict[str, ApiClient],
    metrics: Metrics | None,
    reactor: Any,
    max_body_size: int,
    idle_timeout: float,
    run_in_thread: Callable[..., defer.Deferred[Any]] = threads.deferToThread,
    max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS,
    max_connections_per_peer: int = DEFAULT_HTTP_MAX_CONNECTIONS_PER_PEER,
    outcome_rules_file: Path = DEFAULT_OUTCOMES_FILE,
    whatif: WhatIfJobs | None = None,
) -> ApiSite:
    """The HTTP Site with the whole Resource tree (see the module docstring)."""
    api = Api(
        intake=intake,
        access=Access(clients),
        store=store,
        queries=queries,
        metrics=metrics,
        reactor=reactor,
        run_in_thread=run_in_thread,
        outcome_rules_file=outcome_rules_file,
        whatif=whatif,
    )
    root = _Tree(api)
    root.putChild(b"healthz", _Health(api))  # type: ignore[arg-type]
    root.putChild(b"metrics", _Metrics(api))  # type: ignore[arg-type]
    fhir = _Tree(api)
    bundle = _Post(api, "Bundle")
    fhir.putChild(b"", bundle)  # type: ignore[arg-type]
    fhir.putChild(b"DiagnosticReport", _Post(api, "DiagnosticReport"))  # type: ignore[arg-type]
    for kind in SCORE_RESOURCE_TYPES:
        fhir.putChild(kind.encode("ascii"), _ScorePost(api, kind))  # type: ignore[arg-type]
    fhir.putChild(b"Task", _Search(api, "Task"))  # type: ignore[arg-type]
    fhir.putChild(b"DetectedIssue", _Search(api, "DetectedIssue"))  # type: ignore[arg-type]
    root.putChild(b"fhir", _FhirRoot(api, fhir, bundle))  # type: ignore[arg-type]
    ops = _Tree(api)
    ops.putChild(b"messages", _ApiQuery(api, "messages"))  # type: ignore[arg-type]
    ops.putChild(b"audit", _ApiQuery(api, "audit"))  # type: ignore[arg-type]
    ops.putChild(b"history", _ApiQuery(api, "history"))  # type: ignore[arg-type]
    ops.putChild(b"scorecard", _ApiQuery(api, "scorecard"))  # type: ignore[arg-type]
    root.putChild(b"api", ops)  # type: ignore[arg-type]
    root.putChild(b"console", _console(api).resource())  # type: ignore[arg-type]
    site = ApiSite(
        root,
        max_body_size=max_body_size,
        metrics=metrics,
        timeout=idle_timeout,
        max_connections=max_connections,
        max_connections_per_peer=max_connections_per_peer,
    )
    site.reactor = reactor
    return site


def _console(api: Api) -> Console:
    """The web console on the API's clients, store and threads (docs/console.md)."""

    def clients() -> dict[str, tuple[str, frozenset[str]]]:
        return {digest: (c.fhir.name, c.allow) for digest, c in api.access.clients.items()}

    def bearer(request: Any, permission: str) -> tuple[str, frozenset[str]] | HttpAnswer:
        if not api.access.clients:
            return _api_error(403, "the console needs http_clients with a client allowed 'console'")
        found = api.access.check(request, permission)
        return found if isinstance(found, HttpAnswer) else (found.fhir.name, found.allow)

    deps = ConsoleDeps(
        clients=clients,
        bearer=bearer,
        send=api.send,
        run_in_thread=api.run_in_thread,
        clock=api.reactor.seconds,
        services={
            "store": api.store,
            "pipeline": api.intake.pipeline,
            "queries": api.queries,
            "outcome_rules": api.rules,
            "fhir_clients": api.fhir_clients,
            "destinations": api.intake.destinations,
            "live_figures": api.intake.live_figures,
            "hash_key": api.intake.hash_key,
        },
    )
    if api.whatif is not None:
        deps.services["whatif"] = api.whatif
    return build_console(deps)


class _FhirRoot(Resource):
    """``/fhir`` itself is the Bundle endpoint; ``/fhir/<type>`` goes to the children."""

    def __init__(self, api: Api, tree: _Tree, bundle: _Post) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api, self.tree, self.bundle = api, tree, bundle

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:  # noqa: N802 - Twisted API
        return self.tree.getChildWithDefault(path, request)  # type: ignore[no-untyped-call]

    def render(self, request: Any) -> Any:
        return self.bundle.render(request)


__all__ += ["Api", "ApiSite", "CappedChannel", "CappedRequest", "FHIR_JSON"]
