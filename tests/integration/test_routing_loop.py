"""The loop into routing, through the real daemon: live discrepancy figures change the next decision.

The store receives, over MLLP, an external reader's (NT7741, Nocturna
Teleradiology) preliminary chest radiographs, each followed by an internal
final that adds a large pneumothorax (a critical finding added: a "b" grade,
significant), and an internal reader's (R1187) preliminaries whose finals say
the same (grade 1). With ``outcomes.refresh_seconds: 1`` the daemon computes
the figures from its store; the policy is the shipped one with the
``reader_discrepancy_above_threshold`` rule's ``min_reads`` lowered to 3, so
three pairs make a rate. NT7741's readers.yaml snapshot (11/512, 2.1%) is
below the 5% threshold: only the live figures can route its next preliminary
to selective overread, over MLLP and over FHIR. R1187's next one is not.
With live figures off (``refresh_seconds: 0``), the same store routes by the
snapshot, and the explanation says so.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import REPO, RunningDaemon
from tests.integration.test_http import post
from tests.integration.test_priors import _send, _variant

#: One HTTP client that may submit FHIR reports and read /api (the routes are read there).
TOKEN = "routing-loop-operator-token"

SAMPLE = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
FHIR_SAMPLE = (REPO / "samples/fhir/xr-chest-2v-normal.json").read_text(encoding="utf-8")
RULE = "reader_discrepancy_above_threshold"


def _prelim(control_id: str, accession: str, reader: bytes) -> bytes:
    return _variant(
        SAMPLE,
        control_id,
        (b"A2611170088", accession.encode()),
        (b"R1311^DELACROIX", reader + b"^READER"),
        (b"R1311&DELACROIX", reader + b"&READER"),
        (b"|CR|F||", b"|CR|P||"),
        (b"||||||F|||", b"||||||P|||"),
        (b"|20261117103400-0600||CR|", b"|20261117093400-0600||CR|"),
    )


def _final(control_id: str, accession: str, *, critical: bool) -> bytes:
    changes = [(b"A2611170088", accession.encode())]
    if critical:
        changes += [
            (
                b"No focal consolidation, pleural effusion or pneumothorax.",
                b"No focal consolidation or pleural effusion. There is a large right pneumothorax.",
            ),
            (b"No acute cardiopulmonary abnormality.", b"Large right pneumothorax."),
        ]
    return _variant(SAMPLE, control_id, *changes)


def _fhir_prelim(accession: str, reader: str) -> bytes:
    doc = json.loads(FHIR_SAMPLE.replace("A2611170088", accession).replace('"R1311"', json.dumps(reader)))
    doc["status"] = "preliminary"
    doc["issued"] = "2026-11-17T09:34:00-06:00"
    return json.dumps(doc).encode()


def _setup(tmp_path: Path, refresh_seconds: int) -> Path:
    policies = tmp_path / "policies"
    if not policies.exists():
        shutil.copytree(REPO / "policies", policies)
        routing = policies / "routing.yaml"
        text = routing.read_text(encoding="utf-8")
        rule = "reader_discrepancy_rate: {above: 0.05, min_reads: 50}"
        assert rule in text
        routing.write_text(text.replace(rule, "reader_discrepancy_rate: {above: 0.05, min_reads: 3}"), encoding="utf-8")
    config = tmp_path / f"overread-{refresh_seconds}.yaml"
    config.write_text(
        f"policies: {policies}\n"
        f"outcomes:\n  refresh_seconds: {refresh_seconds}\n  window_days: 3650\n"
        "http_clients:\n"
        f"  analyst: {{token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()},"
        " allow: [submit, read, operator]}\n",
        encoding="utf-8",
    )
    return config


def _get(daemon: RunningDaemon, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port or 0, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        return json.loads(body) if path.startswith("/api") else body.decode()
    finally:
        conn.close()


def _route(daemon: RunningDaemon, query: str) -> dict[str, Any]:
    """The stored route of the one message ``query`` finds (``message_id=ID`` or ``accession=A``)."""
    (summary,) = _get(daemon, f"/api/messages?{query}")
    (report,) = _get(daemon, f"/api/messages/{summary['message_pk']}")["reports"]
    route: dict[str, Any] = report["route"]
    return route


def _rule_line(route: dict[str, Any]) -> str:
    return next(line for line in route["explanation"] if line.startswith(f"{RULE} "))


def _refreshes(daemon: RunningDaemon) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines() if line["event"] == "live_figures_refreshed"]


def _wait_for_fresh_figures(daemon: RunningDaemon) -> None:
    """Wait for two more refreshes: refreshes never overlap, so the second began after every save so far."""
    seen = len(_refreshes(daemon))
    deadline = time.monotonic() + 90
    while len(_refreshes(daemon)) < seen + 2:
        assert time.monotonic() < deadline, "no live figures refresh in 90 s"
        failed = [line for line in daemon.log_lines() if line["event"] == "live_figures_failed"]
        assert not failed, failed
        time.sleep(0.2)


def test_a_reader_above_threshold_is_routed_to_overread_from_the_next_message(tmp_path: Path) -> None:
    live = _setup(tmp_path, 1)
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = RunningDaemon(tmp_path / "state", logs, extra=("--config", str(live)))
    daemon.start()
    try:
        for i in range(3):
            _send(daemon, _prelim(f"LOOP-P{i}", f"LOOP{i}", b"NT7741"))
            _send(daemon, _final(f"LOOP-F{i}", f"LOOP{i}", critical=True))
            _send(daemon, _prelim(f"CALM-P{i}", f"CALM{i}", b"R1187"))
            _send(daemon, _final(f"CALM-F{i}", f"CALM{i}", critical=False))
        # Before the figures include these pairs, NT7741 routes by its snapshot (2.1%): no overread rule.
        first = _route(daemon, "message_id=LOOP-P0")
        assert RULE not in first["reasons"]
        _wait_for_fresh_figures(daemon)
        assert _refreshes(daemon)[-1]["count"] == 2  # NT7741 and R1187 have graded reads

        _send(daemon, _prelim("LOOP-NEXT", "LOOP9", b"NT7741"))
        _send(daemon, _prelim("CALM-NEXT", "CALM9", b"R1187"))
        reply = post(daemon.http_port or 0, _fhir_prelim("LOOPFHIR", "NT7741"), token=TOKEN)
        assert reply.status == 201, reply.body

        for query in ("message_id=LOOP-NEXT", "accession=LOOPFHIR"):
            route = _route(daemon, query)
            assert route["bucket"] == "selective_overread", route
            assert RULE in route["reasons"]
            line = _rule_line(route)
            assert re.search(
                r"reader_discrepancy_rate NT7741 100\.0% \(3/3 graded reads, "
                r"store 3650 d to \d{4}-\d\d-\d\dT\d\d:\d\dZ\) above 5\.0%",
                line,
            ), line
            assert "readers.yaml" not in line
        calm = _route(daemon, "message_id=CALM-NEXT")
        assert RULE not in calm["reasons"]
        line = _rule_line(calm)
        assert re.search(r"R1187 0\.0% \(0/3 graded reads, store 3650 d to [^)]*\) not above 5\.0%", line), line

        metrics = _get(daemon, "/metrics")
        assert re.search(r'^overread_live_figures_refreshes_total\{outcome="ok"\} [1-9]', metrics, re.M)
        assert re.search(r'^overread_live_figures_refreshes_total\{outcome="failed"\} 0\.0$', metrics, re.M)
        assert re.search(r"^overread_live_figures_age_seconds \d", metrics, re.M)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0

    # The same store with live figures off: the readers.yaml snapshot decides, labelled as the fallback.
    off = _setup(tmp_path, 0)
    logs = tmp_path / "logs-off"
    logs.mkdir()
    daemon = RunningDaemon(tmp_path / "state", logs, extra=("--config", str(off)))
    daemon.start()
    try:
        _send(daemon, _prelim("LOOP-SNAP", "LOOP10", b"NT7741"))
        route = _route(daemon, "message_id=LOOP-SNAP")
        assert RULE not in route["reasons"]
        line = _rule_line(route)
        assert (
            "reader_discrepancy_rate NT7741 2.1% (11/512 reviewed reads, "
            "readers.yaml snapshot as of 2026-10-31 (fallback: no live figures)) not above 5.0%"
        ) in line, line
        assert _refreshes(daemon) == []
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0
    # Nothing about a patient in the log lines of either run.
    assert "ZZ9000103" not in daemon.stdout() and "ZZDEMO" not in daemon.stdout()
