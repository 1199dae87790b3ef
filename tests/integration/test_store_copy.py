"""`overread store copy` beside real daemons: a store in use is refused, on SQLite (the state
directory's lock) and on PostgreSQL (the in-use advisory lock every open store holds SHARED);
a moved store serves on (docs/store.md, "Moving a store")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, msa, with_control_id
from tests.postgres import as_url, fresh_schema, server_dsn

pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgresql

START_TIMEOUT = 60


def _copy(src: str, dst: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listener", "store", "copy", "--from", src, "--to", dst, "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _daemon(tmp_path: Path, name: str, *extra: str) -> RunningDaemon:
    (tmp_path / f"logs-{name}").mkdir()
    return RunningDaemon(
        tmp_path / f"state-{name}", tmp_path / f"logs-{name}", extra=extra, start_timeout=START_TIMEOUT
    )


def _request(daemon: RunningDaemon, payload: bytes) -> bytes:
    conn = MllpConnection(daemon.address)
    try:
        return conn.request(payload)
    finally:
        conn.close()


def test_copy_refuses_stores_in_use_and_the_moved_store_serves_on(tmp_path: Path, oru: bytes) -> None:
    """SQLite daemon running: refused. Stopped: copied up. A daemon on the PostgreSQL copy answers a
    resend with the ACK stored before the move; while it runs, copying from or into it is refused;
    stopped, the store copies back down, the resend's row with it."""
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        url = as_url(dsn)
        sqlite_daemon = _daemon(tmp_path, "sqlite")
        sqlite_daemon.start()
        try:
            first = _request(sqlite_daemon, with_control_id(oru, "MOVE-1"))
            assert msa(first) == ("AA", "MOVE-1")
            busy = _copy(f"sqlite:{sqlite_daemon.state_dir}", url)
            assert busy.returncode == 2, busy.stderr
            assert "a daemon (overread serve) is using" in busy.stderr and "before the copy" in busy.stderr
        finally:
            assert sqlite_daemon.stop() == 0
        up = _copy(f"sqlite:{sqlite_daemon.state_dir}", url)
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["tables"]["messages"]["rows"] == 1

        config = tmp_path / "pg.yaml"
        config.write_text(f"store: {url}\n", encoding="utf-8")
        pg_daemon = _daemon(tmp_path, "pg", "--config", str(config))
        pg_daemon.start()
        try:
            assert _request(pg_daemon, with_control_id(oru, "MOVE-1")) == first  # the stored answer, moved
            assert msa(_request(pg_daemon, with_control_id(oru, "MOVE-2"))) == ("AA", "MOVE-2")
            busy = _copy(url, f"sqlite:{tmp_path / 'down'}")
            assert busy.returncode == 2, busy.stderr
            assert "is in use: a daemon (overread serve)" in busy.stderr and "before the copy" in busy.stderr
            assert not (tmp_path / "down" / "overread.db").exists()
            into = _copy(f"sqlite:{sqlite_daemon.state_dir}", url)
            assert into.returncode == 2 and "is in use" in into.stderr
        finally:
            assert pg_daemon.stop() == 0
        down = _copy(url, f"sqlite:{tmp_path / 'down'}")
        assert down.returncode == 0, down.stderr
        tables = json.loads(down.stdout)["tables"]
        assert tables["messages"]["rows"] == 2 and tables["health_probe"]["rows"] <= 1
