"""The ``peer_review_obx`` mapping key: the final ORU's RADPEER score OBX becomes an explicit score."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from listener.errors import ConfigError
from listener.hl7v2.mapping import MappingSet, PeerReviewObx, load_mappings
from listener.intake import explicit_scores
from listener.model import PeerReview
from listener.pipeline import Pipeline, process
from listener.serialize import report_dict
from tests.conftest import RECEIVED, REPO

SAMPLE = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
SCORE_OBX = b"OBX|10|ST|RADPEER^RADPEER score^L||2B||||||F|||20261117110000-0600||R2001^FINAL^READER\r"


def _pipeline(pipeline: Pipeline, wanted: PeerReviewObx | None) -> Pipeline:
    mapping = dataclasses.replace(pipeline.mappings.default, peer_review_obx=wanted)
    return dataclasses.replace(pipeline, mappings=MappingSet(mapping))


def test_score_obx_is_read_and_left_out_of_the_text(pipeline: Pipeline) -> None:
    configured = _pipeline(pipeline, PeerReviewObx("RADPEER", "L"))
    outcome = process(SAMPLE + SCORE_OBX, configured, received_at=RECEIVED)
    (result,) = outcome.reports
    review = result.report.peer_review
    assert review is not None and (review.grade, review.scorer) == ("2b", "R2001")
    assert review.scored_at is not None and review.scored_at.utcoffset() == timedelta(hours=-6)
    assert "2B" not in result.report.text and "RADPEER" not in result.report.text
    assert report_dict(result.report)["peer_review"] == {
        "grade": "2b",
        "scorer": "R2001",
        "scored_at": review.scored_at.isoformat(),
    }
    (score,) = explicit_scores(outcome, "mllp", RECEIVED)
    assert (score.accession, score.grade, score.source, score.scorer) == ("A2611170088", "2b", "obx", "R2001")
    assert score.scored_at == review.scored_at
    # The same text as without the OBX: QA and comparison read the same report.
    plain = process(SAMPLE, configured, received_at=RECEIVED).reports[0]
    assert plain.report.text == result.report.text and plain.report.peer_review is None
    assert "peer_review" not in report_dict(plain.report)


def test_without_the_key_the_obx_is_report_text(pipeline: Pipeline) -> None:
    (result,) = process(SAMPLE + SCORE_OBX, _pipeline(pipeline, None), received_at=RECEIVED).reports
    assert result.report.peer_review is None and "2B" in result.report.text


def test_other_system_or_bad_grade_is_no_score(pipeline: Pipeline) -> None:
    other = process(SAMPLE + SCORE_OBX, _pipeline(pipeline, PeerReviewObx("RADPEER", "99X")), received_at=RECEIVED)
    assert other.reports[0].report.peer_review is None
    bad = SAMPLE + SCORE_OBX.replace(b"||2B||", b"||ZZSECRET||")
    (result,) = process(bad, _pipeline(pipeline, PeerReviewObx("RADPEER")), received_at=RECEIVED).reports
    assert result.report.peer_review is None
    assert any("peer review OBX" in w for w in result.report.warnings)
    assert all("ZZSECRET" not in w for w in result.report.warnings)


def test_score_time_falls_back_to_the_report_then_receipt(pipeline: Pipeline) -> None:
    outcome = process(
        SAMPLE + SCORE_OBX.replace(b"20261117110000-0600", b""),
        _pipeline(pipeline, PeerReviewObx("RADPEER")),
        received_at=RECEIVED,
    )
    (score,) = explicit_scores(outcome, "mllp", RECEIVED)
    assert score.scored_at == outcome.reports[0].report.times.report
    report = outcome.reports[0].report
    naive = dataclasses.replace(report, times=dataclasses.replace(report.times, report=None))
    no_time = dataclasses.replace(outcome, reports=(dataclasses.replace(outcome.reports[0], report=naive),))
    assert explicit_scores(no_time, "mllp", RECEIVED)[0].scored_at == RECEIVED
    assert PeerReview("1").scorer == ""


def _mappings(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    (root / "feeds" / "scored.yaml").write_text("match:\n  sending_application: [SCORER]\n" + text, encoding="utf-8")
    return root


def test_mapping_key_per_feed(tmp_path: Path) -> None:
    mappings = load_mappings(_mappings(tmp_path, "peer_review_obx: {code: radpeer, system: l}\n"))
    assert mappings.for_sender("SCORER", "X").peer_review_obx == PeerReviewObx("RADPEER", "L")
    assert mappings.default.peer_review_obx is None


def test_a_feed_turns_the_default_key_off_with_null(tmp_path: Path) -> None:
    root = _mappings(tmp_path, "peer_review_obx: null\n")
    with (root / "default.yaml").open("a", encoding="utf-8") as f:
        f.write("\npeer_review_obx: {code: RADPEER}\n")
    mappings = load_mappings(root)
    assert mappings.default.peer_review_obx == PeerReviewObx("RADPEER", "")
    assert mappings.for_sender("SCORER", "X").peer_review_obx is None
    assert mappings.for_sender("OTHER", "X").peer_review_obx == PeerReviewObx("RADPEER", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("peer_review_obx: {system: L}\n", "code is needed"),
        ("peer_review_obx: {code: RADPEER, table: L}\n", "table"),
    ],
)
def test_mapping_key_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_mappings(_mappings(tmp_path, text))
    assert info.value.path is not None and info.value.path.endswith("scored.yaml") and info.value.line == 3
