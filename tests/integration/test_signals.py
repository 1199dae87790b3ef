"""Operating signals against one real daemon (issue 11, items 5 and 6).

One daemon start covers, in order: per-sender metrics over mutual-TLS MLLP and
HTTP, reports inside a batch Bundle counted, the outbox's oldest pending age
per destination, the site-unknown warning and its counter, the routing / QA /
mapping versions in ``message_processed``, the FHIR Task worklist (no Task for
a release, a Task completed by the final), journald priority prefixes, then a
SIGHUP that swaps HTTP tokens, the TLS certificate and the destinations (and
names what needs a restart), a refused SIGHUP (config_invalid with file:line)
and ``overread config check`` on the same files.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from listener.hl7v2.mllp import MllpFramer, frame
from tests.integration.conftest import REPO, RunningDaemon, free_port, msa, with_control_id
from tests.integration.test_tls import _client, _issue, _write, fixture_pki  # noqa: F401 - the pki fixture

SAMPLES = REPO / "samples" / "fhir"
FHIR = "application/fhir+json"


def _call(port: int, method: str, path: str, body: bytes | None = None, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": FHIR} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _mllp_tls(port: int, context: ssl.SSLContext, payload: bytes) -> tuple[bytes, bytes]:
    """(ACK, the server certificate in DER) over one mutual-TLS connection."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        peer = sock.getpeercert(binary_form=True) or b""
        sock.sendall(frame(payload))
        framer = MllpFramer()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            frames = framer.feed(data)
            if frames:
                return frames[0], peer


def _lines(daemon: RunningDaemon) -> list[tuple[str, dict[str, Any]]]:
    """(priority prefix, parsed JSON) for each stdout line."""
    out = []
    for line in daemon.stdout().splitlines():
        match = re.match(r"^(<\d>)?(\{.*)$", line)
        assert match is not None, line[:80]
        out.append((match.group(1) or "", json.loads(match.group(2))))
    return out


def _wait_event(daemon: RunningDaemon, event: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [d for _, d in _lines(daemon) if d.get("event") == event]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {event} #{count}")


def _metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    text = _call(port, "GET", "/metrics")[1].decode()
    selector = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted((labels or {}).items())) + "}" if labels else "")
    found = re.search(rf"^{re.escape(selector)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{selector} not in /metrics"
    return float(found.group(1))


def _destinations(path: Path, names: list[str], port: int) -> None:
    path.write_text(
        "destinations:\n"
        + "".join(
            f"  {name}:\n"
            f"    endpoint: tcp:host=127.0.0.1:port={port}\n"
            "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n"
            "    retry: {max_attempts: 50, backoff_base_seconds: 30, backoff_max_seconds: 60, ack_timeout_seconds: 2}\n"
            for name in names
        ),
        encoding="utf-8",
    )


def _tasks(port: int, token: str, status: str) -> dict[str, dict[str, Any]]:
    code, body = _call(port, "GET", f"/fhir/Task?status={status}", token=token)
    assert code == 200
    return {e["resource"]["id"]: e["resource"] for e in json.loads(body).get("entry", [])}


def test_signals_and_reload_against_one_daemon(
    tmp_path: Path, pki: Path, oru: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metrics, logs, Tasks and SIGHUP reload of tokens, TLS certificate and destinations, on one real daemon."""
    mllp_port, dead_ris = free_port(), free_port()  # nobody listens on dead_ris: rows stay pending
    token1, token2 = "feeder-token-one-0123456789", "feeder-token-two-0123456789"
    (tmp_path / "feeder.token").write_text(token1 + "\n")
    dest = tmp_path / "destinations.yaml"
    _destinations(dest, ["ris"], dead_ris)
    config = tmp_path / "overread.yaml"
    body = (
        f"mllp: ssl:{mllp_port}:interface=127.0.0.1\n"
        f"tls_certificate: {pki / 'server.crt'}\ntls_private_key: {pki / 'server.key'}\n"
        f"tls_client_ca: {pki / 'ca.crt'}\n"
        "destinations: destinations.yaml\n"
        "http_clients:\n  feeder: {token_file: feeder.token, facility: NOWHERE}\n"
    )
    config.write_text(body)
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = RunningDaemon(
        tmp_path / "state",
        logs,
        port=mllp_port,
        extra=("--config", str(config), "--mllp", f"ssl:{mllp_port}:interface=127.0.0.1"),
    )
    # Under systemd stdout is the journal stream: JOURNAL_STREAM names its device and inode.
    stdout = logs / "stdout.1"
    stdout.touch()
    st = os.stat(stdout)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    daemon.start()
    monkeypatch.delenv("JOURNAL_STREAM")
    port = daemon.http_port
    assert port is not None
    try:
        # --- MLLP over mutual TLS: per-sender labels (MSH-3/MSH-4 of the corpus ORU)
        ack, first_cert = _mllp_tls(mllp_port, _client(pki, "ris-1"), with_control_id(oru, "SIG1"))
        assert msa(ack)[0] == "AA"
        msh = oru.split(b"\r")[0].decode("latin-1").split("|")
        app, fac = msh[2].split("^")[0], msh[3].split("^")[0]

        # --- HTTP: a batch Bundle of two reports (a release and a prelim routed to a final read)
        normal = json.loads((SAMPLES / "xr-chest-2v-normal.json").read_bytes())
        prelim = json.loads((SAMPLES / "ct-head-wo-overnight-telerad-prelim.json").read_bytes())
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": r, "request": {"method": "POST", "url": "DiagnosticReport"}} for r in (normal, prelim)
            ],
        }
        code, _ = _call(port, "POST", "/fhir", json.dumps(batch).encode(), token=token1)
        assert code == 200
        open_tasks = _tasks(port, token1, "requested")
        by_accession = {t["identifier"][0]["value"]: tid for tid, t in open_tasks.items() if t.get("identifier")}
        assert "A2611200044" in by_accession  # the prelim asks neuroradiology for a final read
        assert "A2611170088" not in by_accession  # released with no overread: no Task
        prelim_task = by_accession["A2611200044"]

        # --- The final for that accession completes the open Task.
        final = dict(prelim, id="nocturna-ct-head-final", status="final")
        code, _ = _call(port, "POST", "/fhir/DiagnosticReport", json.dumps(final).encode(), token=token1)
        assert code == 201
        assert prelim_task not in _tasks(port, token1, "requested")
        completed = _tasks(port, token1, "completed")
        assert completed[prelim_task]["status"] == "completed" and completed[prelim_task]["lastModified"]

        # --- Metrics
        assert _metric(port, "overread_reports_total", {"transport": "http", "feed": "default"}) == 3.0
        assert (
            _metric(port, "overread_messages_answered_total", {"code": "200", "feed": "default", "transport": "http"})
            == 1.0
        )
        assert (
            _metric(
                port,
                "overread_sender_messages_total",
                {"transport": "mllp", "sender_application": app, "sender_facility": fac, "code": "AA"},
            )
            == 1.0
        )
        assert (
            _metric(
                port,
                "overread_sender_messages_total",
                {"transport": "http", "sender_application": "feeder", "sender_facility": "NOWHERE", "code": "201"},
            )
            == 1.0
        )
        seen = _metric(
            port,
            "overread_sender_last_message_timestamp_seconds",
            {"transport": "http", "sender_application": "feeder", "sender_facility": "NOWHERE"},
        )
        assert abs(seen - time.time()) < 60
        assert _metric(port, "overread_directory_unknown_total", {"kind": "site"}) >= 3.0
        assert _metric(port, "overread_outbox_oldest_pending_age_seconds", {"destination": "ris"}) > 0.0

        # --- Logs: versions in every message_processed line; the site-unknown finding is counted there too
        processed = [d for _, d in _lines(daemon) if d.get("event") == "message_processed"]
        assert len(processed) == 3
        for line in processed:
            assert line["routing_version"].startswith("default-") and line["qa_version"] and line["mapping_version"]
            assert line["policy_version"] == line["qa_version"]
        assert all(prefix for prefix, _ in _lines(daemon))  # every line carries a journald priority
        assert {p for p, d in _lines(daemon) if d.get("event") == "listening"} == {"<6>"}

        # --- SIGHUP: new token, new server certificate, a second destination, and a restart-only change
        (tmp_path / "feeder.token").write_text(token2 + "\n")
        # A renewed server certificate (from a new CA our test client is told to trust as well).
        ca, ca_key = _issue("Test CA 2", None, None, ca=True)
        server2, server2_key = _issue("localhost", ca_key, ca.subject, san="localhost")
        _write(pki / "server", server2, server2_key)
        _destinations(dest, ["ris", "ris2"], dead_ris)
        config.write_text(body + "max_frame_size: 2048\n")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        reloaded = _wait_event(daemon, "policy_reloaded", 1)[-1]
        assert reloaded["level"] == "warning" and reloaded["reason"] == "restart_required"
        assert "max_frame_size" in reloaded["detail"]
        assert _call(port, "GET", "/fhir/Task?status=requested", token=token1)[0] == 401
        assert _call(port, "GET", "/fhir/Task?status=requested", token=token2)[0] == 200
        assert _metric(port, "overread_outbox_oldest_pending_age_seconds", {"destination": "ris2"}) == 0.0
        assert _metric(port, "overread_config_reloads_total", {"outcome": "applied"}) == 1.0
        client = _client(pki, "ris-1")
        client.load_verify_locations(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
        ack, second_cert = _mllp_tls(mllp_port, client, with_control_id(oru, "SIG2"))
        assert msa(ack)[0] == "AA"
        assert second_cert == server2.public_bytes(serialization.Encoding.DER) != first_cert

        # --- A bad destinations file: refused with file:line, nothing swapped
        dest.write_text(dest.read_text().replace("tcp:host=127.0.0.1", "nope:host=127.0.0.1", 1))
        daemon.proc.send_signal(signal.SIGHUP)
        invalid = _wait_event(daemon, "config_invalid", 1)[-1]
        assert invalid["path"] == str(dest) and invalid["line"] > 0 and invalid["reason"] == "reload_kept_old"
        assert [p for p, d in _lines(daemon) if d.get("event") == "config_invalid"] == ["<3>"]
        assert _call(port, "GET", "/fhir/Task?status=requested", token=token2)[0] == 200
        assert _metric(port, "overread_config_reloads_total", {"outcome": "refused"}) == 1.0

        # --- overread config check: the same verdict, without a store
        check = [sys.executable, "-m", "listener", "config", "check", "--config", str(config)]
        bad = subprocess.run(check, capture_output=True, cwd=REPO, timeout=60)
        assert bad.returncode == 2 and re.search(rf"{re.escape(str(dest))}:\d+: ", bad.stderr.decode())
        _destinations(dest, ["ris", "ris2"], dead_ris)
        good = subprocess.run(check, capture_output=True, cwd=REPO, timeout=60)
        assert good.returncode == 0, good.stderr.decode()
    finally:
        assert daemon.stop() == 0
