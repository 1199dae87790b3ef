"""The overview and overread pages in a real browser (docs/console.md, "Overview" and "Overread").

Signed in as the manager (console only, no ``phi``) on a daemon fed every sample: the overview's
window link, the overread page's form (window, grouping, minimum), the charts as images and no
patient data. Each page is saved to var/screenshots/.
"""

from __future__ import annotations

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import MANAGER, screenshot
from tests.browser.test_console_login import _heading, _sign_in, _submit
from tests.integration.conftest import RunningDaemon

pytestmark = pytest.mark.browser

#: The samples' patient ids and names: a page for a caller without ``phi`` never shows them.
PATIENT_DATA = ("ZZ9000101", "ZZ9000103", "ZZ9000104", "ZZDEMO", "ZZTEST", "NORA")


def _rows(driver: webdriver.Chrome, table_id: str) -> dict[str, list[str]]:
    """A table's body rows by their first cell's text."""
    rows = driver.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr")
    cells = [[c.text for c in r.find_elements(By.CSS_SELECTOR, "th, td")] for r in rows]
    return {c[0]: c[1:] for c in cells}


def test_overview_and_overread_as_a_manager(driver: webdriver.Chrome, console_daemon: RunningDaemon) -> None:
    _sign_in(driver, console_daemon, MANAGER)
    assert _heading(driver) == "Overview"
    senders = _rows(driver, "senders")
    assert "HALCYON_RIS^LEMC" in senders and "NOCTURNA_RAD^NOCTURNA TELERAD" in senders
    chart = driver.find_element(By.CSS_SELECTOR, "img.chart")
    assert chart.get_attribute("src").startswith("data:image/svg+xml;base64,")
    assert driver.execute_script("return arguments[0].naturalWidth", chart) > 0  # the SVG decoded and drew
    screenshot(driver, "console-overview-24h")

    _submit(driver, driver.find_element(By.LINK_TEXT, "last 7 days, per day"))
    assert driver.current_url.endswith("/console/?window=7d")
    assert "Totals, last 7 days, per day" in driver.page_source
    assert _rows(driver, "senders") == senders  # every sample arrived today: both windows hold them all
    screenshot(driver, "console-overview-7d")

    _submit(driver, driver.find_element(By.LINK_TEXT, "Overread"))
    assert _heading(driver) == "Overread"
    form = driver.find_element(By.CSS_SELECTOR, "form[action='/console/overread']")
    Select(form.find_element(By.NAME, "window")).select_by_value("30d")
    Select(form.find_element(By.NAME, "by")).select_by_value("group")
    reads = form.find_element(By.NAME, "min_reads")
    reads.clear()
    reads.send_keys("1")
    _submit(driver, form.find_element(By.CSS_SELECTOR, "button[type='submit']"))
    assert "window=30d" in driver.current_url and "by=group" in driver.current_url
    assert "Discrepancy rates by group" in driver.page_source
    assert sum(int(v[0]) for v in _rows(driver, "bucket-totals").values()) > 0
    assert _rows(driver, "rates")  # the readers' groups of the samples
    for image in driver.find_elements(By.CSS_SELECTOR, "img.chart"):
        assert driver.execute_script("return arguments[0].naturalWidth", image) > 0
    for secret in PATIENT_DATA:
        assert secret not in driver.page_source
    screenshot(driver, "console-overread-30d-group")
