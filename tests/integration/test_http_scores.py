"""Explicit scores POSTed to the real daemon as FHIR Observation and QuestionnaireResponse.

A preliminary and a final of one accession arrive over MLLP (the final adds a
critical finding: a "b" proposal); a peer-review system then posts its score.
The history (``overread history`` and ``GET /api/history``) shows it with
source ``fhir`` overriding the proposal; a resend is not stored twice; a bad
resource gets an OperationOutcome naming what is wrong; a client without the
``score`` permission gets 403. Built from our own samples (samples/scores/).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.conftest import REPO, RunningDaemon, start_configured
from tests.integration.test_history import _final, _get, _history, _prelim
from tests.integration.test_http import call
from tests.integration.test_priors import _send

SCORES = REPO / "samples/scores"
PEER = "scores-peer-review-token"
SENDER = "scores-sender-token-0001"
ANALYST = "scores-analyst-token-001"
ACCESSION = "S600"


def _sample(name: str, **replace: str) -> dict[str, Any]:
    text = (SCORES / name).read_text(encoding="utf-8").replace("A2611170088", ACCESSION)
    for old, new in replace.items():
        text = text.replace(old, new)
    doc: dict[str, Any] = json.loads(text)
    return doc


def _post(daemon: RunningDaemon, kind: str, doc: dict[str, Any], token: str | None = PEER) -> Any:
    assert daemon.http_port is not None
    return call(daemon.http_port, "POST", f"/fhir/{kind}", json.dumps(doc).encode(), token=token)


@pytest.fixture(name="scored", scope="module")
def fixture_scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon with three clients (a peer-review system, a report sender, an analyst), and one
    accession's preliminary and final stored over MLLP."""
    root = tmp_path_factory.mktemp("scores")
    sha = {t: hashlib.sha256(t.encode()).hexdigest() for t in (PEER, SENDER, ANALYST)}
    daemon, _ = start_configured(
        root,
        "http_clients:\n"
        f"  peer-review: {{token_sha256: {sha[PEER]}, allow: [score]}}\n"
        f"  ris: {{token_sha256: {sha[SENDER]}}}\n"
        f"  analyst: {{token_sha256: {sha[ANALYST]}, allow: [read, operator]}}\n",
    )
    try:
        _send(daemon, _prelim("SCORE-P1", ACCESSION.encode()))
        _send(daemon, _final("SCORE-F1", ACCESSION.encode()))
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


def _pair(daemon: RunningDaemon) -> dict[str, Any]:
    status, doc = _get(daemon, f"/api/history/{ACCESSION}", ANALYST)
    assert status == 200, doc
    (pair,) = doc["comparisons"]
    assert pair["comparable"] and pair["proposed_grade"].endswith("b"), pair
    result: dict[str, Any] = pair
    return result


def test_observation_overrides_the_proposal_once(scored: RunningDaemon) -> None:
    doc = _sample("observation-radpeer-2b.json", **{'"code": "2b"': '"code": "1"'})
    first = _post(scored, "Observation", doc)
    assert first.status == 201, first.body
    assert "score recorded: grade 1, source fhir" in first.json()["issue"][0]["diagnostics"]
    pair = _pair(scored)
    assert (pair["grade"], pair["explicit_grade"], pair["disagreement"]) == ("1", "1", True)
    (score,) = pair["scores"]
    assert (score["source"], score["grade"], score["scorer"], score["scored_at"]) == (
        "fhir",
        "1",
        "R2001",
        "2026-11-18T14:15:00Z",
    )
    assert score["note"] == "Right pneumothorax not described in the preliminary report."
    # The same Observation again: answered 200, stored once.
    again = _post(scored, "Observation", doc)
    assert again.status == 200 and "already recorded" in again.json()["issue"][0]["diagnostics"]
    assert len(_pair(scored)["scores"]) == 1
    # The CLI reads the same store.
    proc = _history(scored, ACCESSION)
    assert proc.returncode == 0, proc.stderr
    (cli_pair,) = json.loads(proc.stdout)["comparisons"]
    assert [s["source"] for s in cli_pair["scores"]] == ["fhir"] and cli_pair["grade"] == "1"


def test_questionnaire_response_is_the_latest_score(scored: RunningDaemon) -> None:
    _post(scored, "Observation", _sample("observation-radpeer-2b.json", **{'"code": "2b"': '"code": "1"'}))
    form = _sample("questionnaire-response-radpeer-2a.json", **{"2026-11-18T08:20": "2026-11-18T09:20"})
    reply = _post(scored, "QuestionnaireResponse", form)
    assert reply.status == 201, reply.body
    pair = _pair(scored)
    assert (pair["grade"], pair["explicit_grade"]) == ("2a", "2a")
    assert [(s["source"], s["grade"]) for s in pair["scores"]] == [("fhir", "1"), ("fhir", "2a")]
    assert _post(scored, "QuestionnaireResponse", form).status == 200
    assert len(_pair(scored)["scores"]) == 2
    status, audit = _get(scored, "/api/audit?action=" + quote("outcomes score"), ANALYST)
    assert status == 200
    posted = [(e["actor"], e["via"], e["rows"]) for e in audit]
    assert ("peer-review", "http", 1) in posted and ("peer-review", "http", 0) in posted


def test_bad_scores_get_a_specific_outcome(scored: RunningDaemon) -> None:
    no_accession = _sample("observation-radpeer-2b.json")
    del no_accession["basedOn"]
    reply = _post(scored, "Observation", no_accession)
    assert reply.status == 422
    (issue,) = reply.json()["issue"]
    assert (issue["code"], issue["expression"]) == ("required", ["Observation.basedOn"])
    assert "no accession" in issue["diagnostics"]
    bad_grade = _sample("questionnaire-response-radpeer-2a.json", **{'"code": "2a"': '"code": "ZZ4"'})
    reply = _post(scored, "QuestionnaireResponse", bad_grade)
    assert reply.status == 422
    (issue,) = reply.json()["issue"]
    assert issue["code"] == "code-invalid" and "not a RADPEER grade" in issue["diagnostics"]
    assert "ZZ4" not in reply.body.decode()
    no_grade = _sample("observation-radpeer-2b.json")
    del no_grade["valueCodeableConcept"]
    reply = _post(scored, "Observation", no_grade)
    assert reply.status == 422 and reply.json()["issue"][0]["expression"] == ["Observation.value[x]"]
    wrong = _post(scored, "Observation", _sample("questionnaire-response-radpeer-2a.json"))
    assert wrong.status == 400 and wrong.json()["issue"][0]["expression"] == ["resourceType"]
    assert all(s["grade"] != "2b" for s in _pair(scored)["scores"])


def test_a_client_without_the_score_permission_is_refused(scored: RunningDaemon) -> None:
    doc = _sample("observation-radpeer-2b.json", **{"2026-11-18T08:15": "2026-11-18T10:15"})
    reply = _post(scored, "Observation", doc, token=SENDER)
    assert reply.status == 403
    assert reply.json()["issue"][0]["code"] == "forbidden"
    assert _post(scored, "Observation", doc, token=None).status == 401
    assert all(s["scored_at"] != "2026-11-18T16:15:00Z" for s in _pair(scored)["scores"])


def test_score_samples_are_our_own() -> None:
    """The samples name no patient: no subject, no name, no birth date."""
    for path in SCORES.glob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert "subject" not in doc and "contained" not in doc, path
        assert "birthDate" not in path.read_text(encoding="utf-8")


def test_a_final_report_carrying_its_score_in_result(scored: RunningDaemon) -> None:
    """The FHIR twin of the score OBX: a final DiagnosticReport whose ``result`` names a score Observation
    is stored with its score, in the same transaction, on the pair the report completes."""
    _send(scored, _prelim("SCORE-P2", b"S700"))
    report = json.loads((REPO / "samples/fhir/xr-chest-2v-normal.json").read_text(encoding="utf-8"))
    report["identifier"][0]["value"] = "S700"
    del report["basedOn"]
    score = _sample("observation-radpeer-2b.json")
    del score["basedOn"]
    report["contained"].append({**score, "id": "score"})
    report["result"] = [{"reference": "#score"}]
    assert scored.http_port is not None
    reply = call(scored.http_port, "POST", "/fhir/DiagnosticReport", json.dumps(report).encode(), token=SENDER)
    assert reply.status == 201, reply.body
    status, doc = _get(scored, "/api/history/S700", ANALYST)
    assert status == 200, doc
    (pair,) = doc["comparisons"]
    assert (pair["grade"], pair["explicit_grade"]) == ("2b", "2b")
    (stored,) = pair["scores"]
    assert (stored["source"], stored["scorer"], stored["message_pk"]) == ("fhir", "R2001", pair["after_message_pk"])
