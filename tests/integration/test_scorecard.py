"""``GET /api/scorecard`` and ``overread scorecard`` against the real daemon (docs/http-api.md, docs/cli.md).

Nocturna Teleradiology's readers send three preliminaries, two over MLLP
(NT7741) and one as FHIR (NT7802), each reported 30 minutes after the exam;
the Lakeshore reader (R1311) finals each over MLLP two hours later. One final
adds a large pneumothorax the preliminary denied (a critical finding added:
grade 3b); the others only change the status (grade 1). Built from our own
samples, edited here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.integration.conftest import REPO, analyst_and_sender, overread_json, start_configured
from tests.integration.test_history import _get
from tests.integration.test_http import post
from tests.integration.test_priors import _send, _variant

SAMPLE = (REPO / "samples/hl7/xr-chest-2v-normal.hl7").read_bytes()
FHIR_SAMPLE = (REPO / "samples/fhir/xr-chest-2v-normal.json").read_text(encoding="utf-8")
_REPORT_TIME = b"|20261117103400-0600||CR|"
ANALYST = "scorecard-analyst-token"
SENDER = "scorecard-sender-token"


def _prelim(control_id: str, accession: bytes) -> bytes:
    return _variant(
        SAMPLE,
        control_id,
        (b"A2611170088", accession),
        (b"|CR|F||", b"|CR|P||"),
        (b"||||||F|||", b"||||||P|||"),
        (_REPORT_TIME, b"|20261117103600-0600||CR|"),
        (b"R1311", b"NT7741"),
    )


def _final(control_id: str, accession: bytes, pneumothorax: bool = False) -> bytes:
    raw = _variant(SAMPLE, control_id, (b"A2611170088", accession), (_REPORT_TIME, b"|20261117123600-0600||CR|"))
    if pneumothorax:
        raw = raw.replace(
            b"No focal consolidation, pleural effusion or pneumothorax.",
            b"No focal consolidation or pleural effusion. There is a large right pneumothorax.",
        ).replace(b"No acute cardiopulmonary abnormality.", b"Large right pneumothorax.")
    return raw


def _fhir_prelim(accession: str) -> bytes:
    doc = json.loads(FHIR_SAMPLE.replace("A2611170088", accession).replace('"R1311"', '"NT7802"'))
    doc["status"] = "preliminary"
    doc["issued"] = "2026-11-17T10:36:00-06:00"
    return json.dumps(doc).encode()


def _query(**params: str) -> str:
    # The daemon receives these now; their reports are of 2026-11-17: the window holds both.
    until = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    window = {"since": "2026-11-01T00:00:00Z", "until": until}
    return "/api/scorecard?" + "&".join(f"{k}={v}" for k, v in {**window, **params}.items())


def _cli(config: Path, state_dir: Path, query: str) -> dict[str, Any]:
    params = dict(p.split("=", 1) for p in query.split("?", 1)[1].split("&"))
    return overread_json(
        config,
        state_dir,
        "scorecard",
        *("--by", params["by"], "--since", params["since"], "--until", params["until"]),
        *("--min-reads", params["min_reads"]),
    )


def test_scorecard_over_the_api_and_the_cli(tmp_path: Path) -> None:
    daemon, config = start_configured(
        tmp_path,
        analyst_and_sender(ANALYST, SENDER, "submit, read, operator"),
    )
    try:
        _send(daemon, _prelim("SC-P1", b"SC1"))
        _send(daemon, _final("SC-F1", b"SC1", pneumothorax=True))
        _send(daemon, _prelim("SC-P2", b"SC2"))
        _send(daemon, _final("SC-F2", b"SC2"))
        assert daemon.http_port is not None
        reply = post(daemon.http_port, _fhir_prelim("SC3"), token=ANALYST)
        assert reply.status == 201, reply.body
        _send(daemon, _final("SC-F3", b"SC3"))

        query = _query(by="group", min_reads="1")
        status, doc = _get(daemon, query, ANALYST)
        assert status == 200, doc
        assert (doc["document_version"], doc["by"], doc["min_reads"], doc["only"]) == (1, "group", 1, None)
        assert [(r["key"], r["reads"], r["overread"], r["graded"]) for r in doc["rows"]] == [
            ("Lakeshore Radiology", 3, 0, 0),
            ("Nocturna Teleradiology", 3, 3, 3),
        ]
        nocturna = doc["rows"][1]
        assert nocturna["readers"] == ["NT7741", "NT7802"]
        d = nocturna["discrepancies"]
        assert (d["any"]["count"], d["significant"]["count"], d["3b"]["count"]) == (1, 1, 1)
        assert d["significant"]["rate"] == round(1 / 3, 6)
        assert 0 < d["significant"]["low"] < 1 / 3 < d["significant"]["high"] < 1
        assert nocturna["turnaround"] == {
            "prelim_minutes": {"count": 3, "median": 30.0, "p90": 30.0},
            "prelim_to_final_minutes": {"count": 3, "median": 120.0, "p90": 120.0},
        }
        text = json.dumps(doc)
        for secret in ("ZZ9000103", "ZZDEMO", "NORA", "ZZTEST"):
            assert secret not in text
        # The command reads the same store while the daemon runs and prints the same document.
        assert _cli(config, daemon.state_dir, query) == doc

        status, one = _get(daemon, _query(by="reader", only="nt7802", min_reads="30"), ANALYST)
        assert status == 200, one
        (row,) = one["rows"]
        assert (row["key"], row["group"], row["reads"], row["graded"]) == ("NT7802", "Nocturna Teleradiology", 1, 1)
        assert row["too_few"] and row["note"] == "1 graded read: too few for a rate (needs 30)"
        assert row["discrepancies"]["any"]["rate"] is None

        # Defaults: by reader, the last 90 days, at least 30 graded reads.
        status, default = _get(daemon, "/api/scorecard", ANALYST)
        assert status == 200 and default["by"] == "reader" and default["min_reads"] == 30

        assert _get(daemon, query, SENDER)[0] == 403
        for bad, message in (
            ("by=patient", "by must be one of reader, group, site, modality, body_region"),
            ("min_reads=0", "min_reads must be a whole number, 1 or more"),
            ("min_reads=ten", "min_reads must be a whole number, 1 or more"),
            ("since=yesterday", "since must be ISO 8601 with an offset, or Nd"),
            ("since=2026-11-18T00:00:00Z&until=2026-11-17T00:00:00Z", "since must be before until"),
            ("bogus=1", "unknown parameter; this query takes by, min_reads, only, since, until"),
        ):
            assert _get(daemon, f"/api/scorecard?{bad}", ANALYST) == (400, {"error": message}), bad
        assert _get(daemon, "/api/scorecard/x", ANALYST)[0] == 404
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0
