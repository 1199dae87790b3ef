"""What crosses a worker process's pipe (listener/server/procworker.py): pickled by ``dumps``, read by plain pickle."""

from __future__ import annotations

import gc
import pickle
import socket
import threading
from datetime import UTC, date, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from listener.config import load_config
from listener.intake import report_records
from listener.pipeline import process
from listener.qa.engine import Prior
from listener.server.priors import prior_key
from listener.server.procworker import dumps, serve
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


def test_a_config_freezes_the_workers_pipeline_out_of_the_collector() -> None:
    """After ``config`` the pipeline's objects are frozen (``gc.freeze``), so no full collection walks them."""
    ours, theirs = socket.socketpair()
    daemon_end, worker_end = Connection(ours.detach()), Connection(theirs.detach())
    worker = threading.Thread(target=serve, args=(worker_end,), daemon=True)
    gc.unfreeze()
    try:
        worker.start()
        daemon_end.send(("config", 0, load_config(None)))
        assert daemon_end.recv()[0] == "ready"
        frozen = gc.get_freeze_count()
        assert frozen > 10_000
    finally:
        daemon_end.close()
        worker.join(60)
        worker_end.close()
        gc.unfreeze()
