"""Shared fixtures and the two data tiers: shipped test data, and the report-text corpus.

* ``tests/data/`` holds the public HL7 v2 and FHIR files the tests read (copied from
  ../shared/corpus with their licences beside them, see ``tests/data/*/PROVENANCE.md``).
  Every unit, conformance and integration test reads only files the repository ships.
* Real report texts (Indiana, MTSamples, ...) may not be copied. Tests that read them
  carry ``@pytest.mark.corpus`` and read ``../shared/corpus/reports`` (``REPORTS``).
  When that folder is absent they are deselected and one summary line says how many
  and why; with ``OVERREAD_REQUIRE_CORPUS=1`` (set by ``.ci/run`` when ../shared/corpus
  exists) its absence is an error instead.
* Tests marked ``postgresql`` (the store contract on the PostgreSQL backend) need the
  test server ``.ci/postgres.sh`` starts (``OVERREAD_TEST_PG_DSN``, see ``tests/postgres.py``).
  Without it they are deselected with one summary line; with ``OVERREAD_REQUIRE_PG=1``
  (set by ``.ci/run``) its absence is an error instead.
* Tests marked ``browser`` (``tests/browser/``) drive headless Chromium (``tests/chromium.py``).
  Without Chromium, chromedriver or Selenium they are deselected with one summary line; with
  ``OVERREAD_REQUIRE_BROWSER=1`` (set by ``.ci/run``) that is an error instead. When they run,
  one summary line names the folder their screenshots went to.
"""

from __future__ import annotations

import compileall
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7
import pytest
import structlog

from listener.assemble import build_pipeline
from listener.config import load_config
from listener.pipeline import Pipeline
from tests import chromium
from tests.postgres import DSN_ENV as PG_DSN_ENV
from tests.postgres import REQUIRE_ENV as REQUIRE_PG_ENV
from tests.postgres import server_dsn

REPO = Path(__file__).resolve().parent.parent
#: HL7 v2 (``hl7/``) and FHIR (``fhir/``) files shipped with the repository.
DATA = REPO / "tests" / "data"
#: Kept for imports: the shipped files mirror ../shared/corpus's hl7/ and fhir/ layout.
CORPUS = DATA
#: The report-text tier's input, never copied into the repository.
SHARED_CORPUS = REPO.parent / "shared" / "corpus"
REPORTS = SHARED_CORPUS / "reports"
#: Set to 1 to make a missing ``REPORTS`` folder an error rather than a skipped tier.
REQUIRE_CORPUS_ENV = "OVERREAD_REQUIRE_CORPUS"
RECEIVED = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)

_DESELECTED = pytest.StashKey[int]()
_PG_DESELECTED = pytest.StashKey[int]()
_BROWSER_SKIPPED = pytest.StashKey[str]()
_STARTED = pytest.StashKey[float]()
#: The tier lines pytest-xdist workers sent back (their ``workeroutput`` entry ``_WORKER_KEY``).
_FROM_WORKERS = pytest.StashKey[list[str]]()
_WORKER_KEY = "overread_tier_lines"


def pytest_configure(config: pytest.Config) -> None:
    """Note when the run started (the summary counts the screenshots written since), and on the
    controller (or a run without workers) write listener's bytecode before any test starts."""
    config.stash[_STARTED] = time.time()
    if not hasattr(config, "workerinput"):
        compile_listener()


def compile_listener() -> None:
    """Write the bytecode of listener/ into its ``__pycache__`` folders, once per run.

    Where ``PYTHONDONTWRITEBYTECODE`` is set no process writes it, so each of the hundreds of
    daemons and ``overread`` commands the suite starts compiled the package's source again,
    some 0.3 s of CPU each (docs/development.md, "Running the suite"). Python reads bytecode
    whatever that variable says; files whose bytecode is current are skipped.
    """
    compileall.compile_dir(REPO / "listener", quiet=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the ``corpus`` tier when ../shared/corpus/reports is absent, the ``postgresql``
    tests when no test server runs, and the ``browser`` tier when Chromium is missing
    (or refuse any of them, if required)."""
    _drop_postgresql(config, items)
    _drop_browser(config, items)
    tier = [item for item in items if item.get_closest_marker("corpus") is not None]
    if not tier or REPORTS.is_dir():
        return
    if os.environ.get(REQUIRE_CORPUS_ENV) == "1":
        raise pytest.UsageError(
            f"{REQUIRE_CORPUS_ENV}=1 but {REPORTS} is missing: the corpus tier ({len(tier)} tests) would not run"
        )
    items[:] = [item for item in items if item.get_closest_marker("corpus") is None]
    config.hook.pytest_deselected(items=tier)
    config.stash[_DESELECTED] = len(tier)


def _drop_postgresql(config: pytest.Config, items: list[pytest.Item]) -> None:
    pg = [item for item in items if item.get_closest_marker("postgresql") is not None]
    if not pg or server_dsn() is not None:
        return
    if os.environ.get(REQUIRE_PG_ENV) == "1":
        raise pytest.UsageError(
            f"{REQUIRE_PG_ENV}=1 but {PG_DSN_ENV} is not set: the PostgreSQL tests ({len(pg)}) would not run"
        )
    items[:] = [item for item in items if item.get_closest_marker("postgresql") is None]
    config.hook.pytest_deselected(items=pg)
    config.stash[_PG_DESELECTED] = len(pg)


def _drop_browser(config: pytest.Config, items: list[pytest.Item]) -> None:
    tier = [item for item in items if item.get_closest_marker("browser") is not None]
    absent = chromium.missing() if tier else []
    if not absent:
        return
    what = " and ".join(absent) + (" is" if len(absent) == 1 else " are")
    _skip_browser(
        config, f"{len(tier)} tests not run because {what} missing", "apt-get install chromium chromium-driver"
    )
    items[:] = [item for item in items if item.get_closest_marker("browser") is None]
    config.hook.pytest_deselected(items=tier)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave out ``tests/browser/`` when Selenium is not installed: its modules import it."""
    if collection_path != chromium.TIER or chromium.has_selenium():
        return None
    _skip_browser(
        config, f"{collection_path} not collected because the selenium package is missing", "pip install -e '.[test]'"
    )
    return True


def _skip_browser(config: pytest.Config, why: str, install: str) -> None:
    """Note the browser tier's summary line, or stop the run when the tier is required."""
    if os.environ.get(chromium.REQUIRE_ENV) == "1":
        raise pytest.UsageError(f"{chromium.REQUIRE_ENV}=1 but the browser tier cannot run: {why}")
    config.stash[_BROWSER_SKIPPED] = (
        f"browser tier skipped: {why} (install with: {install}; {chromium.REQUIRE_ENV}=1 makes this an error)"
    )


def _tier_lines(config: pytest.Config) -> list[str]:
    """The summary lines of the tiers this process dropped (see the module docstring)."""
    lines = []
    pg = config.stash.get(_PG_DESELECTED, 0)
    if pg:
        lines.append(
            f"postgresql tests skipped: {pg} tests not run because {PG_DSN_ENV} is not set"
            f' (start a server with: eval "$(bash .ci/postgres.sh start)"; {REQUIRE_PG_ENV}=1 makes this an error)'
        )
    browser = config.stash.get(_BROWSER_SKIPPED, "")
    if browser:
        lines.append(browser)
    count = config.stash.get(_DESELECTED, 0)
    if count:
        lines.append(
            f"corpus tier skipped: {count} tests not run because {REPORTS} is absent "
            f"(real report texts are not shipped; {REQUIRE_CORPUS_ENV}=1 makes this an error)"
        )
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand the tier lines to the controller, which prints the summary."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[_WORKER_KEY] = _tier_lines(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist controller: keep a finished worker's tier lines (every worker collects them all)."""
    kept = node.config.stash.setdefault(_FROM_WORKERS, [])
    for line in getattr(node, "workeroutput", {}).get(_WORKER_KEY, []):
        if line not in kept:
            kept.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """One line for each whole skipped tier (instead of one skip line per test), and where screenshots went."""
    lines = _tier_lines(config)
    for line in [*lines, *(line for line in config.stash.get(_FROM_WORKERS, []) if line not in lines)]:
        terminalreporter.write_line(line)
    started = config.stash.get(_STARTED, time.time())
    shots = [p for p in chromium.SCREENSHOTS.glob("*.png") if p.stat().st_mtime >= started]
    if shots:
        terminalreporter.write_line(f"browser tier screenshots: {len(shots)} PNG files in {chromium.SCREENSHOTS}")


def run_cli(*argv: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """``overread ARGV``: its exit status (a parser error's SystemExit too), stdout and stderr.

    Through ``listener.cli.main`` in this process, as ``python -m listener`` calls it; with
    ``process``, a real ``python -m listener`` subprocess. A subprocess costs over a second of
    CPU, mostly compiling patterns at import, so only a test of what depends on the process (the
    exit status the shell sees, what reaches a terminal) runs one.
    """
    if process:
        return subprocess.run(
            [sys.executable, "-m", "listener", *argv], capture_output=True, text=True, cwd=REPO, timeout=120
        )
    from listener.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def cli_json_lines(*argv: str) -> list[dict[str, Any]]:
    """The JSON lines ``overread ARGV`` prints (in process, :func:`run_cli`), which must exit 0."""
    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(name="pipeline", scope="session")
def fixture_pipeline() -> Pipeline:
    """The pipeline built from the repository's own mappings and tables."""
    return build_pipeline(load_config(None))


@pytest.fixture(name="corpus", scope="session")
def fixture_corpus() -> Path:
    """tests/data: the shipped HL7 v2 (``hl7/``) and FHIR (``fhir/``) test files.

    Named ``corpus`` because it mirrors ../shared/corpus/{hl7,fhir}, which it was copied from.
    """
    if not (DATA / "hl7").is_dir():
        pytest.fail(f"shipped test data not found at {DATA}")
    return DATA


@pytest.fixture(name="reports", scope="session")
def fixture_reports() -> Path:
    """../shared/corpus/reports, read at test time (only ``corpus``-marked tests use it)."""
    return REPORTS


@pytest.fixture(name="restore_logging")
def fixture_restore_logging() -> Iterator[None]:
    """Undo configure_logging's global changes after the test (structlog, the root logger, the hooks)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    silenced = [logging.getLogger(name) for name in (hl7.util.logger.name, hl7.containers.logger.name, "hl7", "hl7apy")]
    saved = [(lg, lg.level, lg.propagate, lg.handlers[:]) for lg in silenced]
    yield
    for lg, lg_level, propagate, lg_handlers in saved:
        lg.setLevel(lg_level)
        lg.propagate = propagate
        lg.handlers[:] = lg_handlers
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = hooks
