"""The real daemon on the real PostgreSQL test server (docs/store.md).

What SQLite's integration tests prove, on the other backend: a message is
stored before its ACK (kill -9 mid-flood loses nothing ACKed), a resend gets
the stored answer, the operator's commands read the same database, and the
logged store URL carries no password. Two daemons on one database store a
message sent to both once and answer both with the stored ACK.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    http_client,
    msa,
    post_report,
    with_control_id,
)
from tests.postgres import as_url, fresh_schema, server_dsn

psycopg = pytest.importorskip("psycopg")

from listener.store.postgresql import PostgresStore  # noqa: E402 - needs psycopg, imported after the skip

pytestmark = pytest.mark.postgresql

#: Seconds a daemon may take to listen: imports, the pipeline and the store's three sessions, on a busy CI host.
START_TIMEOUT = 60
CONNECTIONS = 4
PER_CONNECTION = 250
WINDOW = 8


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path) -> Iterator[Path]:
    """A configuration whose store is a fresh schema on the test server."""
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        PostgresStore(dsn).close()  # the tables, as after a first start: each daemon here starts as a restart
        path = tmp_path / "overread.yaml"
        path.write_text(f"store: {as_url(dsn)}\n", encoding="utf-8")
        yield path


def _daemon(tmp_path: Path, config: Path, name: str = "a") -> RunningDaemon:
    (tmp_path / f"logs-{name}").mkdir()
    return RunningDaemon(
        tmp_path / f"state-{name}",
        tmp_path / f"logs-{name}",
        extra=("--config", str(config)),
        start_timeout=START_TIMEOUT,
    )


def _stop_all(daemons: list[RunningDaemon]) -> list[int]:
    """Stop every daemon started (also after a failed start); their exit statuses."""
    return [d.stop() for d in daemons if d.proc is not None]


def _messages(config: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "listener", "messages", "--format", "json", "--config", str(config)],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


SECRET = "pw-QZXSECRET-7"


def test_the_daemon_stores_answers_and_lists_on_postgresql(tmp_path: Path, config: Path, oru: bytes) -> None:
    """AA once stored, the same ACK bytes for a resend, `overread messages` reads it, no SQLite file made,
    and the password file's text appears in no log line (the test server trusts local sessions, so any
    password is accepted: this proves where it does not go, not that it is sent)."""
    (tmp_path / "pg-password").write_text(SECRET + "\n", encoding="utf-8")
    with config.open("a", encoding="utf-8") as f:
        f.write("store_password_file: pg-password\n")
    daemon = _daemon(tmp_path, config)
    try:
        daemon.start()
        conn = MllpConnection(daemon.address)
        try:
            first = conn.request(with_control_id(oru, "PG-1"))
            again = conn.request(with_control_id(oru, "PG-1"))
        finally:
            conn.close()
        assert msa(first) == ("AA", "PG-1")
        assert again == first
        listed = _messages(config)
        assert [m["message_id"] for m in listed] == ["PG-1"]
    finally:
        assert _stop_all([daemon]) == [0]
    opened = [line for line in daemon.log_lines() if line.get("event") == "store_opened"]
    assert opened and str(opened[0]["store"]).startswith("postgresql://")
    assert not (daemon.state_dir / "overread.db").exists()
    assert SECRET not in daemon.stdout() and SECRET not in daemon.stderr()


def _flood(address: tuple[str, int], oru: bytes, conn_no: int, acked: list[str]) -> None:
    try:
        conn = MllpConnection(address, timeout=15)
    except OSError:
        return
    sent = received = 0
    try:
        while received < PER_CONNECTION:
            while sent < PER_CONNECTION and sent - received < WINDOW:
                conn.send(with_control_id(oru, f"K{conn_no}-{sent}"))
                sent += 1
            code, control = msa(conn.receive())
            received += 1
            if code in ("AA", "CA"):
                acked.append(control)
    except (OSError, ConnectionError):
        pass
    finally:
        conn.close()


def test_kill_9_during_a_flood_loses_no_acked_message(tmp_path: Path, config: Path, oru: bytes) -> None:
    """SIGKILL at a random point of 1,000 messages: every ACKed control id is stored, none twice."""
    daemon = _daemon(tmp_path, config)
    try:
        daemon.start()
    except AssertionError:
        _stop_all([daemon])
        raise
    acked: list[str] = []
    threads = [
        threading.Thread(target=_flood, args=(daemon.address, oru, n, acked), daemon=True) for n in range(CONNECTIONS)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    target = random.randint(20, CONNECTIONS * PER_CONNECTION - 100)
    while len(acked) < target and any(t.is_alive() for t in threads) and time.monotonic() - started < 60:
        time.sleep(0.001)
    daemon.stop(signal.SIGKILL)
    for t in threads:
        t.join(timeout=30)
    acked_now = list(acked)
    assert acked_now, "no message was acknowledged before the kill"
    listed = [m["message_id"] for m in _messages(config)]
    assert len(listed) == len(set(listed)), "a message was stored twice"
    missing = set(acked_now) - set(listed)
    assert not missing, f"{len(missing)} ACKed messages lost, e.g. {sorted(missing)[:3]}"


def test_two_daemons_store_one_message_once(tmp_path: Path, config: Path, oru: bytes) -> None:
    """The same 40 messages sent to two daemons on one database at once: each stored once, both ACKs alike."""
    daemons = [_daemon(tmp_path, config, "a"), _daemon(tmp_path, config, "b")]
    try:
        for d in daemons:
            d.start()
        answers: dict[int, list[bytes]] = {}
        barrier = threading.Barrier(2)

        def send(index: int) -> None:
            conn = MllpConnection(daemons[index].address)
            try:
                barrier.wait()
                answers[index] = [conn.request(with_control_id(oru, f"D-{i}")) for i in range(40)]
            finally:
                conn.close()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(answers[0]) == len(answers[1]) == 40
        for i, (one, two) in enumerate(zip(answers[0], answers[1], strict=True)):
            assert msa(one) == ("AA", f"D-{i}")
            assert one == two  # the second daemon answered with the stored ACK
        listed = [m["message_id"] for m in _messages(config)]
        assert sorted(listed) == sorted(f"D-{i}" for i in range(40))
    finally:
        assert _stop_all(daemons) == [0, 0]


def test_a_fhir_report_checked_on_a_worker_process_is_stored_on_postgresql(tmp_path: Path, config: Path) -> None:
    """With worker processes (``workers: 2``) a FHIR body is checked in a worker, which asks the daemon
    for its priors (no SQLite file to read) and sends the records without SQLite's packed forms: 201, the
    report listed by `overread messages`, and the resend answered as the first, from the store
    (docs/hardening.md, "Worker processes")."""
    with config.open("a", encoding="utf-8") as f:
        f.write("workers: 2\nworkers_inline: false\nhttp_clients:\n" + http_client("sender", "tok-sender"))
    body = (REPO / "samples" / "fhir" / "xr-chest-2v-normal.json").read_bytes()
    daemon = _daemon(tmp_path, config)
    try:
        daemon.start()
        status, location = post_report(daemon, body, "tok-sender")
        again, location_again = post_report(daemon, body, "tok-sender")
    finally:
        assert _stop_all([daemon]) == [0]
    assert status == 201 and location
    assert again == 201 and location_again == location
    assert sum(1 for line in daemon.log_lines() if line.get("event") == "message_duplicate") == 1
    started = [line for line in daemon.log_lines() if line.get("event") == "daemon_started"]
    assert started and started[0]["workers"] == 2
    listed = _messages(config)
    assert len(listed) == 1 and listed[0]["transport"] == "http"
