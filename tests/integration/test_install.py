"""A real install: build the wheel, install it into a fresh virtualenv outside the checkout,
and use it as the systemd steps of docs/operations.md do (the example config, the units).

Proves that the wheel carries the default mappings/ and policies/ (``overread check``
and ``overread serve`` find them with no checkout), that ``examples/overread.yaml`` is
a working config whose ports the flags override, and that the units pass
``systemd-analyze verify`` when installed as documented. Dependencies come from the
package index through pip (its cache makes a second run quick): about 30-60 s.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, free_port

pytestmark = pytest.mark.install

#: What a source distribution holds (MANIFEST.in): the build reads nothing else.
SOURCE = (
    "listener",
    "mappings",
    "policies",
    "systemd",
    "examples",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "mypyc-modules.txt",
)
SAMPLE = REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7"
#: Original acknowledgment mode (no MSH-15/16), so the accept is AA (enhanced mode answers CA).
ORIGINAL_MODE = REPO / "samples" / "hl7" / "v23-mr-lumbar-spine-pinevale-feed.hl7"


def _run(cmd: list[str], *, cwd: Path, timeout: float, pure: bool = False) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "VIRTUAL_ENV")
    }
    if pure:
        env["OVERREAD_MYPYC"] = "0"  # setup.py: no mypyc build (docs/development.md, "Compiled modules")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(name="venv", scope="module")
def fixture_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no system site-packages) with the freshly built wheel installed."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    for name in SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "defaults", "*.so"))
        else:
            shutil.copy2(REPO / name, src / name)
    # A pure-Python wheel: compiling (minutes) is make test's own install; this test is the packaging.
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "wheels"), str(src)],
        cwd=root,
        timeout=300,
        pure=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "wheels").glob("overread_listener-*.whl")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root, timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]
    # The test environment's pip installs into the new venv (--python): no pip bootstrap needed.
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--retries",
            "5",
            str(wheel),
        ],
        cwd=root,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


@pytest.fixture(name="etc")
def fixture_etc(tmp_path: Path) -> Path:
    """``/etc/overread`` as step 1 of docs/operations.md leaves it: the example config, nothing else."""
    etc = tmp_path / "etc" / "overread"
    etc.mkdir(parents=True)
    shutil.copy2(REPO / "examples" / "overread.yaml", etc / "overread.yaml")
    return etc


def test_installed_package_finds_its_defaults_without_a_checkout(venv: Path, etc: Path, tmp_path: Path) -> None:
    """The installed listener reads mappings/policies from inside the wheel and checks a sample."""
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import listener, listener.resources as r; print(listener.__file__); print(r.defaults_root())",
        ],
        cwd=tmp_path,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    package, defaults = where.stdout.split()
    assert Path(package).is_relative_to(venv) and Path(defaults).is_relative_to(venv)
    for name in ("mappings/default.yaml", "mappings/procedures.yaml", "policies/routing.yaml", "policies/terms"):
        assert (Path(defaults) / name).exists(), name
    sample = tmp_path / SAMPLE.name
    shutil.copy2(SAMPLE, sample)
    check = _run(
        [str(venv / "bin" / "overread"), "check", "--config", str(etc / "overread.yaml"), str(sample)],
        cwd=tmp_path,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "accession" in check.stdout and "route: release" in check.stdout


@pytest.fixture(name="served")
def fixture_served(venv: Path, etc: Path, tmp_path: Path) -> Iterator[tuple[int, int, subprocess.Popen[bytes]]]:
    """``overread serve --config <example>`` from the venv, on free ports given by flags."""
    mllp, http = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "VIRTUAL_ENV")
    }
    with open(tmp_path / "serve.out", "wb") as out:
        proc = subprocess.Popen(
            [
                str(venv / "bin" / "overread"),
                "serve",
                "--config",
                str(etc / "overread.yaml"),
                "--log-format",
                "json",
                "--mllp",
                f"tcp:{mllp}:interface=127.0.0.1",
                "--http",
                f"tcp:{http}:interface=127.0.0.1",
                "--state-dir",
                str(tmp_path / "state"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.out").read_text("utf-8", "replace")[-3000:]
            try:
                socket.create_connection(("127.0.0.1", mllp), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", http), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the installed daemon did not start listening"
                time.sleep(0.1)
        yield mllp, http, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_installed_daemon_with_the_example_config_answers_aa(
    venv: Path, served: tuple[int, int, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The installed daemon answers samples sent over MLLP (AA in original mode, CA in enhanced mode),
    serves /healthz, and stops cleanly on SIGTERM."""
    mllp, http, proc = served
    sent = _run(
        [str(venv / "bin" / "overread"), "send", "--to", f"127.0.0.1:{mllp}", str(ORIGINAL_MODE), str(SAMPLE)],
        cwd=tmp_path,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert re.findall(r"^MSA\|(\w\w)\|", sent.stdout, flags=re.M) == ["AA", "CA"], sent.stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=10) as reply:
        assert reply.status == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert (tmp_path / "state" / "overread.db").is_file()


def _install_steps() -> str:
    text = (REPO / "docs" / "operations.md").read_text("utf-8")
    start = text.index("## Install as a systemd service")
    return text[start : text.index("\n## ", start + 1)]


def test_install_steps_install_the_example_config_and_the_documentation(tmp_path: Path) -> None:
    """The config the steps install exists in the repository, and so does what Documentation= names."""
    steps = _install_steps()
    assert re.search(r"install .*examples/overread\.yaml /etc/overread/overread\.yaml", steps)
    service = (REPO / "systemd" / "overread.service").read_text("utf-8")
    (doc,) = re.findall(r"^Documentation=file://(\S+)$", service, flags=re.M)
    installed = re.search(rf"install .*\s(\S+)\s+{re.escape(doc)}", steps)
    assert installed is not None, f"no step of docs/operations.md installs {doc}"
    assert (REPO / installed.group(1)).is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_as_installed_pass_systemd_analyze_verify(venv: Path, tmp_path: Path) -> None:
    """The three units, with /opt/overread/.venv standing for this test's virtualenv, verify cleanly."""
    units = tmp_path / "system"
    units.mkdir()
    for name in ("overread.service", "overread.socket", "overread-http.socket"):
        text = (REPO / "systemd" / name).read_text("utf-8").replace("/opt/overread/.venv", str(venv))
        (units / name).write_text(text, "utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(p) for p in sorted(units.iterdir()))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
