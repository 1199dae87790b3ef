"""``/console/policy``: the live routing policy and the what-if, against a real daemon fed with
the samples (docs/console.md, "Policy and what-if").

The daemon receives every sample of samples/hl7 and two accessions read first by a Nocturna
teleradiology reader and finalled by Lakeshore (tests/integration/test_scorecard.py): one final
adds a pneumothorax the preliminary denied (a grade 3b discrepancy). The stricter sample policy
sends every external preliminary to a selective overread, so it finds that read.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, overread_json, start_configured
from tests.integration.test_console import Browser, _client, _hidden
from tests.integration.test_scorecard import _final, _prelim

ANALYST = "policy-analyst-token-1"
MANAGER = "policy-manager-token-2"
STRICTER = "samples/policies/stricter.yaml"
#: Patient data of the samples that no page may show.
PATIENT_DATA = ("ZZDEMO", "ZZTEST", "ZZ9000103", "NORA")


@pytest.fixture(name="fed", scope="module")
def fixture_fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDaemon, Path]]:
    config = "http_clients:\n" + _client("analyst", ANALYST, "console, phi") + _client("manager", MANAGER, "console")
    daemon, path = start_configured(tmp_path_factory.mktemp("policy"), config)
    try:
        messages = [p.read_bytes() for p in sorted((REPO / "samples/hl7").glob("*.hl7"))]
        messages += [_prelim("CP-P1", b"CP1"), _final("CP-F1", b"CP1", pneumothorax=True)]
        messages += [_prelim("CP-P2", b"CP2"), _final("CP-F2", b"CP2")]
        for raw in messages:
            conn = MllpConnection(daemon.address)
            try:
                conn.request(raw)
            finally:
                conn.close()
        yield daemon, path
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


def _signed_in(daemon: RunningDaemon, token: str) -> Browser:
    browser = Browser(daemon)
    status, _, _ = browser.sign_in(token)
    assert status == 303
    return browser


def _figures(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what names the run (window, candidate name and file, the rates' label)."""
    out = {k: v for k, v in doc.items() if k not in ("window", "history_source")}
    out["candidate"] = {k: v for k, v in doc["candidate"].items() if k not in ("name", "source")}
    return out


def test_the_policy_page_lists_the_live_rules_in_words(fed: tuple[RunningDaemon, Path]) -> None:
    daemon, _ = fed
    browser = _signed_in(daemon, MANAGER)
    status, headers, page = browser.request("GET", "/console/policy")
    assert status == 200, page
    text = html.unescape(page)
    assert "<h1>Routing policy</h1>" in page and 'aria-current="page">Policy' in page
    version = re.search(r"version <code>(default-2026\.11\+[0-9a-f]{10})</code>", page)
    assert version, "the daemon's routing version is shown"
    for rule in ("overnight_external_neuro_prelim", "critical_finding_affirmed", "qa_errors_return_to_author"):
        assert f"<code>{rule}</code>" in page
    assert (
        "When a critical finding is stated as present: a selective overread (selective_overread) in pool "
        "critical_results, priority stat, due within 60 min." in text
    )
    assert '<td><code>external_peer_review_sample</code></td><td class="num">5.0%</td><td><code>2026-Q4</code>' in page
    assert "Pinevale Health" in page
    for name in ("samples/policies/stricter.yaml", "samples/policies/looser.yaml", "policies/routing.yaml"):
        assert f'<option value="{name}"' in page
    assert "script" not in headers["content-security-policy"]


def test_a_what_if_of_the_stricter_sample_matches_overread_simulate(fed: tuple[RunningDaemon, Path]) -> None:
    daemon, config = fed
    browser = _signed_in(daemon, MANAGER)
    query = f"/console/policy?candidate={quote(STRICTER, safe='')}&since=30d"
    status, headers, body = browser.request("GET", query + "&format=json")
    assert status == 200 and headers["content-type"].startswith("application/json"), body
    doc = json.loads(body)
    base, cand = doc["baseline"], doc["candidate"]
    assert base["name"] == "current" and cand["name"] == STRICTER and cand["version"].startswith("stricter-sample")
    assert base["reports"] == cand["reports"] >= 25
    assert cand["workload"]["reads"] > base["workload"]["reads"]
    assert cand["workload"]["minutes"] > base["workload"]["minutes"]
    (case,) = [c for c in doc["discrepancy_cases"] if c["accession"] == "CP1"]
    assert (case["grade"], case["baseline_sends"], case["candidate_sends"]) == ("3b", False, True)
    assert case["control_id"] == "CP-P1" and case["reader"] == "NT7741" and len(case["patient_hash"]) == 16
    # The command on the same store gives the same figures.
    assert _figures(
        overread_json(config, daemon.state_dir, "simulate", "--policy", STRICTER, "--since", "30d")
    ) == _figures(doc)

    status, _, page = browser.request("GET", query)
    assert status == 200, page
    reads = re.search(r'<th scope="row">second reads</th><td class="num">(\d+)</td><td class="num">(\d+)</td>', page)
    assert reads and (int(reads[1]), int(reads[2])) == (base["workload"]["reads"], cand["workload"]["reads"])
    assert '<img class="chart" src="data:image/svg+xml;base64,' in page
    released, still_sent = page.split("Still sent to a second read by the candidate")
    assert "CP1" not in released.split("Released unseen by the candidate")[1]
    assert "<td>CP1</td>" in still_sent and "<code>CP-P1</code>" in still_sent
    assert "second reads by site" in page  # the CLI's table, under <details>
    for secret in PATIENT_DATA:
        assert secret not in page and secret not in body
    assert "Sampled:" not in page  # the samples are far below the console's cap


def test_a_pasted_policy_runs_and_a_broken_one_shows_the_loaders_message_with_its_line(
    fed: tuple[RunningDaemon, Path],
) -> None:
    daemon, _ = fed
    browser = _signed_in(daemon, MANAGER)
    status, _, page = browser.request("GET", "/console/policy")
    csrf = _hidden(page, "csrf")
    stricter = (REPO / STRICTER).read_text(encoding="utf-8")

    status, _, page = browser.request("POST", "/console/policy", {"csrf": csrf, "since": "7d", "policy": stricter})
    assert status == 200, page
    assert "vs candidate (pasted policy) <code>stricter-sample-2026.12+" in page and "Window: last 7d (" in page

    broken = stricter.replace("    bucket: selective_overread\n", "    bucket: second_look\n", 1)
    line = broken.splitlines().index("    bucket: second_look") + 1
    status, _, page = browser.request("POST", "/console/policy", {"csrf": csrf, "since": "30d", "policy": broken})
    assert status == 400
    assert (
        f"<strong>(pasted policy), line {line}</strong>: rules.critical_finding_affirmed.bucket: unknown bucket "
        in html.unescape(page)
    )
    assert "bucket: second_look" in page  # the text is offered again for correction, escaped in the textarea

    status, _, page = browser.request(
        "POST", "/console/policy", {"csrf": csrf, "policy": "version: x\npools: [a, b\nrules: {}\n"}
    )
    assert status == 400 and "<strong>(pasted policy), line 3, column 6</strong>: invalid YAML" in page

    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nrules: *c\n'
    status, _, page = browser.request("POST", "/console/policy", {"csrf": csrf, "policy": bomb})
    assert status == 400 and "line 1</strong>: anchors and aliases (&amp;name, *name) are not accepted here" in page

    status, _, page = browser.request("POST", "/console/policy", {"csrf": csrf, "policy": "#" * (256 * 1024 + 1)})
    assert status == 400 and "262,145 bytes is more than the 262,144 accepted" in page
    assert "#" * 100 not in page


def test_a_post_without_the_csrf_token_is_refused(fed: tuple[RunningDaemon, Path]) -> None:
    daemon, _ = fed
    browser = _signed_in(daemon, ANALYST)
    stricter = (REPO / STRICTER).read_text(encoding="utf-8")
    status, _, page = browser.request("POST", "/console/policy", {"policy": stricter})
    assert status == 403 and "CSRF token is missing or wrong" in page
    status, _, page = browser.request("POST", "/console/policy", {"csrf": "forged", "policy": stricter})
    assert status == 403
    # A picked file that is not one of the listed ones is not read.
    status, _, page = browser.request("GET", "/console/policy?candidate=..%2F..%2Fetc%2Fpasswd")
    assert status == 400 and "pick one of the listed policy files" in page
