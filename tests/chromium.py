"""Where the browser tier finds its browser: Debian's ``chromium`` and ``chromium-driver``.

Tests marked ``browser`` (``tests/browser/``) drive headless Chromium through Selenium and
Chromium's own chromedriver, both named here by path so Selenium Manager never looks for a
driver on the network (docs/development.md, "Browser tests"). When either file is missing
they are deselected, and without the ``selenium`` package ``tests/browser/`` is not collected;
either way one summary line says so, and with ``OVERREAD_REQUIRE_BROWSER=1`` (set by
``.ci/run``) it is an error instead (``tests/conftest.py``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

#: The Chromium binary (default: Debian's ``chromium`` package).
CHROMIUM_ENV = "OVERREAD_CHROMIUM"
#: The chromedriver binary (default: Debian's ``chromium-driver``, built from the same source).
CHROMEDRIVER_ENV = "OVERREAD_CHROMEDRIVER"
#: Set to 1 to make a missing browser, driver or Selenium an error rather than a skipped tier.
REQUIRE_ENV = "OVERREAD_REQUIRE_BROWSER"
#: Where ``screenshot()`` (tests/browser/conftest.py) writes its PNGs: var/ is git-ignored.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"
#: The browser tier's tests (their modules import Selenium, so they are not collected without it).
TIER = Path(__file__).resolve().parent / "browser"


def chromium() -> Path:
    """The Chromium binary the tier starts."""
    return Path(os.environ.get(CHROMIUM_ENV) or "/usr/bin/chromium")


def chromedriver() -> Path:
    """The chromedriver binary Selenium talks to."""
    return Path(os.environ.get(CHROMEDRIVER_ENV) or "/usr/bin/chromedriver")


def has_selenium() -> bool:
    """Whether the ``selenium`` package (the ``test`` extra) is installed."""
    return importlib.util.find_spec("selenium") is not None


def missing() -> list[str]:
    """The binaries the browser tier lacks (empty when it can run), each named for the summary line."""
    return [
        f"{path} ({env})"
        for env, path in ((CHROMIUM_ENV, chromium()), (CHROMEDRIVER_ENV, chromedriver()))
        if not (path.is_file() and os.access(path, os.X_OK))
    ]
