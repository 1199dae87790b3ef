"""The browser tier itself: headless Chromium reads a real daemon's /healthz and /metrics pages.

Needs no console: it proves the driver, the daemon fixture (fed every sample) and the
screenshots work, so a failing console test points at the console, not at the tier.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser.conftest import FHIR_SAMPLES, HL7_SAMPLES, screenshot
from tests.integration.conftest import RunningDaemon

pytestmark = pytest.mark.browser

PNG = b"\x89PNG\r\n\x1a\n"


def _shown_text(driver: webdriver.Chrome) -> str:
    """The text of a plain-text answer as Chromium shows it (in a ``<pre>``)."""
    return str(driver.find_element(By.TAG_NAME, "pre").text)


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data.startswith(PNG), "not a PNG file"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_healthz_page_shows_ok_and_is_screenshotted(driver: webdriver.Chrome, served: RunningDaemon) -> None:
    driver.get(f"http://127.0.0.1:{served.http_port}/healthz")
    health = json.loads(_shown_text(driver))
    assert health["status"] == "ok"
    assert health["store"] == "ok"
    shot = screenshot(driver, "smoke-healthz")
    assert _png_size(shot.read_bytes())[0] == 1280


def test_metrics_page_counts_every_sample_fed(driver: webdriver.Chrome, served: RunningDaemon) -> None:
    driver.get(f"http://127.0.0.1:{served.http_port}/metrics")
    received: dict[str, float] = {}
    for family in text_string_to_metric_families(_shown_text(driver)):
        if family.name == "overread_messages_received":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    transport = sample.labels["transport"]
                    received[transport] = received.get(transport, 0) + sample.value
    assert received == {"mllp": len(HL7_SAMPLES), "http": len(FHIR_SAMPLES)}
    shot = screenshot(driver, "smoke-metrics")
    assert _png_size(shot.read_bytes())[0] == 1280
