"""Attacker input thrown at the web console of one real daemon (docs/console.md, "Security").

A defence is only real once an attacker's input has been thrown at the running daemon: stored
XSS in HL7 and FHIR fields, CSRF on every form, forged and odd session cookies, open redirects,
header splitting, static-file traversal, PHI leaks to a caller without ``phi`` (pages and the
daemon's log), and hostile policy pastes. Each test asserts the defence holds.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa, start_configured
from tests.integration.test_console import ANALYST, MANAGER, Browser, _client, _hidden
from tests.integration.test_console_messages import _audit
from tests.integration.test_console_policy import what_if

#: A FHIR sender (the default permissions).
FEEDER = "attack-feeder-token-7"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
HL7_ACCESSION = "QXACC0001"
FHIR_ACCESSION = "QXACC0002"
#: The invented patients' identifiers, birth dates and report words: never shown without phi.
PHI = ("QXFAMILY", "QXGIVEN", "QX7700001", "19710203", "1971-02-03", "zephyrine", "QXFHIRFAM", "1968-07-19")

HL7 = (
    f"MSH|^~\\&|RIS{SCRIPT}|SITE{IMG}|OVERREAD|LEMC|20261119143127-0600||ORU^R01^ORU_R01|CID{IMG}|P|2.5.1|||AL|NE\r"
    f"PID|1||QX7700001^^^LEMC^MR||QXFAMILY{SCRIPT}^QXGIVEN{IMG}^R^^^^L||19710203|M\r"
    f"ORC|RE|PL1^LEMC_EHR|{HL7_ACCESSION}^HALCYON_RIS||CM\r"
    f"OBR|1|PL1^LEMC_EHR|{HL7_ACCESSION}^HALCYON_RIS|71046^XR CHEST {SCRIPT}^C4|||20261119140800-0600"
    "|||||||||E2210^OKAFOR^DANIEL^^^^MD||||||20261119143000-0600||DX|F\r"
    f"OBX|1|TX|RPT^Report^L||EXAMINATION: XR CHEST {SCRIPT}~FINDINGS: zephyrine opacity {IMG}~"
    f"IMPRESSION: No acute disease {SCRIPT}.||||||F|||20261119143000-0600\r"
).encode()


def _fhir() -> bytes:
    doc = json.loads((REPO / "samples" / "fhir" / "xr-chest-2v-normal.json").read_text("utf-8"))
    doc["identifier"][0]["value"] = FHIR_ACCESSION
    doc["contained"][1]["identifier"][1]["value"] = FHIR_ACCESSION
    doc["contained"][1]["identifier"][2]["value"] = FHIR_ACCESSION
    doc["code"]["text"] = f"XR CHEST {SCRIPT}"
    doc["code"]["coding"][0]["display"] = f"XR CHEST {IMG}"
    doc["conclusion"] = f"No acute zephyrine disease {SCRIPT} {IMG}"
    patient = doc["contained"][0]
    patient["name"] = [{"family": f"QXFHIRFAM{SCRIPT}", "given": [f"QXGIVEN{IMG}"]}]
    patient["identifier"][0]["value"] = "QX7700001"
    patient["birthDate"] = "1968-07-19"
    html_report = f"<div>EXAMINATION: XR CHEST<br/>{SCRIPT}<br/>FINDINGS: zephyrine {IMG}</div>"
    doc["presentedForm"] = [{"contentType": "text/html", "data": base64.b64encode(html_report.encode()).decode()}]
    return json.dumps(doc).encode()


@pytest.fixture(name="daemon", scope="module")
def fixture_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """The daemon, after both hostile samples were received."""
    config = (
        "http_clients:\n"
        + _client("analyst", ANALYST, "console, operator, phi")
        + _client("manager", MANAGER, "console")
        + _client("feeder", FEEDER, "")
    )
    daemon, _ = start_configured(tmp_path_factory.mktemp("console-attacks"), config)
    try:
        conn = MllpConnection(daemon.address)
        try:
            assert msa(conn.request(HL7))[0] in ("CA", "AA")
        finally:
            conn.close()
        fhir = http.client.HTTPConnection("127.0.0.1", daemon.http_port or 0, timeout=30)
        try:
            headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {FEEDER}"}
            fhir.request("POST", "/fhir/DiagnosticReport", body=_fhir(), headers=headers)
            response = fhir.getresponse()
            assert response.status == 201, response.read()
            response.read()
        finally:
            fhir.close()
        yield daemon
    finally:
        daemon.stop()


def _signed_in(daemon: RunningDaemon, token: str) -> tuple[Browser, str]:
    browser = Browser(daemon)
    assert browser.sign_in(token)[0] == 303
    status, _, page = browser.request("GET", "/console/messages")
    assert status == 200
    return browser, _hidden(page, "csrf")


def _pks(browser: Browser) -> list[int]:
    pks: list[int] = []
    for accession in (HL7_ACCESSION, FHIR_ACCESSION):
        page = browser.request("GET", f"/console/messages?accession={accession}")[2]
        found = sorted({int(n) for n in re.findall(r'href="/console/messages/(\d+)"', page)})
        assert len(found) == 1, (accession, page[-3000:])
        pks += found
    return pks


def _send(
    browser: Browser, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """A request with a body as given (any content type), with the browser's cookies."""
    conn = http.client.HTTPConnection("127.0.0.1", browser.port, timeout=30)
    sent = dict(headers or {})
    if browser.cookies:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    try:
        conn.request(method, path, body=body or None, headers=sent)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text
    finally:
        conn.close()


def _raw(port: int, request_line: bytes, headers: bytes = b"") -> bytes:
    """A request written byte for byte (what http.client refuses to send); the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request_line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers + b"\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser would build them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _assert_inert(page: str, headers: dict[str, str]) -> None:
    """No script element, no event-handler attribute, no injected image; the CSP allows no script."""
    lowered = page.lower()
    assert "<script" not in lowered and "<img src=x" not in lowered
    parser = _Tags()
    parser.feed(page)
    for tag, attrs in parser.tags:
        assert tag != "script"
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            assert not (tag == "img" and name == "src" and value == "x")
    if headers.get("content-type", "").startswith("text/html"):
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp


def test_stored_xss_in_hl7_and_fhir_fields_is_shown_escaped_on_every_page(daemon: RunningDaemon) -> None:
    analyst, _ = _signed_in(daemon, ANALYST)
    manager, _ = _signed_in(daemon, MANAGER)
    pks = _pks(analyst)
    paths = ["/console/", "/console/messages", "/console/overread", "/console/policy"]
    paths += [f"/console/messages?accession={a}" for a in (HL7_ACCESSION, FHIR_ACCESSION)]
    paths += [f"/console/messages/{pk}" for pk in pks]
    paths += [f"/console/actions/reprocess/{pk}" for pk in pks]
    shown = ""
    for browser in (analyst, manager):
        for path in paths:
            status, headers, page = browser.request("GET", path)
            assert status in (200, 403), (path, status)
            _assert_inert(page, headers)
            shown += page
    # The hostile text is there, escaped (the sender, control id, names and report as text).
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown
    status, headers, page = analyst.request("GET", f"/console/messages/{pks[0]}")
    assert status == 200 and "QXFAMILY&lt;script&gt;" in page and "zephyrine" in page
    status, headers, page = analyst.request("GET", f"/console/messages/{pks[1]}")
    assert status == 200 and "QXFHIRFAM" in page


def _forms(pk: int) -> list[tuple[str, dict[str, str]]]:
    return [
        ("/console/actions/resend", {"message": str(pk), "back": "/console/"}),
        ("/console/actions/retry", {"message": str(pk), "back": "/console/"}),
        ("/console/actions/kick", {"back": "/console/"}),
        (f"/console/actions/reprocess/{pk}", {"resend_routes": "0"}),
        ("/console/policy", {"policy": "rules: []\n", "since": "7d"}),
        ("/console/logout", {}),
    ]


def test_posts_without_the_sessions_csrf_token_are_refused_and_change_nothing(daemon: RunningDaemon) -> None:
    analyst, csrf = _signed_in(daemon, ANALYST)
    other, other_csrf = _signed_in(daemon, ANALYST)
    assert other_csrf != csrf
    pk = _pks(analyst)[0]
    before = _audit(daemon)
    for path, fields in _forms(pk):
        for token in (None, "", "forged", other_csrf, csrf + "x", csrf[:-1]):
            form = dict(fields) if token is None else {**fields, "csrf": token}
            status, _, page = analyst.request("POST", path, form)
            assert status == 403 and "CSRF" in page, (path, token, status)
        # The right token in a body the console does not read as a form: refused before the page runs.
        for kind, body in (
            ("text/plain", f"csrf={csrf}&kick=1".encode()),
            (
                "multipart/form-data; boundary=XyZ",
                f'--XyZ\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n--XyZ--\r\n'.encode(),
            ),
            ("application/json", json.dumps({"csrf": csrf}).encode()),
        ):
            status, _, _ = _send(analyst, "POST", path, body, {"Content-Type": kind})
            assert status == 415, (path, kind, status)
    assert _audit(daemon) == before
    # The session survived every refused sign-out.
    assert analyst.request("GET", "/console/")[0] == 200


def test_a_cross_site_looking_post_with_the_right_token_works_only_because_of_the_token(daemon: RunningDaemon) -> None:
    """The console checks the token, not Origin/Referer: a browser's SameSite=Strict cookie is never
    sent on a cross-site POST anyway, so the token is the defence an attacker has to beat."""
    analyst, csrf = _signed_in(daemon, ANALYST)
    evil = {"Origin": "https://evil.example", "Referer": "https://evil.example/page"}
    before = len(_audit(daemon))
    status, _, _ = analyst.request("POST", "/console/actions/kick", {"back": "/console/"}, headers=evil)
    assert status == 403 and len(_audit(daemon)) == before
    status, headers, _ = analyst.request(
        "POST", "/console/actions/kick", {"csrf": csrf, "back": "/console/"}, headers=evil
    )
    assert status == 303 and headers["location"].startswith("/console/?")
    assert len(_audit(daemon)) == before + 1


def test_forged_replayed_and_odd_session_cookies_open_nothing(daemon: RunningDaemon) -> None:
    victim = Browser(daemon)
    victim.sign_in(MANAGER)
    cookie = victim.cookies["overread_session"]
    attacker = Browser(daemon)
    for value in ("x" * 43, "", "%00", cookie[:-1], cookie.upper(), "A" * 10_240):
        status, headers, _ = _send(attacker, "GET", "/console/", headers={"Cookie": f"overread_session={value}"})
        assert status == 303 and headers["location"].startswith("/console/login"), (value[:20], status)
    for odd in (
        f"overread_session={cookie}; Path=/; HttpOnly; Domain=evil.example",
        f"overread_session={cookie}; overread_session=forged",
        f" overread_session = {cookie} ",
    ):
        status, _, _ = _send(attacker, "GET", "/console/", headers={"Cookie": odd})
        assert status in (200, 303), (odd, status)
    # A 10 KB cookie header next to a valid one: not a failure of the daemon.
    status, _, _ = _send(
        attacker, "GET", "/console/", headers={"Cookie": f"junk={'B' * 10_240}; overread_session={cookie}"}
    )
    assert status in (200, 303, 400, 431)
    status, _, page = victim.request("GET", "/console/")
    csrf = _hidden(page, "csrf")
    assert victim.request("POST", "/console/logout", {"csrf": csrf})[0] == 303
    for path in ("/console/", "/console/messages"):
        status, _, _ = _send(attacker, "GET", path, headers={"Cookie": f"overread_session={cookie}"})
        assert status == 303
    status, _, _ = _send(
        attacker,
        "POST",
        "/console/actions/kick",
        urlencode({"csrf": csrf}).encode(),
        {"Cookie": f"overread_session={cookie}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 401


def test_many_wrong_sign_ins_are_each_refused_and_never_logged(daemon: RunningDaemon) -> None:
    wrong = [f"guess-{n}-QXSECRETGUESS" for n in range(25)] + [ANALYST + " ", MANAGER.upper()]
    browser = Browser(daemon)
    for token in wrong:
        status, _, page = browser.sign_in(token)
        if token.strip() == ANALYST:
            # The form strips surrounding blanks, as a pasted token often has them.
            assert status == 303
            browser = Browser(daemon)
            continue
        assert status == 401 and "That token is not valid." in page
        assert "overread_session" not in browser.cookies
    assert Browser(daemon).sign_in(ANALYST)[0] == 303  # no lockout: the right token still works
    refused = [json.dumps(line) for line in daemon.log_lines() if line.get("event") == "console_login_refused"]
    assert len(refused) >= 26
    log = "\n".join(json.dumps(line) for line in daemon.log_lines())
    for token in (*wrong, ANALYST, MANAGER, FEEDER, "QXSECRETGUESS"):
        assert token.strip() not in log


OFF_SITE = (
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https:evil.example",
    "https://evil.example/console/",
    "/console/../fhir",
    "/console/..%2f..%2ffhir",
    "/%2F%2Fevil.example",
    "%2F%2Fevil.example",
    "/console//evil.example",
    "/console/\\evil.example",
    "/console/\r\nSet-Cookie: pwned=1",
    "javascript:alert(1)",
    " //evil.example",
    "\t/console/",
)


def _assert_local(location: str) -> None:
    """A Location a browser resolves to a console path of this daemon."""
    assert location.startswith("/console/"), location
    assert "\\" not in location and "\r" not in location and "\n" not in location, location
    path = urlsplit(location).path
    assert "//" not in path and "/../" not in path and not path.endswith("/.."), location
    assert "%2f" not in path.lower() and "%5c" not in path.lower(), location


def test_next_and_back_never_redirect_off_the_console(daemon: RunningDaemon) -> None:
    for target in OFF_SITE:
        browser = Browser(daemon)
        status, _, page = browser.request("GET", "/console/login?" + urlencode({"next": target}))
        assert status == 200
        csrf = _hidden(page, "csrf")
        status, headers, _ = browser.request("POST", "/console/login", {"csrf": csrf, "token": ANALYST, "next": target})
        assert status == 303, target
        _assert_local(headers["location"])
        status, headers, _ = browser.request("GET", "/console/login?" + urlencode({"next": target}))
        assert status == 303
        _assert_local(headers["location"])
    analyst, csrf = _signed_in(daemon, ANALYST)
    for target in OFF_SITE:
        status, headers, _ = analyst.request("POST", "/console/actions/kick", {"csrf": csrf, "back": target})
        assert status == 303, target
        _assert_local(headers["location"])
        assert "set-cookie" not in headers and "pwned" not in json.dumps(headers)


def test_a_tampered_result_note_is_not_shown_and_cannot_split_headers(daemon: RunningDaemon) -> None:
    analyst, csrf = _signed_in(daemon, ANALYST)
    status, headers, _ = analyst.request("POST", "/console/actions/kick", {"csrf": csrf, "back": "/console/"})
    assert status == 303
    query = dict(p.split("=", 1) for p in urlsplit(headers["location"]).query.split("&"))
    status, _, page = analyst.request("GET", headers["location"].split("#")[0])
    assert status == 200 and 'id="result"' in page
    forged = "Resent 999 messages<script>alert(1)</script>\r\nSet-Cookie: pwned=1"
    for params in (
        {**query, "note": forged},
        {**query, "sig": "0" * 32},
        {**query, "audit": "999"},
        {"note": forged, "sig": ""},
        {"note": forged},
    ):
        status, headers, page = analyst.request("GET", "/console/?" + urlencode(params))
        assert status == 200
        assert 'id="result"' not in page and "Resent 999" not in page
        assert "set-cookie" not in headers
        _assert_inert(page, headers)
    # A CR/LF written raw into the request line is never echoed into a header.
    answer = _raw(daemon.http_port or 0, b"GET /console/?note=a%0d%0aSet-Cookie:%20pwned=1&x=\r\n HTTP/1.1")
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert b"pwned" not in head


def test_static_traversal_long_and_non_utf8_requests_fail_cleanly(daemon: RunningDaemon) -> None:
    analyst, _ = _signed_in(daemon, ANALYST)
    for path in (
        "/console/static/..%2fweb.py",
        "/console/static/..%2f..%2f..%2fetc%2fpasswd",
        "/console/static/%2e%2e/%2e%2e/etc/passwd",
        "/console/static/console.css%00",
        "/console/static/%00",
        "/console/static/console.css/..",
        "/console/static/..\\web.py",
        "/console/static/%c0%ae%c0%ae/web.py",
        "/console/static/",
    ):
        status, headers, body = analyst.request("GET", path)
        assert status == 404, (path, status)
        assert "import" not in body and "root:" not in body
    for path in (
        "/console/" + "a" * 12_000,
        "/console/messages?accession=" + "A" * 12_000,
        "/console/messages?" + "&".join(f"k{n}=v" for n in range(2000)),
        "/console/messages/" + "9" * 400,
        "/console/actions/reprocess/" + "9" * 400,
    ):
        status, headers, page = analyst.request("GET", path)
        assert status in (200, 400, 404, 414), (path[:60], status)
        _assert_inert(page, headers)
    # Over Twisted's 16 KiB limit for the request line and headers: cut off before any page runs.
    for path in ("/console/" + "a" * 20_000, "/console/messages?accession=" + "A" * 60_000):
        try:
            status = analyst.request("GET", path)[0]
        except http.client.RemoteDisconnected:
            status = 400
        assert status in (400, 414, 431), status
    cookie = f"Cookie: overread_session={analyst.cookies['overread_session']}\r\n".encode()
    for line in (
        b"GET /console/messages?accession=\xff\xfe HTTP/1.1",
        b"GET /console/messages?accession=%ff%fe HTTP/1.1",
        b"GET /console/\xc3\x28 HTTP/1.1",
        b"GET /console/messages?since=%00 HTTP/1.1",
    ):
        answer = _raw(analyst.port, line, cookie)
        status_line = answer.split(b"\r\n")[0]
        assert status_line.split(b" ")[1] in (b"200", b"400", b"404"), (line, status_line)


def _paste(browser: Browser, csrf: str, text: str) -> tuple[int, str]:
    status, _, page = browser.request("POST", "/console/policy", {"csrf": csrf, "policy": text, "since": "7d"})
    return status, page


def test_hostile_policy_pastes_are_refused_with_a_reason_and_the_daemon_stays_healthy(daemon: RunningDaemon) -> None:
    analyst, csrf = _signed_in(daemon, ANALYST)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    attacks = {
        "alias bomb": bomb,
        "300 KiB": "rules:\n" + "  # filler\n" * (300 * 1024 // 11),
        "deep nesting": "rules: " + "[" * 5000 + "]" * 5000 + "\n",
        "deep mappings": "".join("  " * i + f"k{i}:\n" for i in range(400)),
        "python object": "rules: !!python/object/apply:os.system ['touch /tmp/overread-pwned']\n",
        "python name": "rules: !!python/name:os.system\n",
    }
    for label, text in attacks.items():
        status, page = _paste(analyst, csrf, text)
        assert status in (200, 400, 413, 422), (label, status)
        assert re.search(r'class="[^"]*bad', page) or "problem" in page.lower(), label
        assert "Traceback" not in page, label
        _assert_inert(page, {"content-type": ""})
    assert not Path("/tmp/overread-pwned").exists()
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port or 0, timeout=30)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_a_caller_without_phi_sees_none_of_the_patients_data_anywhere(daemon: RunningDaemon) -> None:
    analyst, _ = _signed_in(daemon, ANALYST)
    pks = _pks(analyst)
    manager, csrf = _signed_in(daemon, MANAGER)
    pages = []
    for path in (
        "/console/",
        "/console/messages",
        "/console/overread",
        "/console/policy",
        "/console/policy?since=30d",
        "/console/no-such-page",
        "/console/messages/999999",
        "/console/messages?patient_id=QX7700001",
        "/console/actions/reprocess/1",
        *(f"/console/messages?accession={a}" for a in (HL7_ACCESSION, FHIR_ACCESSION)),
        *(f"/console/messages/{pk}" for pk in pks),
    ):
        pages.append((path, *manager.request("GET", path)))
    # The what-if of the shipped policy over the window (its lists included), as the manager.
    policy = (REPO / "policies" / "routing.yaml").read_text("utf-8")
    location, status, page = what_if(
        manager, "POST", "/console/policy", {"csrf": csrf, "policy": policy, "since": "30d"}
    )
    assert status == 200 and "Window: last 30d" in page, page[-3000:]
    pages.append(("POST /console/policy", status, {}, page))
    status, headers, body = manager.request("GET", location + "?format=json")
    pages.append(("the what-if's JSON", status, headers, body))
    for path, status, _headers, page in pages:
        assert status != 500, path
        for value in PHI:
            assert value not in page, (path, value)
    hidden = [page for path, _, _, page in pages if path == f"/console/messages/{pks[0]}"][0]
    assert "Hidden" in hidden and HL7_ACCESSION in hidden


def test_the_daemons_log_holds_no_patient_data_after_the_attacks(daemon: RunningDaemon) -> None:
    log = "\n".join(json.dumps(line) for line in daemon.log_lines())
    assert "console_login_refused" in log
    for value in PHI:
        assert value not in log, value
