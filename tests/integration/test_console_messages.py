"""The console's message browser and operator actions against a real daemon (docs/console.md,
"Message browser" and "Operator actions").

One daemon with a destination (the test RIS answering AA) and three console clients: an analyst
(console, operator, phi), a manager (console only: no operator, no phi) and an operator without phi.
The sample's patient name, MRN and report words must never reach a caller without ``phi``.
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
from urllib.parse import parse_qs, urlsplit

import pytest

from listener.model import BUCKETS
from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    free_port,
    msa,
    post_report,
    start_configured,
)
from tests.integration.ris import TestRis, write_destinations
from tests.integration.test_console import ANALYST, MANAGER, Browser, _client, _hidden

#: A console client allowed the operator actions but not patient data.
OPERATOR = "operator-console-token-4"
#: A FHIR sender (the default permissions).
FEEDER = "feeder-token-5"
FHIR_SAMPLE = REPO / "samples" / "fhir" / "xr-chest-2v-normal.json"
FHIR_ACCESSION = "A2611170088"
SAMPLE = REPO / "samples" / "hl7" / "xr-chest-pneumothorax-no-communication.hl7"
ACCESSION = "A2611190301"
#: What identifies the sample's patient, and words of its report: shown only to phi callers.
PHI = ("ZZTEST", "CALLUM", "ZZ9000104", "pleuritic")


@pytest.fixture(name="setup", scope="module")
def fixture_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDaemon, int]]:
    """The daemon, after the sample was received and its routing message delivered; and its message_pk."""
    root = tmp_path_factory.mktemp("console-messages")
    ris = TestRis(free_port())
    ris.start()
    shutil.copytree(REPO / "mappings", root / "mappings")
    write_destinations(root / "destinations.yaml", ris)
    config = (
        "mappings: mappings\ndestinations: destinations.yaml\nhttp_clients:\n"
        + _client("analyst", ANALYST, "console, operator, phi")
        + _client("manager", MANAGER, "console")
        + _client("operator", OPERATOR, "console, operator")
        + _client("feeder", FEEDER, "")
    )
    daemon, _ = start_configured(root, config)
    try:
        conn = MllpConnection(daemon.address)
        try:
            assert msa(conn.request(SAMPLE.read_bytes()))[0] == "CA"  # MSH-15 AL: a commit ACK
        finally:
            conn.close()
        assert post_report(daemon, FHIR_SAMPLE.read_bytes(), FEEDER)[0] == 201
        browser = Browser(daemon)
        browser.sign_in(ANALYST)
        _, _, page = browser.request("GET", f"/console/messages?accession={ACCESSION}")
        found = set(re.findall(r'href="/console/messages/(\d+)"', page))
        assert len(found) == 1, page
        pk = int(found.pop())
        deadline = time.monotonic() + 60
        while "delivered</td>" not in browser.request("GET", f"/console/messages/{pk}")[2]:
            assert time.monotonic() < deadline, "the routing message was not delivered"
            time.sleep(0.2)
        yield daemon, pk
    finally:
        ris.stop()
        daemon.stop()


def _signed_in(daemon: RunningDaemon, token: str) -> tuple[Browser, str]:
    """A browser signed in with ``token`` and the session's CSRF token."""
    browser = Browser(daemon)
    browser.sign_in(token)
    status, _, page = browser.request("GET", "/console/messages")
    assert status == 200
    return browser, _hidden(page, "csrf")


def _audit(daemon: RunningDaemon) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "listener", "audit", "--format", "json", "--state-dir", str(daemon.state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr id="row-(\d+)">', page)


def test_search_by_accession_lists_the_message_with_its_columns(setup: tuple[RunningDaemon, int]) -> None:
    daemon, pk = setup
    browser, _ = _signed_in(daemon, MANAGER)
    status, _, page = browser.request("GET", f"/console/messages?accession={ACCESSION}")
    assert status == 200
    assert "1 message on this page" in page
    assert f'href="/console/messages/{pk}"' in page
    assert "HAL20261119143127-4471" in page and "HALCYON_RIS / LEMC" in page and "mllp" in page
    (bucket,) = re.findall(r'<span class="tag">([a-z_]+)</span>', page)
    other = next(b for b in BUCKETS if b != bucket)
    for name, count in ((bucket, "1 message"), (other, "0 messages")):
        status, _, page = browser.request("GET", f"/console/messages?accession={ACCESSION}&bucket={name}")
        assert status == 200 and f"{count} on this page" in page
    assert browser.request("GET", "/console/messages?bucket=nonsense")[0] == 400
    status, _, page = browser.request("GET", "/console/messages?accession=NO-SUCH-ACCESSION")
    assert status == 200 and "0 messages on this page" in page
    status, _, page = browser.request("GET", "/console/messages?since=yesterday")
    assert status == 400 and "is not an ISO 8601 time" in page


def test_the_newest_message_is_listed_first_unless_asked_for_oldest_first(setup: tuple[RunningDaemon, int]) -> None:
    """The FHIR sample came after the HL7 one: it heads the default listing, and follows it with
    order=oldest; paging older from the newest reaches the other (docs/console.md, "Message browser")."""
    daemon, pk = setup
    browser, _ = _signed_in(daemon, MANAGER)

    def listed(query: str) -> list[int]:
        status, _, page = browser.request("GET", f"/console/messages?{query}")
        assert status == 200
        return [int(n) for n in re.findall(r'<a href="/console/messages/(\d+)">message \d+</a>', page)]

    newest = listed("")
    assert len(newest) == 2 and newest[-1] == pk and newest[0] > pk
    assert listed("order=oldest") == newest[::-1]
    assert listed(f"before={newest[0]}") == [pk]
    assert listed(f"after={pk}") == newest[:1]
    assert "newest first" in browser.request("GET", "/console/messages")[2]


def test_a_caller_without_phi_sees_no_patient_data_and_may_not_search_by_patient(
    setup: tuple[RunningDaemon, int],
) -> None:
    daemon, pk = setup
    browser, _ = _signed_in(daemon, MANAGER)
    pages = [
        browser.request("GET", path) for path in (f"/console/messages?accession={ACCESSION}", f"/console/messages/{pk}")
    ]
    for status, _, page in pages:
        assert status == 200
        for value in PHI:
            assert value not in page, value
    detail = pages[1][2]
    assert "Hidden: the raw body holds patient data" in detail and "Report text hidden" in detail
    assert ACCESSION in detail and "HAL20261119143127-4471" in detail
    assert re.search(r'<code title="keyed hash[^"]*">[0-9a-f]{16}</code>', detail)
    assert "patient_id" not in pages[0][2]  # the form offers no patient search
    status, _, page = browser.request("GET", "/console/messages?patient_id=ZZ9000104")
    assert status == 403 and "may not search by patient id" in page
    assert "ZZ9000104" not in page


def test_a_phi_caller_sees_the_raw_body_with_field_names_and_the_marked_report(
    setup: tuple[RunningDaemon, int],
) -> None:
    daemon, pk = setup
    browser, _ = _signed_in(daemon, ANALYST)
    status, _, page = browser.request("GET", f"/console/messages/{pk}")
    assert status == 200
    for value in PHI:
        assert value in page, value
    assert '<span title="PID-3 Patient Identifier List">ZZ9000104^^^LEMC^MR</span>' in page
    assert "<mark title=" in page
    assert "Routing messages (1)" in page and "MSH|" in page
    assert f"Accession {ACCESSION}: its stored reports (1)" in page and "<td>this message</td>" in page
    status, _, page = browser.request("GET", "/console/messages?patient_id=ZZ9000104&authority=LEMC")
    assert status == 200 and f'href="/console/messages/{pk}"' in page


def test_actions_without_the_right_csrf_token_are_refused_and_change_nothing(
    setup: tuple[RunningDaemon, int],
) -> None:
    daemon, pk = setup
    browser, _ = _signed_in(daemon, ANALYST)
    before = _rows(browser.request("GET", f"/console/messages/{pk}")[2])
    audit = len(_audit(daemon))
    row = before[0]
    for form in ({"row": row}, {"row": row, "csrf": "forged"}):
        status, _, page = browser.request("POST", "/console/actions/resend", form)
        assert status == 403 and "CSRF" in page
    assert _rows(browser.request("GET", f"/console/messages/{pk}")[2]) == before
    assert len(_audit(daemon)) == audit


def test_a_manager_without_operator_may_not_act(setup: tuple[RunningDaemon, int]) -> None:
    daemon, pk = setup
    browser, csrf = _signed_in(daemon, MANAGER)
    page = browser.request("GET", f"/console/messages/{pk}")[2]
    assert "/console/actions/resend" not in page  # no buttons offered
    row = _rows(page)[0]
    status, _, page = browser.request("POST", "/console/actions/resend", {"row": row, "csrf": csrf})
    assert status == 403 and "may not operator" in page
    assert browser.request("GET", f"/console/actions/reprocess/{pk}")[0] == 403


def test_resend_by_an_operator_queues_a_new_row_and_is_audited_with_the_client(
    setup: tuple[RunningDaemon, int],
) -> None:
    daemon, pk = setup
    browser, csrf = _signed_in(daemon, OPERATOR)
    before = _rows(browser.request("GET", f"/console/messages/{pk}")[2])
    status, headers, _ = browser.request(
        "POST", "/console/actions/resend", {"row": before[0], "csrf": csrf, "back": f"/console/messages/{pk}"}
    )
    assert status == 303
    location = headers["location"]
    assert location.startswith(f"/console/messages/{pk}?")
    status, _, page = browser.request("GET", location.split("#")[0])
    assert status == 200
    after = _rows(page)
    assert len(after) == len(before) + 1
    assert f"row {before[0]} queued again as row {after[-1]}" in page
    entry = _audit(daemon)[-1]
    assert entry["action"] == "outbox resend" and entry["actor"] == "operator" and entry["via"] == "console"
    assert entry["target"] == {"ids": [int(before[0])], "accession": None, "new_ids": [int(after[-1])]}
    # The note is signed: changing it shows nothing.
    query = parse_qs(urlsplit(location).query)
    forged = f"/console/messages/{pk}?audit={query['audit'][0]}&note=forged&sig={query['sig'][0]}"
    assert "forged" not in browser.request("GET", forged)[2]


def test_reprocess_previews_first_then_reprocesses_and_audits(setup: tuple[RunningDaemon, int]) -> None:
    daemon, pk = setup
    browser, csrf = _signed_in(daemon, ANALYST)
    status, _, page = browser.request("GET", f"/console/actions/reprocess/{pk}")
    assert status == 200 and "Preview (dry run: nothing written)" in page
    assert f"message {pk} (HAL20261119143127-4471, mllp): processed CA -&gt; processed CA" in page
    assert "Earlier processings (0)" in browser.request("GET", f"/console/messages/{pk}")[2]
    status, headers, _ = browser.request("POST", f"/console/actions/reprocess/{pk}", {"csrf": csrf})
    assert status == 303
    page = browser.request("GET", headers["location"].split("#")[0])[2]
    assert "reprocessed 1 message" in page and "Earlier processings (1)" in page
    entry = _audit(daemon)[-1]
    assert entry["action"] == "reprocess" and entry["actor"] == "analyst" and entry["via"] == "console"
    assert entry["target"] == {"messages": [pk]}


def test_a_fhir_message_shows_its_body_indented_to_phi_callers_only(setup: tuple[RunningDaemon, int]) -> None:
    daemon, _ = setup
    pages = {}
    for token in (ANALYST, MANAGER):
        browser, _ = _signed_in(daemon, token)
        page = browser.request("GET", f"/console/messages?accession={FHIR_ACCESSION}")[2]
        (pk,) = set(re.findall(r'href="/console/messages/(\d+)"', page))
        status, _, pages[token] = browser.request("GET", f"/console/messages/{pk}")
        assert status == 200 and "via http" in pages[token]
    assert "\n  &#34;resourceType&#34;: &#34;DiagnosticReport&#34;," in pages[ANALYST]
    assert "ZZ9000103" in pages[ANALYST] and "ZZ9000103" not in pages[MANAGER]
    assert "ZZTEST" not in pages[MANAGER] and "DiagnosticReport&#34;," not in pages[MANAGER]
    # Our answer (status, then the OperationOutcome) is shown to both, indented.
    assert "\n  &#34;resourceType&#34;: &#34;OperationOutcome&#34;," in pages[MANAGER]


def test_actions_say_why_they_left_something_alone_as_the_cli_does(setup: tuple[RunningDaemon, int]) -> None:
    daemon, pk = setup
    browser, csrf = _signed_in(daemon, ANALYST)
    status, headers, _ = browser.request("POST", "/console/actions/resend", {"row": "999999", "csrf": csrf})
    assert status == 303 and headers["location"].startswith("/console/?")  # no back: the overview
    note = parse_qs(urlsplit(headers["location"]).query)["note"][0]
    assert note == "nothing resent\nrow 999999 not resent: unknown id"
    status, _, page = browser.request("POST", "/console/actions/retry", {"row": "1", "message": str(pk), "csrf": csrf})
    assert status == 400 and "Give one outbox row or one message (not both)." in page
    status, _, page = browser.request("POST", "/console/actions/retry", {"message": str(pk), "csrf": csrf})
    assert status == 409 and f"Message {pk} has no dead routing message." in page
    status, _, page = browser.request("POST", "/console/actions/kick", {"destination": "nowhere", "csrf": csrf})
    assert status == 400 and "unknown destination 'nowhere' (known: ris)" in html.unescape(page)
    audit = len(_audit(daemon))
    status, _, page = browser.request("POST", "/console/actions/reprocess/999999", {"csrf": csrf})
    assert status == 404 and "There is no message 999999." in page
    assert len(_audit(daemon)) == audit


def test_an_operator_kicks_a_destination_from_the_overview_and_a_manager_gets_no_button(
    setup: tuple[RunningDaemon, int],
) -> None:
    daemon, _ = setup
    manager, _ = _signed_in(daemon, MANAGER)
    page = manager.request("GET", "/console/")[2]
    assert "/console/actions/kick" not in page
    browser, csrf = _signed_in(daemon, OPERATOR)
    page = browser.request("GET", "/console/")[2]
    destination = re.search(r'name="destination" value="([^"]+)"', page)
    assert destination, "no Kick button on the overview"
    status, headers, _ = browser.request(
        "POST", "/console/actions/kick", {"destination": destination.group(1), "csrf": csrf, "back": "/console/"}
    )
    assert status == 303 and headers["location"].startswith("/console/?")
    page = browser.request("GET", headers["location"].split("#")[0])[2]
    assert 'id="result"' in page and destination.group(1) in page
    entry = _audit(daemon)[-1]
    assert entry["action"] == "outbox kick" and entry["actor"] == "operator" and entry["via"] == "console"
