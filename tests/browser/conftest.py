"""The browser tier's fixtures: headless Chromium, a screenshot helper, and a fed daemon.

``driver`` starts Debian's Chromium through Debian's chromedriver (paths from
``tests/chromium.py``; named explicitly, so Selenium Manager never goes to the network)
with a fresh profile in a temporary folder. The daemon fixtures run the real daemon
(``tests/integration/conftest.py``) and feed it every HL7 v2 sample over MLLP and every
FHIR sample over HTTP, so its pages have content. docs/development.md, "Browser tests".
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests import chromium
from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    analyst_and_sender,
    http_client,
    msa,
    start_configured,
)
from tests.integration.test_http import post

#: Client "analyst": everything the console offers, patient details included.
ANALYST = "analyst-token-0001"
#: Client "manager": the console only, without ``phi`` (no patient details).
MANAGER = "manager-token-0001"
#: Client "sender": the default ``submit, read``; it posts the FHIR samples.
SENDER = "sender-token-0001"

HL7_SAMPLES = sorted((REPO / "samples" / "hl7").glob("*.hl7"))
FHIR_SAMPLES = sorted((REPO / "samples" / "fhir").glob("*.json"))

#: Headless, and quiet: without the background-networking flags Chromium keeps trying to reach
#: Google's services (updates, sync, QUIC probes), which a closed network refuses, over and over.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@pytest.fixture(name="driver", scope="module")
def fixture_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile, shared by one test module (tests clear cookies as needed)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium.chromium())
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(executable_path=str(chromium.chromedriver()))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a browser test fails, save what the browser showed as ``failed-<test>.png``."""
    report = yield
    browser = getattr(item, "funcargs", {}).get("driver")
    if report.when == "call" and report.failed and browser is not None:
        screenshot(browser, f"failed-{item.name}")
    return report


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save what the browser shows as ``var/screenshots/<name>.png`` (an artifact, git-ignored) and return it."""
    chromium.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = chromium.SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"Chromium wrote no screenshot to {path}"
    return path


def feed_samples(daemon: RunningDaemon) -> None:
    """Send every ``samples/hl7`` file over MLLP and post every ``samples/fhir`` file as client "sender"."""
    for sample in HL7_SAMPLES:
        conn = MllpConnection(daemon.address)
        try:
            code, _ = msa(conn.request(sample.read_bytes()))
        finally:
            conn.close()
        assert code in ("AA", "CA"), f"{sample.name} answered {code}"
    assert daemon.http_port is not None
    for sample in FHIR_SAMPLES:
        reply = post(daemon.http_port, sample.read_bytes(), token=SENDER)
        assert reply.status in (200, 201), f"{sample.name} answered {reply.status}"


def fed_daemon(root: Path, clients: str) -> Iterator[RunningDaemon]:
    """A daemon started with the ``http_clients`` section ``clients``, fed the samples; stopped (exit 0) afterwards."""
    daemon, _ = start_configured(root, clients)
    try:
        feed_samples(daemon)
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


@pytest.fixture(name="served", scope="module")
def fixture_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A fed daemon whose clients use only the API's permissions (no console): the tier's own check."""
    yield from fed_daemon(
        tmp_path_factory.mktemp("served"), analyst_and_sender(ANALYST, SENDER, "operator, submit, read")
    )


@pytest.fixture(name="console_daemon", scope="module")
def fixture_console_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A fed daemon for the console: "analyst" may do everything, "manager" may only use the console."""
    yield from fed_daemon(
        tmp_path_factory.mktemp("console"),
        analyst_and_sender(ANALYST, SENDER, "console, operator, phi, submit, read")
        + http_client("manager", MANAGER, "console"),
    )
