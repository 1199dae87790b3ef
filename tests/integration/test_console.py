"""The web console's sign-in, sessions, CSRF and headers, against a real daemon (docs/console.md).

The pages' own content is tested beside them; here: who gets in, with what, and what every answer
carries. HTTP is spoken with http.client, cookies handled by hand, so each header is checked as sent.
"""

from __future__ import annotations

import hashlib
import http.client
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.integration.conftest import RunningDaemon, start_configured

#: Tokens of the test's clients: an analyst (console, operator, phi), a manager (console only) and
#: a sender (the default permissions, no console).
ANALYST = "analyst-console-token-1"
MANAGER = "manager-console-token-2"
SENDER = "sender-console-token-3"


def _client(name: str, token: str, allow: str) -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return f"  {name}: {{token_sha256: {digest}{', allow: [' + allow + ']' if allow else ''}}}\n"


@pytest.fixture(name="daemon", scope="module")
def fixture_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    config = (
        "http_clients:\n"
        + _client("analyst", ANALYST, "console, operator, phi, read")
        + _client("manager", MANAGER, "console")
        + _client("sender", SENDER, "")
    )
    daemon, _ = start_configured(tmp_path_factory.mktemp("console"), config)
    try:
        yield daemon
    finally:
        daemon.stop()


class Browser:
    """A cookie jar over http.client: enough of a browser to sign in and post forms."""

    def __init__(self, daemon: RunningDaemon) -> None:
        assert daemon.http_port is not None
        self.port = daemon.http_port
        self.cookies: dict[str, str] = {}
        self.set_cookie: list[str] = []

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8")
            self.set_cookie = response.headers.get_all("Set-Cookie") or []
            for line in self.set_cookie:
                name, _, rest = line.partition("=")
                value = rest.split(";")[0]
                if "Max-Age=0" in line:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
            return response.status, {k.lower(): v for k, v in response.getheaders()}, text
        finally:
            conn.close()

    def sign_in(self, token: str) -> tuple[int, dict[str, str], str]:
        status, _, page = self.request("GET", "/console/login")
        assert status == 200
        csrf = _hidden(page, "csrf")
        return self.request("POST", "/console/login", {"csrf": csrf, "token": token, "next": "/console/"})


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden {name} field"
    return found.group(1)


def test_signing_in_sets_a_strict_httponly_session_and_shows_the_overview(daemon: RunningDaemon) -> None:
    browser = Browser(daemon)
    status, headers, _ = browser.request("GET", "/console/")
    assert status == 303 and headers["location"].startswith("/console/login?next=/console/")
    status, headers, _ = browser.sign_in(ANALYST)
    assert status == 303 and headers["location"] == "/console/"
    session = [c for c in browser.set_cookie if c.startswith("overread_session=")]
    assert len(session) == 1
    assert "HttpOnly" in session[0] and "SameSite=Strict" in session[0] and "Path=/console/" in session[0]
    assert ANALYST not in session[0]
    status, headers, page = browser.request("GET", "/console/")
    assert status == 200
    assert "<h1>Overview</h1>" in page and "analyst" in page
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


def test_a_wrong_token_or_a_client_without_console_is_refused_with_a_visible_reason(daemon: RunningDaemon) -> None:
    browser = Browser(daemon)
    status, _, page = browser.sign_in("not-a-token-of-anyone")
    assert status == 401 and "That token is not valid." in page
    assert "overread_session" not in browser.cookies
    status, _, page = browser.sign_in(SENDER)
    assert status == 403 and "Client sender is not allowed the console." in page
    assert "overread_session" not in browser.cookies


def test_the_sign_in_form_needs_its_own_csrf_token(daemon: RunningDaemon) -> None:
    browser = Browser(daemon)
    browser.request("GET", "/console/login")
    status, _, page = browser.request("POST", "/console/login", {"csrf": "forged", "token": ANALYST})
    assert status == 403 and "expired" in page
    assert "overread_session" not in browser.cookies


def test_sign_out_needs_the_session_csrf_token_and_ends_the_session(daemon: RunningDaemon) -> None:
    browser = Browser(daemon)
    browser.sign_in(MANAGER)
    status, _, page = browser.request("GET", "/console/")
    assert status == 200 and "manager" in page and "no phi" in page
    cookie = browser.cookies["overread_session"]
    status, _, _ = browser.request("POST", "/console/logout", {"csrf": "forged"})
    assert status == 403
    assert browser.request("GET", "/console/")[0] == 200
    status, headers, _ = browser.request("POST", "/console/logout", {"csrf": _hidden(page, "csrf")})
    assert status == 303 and headers["location"] == "/console/login"
    # The old cookie, replayed, no longer opens anything.
    browser.cookies["overread_session"] = cookie
    assert browser.request("GET", "/console/")[0] == 303


def test_bearer_tokens_open_pages_with_the_clients_permissions(daemon: RunningDaemon) -> None:
    browser = Browser(daemon)
    status, _, page = browser.request("GET", "/console/", headers={"Authorization": f"Bearer {MANAGER}"})
    assert status == 200 and "<h1>Overview</h1>" in page
    status, _, _ = browser.request("GET", "/console/", headers={"Authorization": f"Bearer {SENDER}"})
    assert status == 403
    status, _, _ = browser.request("GET", "/console/", headers={"Authorization": "Bearer wrong"})
    assert status == 401


def test_unknown_pages_static_files_and_redirects(daemon: RunningDaemon) -> None:
    browser = Browser(daemon)
    status, headers, css = browser.request("GET", "/console/static/console.css")
    assert status == 200 and headers["content-type"].startswith("text/css") and "body" in css
    assert browser.request("GET", "/console/static/../../etc/passwd")[0] == 404
    status, headers, _ = browser.request("GET", "/console")
    assert status == 308 and headers["location"] == "/console/"
    browser.sign_in(ANALYST)
    status, _, page = browser.request("GET", "/console/no-such-page")
    assert status == 404 and "no such console page" in page
    # After signing in, only console paths are followed: never another site.
    browser2 = Browser(daemon)
    status, _, page = browser2.request("GET", "/console/login")
    csrf = _hidden(page, "csrf")
    status, headers, _ = browser2.request(
        "POST", "/console/login", {"csrf": csrf, "token": ANALYST, "next": "https://evil.example/"}
    )
    assert status == 303 and headers["location"] == "/console/"


def test_without_http_clients_nobody_can_sign_in(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = RunningDaemon(tmp_path / "state", logs)
    daemon.start()
    try:
        status, _, page = Browser(daemon).request("GET", "/console/login")
        assert status == 403 and "needs http_clients" in page
    finally:
        daemon.stop()
