"""Hardening pieces without a reactor: the interrupt and unchecked route, the journal, the bounded
key memory, the protocol's fairness and error containment, per-peer limits (docs/hardening.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from listener.assemble import load_routing_policy
from listener.errors import ConfigError
from listener.hl7v2.mllp import MllpFramer, frame
from listener.pipeline import QA_TIMEOUT, Interrupt, Pipeline, process, unchecked_outcome
from listener.server.journal import QUARANTINE_AFTER, Journal, journal_key
from listener.server.mllp import Answer, Intake, MllpFactory
from tests.integration.conftest import with_control_id as with_id
from tests.unit.server.test_mllp import FakeStore

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
NORMAL = (REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7").read_bytes().replace(b"\n", b"\r")
SDH = (REPO / "samples" / "hl7" / "ct-head-critical-sdh-communicated.hl7").read_bytes().replace(b"\n", b"\r")


def acks(data: bytes) -> list[tuple[str, str]]:
    out = []
    for payload in MllpFramer().feed(data):
        fields = next(s for s in payload.split(b"\r") if s.startswith(b"MSA")).decode().split("|")
        out.append((fields[1], fields[2]))
    return out


# --------------------------------------------------------------------- the budget


def test_interrupted_pipeline_stores_every_report_unchecked(pipeline: Pipeline) -> None:
    """An interrupt already due: decoded, no rule run, qa.timeout, routed by the policy's unchecked block."""
    interrupt = Interrupt()
    interrupt.request()
    outcome = process(SDH, pipeline, received_at=NOW, interrupt=interrupt)
    assert outcome.disposition == "accepted" and outcome.reports
    for result in outcome.reports:
        assert [f.rule for f in result.findings] == [QA_TIMEOUT]
        assert result.route is not None
        assert (result.route.bucket, result.route.pool, result.route.reasons) == (
            "selective_overread",
            "general_overread",
            ("qa_incomplete",),
        )
        assert "qa.timeout" in result.route.explanation[0]
    assert interrupt.decoded is not None and len(interrupt.decoded.reports) == len(outcome.reports)


def test_an_interrupt_that_never_fires_changes_nothing(pipeline: Pipeline) -> None:
    """The same message with a far deadline: the same findings and route as without an interrupt."""
    plain = process(SDH, pipeline, received_at=NOW)
    interrupt = Interrupt()
    interrupt.start(lambda: 0.0, 3600.0)
    timed = process(SDH, pipeline, received_at=NOW, interrupt=interrupt)
    assert [r.findings for r in timed.reports] == [r.findings for r in plain.reports]
    assert [r.route for r in timed.reports] == [r.route for r in plain.reports]
    assert all(f.rule != QA_TIMEOUT for r in plain.reports for f in r.findings)


def test_deadline_stops_qa_between_rules(pipeline: Pipeline) -> None:
    """A clock that passes the deadline after a few checks stops QA part-way: some findings kept, qa.timeout added."""
    ticks = iter(range(1000))
    interrupt = Interrupt()
    interrupt.start(lambda: float(next(ticks)), 5.0)
    outcome = process(NORMAL, pipeline, received_at=NOW, interrupt=interrupt)
    findings = outcome.reports[0].findings
    assert findings[-1].rule == QA_TIMEOUT
    assert outcome.reports[0].route is not None and outcome.reports[0].route.bucket == "selective_overread"


def test_unchecked_outcome_from_decoded_reports(pipeline: Pipeline) -> None:
    interrupt = Interrupt()
    interrupt.request()
    process(NORMAL, pipeline, received_at=NOW, interrupt=interrupt)
    assert interrupt.decoded is not None
    outcome = unchecked_outcome(interrupt.decoded, pipeline, received_at=NOW)
    assert outcome.disposition == "accepted"
    assert [f.rule for f in outcome.reports[0].findings] == [QA_TIMEOUT]


def _policy(tmp_path: Path, block: str) -> Path:
    text = (REPO / "policies" / "routing.yaml").read_text()
    start = text.index("unchecked:")
    end = text.index("\n\n", start)
    path = tmp_path / "routing.yaml"
    path.write_text(text[:start] + block + text[end:])
    return path


def test_unchecked_block_is_validated(tmp_path: Path) -> None:
    policy = load_routing_policy(_policy(tmp_path, "unchecked:\n  bucket: always_final\n  pool: neuroradiology"))
    assert (policy.unchecked_bucket, policy.unchecked_pool) == ("always_final", "neuroradiology")
    with pytest.raises(ConfigError, match="unchecked.pool"):
        load_routing_policy(_policy(tmp_path, "unchecked:\n  bucket: always_final\n  pool: nowhere"))
    with pytest.raises(ConfigError, match="bucket"):
        load_routing_policy(_policy(tmp_path, "unchecked:\n  bucket: later\n  pool: neuroradiology"))


# --------------------------------------------------------------------- the journal


def test_journal_counts_crashes_and_keeps_an_entry_on_resend(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    key = journal_key("mllp", "APP", "FAC", "C1")
    journal.begin(key, "mllp", b"MSH|first")
    assert journal.pending() == 1
    [entry] = journal.recover()
    assert (entry.crashes, entry.raw, entry.transport) == (1, b"MSH|first", "mllp")
    journal.begin(key, "mllp", b"MSH|resend")  # the resend keeps the entry and its count
    [entry] = journal.recover()
    assert entry.crashes == QUARANTINE_AFTER and entry.raw == b"MSH|first"
    journal.end(key)
    assert journal.recover() == []


def test_a_dead_worker_process_counts_a_crash_like_a_dead_daemon(tmp_path: Path) -> None:
    """count_crash adds to the count recover() keeps: one worker death and one daemon death quarantine."""
    journal = Journal(tmp_path / "journal")
    key = journal_key("mllp", "APP", "FAC", "C2")
    journal.begin(key, "mllp", b"MSH|body", "meta")
    assert journal.count_crash(key) == 1
    [entry] = journal.recover()
    assert (entry.crashes, entry.raw, entry.meta) == (QUARANTINE_AFTER, b"MSH|body", "meta")
    assert journal.count_crash("no-such-entry") == 1
    assert [p.name for p in (tmp_path / "journal").iterdir()] == [f"{key}.msg"]


def test_journal_keeps_meta_and_drops_garbage_entries(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.begin("k1", "http", b'{"resourceType": "DiagnosticReport"}\n{}', '["client", "", "fhir-x"]')
    (tmp_path / "journal" / "junk.msg").write_bytes(b"not a journal entry")
    [entry] = journal.recover()
    assert entry.meta == '["client", "", "fhir-x"]' and entry.raw.endswith(b"\n{}")
    assert not (tmp_path / "journal" / "junk.msg").exists()


def test_a_death_while_writing_an_entry_leaves_no_entry(tmp_path: Path) -> None:
    """A half-written keyed entry is a .part file that recovery removes."""
    journal = Journal(tmp_path / "journal")
    half = tmp_path / "journal" / "k1.4242.1.part"
    half.write_bytes(b"OVERREAD-JOURNAL/1 mllp 0 -\nMSH|trunc")  # what a kill -9 mid-write leaves
    assert journal.pending() == 0
    assert journal.recover() == [] and not half.exists()
    journal.begin("k2", "mllp", b"MSH|whole")
    assert journal.pending() == 1 and journal.crashes("k2") == 0


def test_a_slot_cut_short_over_an_older_entry_counts_no_crash(tmp_path: Path) -> None:
    """A slot is written over the last entry it held: a death mid-write leaves the new entry's first
    bytes over the old one's, at any length, and recovery finds no entry there (neither message was
    left being processed: the old one ended, the new one was not sent yet)."""
    journal = Journal(tmp_path / "journal")
    journal.begin("k-old", "mllp", b"MSH|the older message, longer than the new one " * 3, "old meta")
    journal.end("k-old")
    [slot] = (tmp_path / "journal").glob("*.slot")
    old = slot.read_bytes()
    other = Journal(tmp_path / "other")
    other.begin("k-new", "http", b"MSH|the newer message", "new meta")
    [new_slot] = (tmp_path / "other").glob("*.slot")
    new = new_slot.read_bytes()
    for cut in range(1, len(new)):
        slot.write_bytes(new[:cut] + old[cut:])
        assert journal.pending() == 0, cut
    slot.write_bytes(new + old[len(new) :])
    assert journal.pending() == 1 and journal.crashes("k-new") == 0
    [entry] = journal.recover()
    assert (entry.key, entry.raw, entry.meta, entry.crashes) == ("k-new", b"MSH|the newer message", "new meta", 1)


def test_an_ended_slot_is_reused_and_counts_nothing(tmp_path: Path) -> None:
    """end() voids the message's slot and the next message reuses it: only live entries count."""
    journal = Journal(tmp_path / "journal")
    journal.begin("k1", "mllp", b"MSH|first, the longer one")
    journal.end("k1")
    assert journal.pending() == 0 and journal.crashes("k1") is None
    journal.begin("k2", "mllp", b"MSH|second")
    journal.begin("k3", "mllp", b"MSH|third")
    journal.begin("k2", "mllp", b"MSH|second, begun again")  # the entry is kept, no second slot
    assert len(list((tmp_path / "journal").glob("*.slot"))) == 2
    journal.end("k3")
    [entry] = journal.recover()
    assert (entry.key, entry.raw, entry.crashes) == ("k2", b"MSH|second", 1)
    assert [p.name for p in (tmp_path / "journal").iterdir()] == ["k2.msg"]


def test_journal_key_names_no_value() -> None:
    key = journal_key("mllp", "APP", "FAC", "MRN-LIKE-123")
    assert "MRN" not in key and len(key) == 40


# ------------------------------------------------------------ bounded key memory


def test_recent_keys_are_bounded_in_bytes(pipeline: Pipeline) -> None:
    store = FakeStore()
    intake = Intake(
        pipeline,
        store,
        hash_key=b"k" * 32,
        call_from_thread=lambda f, *a: f(*a),  # type: ignore[arg-type]
        now=lambda: NOW,
        recent_bytes=10_000,
    )
    for i in range(100):
        intake._remember(("APP", "FAC", f"C{i:03}-" + "x" * 150), ("AA", b"A" * 500, "processed"))
    assert intake._recent_bytes <= 10_000
    assert 5 < len(intake._recent) < 20
    assert ("APP", "FAC", "C099-" + "x" * 150) in intake._recent


# ------------------------------------------------------------ the protocol


class SlowIntake:
    """An intake whose answers the test releases by hand (records the order frames are handed over)."""

    closing = False

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.pending: list[tuple[defer.Deferred[Answer], Any]] = []
        self.fail_next = False

    def receive(self, raw: bytes, log: Any, released: Any = lambda: None) -> defer.Deferred[Answer]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        self.received.append(raw)
        d: defer.Deferred[Answer] = defer.Deferred()
        self.pending.append((d, released))
        return d

    def internal_error_answer(self) -> Answer:
        return Answer(b"MSH|^~\\&|||||||ACK||P|2.5.1\rMSA|AE|\r")

    def finish(self, index: int) -> None:
        d, released = self.pending[index]
        released()
        control = self.received[index].split(b"\r")[0].split(b"|")[9]
        d.callback(Answer(b"MSH|^~\\&|||||||ACK||P|2.5.1\rMSA|AA|" + control + b"\r"))


def _proto(intake: Any, **kw: Any) -> tuple[Any, StringTransport]:
    factory = MllpFactory(intake, max_frame_size=64 * 1024, idle_timeout=30, max_connections=10, clock=Clock(), **kw)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_one_frame_per_connection_on_a_worker() -> None:
    """Three pipelined frames: the second is handed over only when the first left the worker."""
    intake = SlowIntake()
    proto, transport = _proto(intake)
    proto.dataReceived(b"".join(frame(with_id(NORMAL, f"P{i}")) for i in range(3)))
    assert len(intake.received) == 1
    intake.finish(0)
    assert len(intake.received) == 2
    intake.finish(1)
    intake.finish(2)
    assert acks(transport.value()) == [("AA", "P0"), ("AA", "P1"), ("AA", "P2")]


def test_a_flooding_connection_is_paused_then_resumed() -> None:
    intake = SlowIntake()
    proto, transport = _proto(intake)
    proto.dataReceived(b"".join(frame(with_id(NORMAL, f"F{i}")) for i in range(70)))
    assert transport.producerState == "paused"
    for i in range(40):
        intake.finish(i)
    assert transport.producerState == "producing"


def test_an_exception_while_taking_a_frame_is_answered_and_later_frames_flow() -> None:
    intake = SlowIntake()
    proto, transport = _proto(intake)
    intake.fail_next = True
    proto.dataReceived(frame(with_id(NORMAL, "E1")) + frame(with_id(NORMAL, "E2")))
    intake.finish(0)
    assert acks(transport.value()) == [("AE", ""), ("AA", "E2")]
    assert not transport.disconnecting


def test_closed_mid_frame_logs_the_buffered_size() -> None:
    intake = SlowIntake()
    proto, _ = _proto(intake)
    with capture_logs() as logs:
        proto.dataReceived(b"\x0b" + b"x" * 1234)
        proto.connectionLost()
    [line] = [e for e in logs if e.get("reason") == "closed_mid_frame"]
    assert line["bytes"] == 1234


def test_connections_per_peer_are_limited() -> None:
    factory = MllpFactory(
        SlowIntake(),
        max_frame_size=1024,
        idle_timeout=30,  # type: ignore[arg-type]
        max_connections=5,
        max_connections_per_peer=2,
    )
    assert factory.admit("10.0.0.1") == "" and factory.admit("10.0.0.1") == ""
    assert factory.admit("10.0.0.1") == "max_connections_per_peer"
    assert factory.admit("10.0.0.2") == ""
    factory.release("10.0.0.1")
    assert factory.admit("10.0.0.1") == ""
    assert factory.admit("10.0.0.3") == "" and factory.admit("10.0.0.4") == ""
    assert factory.admit("10.0.0.5") == "max_connections"


def test_past_the_open_slots_an_entry_gets_a_file_of_its_own(tmp_path: Path) -> None:
    """Many messages journaled at once (a store that stalls): only ``open_slots`` files stay open;
    each entry past them has its own file, closed once written and removed when the message ends,
    and every entry still counts at recovery."""
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir()))
    journal = Journal(tmp_path / "journal", open_slots=2)
    for i in range(5):
        journal.begin(f"k{i}", "mllp", b"MSH|%d" % i)
    assert len(list(fds.iterdir())) - before == 2
    assert journal.pending() == 5 and journal.crashes("k4") == 0
    for i in (0, 3, 4):
        journal.end(f"k{i}")
    assert len(list((tmp_path / "journal").glob("*.slot"))) == 3  # the two kept open, and k2's own
    assert sorted((e.key, e.raw, e.crashes) for e in journal.recover()) == [("k1", b"MSH|1", 1), ("k2", b"MSH|2", 1)]
    assert len(list(fds.iterdir())) == before
