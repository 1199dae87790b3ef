"""End to end: the real daemon sends routing messages to a test RIS (tests/integration/ris.py).

Short retry settings (0.2 s base, 1 s cap, 1-2 s ACK timeout) and a 2 s outbox
lease keep each test to seconds; the daemon's poll interval is its default. The two-minute outage test
is marked slow (it takes about 2.5 minutes).
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli_json_lines
from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, free_port, msa, with_control_id
from tests.integration.ris import TestRis


def write_config(
    tmp_path: Path,
    ris_port: int,
    *,
    ack_timeout: float = 1.0,
    max_attempts: int = 5,
    backoff_base: float = 0.2,
    backoff_max: float = 1.0,
) -> Path:
    """A daemon config whose one destination is the test RIS, with short retries."""
    dest = tmp_path / "destinations.yaml"
    dest.write_text(
        "version: 1\n"
        "destinations:\n"
        "  ris:\n"
        f"    endpoint: tcp:host=127.0.0.1:port={ris_port}\n"
        "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n"
        f"    retry: {{max_attempts: {max_attempts}, backoff_base_seconds: {backoff_base}, backoff_max_seconds: {backoff_max},"
        f" ack_timeout_seconds: {ack_timeout}, on_reject: dead_letter}}\n",
        encoding="utf-8",
    )
    config = tmp_path / "overread.yaml"
    # A short lease: after a kill -9 the restarted daemon takes its predecessor's row over in 2 s, not 30.
    config.write_text("destinations: destinations.yaml\noutbox: {lease_seconds: 2}\n", encoding="utf-8")
    return config


def message(oru: bytes, control_id: str, accession: str) -> bytes:
    """The corpus ORU with its own MSH-10 and accession (ORC-3/OBR-3)."""
    return with_control_id(oru, control_id).replace(b"|620943148|", f"|{accession}|".encode())


def as_final(raw: bytes) -> bytes:
    """``raw`` with OBR-25 set to F: a later, final decision for the same order."""
    segments = raw.split(b"\r")
    for n, segment in enumerate(segments):
        if segment.startswith(b"OBR|"):
            fields = segment.split(b"|")
            fields[25] = b"F"
            segments[n] = b"|".join(fields)
    return b"\r".join(segments)


def routed_accession(payload: bytes) -> str:
    """OBR-3 (the accession) of a routing message as the RIS received it."""
    for segment in payload.split(b"\r"):
        if segment.startswith(b"OBR|"):
            return segment.split(b"|")[3].decode().split("^")[0]
    raise AssertionError("routing message without OBR")


def metric(daemon: RunningDaemon, name: str, labels: str = "") -> float:
    """One sample of the daemon's /metrics (``name{labels}``), as a scraper reads it."""
    assert daemon.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    selector = re.escape(name + (f"{{{labels}}}" if labels else ""))
    found = re.search(rf"^{selector} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name}{{{labels}}} not in /metrics"
    return float(found.group(1))


def outbox(daemon: RunningDaemon, *args: str) -> list[dict[str, object]]:
    """``overread outbox list --format json`` as an operator runs it, through ``listener.cli.main`` in
    this process (:func:`run_cli`: tests poll it; ``retry`` and the hostile answer's listing run a real
    ``python -m listener``)."""
    return cli_json_lines("outbox", "list", "--format", "json", "--state-dir", str(daemon.state_dir), *args)


def send_all(daemon: RunningDaemon, messages: list[bytes]) -> list[str]:
    """Send each message on one connection; return the MSA-1 codes."""
    conn = MllpConnection(daemon.address)
    try:
        return [msa(conn.request(m))[0] for m in messages]
    finally:
        conn.close()


def wait_until(condition: object, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until true (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(name="ris")
def fixture_ris() -> Iterator[TestRis]:
    """A test RIS on a free port, not yet listening (the test starts it)."""
    ris = TestRis(free_port())
    yield ris
    ris.stop()


def start_daemon(tmp_path: Path, config: Path) -> RunningDaemon:
    """A daemon using ``config``, with its logs under tmp_path/logs."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    daemon = RunningDaemon(tmp_path / "state", logs, extra=("--config", str(config)))
    daemon.start()
    return daemon


def stop_daemon(daemon: RunningDaemon) -> None:
    """SIGTERM; the daemon must exit 0 and log only listed events."""
    if daemon.proc is not None and daemon.proc.poll() is None:
        assert daemon.stop() == 0
    assert not [line for line in daemon.log_lines() if line.get("event") == "event_unlisted"]


def test_ris_down_then_up_delivers_everything_in_order(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """RIS down while messages arrive; once it is up, every routing message arrives, in order per accession."""
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        accessions = ["ACCA", "ACCB", "ACCA", "ACCC", "ACCA", "ACCB"]
        codes = send_all(daemon, [message(oru, f"DOWN{i}", acc) for i, acc in enumerate(accessions)])
        assert codes == ["AA"] * 6
        time.sleep(3.0)  # several connection attempts refused meanwhile
        rows = outbox(daemon)
        assert [r["state"] for r in rows] == ["pending"] * 6
        assert all(r["attempts"] == 0 for r in rows), "a down RIS must not use up the rows' attempts"
        ris.start()
        ris.wait_for(lambda: len(ris.applied) == 6)
        rows = outbox(daemon)
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)))
        arrival = ris.received_ids()
        for acc in set(accessions):
            stored_order = [r["control_id"] for r in rows if r["accession"] == acc]
            assert [c for c in arrival if c in stored_order] == stored_order
        assert sorted(ris.applied) == sorted(r["control_id"] for r in rows)
        events = [line["event"] for line in daemon.log_lines()]
        assert events.count("outbox_delivered") == 6
        assert "outbox_retry_scheduled" in events
    finally:
        stop_daemon(daemon)


#: The outage of the issue's end-to-end test, and the decisions that arrive during it:
#: (accession, final?) in arrival order; ACC1, ACC2 and ACC4 get a preliminary
#: then a final decision, ACC1 a third one.
OUTAGE_SECONDS = 120.0
OUTAGE_PLAN = [
    ("ACC1", False),
    ("ACC2", False),
    ("ACC3", False),
    ("ACC1", True),
    ("ACC4", False),
    ("ACC2", True),
    ("ACC5", False),
    ("ACC4", True),
    ("ACC6", False),
    ("ACC1", True),
    ("ACC7", False),
    ("ACC8", False),
]


@pytest.mark.slow
def test_ris_down_two_minutes_then_up_delivers_every_row_once_in_order(
    tmp_path: Path, ris: TestRis, oru: bytes
) -> None:
    """RIS down 2 minutes while decisions keep arriving: nothing is charged, then each row goes out once, in order per accession.

    max_attempts is 3 and the connection backoff is capped at 2 s, so a queue that
    counted refused connections against its rows would dead-letter them within
    seconds; after the outage every row must be delivered on its first attempt.
    """
    config = write_config(tmp_path, ris.port, max_attempts=3, backoff_base=0.5, backoff_max=2.0, ack_timeout=2.0)
    ris.start()
    daemon = start_daemon(tmp_path, config)
    try:
        # Up first: one decision goes through on an open connection, then the RIS goes down under it.
        assert send_all(daemon, [message(oru, "OUT0", "ACC1")]) == ["AA"]
        wait_until(lambda: [r["state"] for r in outbox(daemon)] == ["delivered"])
        before = len(ris.received_ids())
        ris.stop()
        down_since = time.monotonic()
        time.sleep(1.0)  # let the daemon see the connection drop before the next decision
        for n, (accession, final) in enumerate(OUTAGE_PLAN, start=1):
            raw = message(oru, f"OUT{n}", accession)
            assert send_all(daemon, [as_final(raw) if final else raw]) == ["AA"], (
                f"message {n} not accepted during the outage"
            )
            if n == len(OUTAGE_PLAN) // 2:
                # Half way: the queue is visible to operators and to monitoring.
                pending = outbox(daemon, "--state", "pending")
                assert len(pending) == n and all(r["attempts"] == 0 for r in pending)
                assert metric(daemon, "overread_outbox_messages", 'destination="ris",state="pending"') == n
                assert metric(daemon, "overread_outbox_oldest_pending_age_seconds", 'destination="ris"') > 0
            # Spread the arrivals over the outage.
            time.sleep(max(0.0, down_since + n * OUTAGE_SECONDS / len(OUTAGE_PLAN) - time.monotonic()))
        rows = outbox(daemon)[1:]
        assert [r["state"] for r in rows] == ["pending"] * len(OUTAGE_PLAN)
        assert all(r["attempts"] == 0 for r in rows), "a down RIS must not use up the rows' attempts"
        assert [r["accession"] for r in rows] == [acc for acc, _ in OUTAGE_PLAN]
        refused = [
            line
            for line in daemon.log_lines()
            if line.get("event") == "outbox_retry_scheduled" and line.get("reason") == "connect_failed"
        ]
        assert len(refused) > 3, "the worker kept trying to connect, more often than max_attempts"
        assert len(ris.received_ids()) == before

        ris.start()
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)), timeout=60)
        rows = outbox(daemon)[1:]
        assert all(r["attempts"] == 1 for r in rows), "each row delivered on its first real attempt"
        arrived = ris.received[before:]
        arrived_ids = [control_id for control_id, _ in arrived]
        assert sorted(arrived_ids) == sorted(r["control_id"] for r in rows), "every row sent exactly once"
        assert len(set(ris.applied)) == len(ris.applied) == len(OUTAGE_PLAN) + 1
        by_id = {r["control_id"]: r for r in rows}
        for control_id, payload in arrived:
            assert routed_accession(payload) == by_id[control_id]["accession"]
        for accession in {acc for acc, _ in OUTAGE_PLAN}:
            stored = [r["control_id"] for r in rows if r["accession"] == accession]
            assert [c for c in arrived_ids if c in stored] == stored, f"{accession}: decisions out of order"
        assert metric(daemon, "overread_outbox_messages", 'destination="ris",state="pending"') == 0
        assert metric(daemon, "overread_outbox_messages", 'destination="ris",state="dead"') == 0
        assert metric(daemon, "overread_outbox_oldest_pending_age_seconds", 'destination="ris"') == 0
    finally:
        stop_daemon(daemon)


def test_ae_then_aa_is_retried(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """An AE is retried with backoff; the same MSH-10 is delivered on the second attempt."""
    ris.script.extend(["AE"])
    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        assert send_all(daemon, [message(oru, "AE1", "ACC1")]) == ["AA"]
        ris.wait_for(lambda: len(ris.applied) == 1)
        wait_until(lambda: outbox(daemon)[0]["state"] == "delivered")
        (row,) = outbox(daemon)
        assert row["attempts"] == 2
        assert ris.received_ids() == [row["control_id"], row["control_id"]]
    finally:
        stop_daemon(daemon)


def test_ar_is_dead_lettered_visible_and_retryable(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """AR dead-letters the row (listed by `overread outbox list --state dead`); `retry --all-dead` sends it again."""
    ris.mode = "AR"
    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        assert send_all(daemon, [message(oru, "AR1", "ACC1")]) == ["AA"]
        wait_until(lambda: len(outbox(daemon, "--state", "dead")) == 1)
        (dead,) = outbox(daemon, "--state", "dead")
        assert (dead["attempts"], dead["last_error"]) == (1, "AR")
        assert ris.applied == []
        assert any(line["event"] == "outbox_dead_lettered" for line in daemon.log_lines())
        ris.mode = "AA"
        retried = subprocess.run(
            [
                sys.executable,
                "-m",
                "listener",
                "outbox",
                "retry",
                "--all-dead",
                "--format",
                "json",
                "--state-dir",
                str(daemon.state_dir),
            ],
            capture_output=True,
            cwd=REPO,
            timeout=60,
            check=True,
        )
        assert json.loads(retried.stdout) == {"revived": [dead["id"]], "not_revived": []}
        ris.wait_for(lambda: ris.applied == [dead["control_id"]])
        wait_until(lambda: outbox(daemon)[0]["state"] == "delivered")
    finally:
        stop_daemon(daemon)


def test_kill9_mid_delivery_delivers_each_row_exactly_once(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """Killed (-9) while the RIS holds a message unanswered: after restart every row reaches the RIS once (MSH-10 dedup)."""
    ris.mode = "stall"
    ris.start()
    config = write_config(tmp_path, ris.port, ack_timeout=30.0)
    daemon = start_daemon(tmp_path, config)
    assert send_all(daemon, [message(oru, f"K{i}", f"ACC{i % 2}") for i in range(4)]) == ["AA"] * 4
    ris.wait_for(lambda: len(ris.received) >= 1)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    first = ris.received_ids()[0]
    ris.mode = "AA"
    daemon.start()
    try:
        ris.wait_for(lambda: len(ris.applied) == 4)
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)))
        rows = outbox(daemon)
        assert len(rows) == 4
        assert sorted(ris.applied) == sorted(r["control_id"] for r in rows)
        assert ris.received_ids().count(first) == 2  # resent with the same MSH-10, applied once
        assert [m["message_id"] for m in daemon.messages()] == [f"K{i}" for i in range(4)]
        # The restarted daemon released its dead predecessor's lease at start (same state directory):
        # no wait for the lease to expire, no takeover.
        (released,) = [line for line in daemon.log_lines() if line.get("event") == "outbox_leases_released"]
        started = [line["instance"] for line in daemon.log_lines() if line.get("event") == "instance_started"]
        assert (released["count"], released["reason"], released["previous_instance"]) == (1, "previous_run", started[0])
        assert not [line for line in daemon.log_lines() if line.get("event") == "outbox_lease_taken_over"]
    finally:
        stop_daemon(daemon)


def test_kill9_while_ris_down_resumes_after_restart(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """Rows queued while the RIS is down survive kill -9 and go out once the daemon is back and the RIS is up."""
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    assert send_all(daemon, [message(oru, f"D{i}", "ACC1") for i in range(3)]) == ["AA"] * 3
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    ris.start()
    daemon.start()
    try:
        ris.wait_for(lambda: len(ris.applied) == 3)
        rows = outbox(daemon)
        assert ris.applied == [r["control_id"] for r in rows]  # one accession: stored order
    finally:
        stop_daemon(daemon)


def test_no_routing_message_for_a_message_not_accepted(tmp_path: Path, ris: TestRis, oru: bytes) -> None:
    """Messages answered AE/AR (undecodable, unsupported) leave no outbox row and send nothing to the RIS."""
    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    try:
        bad_type = with_control_id(oru, "BAD1").replace(b"|ORU^R01|", b"|ZZZ^Z99|", 1)
        no_obr = b"\r".join(
            s for s in with_control_id(oru, "BAD2").split(b"\r") if not s.startswith((b"OBR", b"OBX", b"ORC"))
        )
        codes = send_all(daemon, [bad_type, no_obr, message(oru, "GOOD1", "ACC9")])
        assert codes[0] in ("AE", "AR") and codes[1] in ("AE", "AR") and codes[2] == "AA"
        ris.wait_for(lambda: len(ris.applied) == 1)
        rows = outbox(daemon)
        assert len(rows) == 1 and rows[0]["accession"] == "ACC9"
        time.sleep(0.5)
        assert len(ris.received) == 1
    finally:
        stop_daemon(daemon)


def tls_config(tmp_path: Path, ris_port: int, pki: Path, *, trust: str) -> Path:
    """A daemon config whose destination reaches the test RIS over mutual TLS, trusting the CA ``trust``."""
    dest = tmp_path / "destinations.yaml"
    dest.write_text(
        "version: 1\n"
        "destinations:\n"
        "  ris:\n"
        f"    endpoint: tls:host=localhost:port={ris_port}\n"
        f"    tls: {{certificate: {pki / 'overread.crt'}, private_key: {pki / 'overread.key'}, ca: {pki / trust}}}\n"
        "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n"
        "    retry: {max_attempts: 3, backoff_base_seconds: 0.2, backoff_max_seconds: 1, ack_timeout_seconds: 2}\n",
        encoding="utf-8",
    )
    config = tmp_path / "overread.yaml"
    config.write_text("destinations: destinations.yaml\n", encoding="utf-8")
    return config


def test_tls_certificate_problem_does_not_charge_rows_then_mutual_tls_delivers(tmp_path: Path, oru: bytes) -> None:
    """Over TLS a RIS certificate the daemon does not trust fails the handshake: a connect failure, rows keep
    attempts 0 however many times it is tried; with the right CA the rows go out over mutual TLS, once each."""
    import ssl

    from tests.integration.test_tls import _issue, _write

    pki = tmp_path / "pki"
    pki.mkdir()
    ca, ca_key = _issue("Test CA", None, None, ca=True)
    _write(pki / "ca", ca)
    server, server_key = _issue("localhost", ca_key, ca.subject, san="localhost")
    _write(pki / "server", server, server_key)
    client, client_key = _issue("overread", ca_key, ca.subject)
    _write(pki / "overread", client, client_key)
    other_ca, _ = _issue("Other CA", None, None, ca=True)
    _write(pki / "other-ca", other_ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / "server.crt"), str(pki / "server.key"))
    context.load_verify_locations(str(pki / "ca.crt"))
    context.verify_mode = ssl.CERT_REQUIRED  # the RIS wants our client certificate
    ris = TestRis(free_port(), tls=context)
    ris.start()
    daemon = start_daemon(tmp_path, tls_config(tmp_path, ris.port, pki, trust="other-ca.crt"))
    try:
        assert send_all(daemon, [message(oru, f"TLS{i}", f"ACC{i}") for i in range(2)]) == ["AA", "AA"]

        def handshake_failures() -> list[dict[str, object]]:
            return [
                line
                for line in daemon.log_lines()
                if line.get("event") == "outbox_retry_scheduled"
                and line.get("reason") == "connect_failed"
                and line.get("error_type") == "TlsHandshakeFailed"
            ]

        wait_until(lambda: len(handshake_failures()) > 3)  # more than max_attempts
        assert [(r["state"], r["attempts"]) for r in outbox(daemon)] == [("pending", 0), ("pending", 0)]
        assert ris.received == []
        stop_daemon(daemon)

        tls_config(tmp_path, ris.port, pki, trust="ca.crt")
        daemon.start()
        ris.wait_for(lambda: len(ris.applied) == 2)
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)))
        rows = outbox(daemon)
        assert [r["attempts"] for r in rows] == [1, 1]
        assert ris.received_ids() == [r["control_id"] for r in rows]
        assert "overread" in ris.client_names
    finally:
        stop_daemon(daemon)
        ris.stop()


def test_kill9_while_a_sender_streams_sends_routing_messages_only_for_accepted_messages(
    tmp_path: Path, ris: TestRis, oru: bytes
) -> None:
    """Killed (-9) while a sender streams messages and the RIS takes routing messages: nothing ACKed is lost, and
    no routing message exists for a message the daemon did not store as accepted.

    The one message in flight at the kill either was never stored (then it has no routing message, ever) or was
    committed just before the kill (then the sender's resend gets the stored AA, as any unanswered message is resent).
    """
    import threading

    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port))
    acked: list[int] = []
    unanswered: list[int] = []

    def stream() -> None:
        conn = MllpConnection(daemon.address)
        try:
            for i in range(500):
                try:
                    code = msa(conn.request(message(oru, f"S{i}", f"KS{i}")))[0]
                except OSError:
                    unanswered.append(i)
                    return
                assert code == "AA"
                acked.append(i)
        finally:
            conn.close()

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    ris.wait_for(lambda: len(ris.applied) >= 5)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    sender.join(timeout=30)
    assert not sender.is_alive() and len(unanswered) == 1, "the stream ends with the message in flight at the kill"
    daemon.start()
    try:
        stored = {str(m["message_id"]): m for m in daemon.messages()}
        assert {f"S{i}" for i in acked} <= set(stored), "a message ACKed AA is on disk"
        assert all(m["ack_code"] == "AA" for m in stored.values())
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)), timeout=60)
        rows = outbox(daemon)
        assert {r["accession"] for r in rows} == {f"KS{int(mid[1:])}" for mid in stored}
        sent_for = {routed_accession(payload) for _, payload in ris.received}
        assert sent_for == {r["accession"] for r in rows}, "routing messages only for stored, accepted messages"
        assert sorted(ris.applied) == sorted(r["control_id"] for r in rows)
        (last,) = unanswered
        # The sender resends what it never got an answer for; from then on ACKed == routed, exactly.
        assert send_all(daemon, [message(oru, f"S{last}", f"KS{last}")]) == ["AA"]
        wait_until(lambda: all(r["state"] == "delivered" for r in outbox(daemon)))
        ris.wait_for(lambda: len(ris.applied) == len(acked) + 1)
        assert {routed_accession(payload) for _, payload in ris.received} == {f"KS{i}" for i in [*acked, last]}
    finally:
        stop_daemon(daemon)


def test_a_hostile_ris_answer_reaches_neither_the_log_nor_the_row_nor_a_terminal(
    tmp_path: Path, ris: TestRis, oru: bytes
) -> None:
    """A RIS that answers with 100 KB of MSA-1 (carrying a patient's name) got it written into
    the log's ``reason`` and the row's last error; an ERR-3 holding an escape sequence and markup
    went into the row, and `overread outbox list` printed it to the operator's terminal. Now an
    MSA-1 that is not two letters makes the answer unreadable (retried as such), and an ERR-3
    code that is not letters and digits is left out (docs/outbound.md, "Answers")."""
    ris.script.extend(
        ["AR" + "ZZHOSTILENAME" * 8000, "AE\rERR||PID^1^3|204\x1b[2J<b>ZZHOSTILENAME^Unknown key^HL70357|E"]
    )
    ris.mode = "AA"
    ris.start()
    daemon = start_daemon(tmp_path, write_config(tmp_path, ris.port, max_attempts=5, backoff_base=0.1, backoff_max=0.2))
    try:
        assert send_all(daemon, [message(oru, "HOSTILE1", "ACC1")]) == ["AA"]
        wait_until(lambda: outbox(daemon)[0]["state"] == "delivered")
        (row,) = outbox(daemon)
        assert row["attempts"] == 3
        listed = subprocess.run(
            [sys.executable, "-m", "listener", "outbox", "list", "--state-dir", str(daemon.state_dir)],
            capture_output=True,
            cwd=REPO,
            timeout=60,
            check=True,
        ).stdout
        assert b"\x1b" not in listed and b"<b>" not in listed
        assert b"ZZHOSTILENAME" not in listed
        retries = [line for line in daemon.log_lines() if line.get("event") == "outbox_retry_scheduled"]
        assert [line["reason"] for line in retries] == ["unreadable_ack", "answer"]
        assert "ZZHOSTILENAME" not in daemon.stdout()
    finally:
        stop_daemon(daemon)
