"""Every console page on a tablet (820 x 1180 CSS pixels, portrait): nothing wider than the screen
but the tables, which scroll inside their own box (docs/console.md, "Signing in"). Screenshots of
each page go to var/screenshots/ as ``tablet-*.png``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver

from tests.browser.conftest import ANALYST, screenshot
from tests.browser.test_console_login import _base, _heading, _sign_in
from tests.integration.conftest import RunningDaemon

pytestmark = pytest.mark.browser

#: (path, its heading's start, screenshot name)
PAGES = (
    ("/console/", "Overview", "tablet-overview-24h"),
    ("/console/?window=7d", "Overview", "tablet-overview-7d"),
    ("/console/messages?since=7d", "Messages", "tablet-messages"),
    ("/console/overread", "Overread", "tablet-overread"),
    ("/console/policy", "Routing policy", "tablet-policy"),
)


@pytest.fixture(name="tablet")
def fixture_tablet(driver: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    size = driver.get_window_size()
    driver.set_window_size(820, 1180)
    try:
        yield driver
    finally:
        driver.set_window_size(size["width"], size["height"])


def test_each_page_fits_a_tablet_screen(tablet: webdriver.Chrome, console_daemon: RunningDaemon) -> None:
    _sign_in(tablet, console_daemon, ANALYST)
    for path, heading, name in PAGES:
        tablet.get(f"{_base(console_daemon)}{path}")
        assert _heading(tablet).startswith(heading), path
        inner = int(tablet.execute_script("return window.innerWidth"))
        wide = int(tablet.execute_script("return document.documentElement.scrollWidth"))
        assert wide <= inner, f"{path}: the page is {wide} px wide on a {inner} px screen"
        screenshot(tablet, name)
