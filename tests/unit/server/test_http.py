"""The HTTP Site with StringTransport and task.Clock: no reactor, no sockets, a fake store."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from listener.config import HttpClient
from listener.errors import DecodeError, FhirDecodeError, FhirUnsupportedMediaType, StoreError
from listener.pipeline import Pipeline
from listener.server.http import ApiSite, build_site, clients_from_config
from listener.server.http_intake import HttpAnswer, HttpIntake, answer_from_stored, message_key, status_for_error
from listener.server.metrics import Metrics
from listener.store.base import MessageRecord, OutboxStats, SaveResult

REPO = Path(__file__).resolve().parents[3]
SAMPLE = (REPO / "samples" / "fhir" / "xr-chest-2v-normal.json").read_bytes()
TOKEN = "unit-test-token-0123456789"


class FakeStore:
    """Records submits; futures resolve when the test says (or at once with ``auto``)."""

    def __init__(self, *, auto: bool = True) -> None:
        self.saved: list[MessageRecord] = []
        self.futures: list[Future[SaveResult]] = []
        self.auto = auto
        self.fail = False
        self.healthy = True

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
        if self.auto:
            future.set_result(SaveResult(len(self.saved), False, record.ack, record.ack_code))
        return future

    def health(self) -> bool:
        return self.healthy

    def outbox_stats(self, now: datetime) -> OutboxStats:
        return OutboxStats((), None)


class FakeQueries:
    """No stored reports; remembers the pools asked for."""

    def __init__(self) -> None:
        self.pools: list[str | None] = []

    def routed(self, *, pool: str | None, limit: int) -> list[Any]:
        self.pools.append(pool)
        return []

    def tasks(self, *, status: str | None, pool: str | None, limit: int) -> list[Any]:
        self.pools.append(pool)
        return []

    def open_task_pools(self, *, limit: int) -> list[Any]:
        return []

    def with_findings(self, **_: Any) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def _direct(f: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)


def make_site(
    pipeline: Pipeline, store: FakeStore, *, clients: tuple[HttpClient, ...] = (), max_body: int = 64 * 1024
) -> ApiSite:
    metrics = Metrics(store)  # type: ignore[arg-type]
    intake = HttpIntake(
        lambda: pipeline,
        store,
        hash_key=b"k" * 32,
        call_from_thread=lambda f, *a: f(*a),  # type: ignore[arg-type]
        run_in_thread=_direct,
        metrics=metrics,
    )
    return build_site(
        intake=intake,
        store=store,
        queries=FakeQueries(),
        clients=clients_from_config(clients),  # type: ignore[arg-type]
        metrics=metrics,
        reactor=Clock(),
        max_body_size=max_body,
        idle_timeout=60,
        run_in_thread=_direct,
    )


def connect(site: ApiSite) -> tuple[Any, StringTransport]:
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def exchange(site: ApiSite, raw: bytes) -> bytes:
    channel, transport = connect(site)
    channel.dataReceived(raw)
    return transport.value()


def post_bytes(
    body: bytes,
    path: str = "/fhir/DiagnosticReport",
    *,
    token: str | None = None,
    content_type: str = "application/fhir+json",
) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    return head.encode() + b"\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> Any:
    return json.loads(response.partition(b"\r\n\r\n")[2])


# ------------------------------------------------------------------ pure parts


def test_message_key_by_version_identifier_or_id() -> None:
    """Resource id + versionId wins; then identifiers + status; then id + status; a Bundle by id/version, identifier, or its reports."""
    dr = {"resourceType": "DiagnosticReport", "id": "a", "status": "final"}
    assert message_key(dict(dr, meta={"versionId": "2"})) == "DiagnosticReport/a/_history/2"
    idents = [{"system": "s", "value": "ACC1"}]
    assert message_key(dict(dr, identifier=idents)) == "DiagnosticReport?identifier=s|ACC1&status=final"
    assert message_key(dict(dr, identifier=idents, status="preliminary")) != message_key(dict(dr, identifier=idents))
    assert message_key(dr) == "DiagnosticReport/a?status=final"
    assert message_key({"resourceType": "DiagnosticReport", "status": "final"}) is None
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": dr}]}
    assert message_key(bundle) == "Bundle[DiagnosticReport/a?status=final]"
    assert message_key(dict(bundle, identifier={"value": "B1"})) == "Bundle?identifier=|B1"
    assert message_key(dict(bundle, id="b", meta={"versionId": "1"})) == "Bundle/b/_history/1"
    assert message_key({"resourceType": "Patient"}) is None


def test_status_for_error() -> None:
    """415 for the media type, 422 for our rules, 400 for invalid FHIR, 500 for an internal failure."""
    assert status_for_error(FhirUnsupportedMediaType("x")) == 415
    assert status_for_error(FhirDecodeError("x", issue_code="not-supported")) == 422
    assert status_for_error(FhirDecodeError("x", issue_code="value", expression="DiagnosticReport.status")) == 400
    assert status_for_error(FhirDecodeError("x", issue_code="structure")) == 400
    assert status_for_error(DecodeError("x", hl7_code="207")) == 500


def test_answer_envelope_round_trip() -> None:
    """The stored answer gives back status, headers and body byte for byte."""
    answer = HttpAnswer(201, b'{"a":1}', (("Location", "/fhir/DiagnosticReport/x"),))
    assert answer_from_stored(answer.envelope()) == answer


# -------------------------------------------------------------------- the site


def test_created_only_after_commit(pipeline: Pipeline) -> None:
    """Nothing is written until the store's future resolves; then 201 with Location and an information OperationOutcome."""
    store = FakeStore(auto=False)
    channel, transport = connect(make_site(pipeline, store))
    channel.dataReceived(post_bytes(SAMPLE))
    assert transport.value() == b"" and len(store.saved) == 1
    record = store.saved[0]
    assert record.transport == "http" and record.state == "processed" and record.ack_code == "201"
    store.futures[0].set_result(SaveResult(1, False, record.ack, record.ack_code))
    response = transport.value()
    assert status_of(response) == 201
    assert b"\r\nLocation: /fhir/DiagnosticReport/" in response
    assert body_of(response)["issue"][0]["severity"] == "information"


def test_duplicate_gets_stored_answer(pipeline: Pipeline) -> None:
    """A second POST of the same body is answered from the store, without a second save."""
    store = FakeStore()
    site = make_site(pipeline, store)
    first = exchange(site, post_bytes(SAMPLE))
    second = exchange(site, post_bytes(SAMPLE))
    assert len(store.saved) == 1
    strip = lambda r: [line for line in r.split(b"\r\n") if not line.startswith(b"Date:")]  # noqa: E731
    assert strip(first) == strip(second)


def test_store_failure_is_503(pipeline: Pipeline) -> None:
    """A store that cannot take the message: 503 with Retry-After and a transient OperationOutcome."""
    store = FakeStore()
    store.fail = True
    response = exchange(make_site(pipeline, store), post_bytes(SAMPLE))
    assert status_of(response) == 503 and b"Retry-After: 5" in response
    assert body_of(response)["issue"][0]["code"] == "transient"


def test_declared_length_over_limit_is_refused_before_the_body(pipeline: Pipeline) -> None:
    """Content-Length over the limit with Expect: 100-continue: 413 at once, never 100 Continue; later bytes are dropped unbuffered."""
    store = FakeStore()
    channel, transport = connect(make_site(pipeline, store, max_body=4096))
    channel.dataReceived(
        b"POST /fhir HTTP/1.1\r\nHost: t\r\nContent-Type: application/fhir+json\r\n"
        b"Content-Length: 10485760\r\nExpect: 100-continue\r\n\r\n"
    )
    response = transport.value()
    assert status_of(response) == 413 and b"100 Continue" not in response
    assert b"Connection: close" in response and b"4096 bytes" in response
    channel.dataReceived(b"x" * 100_000)
    assert channel.dropped == 100_000
    assert store.saved == []


def test_chunked_body_over_limit_is_refused(pipeline: Pipeline) -> None:
    """Without a length, the running size decides: 413 once it passes the limit; nothing is stored."""
    store = FakeStore()
    channel, transport = connect(make_site(pipeline, store, max_body=4096))
    channel.dataReceived(
        b"POST /fhir HTTP/1.1\r\nHost: t\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"y" * 1024
    for _ in range(8):
        channel.dataReceived(b"400\r\n" + chunk + b"\r\n")
    channel.dataReceived(b"0\r\n\r\n")
    assert status_of(transport.value()) == 413
    assert transport.value().count(b"HTTP/1.1") == 1
    assert store.saved == []


def test_bearer_token_and_permissions(pipeline: Pipeline) -> None:
    """With clients configured: 401 without or with an unknown token, 403 without the permission, 201 with it."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    reader = HttpClient("reader", hashlib.sha256(b"reader-token-0123456789").hexdigest(), allow=("read",))
    site = make_site(pipeline, FakeStore(), clients=(HttpClient("ris", digest, facility="LEMC"), reader))
    assert status_of(exchange(site, post_bytes(SAMPLE))) == 401
    assert status_of(exchange(site, post_bytes(SAMPLE, token="not-the-token"))) == 401
    assert status_of(exchange(site, post_bytes(SAMPLE, token="reader-token-0123456789"))) == 403
    assert status_of(exchange(site, post_bytes(SAMPLE, token=TOKEN))) == 201


def test_wrong_media_type_method_and_path(pipeline: Pipeline) -> None:
    """415 for text/plain, 405 with Allow for GET on a POST endpoint, 404 for unknown paths and children of a leaf."""
    site = make_site(pipeline, FakeStore())
    assert status_of(exchange(site, post_bytes(SAMPLE, content_type="text/plain"))) == 415
    response = exchange(site, b"GET /fhir/DiagnosticReport HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status_of(response) == 405 and b"Allow: POST" in response
    assert status_of(exchange(site, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")) == 404
    assert status_of(exchange(site, post_bytes(SAMPLE, path="/fhir/DiagnosticReport/abc"))) == 404
    assert body_of(exchange(site, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"))["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(("healthy", "status"), [(True, 200), (False, 503)])
def test_healthz(pipeline: Pipeline, healthy: bool, status: int) -> None:
    """/healthz answers 200 when the store is healthy and 503 when it is not."""
    store = FakeStore()
    store.healthy = healthy
    response = exchange(make_site(pipeline, store), b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status_of(response) == status
    assert body_of(response)["store"] == ("ok" if healthy else "unavailable")


def test_metrics_count_posts(pipeline: Pipeline) -> None:
    """/metrics shows the POST's answer code, its route bucket and a latency observation."""
    site = make_site(pipeline, FakeStore())
    exchange(site, post_bytes(SAMPLE))
    text = exchange(site, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").decode()
    assert 'overread_messages_answered_total{code="201",feed="default",transport="http"} 1.0' in text
    assert "overread_routes_total{bucket=" in text
    assert 'overread_processing_seconds_count{transport="http"} 1.0' in text


def test_outbox_gauges_read_store_stats() -> None:
    """The outbox collector reports depth per destination and state (zeros filled in) and the oldest pending age."""
    from listener.store.base import OutboxDepth

    class Stats(FakeStore):
        def outbox_stats(self, now: datetime) -> OutboxStats:
            return OutboxStats((OutboxDepth("ris", "pending", 3, timedelta(seconds=42)),), timedelta(seconds=42))

    text = Metrics(Stats()).render().decode()  # type: ignore[arg-type]
    assert 'overread_outbox_messages{destination="ris",state="pending"} 3.0' in text
    assert 'overread_outbox_messages{destination="ris",state="dead"} 0.0' in text
    assert 'overread_outbox_oldest_pending_age_seconds{destination="ris"} 42.0' in text


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("http_clients:\n  ris:\n    token_sha256: abc\n", 3, "64 hex"),
        ("http_clients:\n  ris:\n    fhir_version: R4\n", 2, "exactly one of"),
        ("http_clients:\n  ris:\n    token_file: missing.token\n", 3, "token_file"),
        ("http_clients:\n  ris:\n    token_sha256: " + "a" * 64 + "\n    allow: [submit, delete]\n", 4, "allow"),
        ("http_clients:\n  ris:\n    token_sha256: " + "a" * 64 + "\n    fhir_version: DSTU2\n", 4, "fhir_version"),
        ("http_clients:\n  ris:\n    token_sha256: " + "a" * 64 + "\n    colour: red\n", 4, "unknown key"),
        ("http_max_body_size: 10\n", 1, "at least"),
    ],
)
def test_http_config_errors_name_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    """Bad http_clients / http_max_body_size entries stop loading with the file, the line and what is wrong."""
    from listener.config import load_config
    from listener.errors import ConfigError

    path = tmp_path / "overread.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path) and info.value.line == line
    assert words in str(info.value)


def test_http_config_token_file_and_off(tmp_path: Path) -> None:
    """A token_file is read and kept only as its SHA-256; `http: off` turns HTTP off; the default is loopback 8080."""
    from listener.config import DEFAULT_HTTP_ENDPOINT, load_config

    (tmp_path / "ris.token").write_text("a-long-enough-secret-token\n")
    path = tmp_path / "overread.yaml"
    path.write_text(
        "http: off\nhttp_clients:\n  ris: {token_file: ris.token, fhir_version: r5, accept_extra_fields: true}\n"
    )
    config = load_config(path)
    assert config.http_endpoint == ""
    (client,) = config.http_clients
    assert client.token_sha256 == hashlib.sha256(b"a-long-enough-secret-token").hexdigest()
    assert (client.fhir_version, client.accept_extra_fields, client.allow) == ("R5", True, ("submit", "read"))
    assert load_config(None).http_endpoint == DEFAULT_HTTP_ENDPOINT == "tcp:8080:interface=127.0.0.1"


# ------------------------------------------------------- content negotiation


def _get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode()


def _post_with(headers: str, path: str = "/fhir/DiagnosticReport") -> bytes:
    raw = post_bytes(SAMPLE, path)
    if not headers:
        return raw
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\n" + headers.encode().rstrip(b"\r\n") + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [
        ("Accept: application/fhir+json\r\n", "/fhir/DiagnosticReport", 201),
        ("Accept: application/json\r\n", "/fhir/DiagnosticReport", 201),
        ("Accept: application/xml, */*;q=0.1\r\n", "/fhir/DiagnosticReport", 201),
        ("Accept: application/fhir+json; fhirVersion=4.0\r\n", "/fhir/DiagnosticReport", 201),
        ("", "/fhir/DiagnosticReport?_format=json", 201),
        ("", "/fhir/DiagnosticReport?_format=application/fhir%2Bjson", 201),
        ("Accept: application/fhir+xml\r\n", "/fhir/DiagnosticReport", 406),
        ("Accept: application/fhir+json;q=0, application/xml\r\n", "/fhir/DiagnosticReport", 406),
        ("Accept: application/fhir+json; fhirVersion=3.0\r\n", "/fhir/DiagnosticReport", 406),
        ("Accept: application/fhir+json\r\n", "/fhir/DiagnosticReport?_format=xml", 406),
    ],
)
def test_post_content_negotiation(pipeline: Pipeline, headers: str, path: str, status: int) -> None:
    """POST answers only when FHIR JSON is acceptable (Accept, _format winning over it); a 406 is an OperationOutcome and nothing is stored."""
    store = FakeStore()
    response = exchange(make_site(pipeline, store), _post_with(headers, path))
    assert status_of(response) == status, response
    outcome = body_of(response)
    assert outcome["resourceType"] == "OperationOutcome"
    if status == 406:
        assert outcome["issue"][0]["code"] == "not-supported"
        assert store.saved == []
        if "_format" in path:
            assert outcome["issue"][0]["expression"] == ["_format"]
    else:
        assert len(store.saved) == 1


def test_search_version_format_and_parameters(pipeline: Pipeline) -> None:
    """Searches: _format=xml is 406; Accept fhirVersion=5.0 answers R5 (said in Content-Type); owner:identifier selects the pool; unknown parameters are left out of the self link, or refused under Prefer: handling=strict."""
    site = make_site(pipeline, FakeStore())
    queries = site.resource.children[b"fhir"].api.queries  # type: ignore[attr-defined]
    refused = exchange(site, _get("/fhir/Task?_format=xml"))
    assert status_of(refused) == 406 and body_of(refused)["issue"][0]["expression"] == ["_format"]
    r5 = exchange(site, _get("/fhir/Task?status=requested", "Accept: application/fhir+json; fhirVersion=5.0\r\n"))
    assert status_of(r5) == 200 and b"fhirVersion=5.0" in r5.partition(b"\r\n\r\n")[0]
    lenient = exchange(site, _get("/fhir/Task?owner:identifier=https://x%7Cneuro&patient=p1"))
    assert status_of(lenient) == 200 and queries.pools[-1] == "neuro"
    link = body_of(lenient)["link"][0]
    assert link["relation"] == "self" and "patient" not in link["url"] and "owner%3Aidentifier=" in link["url"]
    strict = exchange(site, _get("/fhir/Task?owner=neuro&patient=p1", "Prefer: handling=strict\r\n"))
    assert status_of(strict) == 400
    assert (body_of(strict)["issue"][0]["code"], body_of(strict)["issue"][0]["expression"]) == (
        "not-supported",
        ["patient"],
    )
    odd = exchange(site, _get("/fhir/DetectedIssue?Smith%20John=1", "Prefer: handling=strict\r\n"))
    assert status_of(odd) == 400 and b"Smith" not in odd  # a name shaped like data is not echoed
    below = exchange(site, _get("/fhir/DiagnosticReport/abc"))
    assert status_of(below) == 404 and "DetectedIssue?implicated=" in body_of(below)["issue"][0]["diagnostics"]


# ------------------------------------------------------------ hardening


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, "OK"),
        (201, "Created"),
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (406, "Not Acceptable"),
        (413, "Content Too Large"),
        (415, "Unsupported Media Type"),
        (422, "Unprocessable Content"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
        (418, "I'm a Teapot"),
        (499, "Client Error"),
    ],
)
def test_reason_phrases(status: int, phrase: str) -> None:
    """RFC 9110 phrases for what we send; the stdlib's or the class for anything else; never "Unknown Status"."""
    from listener.server.http import reason_phrase

    assert reason_phrase(status) == phrase


def test_422_status_line_over_the_site(pipeline: Pipeline) -> None:
    """A refused-by-our-rules body goes out as `422 Unprocessable Content` on the wire."""
    doc = json.loads(SAMPLE)
    doc["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}]
    response = exchange(make_site(pipeline, FakeStore()), post_bytes(json.dumps(doc).encode()))
    assert response.startswith(b"HTTP/1.1 422 Unprocessable Content\r\n")


@pytest.mark.parametrize("clients", [(), (HttpClient("ris", hashlib.sha256(TOKEN.encode()).hexdigest()),)])
def test_two_authorization_headers_get_400(pipeline: Pipeline, clients: tuple[HttpClient, ...]) -> None:
    """Two Authorization headers: 400 OperationOutcome, with or without configured clients; nothing stored."""
    store = FakeStore()
    site = make_site(pipeline, store, clients=clients)
    raw = post_bytes(SAMPLE, token="wrong-token-0123456789").replace(
        b"\r\n\r\n", f"\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode(), 1
    )
    response = exchange(site, raw)
    assert status_of(response) == 400 and body_of(response)["issue"][0]["code"] == "structure"
    assert not store.saved


def test_connection_caps_per_peer_and_total(pipeline: Pipeline) -> None:
    """Per peer host and in total: over a cap a connection gets 503 and is closed; a closed
    connection frees its slot."""
    from twisted.internet.address import IPv4Address

    site = make_site(pipeline, FakeStore())
    site.max_connections, site.max_connections_per_peer = 3, 2

    def open_from(host: str) -> tuple[Any, StringTransport]:
        protocol = site.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    a1, _a2 = open_from("10.0.0.1"), open_from("10.0.0.1")
    _, refused = open_from("10.0.0.1")
    assert refused.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and refused.disconnecting
    b1 = open_from("10.0.0.2")
    _, over_total = open_from("10.0.0.3")
    assert over_total.value().startswith(b"HTTP/1.1 503") and not b1[1].value()
    assert site.open_connections == 3 and site.open_by_peer == {"10.0.0.1": 2, "10.0.0.2": 1}
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    a1[0].connectionLost(Failure(ConnectionDone()))
    assert site.open_by_peer == {"10.0.0.1": 1, "10.0.0.2": 1}
    _, again = open_from("10.0.0.1")
    assert not again.value() and site.open_connections == 3
