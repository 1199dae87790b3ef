"""The message browser and an operator action in a real browser (docs/console.md, "Message browser",
"Operator actions"): search by accession, open the message, preview and run a reprocess; the same
message as a client without ``phi``. Each page is saved to var/screenshots/.
"""

from __future__ import annotations

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.browser.conftest import ANALYST, MANAGER, screenshot
from tests.browser.test_console_login import _base, _heading, _sign_in, _submit
from tests.integration.conftest import RunningDaemon

pytestmark = pytest.mark.browser

#: The accession of samples/hl7/xr-chest-pneumothorax-no-communication.hl7, and its patient's MRN and name.
ACCESSION = "A2611190301"
PATIENT = ("ZZ9000104", "ZZTEST")


def test_search_open_and_reprocess_a_message(driver: webdriver.Chrome, console_daemon: RunningDaemon) -> None:
    _sign_in(driver, console_daemon, ANALYST)
    driver.find_element(By.LINK_TEXT, "Messages").click()
    assert _heading(driver) == "Messages"
    form = driver.find_element(By.CSS_SELECTOR, "form.filters")
    form.find_element(By.NAME, "since").clear()
    form.find_element(By.NAME, "accession").send_keys(ACCESSION)
    Select(form.find_element(By.NAME, "transport")).select_by_visible_text("mllp")  # the FHIR sample has it too
    _submit(driver, form.find_element(By.CSS_SELECTOR, "button[type='submit']"))
    results = driver.find_element(By.CSS_SELECTOR, "section[aria-labelledby='results-h']").text
    assert "1 message on this page" in results and "HALCYON_RIS / LEMC" in results
    screenshot(driver, "console-messages-search")

    link = driver.find_element(By.CSS_SELECTOR, "td a[href^='/console/messages/'] code")
    link.click()
    assert _heading(driver).startswith("Message ")
    message_url = driver.current_url
    pid3 = driver.find_element(By.CSS_SELECTOR, "span[title='PID-3 Patient Identifier List']")
    assert pid3.text.startswith(PATIENT[0])
    assert driver.find_elements(By.CSS_SELECTOR, "pre.report-text")  # the report text, phi shown
    screenshot(driver, "console-message-analyst")

    driver.find_element(By.PARTIAL_LINK_TEXT, "Reprocess").click()
    assert _heading(driver).startswith("Reprocess message ")
    assert "Preview (dry run: nothing written)" in driver.page_source
    screenshot(driver, "console-reprocess-preview")
    _submit(driver, driver.find_element(By.XPATH, "//button[text()='Reprocess now']"))
    assert driver.current_url.startswith(message_url + "?")
    done = driver.find_element(By.ID, "result").text
    assert "reprocessed 1 message" in done and "audit entry" in done
    assert "Earlier processings (1)" in driver.page_source
    screenshot(driver, "console-message-reprocessed")

    _sign_in(driver, console_daemon, MANAGER)
    driver.get(message_url)
    assert _heading(driver).startswith("Message ")
    for value in PATIENT:
        assert value not in driver.page_source
    assert not driver.find_elements(By.ID, "actions-h")  # no operator actions offered
    screenshot(driver, "console-message-manager")
    assert driver.current_url.startswith(_base(console_daemon))


def test_the_listing_is_newest_first_and_can_be_turned_round(
    driver: webdriver.Chrome, console_daemon: RunningDaemon
) -> None:
    """The FHIR samples were fed after the HL7 ones: they head the default listing (newest first)
    and come last when the form asks for oldest first (docs/console.md, "Message browser")."""
    _sign_in(driver, console_daemon, ANALYST)
    driver.find_element(By.LINK_TEXT, "Messages").click()
    assert _heading(driver) == "Messages"

    def listed() -> list[tuple[int, str]]:
        rows = driver.find_elements(By.CSS_SELECTOR, "section[aria-labelledby='results-h'] tbody tr")
        return [(int(row.find_element(By.CSS_SELECTOR, "td:last-child a").text.split()[-1]), row.text) for row in rows]

    newest = listed()
    assert [pk for pk, _ in newest] == sorted((pk for pk, _ in newest), reverse=True)
    assert " http " in newest[0][1] and " mllp " in newest[-1][1]
    pager = driver.find_element(By.CSS_SELECTOR, "nav.pager").text
    assert "No older messages." in pager and "Newer messages" not in pager
    screenshot(driver, "console-messages-newest-first")

    form = driver.find_element(By.CSS_SELECTOR, "form.filters")
    Select(form.find_element(By.NAME, "order")).select_by_visible_text("oldest first")
    _submit(driver, form.find_element(By.CSS_SELECTOR, "button[type='submit']"))
    assert "order=oldest" in driver.current_url
    assert [pk for pk, _ in listed()] == [pk for pk, _ in newest][::-1]
    assert "oldest first." in driver.find_element(By.CSS_SELECTOR, "section[aria-labelledby='results-h']").text
    screenshot(driver, "console-messages-oldest-first")
