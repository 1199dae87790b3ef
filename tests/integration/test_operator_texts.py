"""What an operator reads after a RIS refused routing messages and a retry delivered them, and
after a FHIR POST (docs/operations.md "Resending and unsticking the outbox", docs/console.md,
docs/http-api.md).

Two real daemons: the "RIS" is a second overread daemon (no destinations of its own), which
answers our ORM^O01 routing message ``AR`` with ERR-3 ``200``; ours retries it (``on_reject:
retry``) until it is dead. Then the test RIS answering AA takes the port and ``overread outbox
retry --all-dead`` delivers the row. The CLI and the console must then say that the refusal
came before the delivery, what ERR-3 200 means, and how many attempts the row had before the
retry restarted its count.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    free_port,
    msa,
    post_report,
    start_configured,
)
from tests.integration.ris import TestRis
from tests.integration.test_console import ANALYST, Browser, _client

SAMPLE = REPO / "samples" / "hl7" / "xr-chest-pneumothorax-no-communication.hl7"
ACCESSION = "A2611190301"
FHIR_SAMPLE = REPO / "samples" / "fhir" / "xr-chest-2v-normal.json"
FEEDER = "feeder-token-ops2"
#: ERR-3 200 as the views name it (listener/errors.py, HL7 table 0357).
ERR_200 = "ERR-3 200 Unsupported message type: the receiver does not take this message type (MSH-9)"


@dataclass
class Setup:
    daemon: RunningDaemon
    pk: int
    #: The refusing daemon's overview (a console of a daemon without destinations), read while it ran.
    refuser_overview: str


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listener", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _wait_page(browser: Browser, path: str, text: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        page = browser.request("GET", path)[2]
        if text in page:
            return page
        assert time.monotonic() < deadline, f"{text!r} never appeared on {path}"
        time.sleep(0.2)


@pytest.fixture(name="setup", scope="module")
def fixture_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("operator-texts")
    port = free_port()
    # The refusing "RIS": an overread daemon on the destination's port, with a console.
    (root / "refuser").mkdir()
    (root / "refuser" / "logs").mkdir()
    refuser_config = root / "refuser" / "overread.yaml"
    refuser_config.write_text("http_clients:\n" + _client("analyst", ANALYST, "console"), encoding="utf-8")
    refuser = RunningDaemon(
        root / "refuser" / "state", root / "refuser" / "logs", port=port, extra=("--config", str(refuser_config))
    )
    refuser.start()
    ris = TestRis(port)
    daemon: RunningDaemon | None = None
    try:
        shutil.copytree(REPO / "mappings", root / "mappings")
        (root / "destinations.yaml").write_text(
            "version: 1\ndestinations:\n  ris:\n"
            f"    endpoint: tcp:host=127.0.0.1:port={port}\n"
            "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n"
            "    retry: {max_attempts: 3, backoff_base_seconds: 0.2, backoff_max_seconds: 1,"
            " ack_timeout_seconds: 5, on_reject: retry}\n",
            encoding="utf-8",
        )
        daemon, _ = start_configured(
            root,
            "mappings: mappings\ndestinations: destinations.yaml\nhttp_clients:\n"
            + _client("analyst", ANALYST, "console, operator, phi")
            + _client("feeder", FEEDER, ""),
        )
        conn = MllpConnection(daemon.address)
        try:
            assert msa(conn.request(SAMPLE.read_bytes()))[0] == "CA"
        finally:
            conn.close()
        browser = Browser(daemon)
        browser.sign_in(ANALYST)
        page = browser.request("GET", f"/console/messages?accession={ACCESSION}")[2]
        (pk,) = {int(n) for n in re.findall(r'href="/console/messages/(\d+)"', page)}
        _wait_page(browser, f"/console/messages/{pk}", ">dead</td>")
        watcher = Browser(refuser)
        watcher.sign_in(ANALYST)
        refuser_overview = watcher.request("GET", "/console/")[2]
        assert refuser.stop() == 0
        ris.start()
        revived = _cli(daemon.state_dir, "outbox", "retry", "--all-dead")
        assert revived.returncode == 0, revived.stderr
        ris.wait_for(lambda: bool(ris.applied))
        _wait_page(browser, f"/console/messages/{pk}", ">delivered</td>")
        yield Setup(daemon, pk, refuser_overview)
    finally:
        ris.stop()
        if refuser.proc is not None and refuser.proc.poll() is None:
            refuser.stop()
        if daemon is not None:
            daemon.stop()


def test_show_names_the_refusal_before_delivery_its_code_and_the_earlier_attempts(setup: Setup) -> None:
    """``overread show``: attempts ``1 (3 before retry)``, the last error before delivery with ERR-3 named."""
    result = _cli(setup.daemon.state_dir, "show", f"pk:{setup.pk}", "--no-raw")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert re.search(r"row \d+ -> ris  accession A2611190301  delivered  attempts 1 \(3 before retry\)", text), text
    assert f"last error: before delivery: AR ({ERR_200})" in text
    assert f"dead: AR ({ERR_200})" in text  # the history names the code too
    doc = json.loads(_cli(setup.daemon.state_dir, "show", f"pk:{setup.pk}", "--format", "json").stdout)
    (row,) = doc["outbox"]
    assert (row["attempts"], row["attempts_before_retry"]) == (1, 3)
    assert row["last_error"] == "AR (ERR-3 200)"  # JSON keeps the text as stored
    listed = _cli(setup.daemon.state_dir, "outbox", "list").stdout
    assert f"before delivery: AR ({ERR_200})" in listed


def test_console_message_page_says_what_show_says(setup: Setup) -> None:
    """The console's routing table: the same texts as ``overread show``, from the same functions."""
    browser = Browser(setup.daemon)
    browser.sign_in(ANALYST)
    status, _, page = browser.request("GET", f"/console/messages/{setup.pk}")
    assert status == 200
    text = html.unescape(page)
    assert f"<td>before delivery: AR ({ERR_200})</td>" in text
    assert '<td class="num">1 (3 before retry)</td>' in text
    assert f"dead: AR ({ERR_200})</li>" in text
    assert "<td>AR (ERR-3 200)</td>" not in text


def test_overview_says_routing_is_off_without_destinations(setup: Setup) -> None:
    """A daemon without destinations says no routing message is sent, not "none queued yet"."""
    off = html.unescape(setup.refuser_overview)
    assert "Routing messages are not sent: no <code>destinations:</code> file is configured" in off
    assert "No routing messages queued yet." not in off
    browser = Browser(setup.daemon)
    browser.sign_in(ANALYST)
    on = browser.request("GET", "/console/")[2]
    assert "Routing messages are not sent" not in on
    assert '<td>ris</td><td class="num">0</td>' in on  # its outbox table instead


def test_show_finds_a_message_by_the_id_in_a_fhir_location(setup: Setup) -> None:
    """The id a FHIR POST's Location names is the report's, not a control id: ``show`` finds it anyway."""
    status, location = post_report(setup.daemon, FHIR_SAMPLE.read_bytes(), FEEDER)
    assert status == 201
    fhir_id = location.rpartition("/")[2]
    assert fhir_id and location == f"/fhir/DiagnosticReport/{fhir_id}"
    found = _cli(setup.daemon.state_dir, "show", fhir_id, "--no-raw")
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("message ") and "via http" in found.stdout.splitlines()[0]
    assert f'"fhir_id": "{fhir_id}"' in _cli(setup.daemon.state_dir, "show", fhir_id, "--format", "json").stdout
    missing = _cli(setup.daemon.state_dir, "show", "0123456789abcdef0123456789abcdef")
    assert missing.returncode == 1
    assert "nor a report with that FHIR id" in missing.stderr
    assert "overread messages --accession" in missing.stderr
