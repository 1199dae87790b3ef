"""Active-active: two or three real daemons on one PostgreSQL database and one test RIS (docs/deployment.md).

Each daemon has its own state directory and ports and the same configuration:
the same ``store: postgresql://...`` (a fresh schema on the test server) and
the same destination, the test RIS of ``tests/integration/ris.py``, which
applies a message once per MSH-10 however often it arrives, and keeps every
arrival. The outbox lease is short (``outbox.lease_seconds: 3``) so a killed
daemon's claimed row is taken over within seconds.

What is proved: a message sent to two daemons at once is stored once, routed
once and answered alike; a flood spread over three daemons delivers every
outbox row once, in order per accession; and after a ``kill -9`` of one daemon
mid-flood the other keeps answering, takes over the dead one's row once its
lease expires, loses nothing that was ACKed, and the RIS applies every
routing message once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, free_port, msa
from tests.integration.ris import TestRis
from tests.integration.test_outbound import message, metric, routed_accession, wait_until
from tests.postgres import as_url, fresh_schema, server_dsn

psycopg = pytest.importorskip("psycopg")

from listener.store.postgresql import PostgresStore  # noqa: E402 - needs psycopg, imported after the skip

pytestmark = pytest.mark.postgresql

#: Seconds a daemon may take to listen (imports, the pipeline, three store sessions) on a busy host.
START_TIMEOUT = 60
LEASE_SECONDS = 3


@pytest.fixture(name="ris")
def fixture_ris() -> Iterator[TestRis]:
    """A test RIS answering AA, listening on a free port."""
    ris = TestRis(free_port())
    ris.start()
    yield ris
    ris.stop()


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path, ris: TestRis) -> Iterator[Path]:
    """The one configuration every daemon of a test reads: a fresh schema, the test RIS, a short lease."""
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        PostgresStore(dsn).close()  # the tables, as after a first start: no daemon here waits on a migration
        (tmp_path / "destinations.yaml").write_text(
            "version: 1\n"
            "destinations:\n"
            "  ris:\n"
            f"    endpoint: {ris.endpoint}\n"
            "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n"
            "    retry: {max_attempts: 5, backoff_base_seconds: 0.2, backoff_max_seconds: 1.0,"
            " ack_timeout_seconds: 30, on_reject: dead_letter}\n",
            encoding="utf-8",
        )
        path = tmp_path / "overread.yaml"
        path.write_text(
            f"store: {as_url(dsn)}\ndestinations: destinations.yaml\noutbox: {{lease_seconds: {LEASE_SECONDS}}}\n",
            encoding="utf-8",
        )
        yield path


def _start(tmp_path: Path, config: Path, names: str) -> list[RunningDaemon]:
    """One daemon per letter of ``names``, each with its own state directory and ports, all started."""
    daemons = []
    for name in names:
        (tmp_path / f"logs-{name}").mkdir()
        daemons.append(
            RunningDaemon(
                tmp_path / f"state-{name}",
                tmp_path / f"logs-{name}",
                extra=("--config", str(config)),
                start_timeout=START_TIMEOUT,
            )
        )
    try:
        for d in daemons:
            d.start()
    except AssertionError:
        _stop_all(daemons)
        raise
    return daemons


def _stop_all(daemons: list[RunningDaemon]) -> list[int]:
    """SIGTERM to every daemon still running; their exit statuses."""
    return [d.stop() for d in daemons if d.proc is not None and d.proc.poll() is None]


def _cli(config: Path, *argv: str) -> list[dict[str, object]]:
    """``overread ARGV --format json --config CONFIG`` as an operator runs it (JSON Lines)."""
    result = subprocess.run(
        [sys.executable, "-m", "listener", *argv, "--format", "json", "--config", str(config)],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


def _outbox(config: Path) -> list[dict[str, object]]:
    return _cli(config, "outbox", "list")


def _all_delivered(config: Path, count: int) -> bool:
    rows = _outbox(config)
    return len(rows) == count and all(r["state"] == "delivered" for r in rows)


def _events(daemon: RunningDaemon, event: str) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines() if line.get("event") == event]


def _in_order_per_accession(rows: list[dict[str, object]], arrivals: list[str]) -> None:
    """Each accession's routing messages reached the RIS in the store's order (outbox id order)."""
    for accession in {str(r["accession"]) for r in rows}:
        stored = [str(r["control_id"]) for r in rows if r["accession"] == accession]
        assert [c for c in arrivals if c in stored] == stored, f"{accession}: routing messages out of order"


def test_one_message_at_two_daemons_is_stored_routed_and_answered_once(
    tmp_path: Path, config: Path, ris: TestRis, oru: bytes
) -> None:
    """Twenty messages, each sent to both daemons at the same moment: one stored row and one routing
    message each, byte-identical ACKs from both, and one daemon of the two answered it as a duplicate."""
    daemons = _start(tmp_path, config, "ab")
    try:
        answers: dict[int, list[bytes]] = {}
        barrier = threading.Barrier(2)

        def send(index: int) -> None:
            conn = MllpConnection(daemons[index].address, timeout=30)
            try:
                got = []
                for i in range(20):
                    barrier.wait(timeout=30)
                    got.append(conn.request(message(oru, f"TWICE-{i}", f"TW{i % 4}")))
                answers[index] = got
            finally:
                conn.close()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(answers[0]) == len(answers[1]) == 20
        for i, (one, two) in enumerate(zip(answers[0], answers[1], strict=True)):
            assert msa(one) == ("AA", f"TWICE-{i}")
            assert one == two, f"TWICE-{i}: the two daemons answered differently"
        stored = [m["message_id"] for m in _cli(config, "messages")]
        assert sorted(stored) == sorted(f"TWICE-{i}" for i in range(20))
        wait_until(lambda: _all_delivered(config, 20), timeout=60)
        rows = _outbox(config)
        time.sleep(2 * LEASE_SECONDS)  # room for a second send, had any row been claimed twice
        assert sorted(ris.received_ids()) == sorted(str(r["control_id"]) for r in rows), "a row was routed twice"
        assert sorted(routed_accession(p) for _, p in ris.received) == sorted(f"TW{i % 4}" for i in range(20))
        _in_order_per_accession(rows, ris.received_ids())
    finally:
        assert _stop_all(daemons) == [0, 0]
    duplicates = sum(len(_events(d, "message_duplicate")) for d in daemons)
    assert duplicates == 20, "each message's second copy is answered from the store, not processed again"
    assert not [e for d in daemons for e in _events(d, "outbox_lease_taken_over")]


def test_a_flood_over_three_daemons_delivers_every_row_once_in_order(
    tmp_path: Path, config: Path, ris: TestRis, oru: bytes
) -> None:
    """Three senders, one per daemon, 60 messages each over the same 8 accessions at once: every outbox row
    reaches the RIS exactly once, each accession's rows in the store's order, and the daemons share the work."""
    daemons = _start(tmp_path, config, "abc")
    try:
        codes: list[str] = []

        def flood(index: int) -> None:
            conn = MllpConnection(daemons[index].address, timeout=30)
            try:
                for i in range(60):
                    codes.append(msa(conn.request(message(oru, f"FL{index}-{i}", f"FLACC{i % 8}")))[0])
            finally:
                conn.close()

        threads = [threading.Thread(target=flood, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert codes == ["AA"] * 180
        wait_until(lambda: _all_delivered(config, 180), timeout=120)
        rows = _outbox(config)
        time.sleep(2 * LEASE_SECONDS)
        arrivals = ris.received_ids()
        assert sorted(arrivals) == sorted(str(r["control_id"]) for r in rows), "a row was not sent exactly once"
        assert all(r["attempts"] == 1 for r in rows)
        _in_order_per_accession(rows, arrivals)
    finally:
        assert _stop_all(daemons) == [0, 0, 0]
    delivered = [len(_events(d, "outbox_delivered")) for d in daemons]
    assert sum(delivered) == 180, f"each row is recorded delivered by one daemon: {delivered}"
    assert sum(1 for n in delivered if n) >= 2, f"one daemon delivered everything: {delivered}"
    assert not [e for d in daemons for e in _events(d, "outbox_lease_taken_over")]


def test_kill_9_of_one_daemon_mid_flood_loses_nothing_and_delivers_each_routing_message_once(
    tmp_path: Path, config: Path, ris: TestRis, oru: bytes
) -> None:
    """Daemon A has a routing message in flight that the RIS applied but never answered (the ACK lost)
    when it is killed mid-flood. B keeps answering AA; once A's lease expires B takes that row over and
    sends the same bytes with the same MSH-10 (the RIS applies it once); every ACKed message is stored,
    every routing message is applied once, and each accession's order holds.

    Precisely: the RIS receives every outbox row once, except that one row, which it receives twice,
    byte for byte the same; it applies every row once. A row A took but had not sent is sent by B once.
    """
    ris.mode = "swallow"
    a, b = _start(tmp_path, config, "ab")
    try:
        # The row A will die holding: it reaches the RIS, the RIS applies it, the ACK never comes back.
        conn = MllpConnection(a.address)
        try:
            assert msa(conn.request(message(oru, "HELD", "KACC0")))[0] == "AA"
        finally:
            conn.close()
        ris.wait_for(lambda: len(ris.received) == 1, timeout=30)
        held = ris.received[0]
        (held_message,) = [m for m in _cli(config, "messages") if m["message_id"] == "HELD"]
        assert [r["control_id"] for r in _outbox(config) if r["message_pk"] == held_message["message_pk"]] == [held[0]]
        ris.mode = "AA"

        acked: dict[str, list[str]] = {"a": [], "b": []}
        # A refusal keeps its answer's MSA and ERR segments, so a failure says what was refused and why.
        refused: dict[str, list[str]] = {"a": [], "b": []}

        def flood(daemon: RunningDaemon, name: str, sender: int) -> None:
            try:
                conn = MllpConnection(daemon.address, timeout=30)
            except OSError:
                return
            try:
                for i in range(50):
                    control_id = f"K{name}{sender}-{i}"
                    answer = conn.request(message(oru, control_id, f"KACC{i % 5}"))
                    if msa(answer)[0] in ("AA", "CA"):
                        acked[name].append(control_id)
                    else:
                        said = [seg for seg in answer.decode("latin-1").split("\r") if seg.startswith(("MSA", "ERR"))]
                        refused[name].append(f"{control_id}: {' '.join(said)}")
            except (OSError, ConnectionError):
                return  # the daemon was killed under this sender
            finally:
                conn.close()

        threads = [
            threading.Thread(target=flood, args=(d, name, s), daemon=True)
            for d, name in ((a, "a"), (b, "b"))
            for s in range(2)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked["a"]) >= 30, timeout=60)
        killed_wall = datetime.now(UTC)
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        for t in threads:
            t.join(timeout=180)
        assert not refused["b"], f"B refused {refused['b']}"
        assert len(acked["b"]) == 100, "B answered AA to everything, before and after the kill"
        assert not refused["a"], f"A refused {refused['a']}"

        stored = [str(m["message_id"]) for m in _cli(config, "messages")]
        assert len(stored) == len(set(stored)), "a message was stored twice"
        lost = {"HELD", *acked["a"], *acked["b"]} - set(stored)
        assert not lost, f"{len(lost)} ACKed messages lost"
        rows = _outbox(config)
        wait_until(lambda: _all_delivered(config, len(rows)), timeout=120)
        rows = _outbox(config)
        time.sleep(2 * LEASE_SECONDS)
        arrivals = ris.received_ids()
        held_id = held[0]
        assert arrivals.count(held_id) == 2, "the held row is sent again by B, with the same MSH-10"
        assert [p for c, p in ris.received if c == held_id] == [held[1], held[1]], "byte for byte the same"
        others = [c for c in arrivals if c != held_id]
        assert len(others) == len(set(others)), "a row other than the held one reached the RIS twice"
        assert sorted(set(arrivals)) == sorted(str(r["control_id"]) for r in rows)
        assert sorted(ris.applied) == sorted(str(r["control_id"]) for r in rows), "every row applied once"
        _in_order_per_accession(rows, ris.applied)
        (held_row,) = [r for r in rows if r["control_id"] == held_id]
        assert held_row["attempts"] == 1  # A's attempt was never recorded; B's was
        assert metric(b, "overread_outbox_lease_takeovers_total", 'destination="ris"') == 1
        taken = _events(b, "outbox_lease_taken_over")
        assert [e["control_id"] for e in taken] == [held_id]
        (started,) = _events(a, "instance_started")
        assert taken[0]["previous_instance"] == started["instance"]
        # Taken over only after A died: while A lived, its renewals kept the lease.
        assert datetime.fromisoformat(str(taken[0]["timestamp"])) > killed_wall
    finally:
        assert _stop_all([a, b]) == [0]
    assert not _events(b, "event_unlisted")
