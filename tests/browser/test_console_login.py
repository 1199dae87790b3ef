"""Signing in to the console in a real browser: the token form, the session cookie, signing out.

The console's promises (docs/console.md): a client token signs in through ``/console/login``
into a session cookie that is HttpOnly and SameSite=Strict; "Sign out" ends it; a wrong token
is refused with a message on the form. Each page is saved to var/screenshots/.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.conftest import ANALYST, MANAGER, screenshot
from tests.integration.conftest import RunningDaemon

pytestmark = pytest.mark.browser

SESSION_COOKIE = "overread_session"
#: How long a page may take to arrive on a loaded machine (a wait, not a speed check).
PAGE_WAIT = 60


def _base(daemon: RunningDaemon) -> str:
    return f"http://127.0.0.1:{daemon.http_port}"


def _submit(driver: webdriver.Chrome, button: WebElement) -> None:
    """Click a form's button and wait until the next page has replaced this one and finished loading."""
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    wait = WebDriverWait(driver, PAGE_WAIT)
    wait.until(_replaced(page))
    wait.until(lambda browser: browser.execute_script("return document.readyState") == "complete")


def _replaced(page: WebElement) -> Callable[[webdriver.Chrome], bool]:
    """Whether ``page`` (the old document's root) is gone: stale, or, when Chromium is asked while
    it swaps the documents, "Node with given id does not belong to the document" (which
    ``staleness_of`` does not take for stale)."""

    def check(_driver: webdriver.Chrome) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


def _sign_in(driver: webdriver.Chrome, daemon: RunningDaemon, token: str) -> None:
    """Open the console as a stranger (no cookies), land on the sign-in form, and send ``token``."""
    driver.delete_all_cookies()
    driver.get(f"{_base(daemon)}/console/")
    assert driver.current_url == f"{_base(daemon)}/console/login?next=/console/"
    form = driver.find_element(By.CSS_SELECTOR, "form[action='/console/login']")
    form.find_element(By.NAME, "token").send_keys(token)
    _submit(driver, form.find_element(By.CSS_SELECTOR, "button[type='submit']"))


def _heading(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.TAG_NAME, "h1").text)


def _who(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, "header .who").text)


def test_sign_in_shows_the_overview_with_an_httponly_strict_session(
    driver: webdriver.Chrome, console_daemon: RunningDaemon
) -> None:
    driver.delete_all_cookies()
    driver.get(f"{_base(console_daemon)}/console/login")
    assert _heading(driver) == "Sign in"
    screenshot(driver, "console-login")

    _sign_in(driver, console_daemon, ANALYST)
    assert driver.current_url == f"{_base(console_daemon)}/console/"
    assert _heading(driver) == "Overview"
    assert _who(driver).split() == ["analyst", "phi", "Sign", "out"]
    store = driver.find_element(By.CSS_SELECTOR, "section[aria-labelledby='health-h']").text
    assert "healthy" in store and "unhealthy" not in store
    assert driver.find_element(By.CSS_SELECTOR, "nav a[aria-current='page']").text == "Overview"
    screenshot(driver, "console-overview-analyst")

    cookie = driver.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console/"
    # HttpOnly, seen from the page: its script (were there any) cannot read the session.
    assert SESSION_COOKIE not in str(driver.execute_script("return document.cookie"))


def test_sign_out_ends_the_session(driver: webdriver.Chrome, console_daemon: RunningDaemon) -> None:
    _sign_in(driver, console_daemon, ANALYST)
    assert _heading(driver) == "Overview"
    _submit(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/console/logout'] button"))

    assert driver.current_url == f"{_base(console_daemon)}/console/login"
    assert _heading(driver) == "Sign in"
    assert driver.get_cookie(SESSION_COOKIE) is None
    screenshot(driver, "console-signed-out")
    # The overview is closed again: the browser is sent back to the form.
    driver.get(f"{_base(console_daemon)}/console/")
    assert driver.current_url == f"{_base(console_daemon)}/console/login?next=/console/"


def test_a_wrong_token_is_refused_on_the_form(driver: webdriver.Chrome, console_daemon: RunningDaemon) -> None:
    _sign_in(driver, console_daemon, "not-a-client-token-0001")

    assert driver.current_url == f"{_base(console_daemon)}/console/login"
    assert _heading(driver) == "Sign in"
    alert = driver.find_element(By.CSS_SELECTOR, "[role='alert']")
    assert alert.is_displayed()
    assert alert.text == "That token is not valid."
    assert driver.get_cookie(SESSION_COOKIE) is None
    screenshot(driver, "console-login-refused")


def test_a_client_without_phi_is_shown_as_such(driver: webdriver.Chrome, console_daemon: RunningDaemon) -> None:
    _sign_in(driver, console_daemon, MANAGER)

    assert _heading(driver) == "Overview"
    assert _who(driver).split() == ["manager", "no", "phi", "Sign", "out"]
    screenshot(driver, "console-overview-manager")
