"""Reading an explicit RADPEER score from a posted FHIR Observation or QuestionnaireResponse.

Built from our own samples (samples/scores/), edited per case.
"""

from __future__ import annotations

import copy
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.errors import ConfigError, FhirDecodeError, FhirUnsupportedMediaType
from listener.fhir.decode import FhirClient
from listener.fhir.score import FhirScore, ScoreRefused, score_from_fhir
from listener.hl7v2.mapping import DEFAULT_SCORE_CODE, PeerReviewFhir, load_mappings
from listener.intake import explicit_scores
from listener.pipeline import Pipeline, process_fhir
from tests.conftest import RECEIVED, REPO

SCORES = REPO / "samples" / "scores"
OBSERVATION: dict[str, Any] = json.loads((SCORES / "observation-radpeer-2b.json").read_text(encoding="utf-8"))
FORM: dict[str, Any] = json.loads((SCORES / "questionnaire-response-radpeer-2a.json").read_text(encoding="utf-8"))
DEFAULT = PeerReviewFhir()
ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
SECRET = "ZZSECRET-9"


def _obs(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(OBSERVATION)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def _read(doc: dict[str, Any], settings: PeerReviewFhir = DEFAULT, **kwargs: Any) -> FhirScore:
    return score_from_fhir(json.dumps(doc).encode(), str(doc["resourceType"]), settings=settings, **kwargs)


def _refused(doc: dict[str, Any], settings: PeerReviewFhir = DEFAULT) -> ScoreRefused:
    with pytest.raises(ScoreRefused) as info:
        _read(doc, settings)
    assert SECRET not in str(info.value) and all(SECRET not in m for _, _, m in info.value.issues)
    return info.value


def test_observation_sample() -> None:
    score = _read(OBSERVATION)
    assert (score.resource_type, score.accession, score.grade, score.scorer) == (
        "Observation",
        "A2611170088",
        "2b",
        "R2001",
    )
    assert score.scored_at == datetime(2026, 11, 18, 14, 15, tzinfo=UTC)
    assert score.note == "Right pneumothorax not described in the preliminary report."
    assert dict(score.read_from) == {
        "grade": "Observation.valueCodeableConcept.coding[0].code",
        "accession": "Observation.basedOn[0].identifier",
        "scored_at": "Observation.effectiveDateTime",
        "scorer": "Observation.performer[0].identifier",
    }
    # The same resource as FHIR R5 reads the same.
    assert _read(OBSERVATION, media_type="application/fhir+json; fhirVersion=5.0") == score


def test_questionnaire_response_sample() -> None:
    score = _read(FORM)
    assert (score.resource_type, score.accession, score.grade, score.scorer) == (
        "QuestionnaireResponse",
        "A2611170088",
        "2a",
        "R2001",
    )
    assert score.scored_at == datetime(2026, 11, 18, 14, 20, tzinfo=UTC)
    assert score.note == "Small apical pneumothorax; compare with the lateral view."
    assert dict(score.read_from) == {
        "grade": "QuestionnaireResponse.item[1].answer[0].valueCoding.code",
        "accession": "QuestionnaireResponse.item[0].answer[0].valueString",
        "scored_at": "QuestionnaireResponse.authored",
        "scorer": "QuestionnaireResponse.author.identifier",
    }


# ------------------------------------------------------------------ Observation


@pytest.mark.parametrize(
    ("value", "grade"),
    [
        ({"valueString": "2A"}, "2a"),
        ({"valueString": " 3b "}, "3b"),
        ({"valueInteger": 1}, "1"),
        ({"valueCodeableConcept": {"text": "3A"}}, "3a"),
        ({"valueCodeableConcept": {"coding": [{"system": "urn:x", "code": "D"}, {"code": "2b"}]}}, "2b"),
    ],
)
def test_observation_grade_spellings(value: dict[str, Any], grade: str) -> None:
    assert _read({**_obs(valueCodeableConcept=None), **value}).grade == grade


def test_observation_without_a_grade() -> None:
    error = _refused(_obs(valueCodeableConcept=None))
    assert (error.issue_code, error.expression) == ("required", "Observation.value[x]")
    assert "no grade" in str(error)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"valueString": SECRET}, "Observation.valueString"),
        ({"valueInteger": 2}, "Observation.valueInteger"),  # 2 without a or b is no grade
        ({"valueCodeableConcept": {"coding": [{"code": SECRET}], "text": SECRET}}, "Observation.valueCodeableConcept"),
    ],
)
def test_observation_unknown_grade(value: dict[str, Any], where: str) -> None:
    error = _refused({**_obs(valueCodeableConcept=None), **value})
    assert (error.issue_code, error.expression) == ("code-invalid", where)
    assert "not a RADPEER grade" in str(error)


def test_observation_without_an_accession() -> None:
    error = _refused(_obs(basedOn=None))
    assert (error.issue_code, error.expression) == ("required", "Observation.basedOn")
    assert "no accession" in str(error)
    # A reference to something that is no order or report gives no accession.
    error = _refused(_obs(basedOn=[{"type": "CarePlan", "identifier": {"value": SECRET}}]))
    assert error.expression == "Observation.basedOn"
    # Nor a typed identifier that is not the accession (a placer number).
    placer = {"type": {"coding": [{"code": "PLAC"}]}, "value": SECRET}
    assert _refused(_obs(basedOn=[{"identifier": placer}])).expression == "Observation.basedOn"


def test_accession_from_focus_and_derived_from() -> None:
    report = {"type": "DiagnosticReport", "identifier": {"type": ACSN, "value": "A1"}}
    assert _read(_obs(basedOn=None, focus=[report])).accession == "A1"
    score = _read(_obs(basedOn=None, derivedFrom=[{"identifier": {"value": "A2"}}]))
    assert (score.accession, dict(score.read_from)["accession"]) == ("A2", "Observation.derivedFrom[0].identifier")


def test_accession_from_a_contained_resource() -> None:
    order = {
        "resourceType": "ServiceRequest",
        "id": "order",
        "status": "active",
        "intent": "order",
        "subject": {"display": "someone"},
        "identifier": [
            {"type": {"coding": [{"code": "PLAC"}]}, "value": "P1"},
            {"type": {"coding": [{"code": "FILL"}]}, "value": "F1"},
        ],
    }
    score = _read(_obs(contained=[order], basedOn=[{"reference": "#order"}]))
    assert (score.accession, dict(score.read_from)["accession"]) == ("F1", "Observation.basedOn[0].reference")


def test_two_accessions_are_refused() -> None:
    doc = _obs(focus=[{"type": "DiagnosticReport", "identifier": {"value": SECRET}}])
    error = _refused(doc)
    assert (error.issue_code, error.expression) == ("business-rule", "Observation.focus[0].identifier")
    # The same accession named twice is one.
    same = _obs(focus=[{"type": "DiagnosticReport", "identifier": {"value": "A2611170088"}}])
    assert _read(same).accession == "A2611170088"


def test_observation_code_must_be_a_configured_one() -> None:
    other = {"coding": [{"system": "http://loinc.org", "code": "18782-3"}]}
    error = _refused(_obs(code=other))
    assert (error.issue_code, error.expression) == ("code-invalid", "Observation.code")
    configured = PeerReviewFhir(codes=(DEFAULT_SCORE_CODE, ("http://loinc.org", "18782-3")))
    assert _read(_obs(code=other), configured).grade == "2b"
    # Codes compare without case; systems exactly.
    upper = {"coding": [{"system": DEFAULT_SCORE_CODE[0], "code": "RADPEER"}]}
    assert _read(_obs(code=upper)).grade == "2b"
    wrong_system = {"coding": [{"system": "http://overread.example/other", "code": "radpeer"}]}
    assert _refused(_obs(code=wrong_system)).expression == "Observation.code"


def test_observation_time_and_scorer_fallbacks() -> None:
    score = _read(_obs(effectiveDateTime=None))
    assert (score.scored_at, dict(score.read_from)["scored_at"]) == (
        datetime(2026, 11, 18, 14, 16, tzinfo=UTC),
        "Observation.issued",
    )
    # A bare date is no time of a score: issued is used instead.
    assert _read(_obs(effectiveDateTime="2026-11-18")).scored_at == score.scored_at
    error = _refused(_obs(effectiveDateTime="2026-11-18", issued=None))
    assert (error.issue_code, error.expression) == ("required", "Observation.effectiveDateTime")
    by_name = _read(_obs(performer=[{"display": "Final reader"}]))
    assert (by_name.scorer, dict(by_name.read_from)["scorer"]) == ("Final reader", "Observation.performer[0].display")
    anonymous = _read(_obs(performer=None, note=None))
    assert (anonymous.scorer, anonymous.note) == ("", "")
    assert "scorer" not in dict(anonymous.read_from)


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered"])
def test_observation_status_without_a_score(status: str) -> None:
    error = _refused(_obs(status=status))
    assert (error.issue_code, error.expression) == ("business-rule", "Observation.status")


# -------------------------------------------------------- QuestionnaireResponse


def _form(**answers: dict[str, Any] | None) -> dict[str, Any]:
    doc = copy.deepcopy(FORM)
    items = {i["linkId"]: i for i in doc["item"]}
    for link_id, answer in answers.items():
        if answer is None:
            items.pop(link_id, None)
        else:
            items[link_id] = {"linkId": link_id, "answer": [answer]}
    doc["item"] = list(items.values())
    return doc


def test_form_grade_spellings_and_nesting() -> None:
    assert _read(_form(grade={"valueString": "3B"})).grade == "3b"
    assert _read(_form(grade={"valueInteger": 1})).grade == "1"
    nested = copy.deepcopy(FORM)
    nested["item"] = [{"linkId": "review", "item": nested["item"]}]
    score = _read(nested)
    assert (score.grade, dict(score.read_from)["grade"]) == (
        "2a",
        "QuestionnaireResponse.item[0].item[1].answer[0].valueCoding.code",
    )


def test_form_errors() -> None:
    error = _refused(_form(grade=None))
    assert (error.issue_code, error.expression) == ("required", "QuestionnaireResponse.item.where(linkId='grade')")
    error = _refused(_form(grade={"valueString": SECRET}))
    assert (error.issue_code, error.expression) == (
        "code-invalid",
        "QuestionnaireResponse.item[1].answer[0].valueString",
    )
    error = _refused(_form(accession=None))
    assert (error.issue_code, error.expression) == ("required", "QuestionnaireResponse.item.where(linkId='accession')")
    no_time = _form()
    del no_time["authored"]
    assert _refused(no_time).expression == "QuestionnaireResponse.authored"
    in_progress = {**_form(), "status": "in-progress"}
    assert (_refused(in_progress).issue_code, _refused(in_progress).expression) == (
        "business-rule",
        "QuestionnaireResponse.status",
    )


def test_form_accession_from_based_on_and_custom_link_ids() -> None:
    doc = _form(accession=None)
    doc["basedOn"] = [{"type": "ServiceRequest", "identifier": {"type": ACSN, "value": "A9"}}]
    assert _read(doc).accession == "A9"
    custom = PeerReviewFhir(grade="q1", accession="q2", note="q3")
    doc = _form(grade=None, accession=None, note=None)
    doc["item"] = [
        {"linkId": "q1", "answer": [{"valueString": "2b"}]},
        {"linkId": "q2", "answer": [{"valueString": "A7"}]},
        {"linkId": "q3", "answer": [{"valueString": "one"}, {"valueString": "two"}]},
    ]
    score = _read(doc, custom)
    assert (score.grade, score.accession, score.note) == ("2b", "A7", "one\ntwo")
    assert _refused(doc).expression == "QuestionnaireResponse.item.where(linkId='grade')"


# ---------------------------------------------------------------- not a score


def test_wrong_type_invalid_fhir_and_media_type_are_not_score_refusals() -> None:
    with pytest.raises(FhirDecodeError) as info:
        score_from_fhir(json.dumps(FORM).encode(), "Observation", settings=DEFAULT)
    assert not isinstance(info.value, ScoreRefused)
    assert (info.value.issue_code, info.value.expression) == ("invalid", "resourceType")
    with pytest.raises(FhirDecodeError) as info:
        _read(_obs(effectiveDateTime=SECRET))
    assert not isinstance(info.value, ScoreRefused)
    assert info.value.expression == "Observation.effectiveDateTime" and SECRET not in str(info.value)
    error = _refused(_obs(status=SECRET))
    assert (error.issue_code, error.expression) == ("code-invalid", "Observation.status")
    with pytest.raises(FhirDecodeError) as info:
        score_from_fhir(b"{not json", "Observation", settings=DEFAULT)
    assert info.value.issue_code == "structure" and not isinstance(info.value, ScoreRefused)
    with pytest.raises(FhirUnsupportedMediaType):
        score_from_fhir(json.dumps(OBSERVATION).encode(), "Observation", settings=DEFAULT, media_type="text/plain")


def test_vendor_fields_are_refused_unless_the_client_accepts_them() -> None:
    doc = _obs(vendorScore="x")
    with pytest.raises(FhirDecodeError) as info:
        _read(doc)
    assert not isinstance(info.value, ScoreRefused) and info.value.expression == "Observation.vendorScore"
    assert _read(doc, client=FhirClient(accept_extra_fields=True)).grade == "2b"


# ------------------------------------------------------------ mapping key


def _mappings(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    (root / "feeds" / "scored.yaml").write_text("match:\n  sending_application: [SCORER]\n" + text, encoding="utf-8")
    return root


def test_mapping_key_per_feed(tmp_path: Path) -> None:
    text = "peer_review_fhir:\n  codes: ['http://example.org/qa|PR-1']\n  link_ids: {grade: radpeer}\n"
    mappings = load_mappings(_mappings(tmp_path, text))
    assert mappings.for_sender("SCORER", "X").peer_review_fhir == PeerReviewFhir(
        codes=(("http://example.org/qa", "PR-1"),), grade="radpeer"
    )
    assert mappings.default.peer_review_fhir == DEFAULT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("peer_review_fhir: {codes: [radpeer]}\n", "SYSTEM|CODE"),
        ("peer_review_fhir: {codes: []}\n", "at least one"),
        ("peer_review_fhir: {link_ids: {grade: accession}}\n", "three linkIds"),
        ("peer_review_fhir: {link_ids: {score: x}}\n", "score"),
        ("peer_review_fhir: {system: x}\n", "system"),
    ],
)
def test_mapping_key_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_mappings(_mappings(tmp_path, text))
    assert info.value.path is not None and info.value.path.endswith("scored.yaml")


def test_scored_at_keeps_its_offset() -> None:
    assert _read(OBSERVATION).scored_at.utcoffset() == timedelta(hours=-6)


# ------------------------------------------------- a score among a report's results


def _score_observation(**changes: Any) -> dict[str, Any]:
    obs = _obs(**changes)
    for key in ("basedOn", "id", "note"):
        obs.pop(key, None)
    return obs


def _report_with_score(obs: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((REPO / "samples/fhir/xr-chest-2v-normal.json").read_text(encoding="utf-8"))
    report["contained"].append({**obs, "id": "score"})
    report["result"] = [*report.get("result", []), {"reference": "#score"}]
    return report


def test_a_report_result_carries_the_score(pipeline: Pipeline) -> None:
    plain = process_fhir((REPO / "samples/fhir/xr-chest-2v-normal.json").read_bytes(), pipeline, received_at=RECEIVED)
    body = json.dumps(_report_with_score(_score_observation())).encode()
    outcome = process_fhir(body, pipeline, received_at=RECEIVED)
    (result,) = outcome.reports
    review = result.report.peer_review
    assert review is not None and (review.grade, review.scorer) == ("2b", "R2001")
    assert review.scored_at == datetime(2026, 11, 18, 14, 15, tzinfo=UTC)
    # The score is not report text: QA and the comparison read the report without it.
    assert result.report.text == plain.reports[0].report.text
    (score,) = explicit_scores(outcome, "http", RECEIVED)
    assert (score.accession, score.grade, score.source) == ("A2611170088", "2b", "fhir")


def test_a_report_result_without_a_grade_is_ignored_with_a_warning(pipeline: Pipeline) -> None:
    body = json.dumps(_report_with_score(_score_observation(valueCodeableConcept={"text": SECRET}))).encode()
    (result,) = process_fhir(body, pipeline, received_at=RECEIVED).reports
    assert result.report.peer_review is None
    assert any("peer-review score Observation holds no RADPEER grade" in w for w in result.report.warnings)
    assert all(SECRET not in w for w in result.report.warnings)
    # Another code is an ordinary result Observation (text when the report has no presentedForm).
    other = _score_observation(
        code={"coding": [{"system": "urn:x", "code": "y"}]}, valueCodeableConcept=None, valueString="Seen: " + SECRET
    )
    (result,) = process_fhir(json.dumps(_report_with_score(other)).encode(), pipeline, received_at=RECEIVED).reports
    assert result.report.peer_review is None and not any("peer-review" in w for w in result.report.warnings)


def test_a_bundled_score_observation(pipeline: Pipeline) -> None:
    bundle: dict[str, Any] = json.loads(
        (REPO / "samples/fhir/bundle-transaction-mr-knee-left.json").read_text(encoding="utf-8")
    )
    url = "urn:uuid:5b0c2f0e-8d2a-4c6e-9f31-000000000900"
    obs = _score_observation(
        valueCodeableConcept=None,
        valueString="3A",
        performer=[{"reference": "urn:uuid:5b0c2f0e-8d2a-4c6e-9f31-000000000103"}],
    )
    bundle["entry"].append({"fullUrl": url, "resource": obs, "request": {"method": "POST", "url": "Observation"}})
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    report["result"].append({"reference": url})
    (result,) = process_fhir(json.dumps(bundle).encode(), pipeline, received_at=RECEIVED).reports
    review = result.report.peer_review
    assert review is not None and review.grade == "3a"
    assert review.scorer  # the bundled Practitioner's identifier
