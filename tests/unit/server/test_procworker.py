"""What crosses a worker process's pipe (listener/server/procworker.py): pickled by ``dumps``, read by plain pickle."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime
from pathlib import Path

from listener.intake import report_records
from listener.pipeline import process
from listener.qa.engine import Prior
from listener.server.priors import prior_key
from listener.server.procworker import dumps
from tests.unit.qa.factory import pipeline

REPO = Path(__file__).resolve().parents[3]
RECEIVED = datetime(2026, 11, 19, 21, 0, tzinfo=UTC)


def test_a_result_comes_back_equal_through_dumps() -> None:
    """Every sample's outcome and report records: ``pickle.loads(dumps(x)) == x``, field for field."""
    checked = 0
    for path in sorted((REPO / "samples/hl7").glob("*.hl7")):
        outcome = process(path.read_bytes(), pipeline(), received_at=RECEIVED)
        value = (outcome, report_records(outcome))
        back = pickle.loads(dumps(("done", ("q", "r", "m"), value)))
        assert back == ("done", ("q", "r", "m"), value)
        assert back[2][0].reports == outcome.reports
        checked += sum(len(r.findings) for r in outcome.reports)
    assert checked > 0  # findings (with their evidence) crossed too


def test_a_prior_lookup_key_and_answer_come_back_equal() -> None:
    outcome = process((REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes(), pipeline(), received_at=RECEIVED)
    report = outcome.reports[0].report
    key = prior_key(report)
    assert key == (report.patient.id, report.patient.id_authority, report.times.received, report.accession)
    assert pickle.loads(dumps(("priors", key))) == ("priors", key)
    answer = (Prior("A1", date(2026, 11, 17), "XR", "chest", "71046"),)
    assert pickle.loads(dumps(("priors", answer))) == ("priors", answer)
