"""Fixtures that run the real daemon (``python -m listener serve``) on 127.0.0.1.

The port is found by binding a socket to port 0 and closing it (``tcp:0`` would
hide the port from the test); the state directory lives in ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from listener.config import usable_cores
from listener.hl7v2.mllp import MllpFramer, frame
from tests.conftest import cli_json_lines

REPO = Path(__file__).resolve().parents[2]


_HANDED_OUT: set[int] = set()

#: Seconds a started daemon may take to listen (OVERREAD_TEST_START_TIMEOUT). 30 by default: the
#: daemon listens once its worker processes have built their pipelines (one per core by default,
#: docs/hardening.md, "Worker processes"), which a loaded machine slows down.
START_TIMEOUT = float(os.environ.get("OVERREAD_TEST_START_TIMEOUT", "30"))


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _worker_slice(low: int, high: int) -> tuple[int, int]:
    """This test process's share of [low, high]: pytest-xdist workers never share a port.

    Each worker (``PYTEST_XDIST_WORKER`` = gw0, gw1, ...) draws from its own
    slice of the range; a run without workers draws from all of it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return low, high
    index = int(worker[2:])
    width = (high - low + 1) // count
    return low + index * width, low + (index + 1) * width - 1


def free_port() -> int:
    """A TCP port that is free now on 127.0.0.1, never handed out before in this run.

    Chosen below the kernel's ephemeral range: a port the kernel picked for
    bind(0) can be picked again for any outgoing connection (a test client,
    the daemon's outbound worker) before the daemon gets to listen on it.
    """
    low, _ = _ephemeral_range()
    first, last = _worker_slice(10000, max(low - 1, 11000))
    for _ in range(1000):
        port = random.randint(first, last)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def _config_sets_workers(extra: tuple[str, ...]) -> bool:
    """True when ``extra`` names a ``--config`` file with a top-level ``workers`` key."""
    if "--config" not in extra:
        return False
    path = Path(extra[extra.index("--config") + 1])
    return path.is_file() and re.search(r"^workers\s*:", path.read_text(encoding="utf-8"), re.MULTILINE) is not None


class RunningDaemon:
    """One daemon subprocess; stdout/stderr go to files in the state dir's parent."""

    def __init__(
        self,
        state_dir: Path,
        log_dir: Path,
        port: int | None = None,
        extra: tuple[str, ...] = (),
        start_timeout: float = START_TIMEOUT,
        workers: str | None = "0",
    ) -> None:
        """``workers``: the ``serve --workers`` a test daemon runs. ``"0"`` (threads) unless the test is
        about worker processes: None runs the default (``auto``), and so does a ``--config`` file that
        sets ``workers`` itself (docs/development.md, "Test daemons and worker processes")."""
        self.state_dir = state_dir
        self.start_timeout = start_timeout
        self.port = port or free_port()
        # Every daemon gets its own HTTP port (the embedded default, 8080, would clash
        # between tests and with a `make run`), unless the test passes --http itself.
        self.http_port: int | None = None if "--http" in extra else free_port()
        self.log_dir = log_dir
        self.extra = extra
        self.workers = None if workers is None or _config_sets_workers(extra) else workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> None:
        """Start and wait until the port accepts connections."""
        self.runs += 1
        out = open(self.log_dir / f"stdout.{self.runs}", "wb")  # noqa: SIM115 - the daemon writes to it until stop()
        err = open(self.log_dir / f"stderr.{self.runs}", "wb")  # noqa: SIM115 - the same
        cmd = [
            sys.executable,
            "-m",
            "listener",
            "serve",
            "--log-format",
            "json",
            "--mllp",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--state-dir",
            str(self.state_dir),
            *self.extra,
        ]
        if self.http_port is not None:
            cmd += ["--http", f"tcp:{self.http_port}:interface=127.0.0.1"]
        if self.workers is not None:
            cmd += ["--workers", self.workers]
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS")}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=env)
        out.close()
        err.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                logged = [line for line in self.log_lines() if line.get("level") in ("error", "critical")][-5:]
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.stderr()[-2000:]} {logged}")
            try:
                socket.create_connection(self.address, timeout=0.2).close()
                if self.http_port is not None:
                    socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("daemon did not start listening")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit status (on a timeout: kill, and say what the daemon logged last)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout, f"signal {sig}")

    def wait(self, timeout: float = 20, after: str = "the signal the test sent") -> int:
        """Wait for the exit status of a daemon already told to stop, sending nothing more.

        A test that sent SIGTERM itself waits here rather than in :meth:`stop`: a second SIGTERM
        would race the first one's shutdown (docs/operations.md, "Signals, restarts and the state
        directory lock").
        """
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            events = [str(line.get("event")) for line in self.log_lines()][-15:]
            raise AssertionError(
                f"the daemon did not exit within {timeout:.0f} s of {after}; "
                f"last events: {events}; stderr: {self.stderr()[-1500:]}"
            ) from None

    def stdout(self) -> str:
        return "".join(p.read_text("utf-8", "replace") for p in sorted(self.log_dir.glob("stdout.*")))

    def stderr(self) -> str:
        return "".join(p.read_text("utf-8", "replace") for p in sorted(self.log_dir.glob("stderr.*")))

    def log_lines(self) -> list[dict[str, object]]:
        """The daemon's JSON log lines so far (a last line still being written is not one yet)."""
        text = self.stdout()
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

    def messages(self) -> list[dict[str, object]]:
        """``overread messages --format json`` on the daemon's store, through ``listener.cli.main`` in
        the test process (:func:`tests.conftest.run_cli`: the command's code without the second of CPU
        a subprocess spends starting; tests/integration/test_store_ops.py runs it as a subprocess)."""
        return cli_json_lines("messages", "--format", "json", "--state-dir", str(self.state_dir))


def workers_of(daemon: RunningDaemon) -> list[int]:
    """The daemon's child processes (its worker processes, docs/hardening.md), by pid."""
    assert daemon.proc is not None
    pids: list[int] = []
    for task in Path(f"/proc/{daemon.proc.pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def default_workers(daemon: RunningDaemon, timeout: float = 60) -> list[int]:
    """The pids of the worker processes of a daemon run with the default ``workers`` (``auto``), once all
    have started: one per core the daemon may use, none on a host of one core (docs/configuration.md)."""
    expected = usable_cores() if usable_cores() > 1 else 0
    deadline = time.monotonic() + timeout
    while True:
        pids = workers_of(daemon)
        if len(pids) == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(pids) == expected, f"{len(pids)} worker processes, not {expected}"
    return pids


def running(pid: int) -> bool:
    """True while process ``pid`` exists and has not exited (a zombie nobody reaped yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class MllpConnection:
    """A small blocking MLLP client for tests."""

    def __init__(self, address: tuple[str, int], timeout: float = 10) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.framer = MllpFramer()
        self.pending: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes:
        """The next ACK frame (raises TimeoutError / ConnectionError)."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.pending.extend(self.framer.feed(data))
        return self.pending.pop(0)

    def request(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.receive()

    def receive_until_closed(self) -> list[bytes]:
        """Every ACK frame still to come, until the daemon closes the connection (or a read times out)."""
        acks: list[bytes] = []
        try:
            while True:
                acks.append(self.receive())
        except (ConnectionError, OSError):
            return acks

    def close(self) -> None:
        self.sock.close()


def post_report(daemon: RunningDaemon, body: bytes, token: str) -> tuple[int, str]:
    """POST a DiagnosticReport to the daemon's FHIR endpoint as the client of ``token``: the
    answer's status and its ``Location`` ("" when none)."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port or 0, timeout=30)
    try:
        conn.request(
            "POST",
            "/fhir/DiagnosticReport",
            body=body,
            headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location") or ""
    finally:
        conn.close()


def msa(ack: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-2 of an ACK."""
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.decode("latin-1").split("|")
            return fields[1], fields[2] if len(fields) > 2 else ""
    raise AssertionError("no MSA segment")


def with_control_id(raw: bytes, control_id: str) -> bytes:
    """``raw`` with MSH-10 replaced (a '|'-separated message)."""
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields[9] = control_id.encode()
    segments[0] = b"|".join(fields)
    return b"\r".join(segments)


def http_client(name: str, token: str, allow: str | None = None) -> str:
    """One entry of an ``http_clients`` section: client ``name`` with token ``token``, allowed ``allow``
    (a YAML list's items), or the default when ``None`` (docs/configuration.md, "HTTP clients and tokens")."""
    allowed = "" if allow is None else f", allow: [{allow}]"
    return f"  {name}: {{token_sha256: {hashlib.sha256(token.encode()).hexdigest()}{allowed}}}\n"


def analyst_and_sender(analyst: str, sender: str, allow: str) -> str:
    """An ``http_clients`` section: client "analyst" with token ``analyst``, allowed ``allow`` (a YAML
    list's items), and client "sender" with token ``sender``, allowed the default (docs/http-api.md);
    more entries (:func:`http_client`) may follow."""
    return "http_clients:\n" + http_client("analyst", analyst, allow) + http_client("sender", sender)


def overread_json(config: Path, state_dir: Path, *argv: str) -> dict[str, Any]:
    """The JSON document an ``overread`` command prints with ``--format json``, run as a user
    runs it (a subprocess in the checkout) on ``config`` and the state directory ``state_dir``."""
    proc = subprocess.run(
        [sys.executable, "-m", "listener", *argv, "--format", "json", "--config", str(config)]
        + ["--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def start_configured(root: Path, config: str) -> tuple[RunningDaemon, Path]:
    """A started daemon run with ``--config`` ``root``/overread.yaml holding ``config``; its state in
    ``root``/state, its logs in ``root``/logs. Returns the daemon and the config file's path."""
    path = root / "overread.yaml"
    path.write_text(config, encoding="utf-8")
    logs = root / "logs"
    logs.mkdir()
    daemon = RunningDaemon(root / "state", logs, extra=("--config", str(path)))
    daemon.start()
    return daemon, path


@contextmanager
def started(daemon: RunningDaemon, *, may_be_stopped: bool = False) -> Iterator[RunningDaemon]:
    """``daemon`` started for the block, then stopped with SIGTERM and checked to exit 0.

    ``may_be_stopped``: the block may have stopped or killed it itself (a test's own daemon); a
    daemon shared by a module's tests must still be running at the end, so a crash fails.
    """
    daemon.start()
    try:
        yield daemon
    finally:
        if not (may_be_stopped and daemon.proc is not None and daemon.proc.poll() is not None):
            assert daemon.stop() == 0


@pytest.fixture(name="oru")
def fixture_oru(corpus: Path) -> bytes:
    """A radiology ORU^R01 shipped in tests/data (scout XR chest, v2.7, CR segments)."""
    return (corpus / "hl7" / "scout" / "oru_v27_prelim_xr_chest.hl7").read_bytes()


@pytest.fixture(name="daemon")
def fixture_daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    """A started daemon; stopped with SIGTERM (and checked to exit 0) afterwards."""
    logs = tmp_path / "logs"
    logs.mkdir()
    with started(RunningDaemon(tmp_path / "state", logs), may_be_stopped=True) as daemon:
        yield daemon


@pytest.fixture(name="shared_daemon", scope="module")
def fixture_shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One started daemon for the module's tests that need a running daemon but not an empty one
    (docs/development.md, "Shared test daemons"); stopped with SIGTERM (and checked to exit 0) after
    the module. Its tests send messages of their own (control ID, identifiers) and read back only
    those: :func:`new_messages`, log lines filtered by control ID."""
    root = tmp_path_factory.mktemp("shared")
    (root / "logs").mkdir()
    with started(RunningDaemon(root / "state", root / "logs")) as daemon:
        yield daemon


def message_ids(daemon: RunningDaemon) -> set[str]:
    """The ``message_id`` of every message the daemon's store holds (``overread messages``)."""
    return {str(m["message_id"]) for m in daemon.messages()}


def new_messages(daemon: RunningDaemon, before: set[str]) -> list[dict[str, object]]:
    """The stored messages whose ``message_id`` is not in ``before`` (:func:`message_ids` taken
    earlier): what a test stored on a shared daemon, whose tests run one at a time."""
    return [m for m in daemon.messages() if m["message_id"] not in before]
