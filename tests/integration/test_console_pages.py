"""The console's overview and overread pages against a real daemon fed with our samples (docs/console.md).

The daemon gets Halcyon's three preliminaries by Nocturna's reader and their three finals (one
adds a pneumothorax: grade 3b), one message Halcyon sends as ORU^R02 in original mode (refused:
AR), and Nocturna's overnight CT head preliminary; a destination that never answers keeps the
routing messages pending. The pages' numbers are checked against what the daemon stored, read
through ``/api`` and ``/fhir/Task``.
"""

from __future__ import annotations

import html
import re
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa, start_configured
from tests.integration.test_console import ANALYST, MANAGER, Browser, _client
from tests.integration.test_history import _get
from tests.integration.test_priors import _send, _variant
from tests.integration.test_scorecard import SAMPLE, _final, _prelim

TELERAD = (REPO / "samples/hl7/ct-head-wo-overnight-telerad-prelim.hl7").read_bytes()
#: What a page for a caller without ``phi`` must never show: the samples' patient ids and names.
PATIENT_DATA = ("ZZ9000103", "ZZ9000101", "ZZDEMO", "NORA", "ZZTEST", "WALTER")


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="daemon", scope="module")
def fixture_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("console-pages")
    (root / "destinations.yaml").write_text(
        "destinations:\n"
        "  ris:\n"
        f"    endpoint: tcp:host=127.0.0.1:port={_unused_port()}\n"
        "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n",
        encoding="utf-8",
    )
    config = (
        f"destinations: {root / 'destinations.yaml'}\n"
        "http_clients:\n"
        + _client("analyst", ANALYST, "console, operator, phi, read")
        + _client("manager", MANAGER, "console")
    )
    daemon, _ = start_configured(root, config)
    try:
        for n in (1, 2, 3):
            _send(daemon, _prelim(f"CP-P{n}", f"CP{n}".encode()))
            _send(daemon, _final(f"CP-F{n}", f"CP{n}".encode(), pneumothorax=n == 1))
        _send(daemon, _variant(TELERAD, "CP-T1"))
        refused = _variant(SAMPLE, "CP-R1", (b"ORU^R01^ORU_R01", b"ORU^R02^ORU_R01"), (b"|||AL|NE", b"|||||"))
        conn = MllpConnection(daemon.address)
        try:
            assert msa(conn.request(refused)) == ("AR", "CP-R1")
        finally:
            conn.close()
        yield daemon
    finally:
        daemon.stop()


def _page(daemon: RunningDaemon, token: str, path: str) -> str:
    browser = Browser(daemon)
    status, _, _ = browser.sign_in(token)
    assert status == 303
    status, _, page = browser.request("GET", path)
    assert status == 200, page
    return page


def _table(page: str, table_id: str) -> list[list[str]]:
    """The text of each body row's cells (th and td) of the table with that id."""
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.DOTALL)
    assert found, f"no table {table_id}"
    body = found.group(1).split("<tbody>", 1)[1]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.DOTALL)
        rows.append([html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
    return rows


def test_the_overview_counts_each_sender_and_the_nack_ratio_and_shows_the_outbox(daemon: RunningDaemon) -> None:
    stored = Counter(str(m["sender"]["application"]) for m in daemon.messages())  # type: ignore[index]
    assert stored == {"HALCYON_RIS": 7, "NOCTURNA_RAD": 1}
    for window in ("", "?window=7d"):
        page = _page(daemon, MANAGER, f"/console/{window}")
        header = re.search(r'<table id="senders">\s*<thead><tr>(.*?)</tr>', page, re.DOTALL)
        assert header
        codes = [html.unescape(c) for c in re.findall(r'<th scope="col" class="num">([^<]*)</th>', header.group(1))]
        rows = {r[0]: r[1:] for r in _table(page, "senders")}
        assert set(rows) == {"HALCYON_RIS^LEMC", "NOCTURNA_RAD^NOCTURNA TELERAD"}
        halcyon = dict(zip(codes, rows["HALCYON_RIS^LEMC"], strict=True))
        assert halcyon["Messages"] == "7" and halcyon["AR"] == "1"
        assert halcyon["NACK ratio"] == "14.3%"  # 1 of 7
        telerad = dict(zip(codes, rows["NOCTURNA_RAD^NOCTURNA TELERAD"], strict=True))
        assert telerad["Messages"] == "1" and telerad["AR"] == "0" and telerad["NACK ratio"] == "0.0%"
        assert '<td class="num" id="total-messages">8</td>' in page
        assert "data:image/svg+xml;base64," in page
        for secret in PATIENT_DATA:
            assert secret not in page
    outbox = re.search(r'<h2 id="outbox-h">Outbox</h2>.*?<tbody>(.*?)</tbody>', page, re.DOTALL)
    assert outbox and "<td>ris</td>" in outbox.group(1)
    pending = re.search(r"<td>ris</td><td class=\"num\">(\d+)</td>", outbox.group(1))
    assert pending and int(pending.group(1)) >= 1


def test_the_overread_page_shows_the_routed_bucket_mix_worklist_and_scorecard(daemon: RunningDaemon) -> None:
    buckets: Counter[str] = Counter()
    status, listing = _get(daemon, "/api/messages?limit=100", ANALYST)
    assert status == 200
    status, newest = _get(daemon, "/api/messages?limit=100&order=newest", ANALYST)
    assert status == 200 and newest == listing[::-1]
    status, older = _get(daemon, f"/api/messages?order=newest&before={newest[0]['message_pk']}", ANALYST)
    assert status == 200 and older == newest[1:]
    assert _get(daemon, "/api/messages?order=sideways", ANALYST)[0] == 400
    for message in listing:
        status, detail = _get(daemon, f"/api/messages/{message['message_pk']}", ANALYST)
        assert status == 200
        for report in detail["reports"]:
            buckets[report["route"]["bucket"]] += 1
    assert sum(buckets.values()) == 7

    page = _page(daemon, MANAGER, "/console/overread?by=group&min_reads=1")
    assert {r[0]: int(r[1]) for r in _table(page, "bucket-totals")} == dict(buckets)

    status, tasks = _get(daemon, "/fhir/Task?status=requested&_count=1000", ANALYST)
    assert status == 200
    pools = Counter(e["resource"]["owner"]["identifier"]["value"] or "(no pool)" for e in tasks.get("entry", []))
    assert {r[0]: int(r[1]) for r in _table(page, "worklist")} == dict(pools)

    (week,) = _table(page, "turnaround")
    assert week[1:] == ["3", "120.0", "120.0"]  # three finals, each two hours after its preliminary

    groups = {r[0]: r[1:] for r in _table(page, "rates")}
    nocturna = groups["Nocturna Teleradiology"]
    # reads, graded, then (count · rate, interval) for any and significant discrepancies
    assert nocturna[1] == "3"
    assert nocturna[4] == "1 · 33.3%" and re.fullmatch(r"\d+\.\d–\d+\.\d%", nocturna[5])
    for secret in PATIENT_DATA:
        assert secret not in page

    readers = {r[0]: r[1:] for r in _table(_page(daemon, MANAGER, "/console/overread?min_reads=1"), "rates")}
    assert readers["NT7741"][0] == "Nocturna Teleradiology" and readers["NT7741"][2] == "3"
    sites = _page(daemon, ANALYST, "/console/overread?by=site&min_reads=bogus")
    assert "min_reads must be a whole number" in sites and "Discrepancy rates by site" in sites
