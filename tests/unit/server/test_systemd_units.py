"""The shipped systemd units: required directives, names that match the daemon, and what
systemd itself says about them (``systemd-analyze verify`` and ``security``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[3] / "systemd"


def directives(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (continuation lines joined; repeated keys kept)."""
    out: dict[str, list[str]] = {}
    text = re.sub(r"\\\n\s*", " ", path.read_text("utf-8"))
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_service_is_notify_watchdog_restart_dedicated_user_and_hardened() -> None:
    """overread.service: Type=notify with a watchdog, Restart=on-failure, its own user and
    state directory, and the hardening the issue names."""
    d = directives(UNITS / "overread.service")
    required = {
        "Type": "notify",
        "Restart": "on-failure",
        "User": "overread",
        "StateDirectory": "overread",
        "StateDirectoryMode": "0700",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "KillSignal": "SIGTERM",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet": "",
    }
    for key, value in required.items():
        assert d.get(key) == [value], key
    assert int(d["WatchdogSec"][0]) > 0
    exec_start = d["ExecStart"][0]
    assert "serve" in exec_start and "--state-dir /var/lib/overread" in exec_start


def test_sockets_name_the_fds_the_daemon_adopts() -> None:
    """Each socket unit's FileDescriptorName is the name in the service's systemd: endpoint,
    and both sockets listen on loopback by default."""
    exec_start = directives(UNITS / "overread.service")["ExecStart"][0]
    for unit, flag in (("overread.socket", "--mllp"), ("overread-http.socket", "--http")):
        d = directives(UNITS / unit)
        name = d["FileDescriptorName"][0]
        assert f"{flag} systemd:domain=INET:name={name}" in exec_start
        assert d["ListenStream"][0].startswith("127.0.0.1:")
        assert d["Service"] == ["overread.service"]


def _installed_copy(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this checkout's `overread` (verify wants a real binary)."""
    for unit in UNITS.glob("overread*"):
        text = unit.read_text("utf-8").replace(
            "/opt/overread/.venv/bin/overread", str(Path(sys.executable).parent / "overread")
        )
        (tmp_path / unit.name).write_text(text)
    return tmp_path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing wrong with the three units."""
    units = _installed_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(p) for p in sorted(units.iterdir()))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates the service 2.0 or better (docs/operations.md: about 1.3)."""
    units = _installed_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(units / "overread.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for overread\.service: ([0-9.]+)", result.stdout)
    if match is None and "offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    assert match is not None, result.stderr
    assert float(match.group(1)) <= 2.0
