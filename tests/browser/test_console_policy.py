"""The policy page in a real browser (docs/console.md, "Policy and what-if").

Signed in as the manager (console only, no ``phi``) on a daemon fed every sample: the live rules,
a what-if of the stricter sample policy picked from the list (a background job whose page reloads
itself until done; its chart drawn, more second reads),
and a pasted policy with a YAML error shown with its line and column. Each page is saved to
var/screenshots/.
"""

from __future__ import annotations

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import MANAGER, screenshot
from tests.browser.test_console_login import _heading, _sign_in, _submit
from tests.browser.test_console_pages import PATIENT_DATA, _rows
from tests.integration.conftest import RunningDaemon

pytestmark = pytest.mark.browser

#: Seconds a what-if of the samples may take on a loaded machine (it takes a few).
WHATIF_WAIT = 120


def _heading_now(driver: webdriver.Chrome) -> str:
    """The page's ``h1`` as shown, read in one command (a page that reloads itself cannot make it stale)."""
    return str(driver.execute_script("return document.querySelector('h1').innerText"))


def test_policy_rules_and_a_what_if_as_a_manager(driver: webdriver.Chrome, console_daemon: RunningDaemon) -> None:
    _sign_in(driver, console_daemon, MANAGER)
    _submit(driver, driver.find_element(By.LINK_TEXT, "Policy"))
    assert _heading(driver) == "Routing policy"
    rules = _rows(driver, "rules")
    assert any(name.startswith("critical_finding_affirmed") for name in rules)
    critical = next(cells for name, cells in rules.items() if name.startswith("critical_finding_affirmed"))
    assert critical[0].startswith("When a critical finding is stated as present: a selective overread")
    screenshot(driver, "console-policy")

    form = driver.find_element(By.CSS_SELECTOR, "form[method='get'][action='/console/policy#outcome']")
    Select(form.find_element(By.NAME, "candidate")).select_by_value("samples/policies/stricter.yaml")
    Select(form.find_element(By.NAME, "since")).select_by_value("7d")
    _submit(driver, form.find_element(By.CSS_SELECTOR, "button[type='submit']"))
    # The what-if runs in the background: its own page, which reloads itself (meta refresh, no
    # script: the CSP allows none) until the result is there.
    assert "/console/policy/run/" in driver.current_url
    # While the job runs the page reloads itself every 2 s (docs/console.md, "Policy and what-if"):
    # an element found before a reload is stale after it, so the heading is read in one command,
    # from whichever load of the page is there then.
    assert _heading_now(driver) == "What-if: samples/policies/stricter.yaml"
    if driver.find_elements(By.CSS_SELECTOR, "meta[http-equiv='refresh']"):
        screenshot(driver, "console-policy-whatif-running")
    # A look at the page may land in the middle of a reload: the wait asks again then.
    reloading = (StaleElementReferenceException, WebDriverException)
    WebDriverWait(driver, WHATIF_WAIT, ignored_exceptions=reloading).until(
        lambda browser: (
            browser.find_elements(By.ID, "result-h")
            and browser.execute_script("return document.readyState") == "complete"
        )
    )
    assert not driver.find_elements(By.CSS_SELECTOR, "meta[http-equiv='refresh']")
    assert "vs candidate samples/policies/stricter.yaml" in driver.find_element(By.ID, "result-h").text
    buckets = _rows(driver, "whatif-buckets")
    assert set(buckets) == {"always_final", "selective_overread", "process_check", "release"}
    current, candidate, delta = (int(v) for v in _rows(driver, "whatif-workload")["second reads"])
    assert candidate >= current > 0 and delta == candidate - current
    chart = driver.find_element(By.CSS_SELECTOR, "img.chart")
    assert driver.execute_script("return arguments[0].naturalWidth", chart) > 0
    for secret in PATIENT_DATA:
        assert secret not in driver.page_source
    screenshot(driver, "console-policy-whatif-stricter")

    _submit(driver, driver.find_element(By.LINK_TEXT, "Back to the policy"))
    pasted = driver.find_element(By.CSS_SELECTOR, "form[method='post'][action='/console/policy#outcome']")
    pasted.find_element(By.NAME, "policy").send_keys("version: mine\npools: [a, b\nrules: {}\n")
    _submit(driver, pasted.find_element(By.CSS_SELECTOR, "button[type='submit']"))
    problem = driver.find_element(By.CSS_SELECTOR, "div.problem").text
    assert problem.startswith("(pasted policy), line 3, column 6: invalid YAML")
    assert driver.find_element(By.NAME, "policy").get_attribute("value").startswith("version: mine")
    screenshot(driver, "console-policy-pasted-error")
