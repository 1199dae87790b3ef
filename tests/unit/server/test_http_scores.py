"""``POST /fhir/Observation`` and ``/fhir/QuestionnaireResponse`` in-process: the Site with StringTransport,
stores and audits through a real SQLite store (no reactor, no sockets; threads are direct calls)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listener.config import HttpClient
from listener.fhir.decode import FhirClient
from listener.hl7v2.mapping import PeerReviewFhir
from listener.pipeline import Pipeline
from listener.server.http import ApiSite
from listener.server.http_scores import record_fhir_score
from listener.store.sqlite import SQLiteStore
from tests.unit.server.test_http import body_of, exchange, make_site, post_bytes, status_of

REPO = Path(__file__).resolve().parents[3]
OBSERVATION = (REPO / "samples/scores/observation-radpeer-2b.json").read_bytes()
FORM = (REPO / "samples/scores/questionnaire-response-radpeer-2a.json").read_bytes()
SCORER_TOKEN = "unit-test-scorer-token-0123"
SENDER_TOKEN = "unit-test-sender-token-0123"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _client(name: str, token: str, allow: tuple[str, ...]) -> HttpClient:
    return HttpClient(name, hashlib.sha256(token.encode()).hexdigest(), allow=allow)


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    yield store
    store.close()


@pytest.fixture(name="site")
def fixture_site(pipeline: Pipeline, store: SQLiteStore) -> ApiSite:
    clients = (
        _client("peer-review", SCORER_TOKEN, ("score",)),
        _client("ris", SENDER_TOKEN, ("submit", "read", "operator")),
    )
    return make_site(pipeline, store, clients=clients)  # type: ignore[arg-type]


def test_observation_is_stored_once_and_audited(site: ApiSite, store: SQLiteStore) -> None:
    first = exchange(site, post_bytes(OBSERVATION, "/fhir/Observation", token=SCORER_TOKEN))
    assert status_of(first) == 201, first
    issues = body_of(first)["issue"]
    assert issues[0]["severity"] == "information" and "score recorded: grade 2b" in issues[0]["diagnostics"]
    assert {i["expression"][0] for i in issues[1:]} == {
        "Observation.valueCodeableConcept.coding[0].code",
        "Observation.basedOn[0].identifier",
        "Observation.effectiveDateTime",
        "Observation.performer[0].identifier",
    }
    (stored,) = store.scores("A2611170088")
    assert (stored.score.grade, stored.score.source, stored.score.scorer, stored.message_pk) == (
        "2b",
        "fhir",
        "R2001",
        None,
    )
    again = exchange(site, post_bytes(OBSERVATION, "/fhir/Observation", token=SCORER_TOKEN))
    assert status_of(again) == 200 and "already recorded" in body_of(again)["issue"][0]["diagnostics"]
    assert len(store.scores("A2611170088")) == 1
    audit = store.audit(action="outcomes score")
    assert [(e.actor, e.via, e.rows) for e in audit] == [("peer-review", "http", 1), ("peer-review", "http", 0)]
    assert json.loads(audit[0].target) == {
        "accession": "A2611170088",
        "grade": "2b",
        "source": "fhir",
        "resource": "Observation",
    }


def test_questionnaire_response_is_stored(site: ApiSite, store: SQLiteStore) -> None:
    reply = exchange(site, post_bytes(FORM, "/fhir/QuestionnaireResponse", token=SCORER_TOKEN))
    assert status_of(reply) == 201, reply
    (stored,) = store.scores("A2611170088")
    assert (stored.score.grade, stored.score.note) == (
        "2a",
        "Small apical pneumothorax; compare with the lateral view.",
    )


def test_refusals_store_nothing(site: ApiSite, store: SQLiteStore) -> None:
    no_grade = json.loads(OBSERVATION)
    del no_grade["valueCodeableConcept"]
    reply = exchange(site, post_bytes(json.dumps(no_grade).encode(), "/fhir/Observation", token=SCORER_TOKEN))
    assert status_of(reply) == 422
    (issue,) = body_of(reply)["issue"]
    assert (issue["code"], issue["expression"]) == ("required", ["Observation.value[x]"])
    wrong_type = exchange(site, post_bytes(FORM, "/fhir/Observation", token=SCORER_TOKEN))
    assert status_of(wrong_type) == 400 and body_of(wrong_type)["issue"][0]["expression"] == ["resourceType"]
    media = exchange(site, post_bytes(OBSERVATION, "/fhir/Observation", token=SCORER_TOKEN, content_type="text/csv"))
    assert status_of(media) == 415
    assert store.scores("A2611170088") == () and store.audit() == []


def test_permission_score_is_needed(site: ApiSite, store: SQLiteStore) -> None:
    reply = exchange(site, post_bytes(OBSERVATION, "/fhir/Observation", token=SENDER_TOKEN))
    assert (
        status_of(reply) == 403
        and "may not score: score is not in its allow: list" in body_of(reply)["issue"][0]["diagnostics"]
    )
    assert status_of(exchange(site, post_bytes(OBSERVATION, "/fhir/QuestionnaireResponse"))) == 401
    # A scoring client cannot submit reports with that permission alone.
    report = (REPO / "samples/fhir/xr-chest-2v-normal.json").read_bytes()
    assert status_of(exchange(site, post_bytes(report, token=SCORER_TOKEN))) == 403
    assert store.scores("A2611170088") == ()


def test_without_http_clients_nobody_may_score(pipeline: Pipeline, store: SQLiteStore) -> None:
    site = make_site(pipeline, store)  # type: ignore[arg-type]
    reply = exchange(site, post_bytes(OBSERVATION, "/fhir/Observation"))
    assert status_of(reply) == 403
    assert store.scores("A2611170088") == ()


def test_record_fhir_score_directly(store: SQLiteStore) -> None:
    answer = record_fhir_score(
        store,
        OBSERVATION.replace(b'"code": "2b"', b'"code": "3A"'),
        "application/fhir+json",
        "Observation",
        client=FhirClient(name="peer-review"),
        settings=PeerReviewFhir(),
        now=NOW,
    )
    assert answer.status == 201
    assert [s.score.grade for s in store.scores("A2611170088")] == ["3a"]
    assert store.audit()[0].at == NOW
