"""What crosses a worker process's pipe (listener/server/procworker.py): pickled by ``dumps``, read by plain pickle."""

from __future__ import annotations

import gc
import json
import pickle
import socket
import threading
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from bench.mllp import CORPUS_FILE, with_control_id
from listener.assemble import build_pipeline
from listener.config import Config, load_config
from listener.destinations import DestinationSettings
from listener.hl7v2.segments import read_header
from listener.intake import MllpChecked, Recording, ack_builder, mllp_checked, report_records
from listener.logs import keyed_hash
from listener.pipeline import Pipeline, process, version_fields
from listener.qa.engine import Prior
from listener.server.priors import prior_key
from listener.server.procworker import ASK, asked, dumps, loads, send, serve
from listener.store import SQLiteStore, Store
from listener.store.base import ReportRecord
from listener.store.rows import stored_forms, with_forms
from tests.postgres import as_url, fresh_schema, server_dsn
from tests.unit.qa.factory import pipeline
from tests.unit.store.records import record

REPO = Path(__file__).resolve().parents[3]
RECEIVED = datetime(2026, 11, 19, 21, 0, tzinfo=UTC)
KEY = b"k" * 32
#: One RIS: an accepted message's record carries its routing messages.
RECORDING = Recording(KEY, (DestinationSettings("ris", "tcp:host=ris.test:port=6661"),))


def _daemons_own(raw: bytes, pipe: Pipeline) -> MllpChecked:
    """What the daemon's thread makes of ``raw`` (``workers: 0``; listener/server/mllp.py)."""
    header = read_header(raw)
    assert header is not None
    outcome = process(raw, pipe, received_at=RECEIVED)
    return mllp_checked(
        raw,
        header,
        outcome,
        report_records(outcome),
        ack=ack_builder(lambda: RECEIVED),
        recording=RECORDING,
        received=RECEIVED,
        versions=version_fields(pipe),
        hashed=partial(keyed_hash, key=KEY),
    )


def test_a_result_comes_back_equal_through_dumps() -> None:
    """Every sample's outcome and report records (with their stored forms), and the record, log
    fields and tally made of them: ``pickle.loads(dumps(x)) == x``, field for field."""
    checked = routed = 0
    for path in sorted((REPO / "samples/hl7").glob("*.hl7")):
        outcome = process(path.read_bytes(), pipeline(), received_at=RECEIVED)
        value = (outcome, with_forms(report_records(outcome), packed=True))
        back = pickle.loads(dumps(("done", ("q", "r", "m"), value)))
        assert back == ("done", ("q", "r", "m"), value)
        assert [r.forms for r in back[2][1]] == [r.forms for r in value[1]]  # (equality ignores forms)
        assert back[2][0].reports == outcome.reports
        checked += sum(len(r.findings) for r in outcome.reports)
        made = _daemons_own(path.read_bytes(), pipeline())
        made = (replace(made[0], packed_raw=b"packed"), *made[1:])
        again = pickle.loads(dumps(made))
        assert again == made and again[0].packed_raw == b"packed"  # (equality ignores packed_raw)
        routed += len(made[0].outbox) + len(made[0].scores)
    assert checked > 0  # findings (with their evidence) crossed too
    assert routed > 0  # routing messages too


def test_a_prior_lookup_key_and_answer_come_back_equal() -> None:
    outcome = process((REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes(), pipeline(), received_at=RECEIVED)
    report = outcome.reports[0].report
    key = prior_key(report)
    assert key == (report.patient.id, report.patient.id_authority, report.times.received, report.accession)
    assert asked(ASK + dumps(key)) == key
    assert asked(dumps(("done", key))) is None  # a reply is a pickle: not a look-up
    answer = (Prior("A1", date(2026, 11, 17), "XR", "chest", "71046"),)
    assert pickle.loads(dumps(("priors", answer))) == ("priors", answer)


def _served(config: Config, raws: list[bytes]) -> list[tuple[str, object]]:
    """A worker's (``serve`` on a thread) reply to each of ``raws`` under ``config``: its kind and value."""
    ours, theirs = Pipe()
    thread = threading.Thread(target=serve, args=(theirs,), daemon=True)
    thread.start()
    replies = []
    try:
        ours.send(("config", 1, config, None, RECORDING))
        assert ours.recv()[0] == "ready"
        for raw in raws:
            ours.send(("hl7", raw, RECEIVED, None, 60.0, False))
            while asked(data := ours.recv_bytes()) is not None:
                ours.send(("priors", None))
            reply = loads(data)
            replies.append((reply[0], reply[-1]))
        return replies
    finally:
        ours.close()
        thread.join(timeout=60)


def _served_records(config: Config, raw: bytes) -> tuple[ReportRecord, ...]:
    """The report records a worker sends back for ``raw`` under ``config`` (with the raw bytes' stored form)."""
    ((kind, value),) = _served(config, [raw])
    assert kind == "done"
    message, _fields, _tally = value  # type: ignore[misc]
    assert message.reports and message.packed_raw is not None
    assert zlib.decompress(message.packed_raw) == raw  # (compact.pack_raw's form)
    return tuple(message.reports)


def _ours(ack: bytes) -> bytes:
    """``ack`` with the fields that are ours blanked: MSH-7 (our clock) and MSH-10 (our control id)."""
    first, _, rest = ack.partition(b"\r")
    fields = first.split(first[3:4])
    fields[6] = fields[9] = b""
    return first[3:4].join(fields) + b"\r" + rest


def test_a_worker_records_a_message_as_the_daemons_thread_does() -> None:
    """The record (its ACK but MSH-7 and MSH-10, its routing messages, reports and scores), the log
    line's fields and the tally a worker process sends back equal what the daemon's thread makes
    of the same message (docs/hardening.md, "Worker processes"): the samples, the test corpus and
    bench/mllp.py's messages with their own text."""
    corpus = CORPUS_FILE.read_bytes()
    paths = sorted((REPO / "samples/hl7").glob("*.hl7")) + sorted((REPO / "tests/data/hl7").rglob("*.hl7"))
    raws = [p.read_bytes() for p in paths] + [with_control_id(corpus, f"W-{i}", vary_text=True) for i in range(5)]
    config = load_config(None)
    pipe = build_pipeline(config)
    compared = routed = rejected = 0
    for raw, (kind, value) in zip(raws, _served(config, raws), strict=True):
        if read_header(raw) is None:
            assert kind == "error"  # never sent by the daemon: it answers a frame without MSH itself
            continue
        assert kind == "done"
        message, fields, counted = value  # type: ignore[misc]
        own, own_fields, own_counted = _daemons_own(raw, pipe)
        assert message.ack != own.ack  # our own MSH-10 in each
        assert replace(message, ack=_ours(message.ack)) == replace(own, ack=_ours(own.ack))
        assert message.outbox == own.outbox and message.scores == own.scores
        assert (fields, counted) == (own_fields, own_counted)
        compared += 1
        routed += len(message.outbox)
        rejected += message.state == "rejected"
    assert compared >= 70 and routed > 0 and rejected > 0


def test_a_worker_sends_each_report_record_with_its_stored_forms() -> None:
    """The forms the writer would make (docs/store.md, "Compact storage"); the SQLite JSON forms
    only for a SQLite store (PostgreSQL compresses its JSON itself)."""
    raw = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
    config = load_config(None)
    for store_url, packed in (("", True), ("postgresql://overread@db.example/overread", False)):
        records = _served_records(replace(config, store_url=store_url), raw)
        assert records
        for r in records:
            assert r.forms == stored_forms(r, packed=packed)
            assert (r.forms.report_json is not None) is packed


def test_a_config_freezes_the_workers_pipeline_out_of_the_collector() -> None:
    """After ``config`` the pipeline's objects are frozen (``gc.freeze``), so no full collection walks them."""
    ours, theirs = socket.socketpair()
    daemon_end, worker_end = Connection(ours.detach()), Connection(theirs.detach())
    worker = threading.Thread(target=serve, args=(worker_end,), daemon=True)
    gc.unfreeze()
    try:
        worker.start()
        daemon_end.send(("config", 0, load_config(None), None, RECORDING))
        assert daemon_end.recv()[0] == "ready"
        frozen = gc.get_freeze_count()
        assert frozen > 10_000
    finally:
        daemon_end.close()
        worker.join(60)
        worker_end.close()
        gc.unfreeze()


@pytest.fixture(name="pg_url")
def fixture_pg_url() -> Iterator[str]:
    """The ``store:`` URL of a fresh, empty schema on the test server (dropped afterwards)."""
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        yield as_url(dsn)


#: The prior study the look-up tests store, and the comparison rule that needs it to fire.
PRIOR_ACCESSION = "A2611170088"
PRIOR = Prior(PRIOR_ACCESSION, date(2026, 11, 17), "XR", "chest", "71046")


def _save_prior(store: Store) -> None:
    """The earlier chest radiograph of the sample's patient, stored two days before."""
    prior = ReportRecord(
        accession=PRIOR_ACCESSION,
        report_json=json.dumps(
            {
                "accession": PRIOR_ACCESSION,
                "status": "final",
                "modality": "XR",
                "body_region": "chest",
                "procedure": {"code": "71046"},
                "times": {"observation": "2026-11-17T10:00:00-06:00"},
            }
        ),
        findings_json="[]",
        route_json="null",
        bucket="release",
        patient_id="ZZ9000104",
        patient_authority="LEMC",
    )
    store.save(record("P1", reports=(prior,), received=RECEIVED - timedelta(days=2)))


def _asks_checking_the_sample(config: Config, store_file: str | None) -> int:
    """A worker given ``config`` and ``store_file`` checks a report of the prior's patient: the prior
    look-ups it asked the daemon for (answered as the daemon would); the comparison rule that needs
    the prior fired, whoever read it."""
    new = (REPO / "samples/hl7/xr-chest-pneumothorax-no-communication.hl7").read_bytes()
    ours, theirs = Pipe()
    thread = threading.Thread(target=serve, args=(theirs,), daemon=True)
    thread.start()
    try:
        ours.send(("config", 1, config, store_file, RECORDING))
        assert ours.recv()[0] == "ready"
        ours.send(("hl7", new, RECEIVED, None, 60.0, False))
        requests = 0
        while asked(data := ours.recv_bytes()) is not None:
            requests += 1
            # As the daemon answers (runner.py): pickled by procworker.send, whose reducers
            # rebuild a frozen dataclass from its values (a compiled one too).
            send(ours, ("priors", (PRIOR,)))
        reply = loads(data)
        assert reply[0] == "done"
        rules = {rule for _, _, rule in reply[2][2].findings}
        assert "comparison.none_with_priors" in rules
        return requests
    finally:
        ours.close()
        thread.join(timeout=60)


def test_a_worker_reads_priors_from_the_store_file_itself(tmp_path: Path) -> None:
    """Given the SQLite store's file, a worker looks its reports' priors up there itself: no
    ``priors`` request crosses the pipe, and the comparison rule that needs them fires. Without a
    file (and no PostgreSQL store) it asks the daemon (docs/hardening.md, "Worker processes")."""
    store = SQLiteStore.in_state_dir(tmp_path)
    try:
        _save_prior(store)
        assert _asks_checking_the_sample(load_config(None), str(store.path)) == 0
        assert _asks_checking_the_sample(load_config(None), None) > 0
    finally:
        store.close()


@pytest.mark.postgresql
def test_a_worker_reads_priors_from_the_postgresql_store_itself(pg_url: str) -> None:
    """With a PostgreSQL store a worker opens its own session and looks priors up there: no
    ``priors`` request crosses the pipe. When that session cannot be had (the server gone) it
    asks the daemon, and the message is still checked (docs/hardening.md, "Worker processes")."""
    from listener.store.postgresql import PostgresStore

    store = PostgresStore(pg_url)
    try:
        _save_prior(store)
    finally:
        store.close()
    assert _asks_checking_the_sample(replace(load_config(None), store_url=pg_url), None) == 0
    gone = replace(load_config(None), store_url="postgresql://overread@/overread?host=/nonexistent")
    assert _asks_checking_the_sample(gone, None) > 0


def test_a_message_sent_ahead_waits_for_the_one_running() -> None:
    """The daemon sends the next message while the worker runs one (docs/hardening.md, "Worker
    processes"); when it arrives while the worker waits for a prior look-up's answer, the worker
    keeps it, takes the answer, finishes the first message and then runs the second."""
    first = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
    second = (REPO / "samples/hl7/xr-chest-pneumothorax-no-communication.hl7").read_bytes()
    ours, theirs = Pipe()
    thread = threading.Thread(target=serve, args=(theirs,), daemon=True)
    thread.start()
    try:
        ours.send(("config", 1, load_config(None), None, RECORDING))
        assert ours.recv()[0] == "ready"
        ours.send(("hl7", first, RECEIVED, None, 60.0, False))
        assert asked(ours.recv_bytes()) is not None  # the first message's look-up
        ours.send(("hl7", second, RECEIVED, None, 60.0, False))  # sent ahead, before the answer
        ours.send(("priors", None))
        accessions = []
        for _ in range(2):
            while asked(data := ours.recv_bytes()) is not None:
                ours.send(("priors", None))
            reply = loads(data)
            assert reply[0] == "done"
            accessions.append(reply[2][0].reports[0].accession)  # (the MessageRecord the worker made)
        expected = [
            process(raw, pipeline(), received_at=RECEIVED).reports[0].report.accession for raw in (first, second)
        ]
        assert accessions == expected and expected[0] != expected[1]
    finally:
        ours.close()
        thread.join(timeout=60)
