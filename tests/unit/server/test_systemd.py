"""Tests for listener.server.systemd: sd_notify over a real AF_UNIX datagram
socket, the watchdog on task.Clock, and socket activation via Twisted's
``systemd:`` endpoint string as written in systemd/overread.service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from listener.server import systemd

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(name="notify_socket")
def _notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A bound datagram socket standing in for systemd's notification socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock
    sock.close()


def as_reactor(clock: task.Clock) -> IReactorTime:
    # Clock provides IReactorTime; mypy cannot see zope declarations.
    return cast(IReactorTime, clock)


def env_for(sock: socket.socket, **extra: str) -> dict[str, str]:
    return {"NOTIFY_SOCKET": sock.getsockname(), **extra}


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on *sock*, decoded."""
    out = []
    sock.settimeout(0)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return out


def test_ready_stopping_status_arrive(notify_socket: socket.socket) -> None:
    """READY=1, STATUS=... and STOPPING=1 reach the socket named by NOTIFY_SOCKET."""
    env = env_for(notify_socket)
    assert systemd.notify_ready(environ=env)
    assert notify_socket.recv(4096) == b"READY=1"
    assert systemd.notify_ready("listening on 2575", environ=env)
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=listening on 2575"
    assert systemd.notify_status("two\nlines", environ=env)
    assert notify_socket.recv(4096) == b"STATUS=two lines"
    assert systemd.notify_stopping(environ=env)
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    """RELOADING=1 is sent with MONOTONIC_USEC, as systemd 253+ requires."""
    assert systemd.notify_reloading(environ=env_for(notify_socket))
    first, second = notify_socket.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=") and int(second.split("=")[1]) > 0


def test_abstract_namespace_address() -> None:
    """A NOTIFY_SOCKET starting with '@' addresses the abstract namespace."""
    name = f"overread-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_is_a_quiet_no_op(tmp_path: Path) -> None:
    """Unset, unsupported or dead NOTIFY_SOCKET values return False, never raise."""
    assert systemd.notify("READY=1", environ={}) is False
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1"}) is False
    missing = str(tmp_path / "nobody-listens")
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": missing}) is False


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """Half of WATCHDOG_USEC in seconds; None when off, malformed, or when
    WATCHDOG_PID names another process."""
    assert systemd.watchdog_interval(environ, pid=4242) == expected


def test_watchdog_interval_defaults_to_own_pid() -> None:
    """Without pid=, WATCHDOG_PID is compared with os.getpid()."""
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert systemd.watchdog_interval(env) == 1.0


def test_watchdog_pings_on_clock(notify_socket: socket.socket) -> None:
    """start_watchdog pings at once, then every half-interval, until stopped."""
    clock = task.Clock()
    env = env_for(notify_socket, WATCHDOG_USEC="10000000", WATCHDOG_PID="77")
    call = systemd.start_watchdog(as_reactor(clock), environ=env, pid=77)
    assert call is not None
    assert received(notify_socket) == ["WATCHDOG=1"]
    clock.advance(4.9)
    assert received(notify_socket) == []
    clock.advance(0.1)
    assert received(notify_socket) == ["WATCHDOG=1"]
    clock.pump([5.0, 5.0])
    assert received(notify_socket) == ["WATCHDOG=1", "WATCHDOG=1"]
    call.stop()
    clock.advance(20)
    assert received(notify_socket) == []


def test_watchdog_off_returns_none(notify_socket: socket.socket) -> None:
    """No watchdog configured, a foreign WATCHDOG_PID, or no NOTIFY_SOCKET: no
    LoopingCall and nothing scheduled."""
    clock = task.Clock()
    assert systemd.start_watchdog(as_reactor(clock), environ=env_for(notify_socket)) is None
    foreign = env_for(notify_socket, WATCHDOG_USEC="1000000", WATCHDOG_PID="1")
    assert systemd.start_watchdog(as_reactor(clock), environ=foreign, pid=2) is None
    assert systemd.start_watchdog(as_reactor(clock), environ={"WATCHDOG_USEC": "1000000"}) is None
    assert clock.getDelayedCalls() == []
    assert received(notify_socket) == []


CHILD = textwrap.dedent(
    """
    import os, sys
    # Stand in for systemd: hand over the sockets as fds 3 and 4 and describe
    # them in the environment before Twisted's endpoints module reads it.
    os.dup2(int(sys.argv[1]), 3)
    os.dup2(int(sys.argv[2]), 4)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="2",
                      LISTEN_FDNAMES="mllp:http")
    from twisted.internet import reactor, endpoints, protocol

    class Tag(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(self.factory.tag)
            self.transport.loseConnection()

    for name in ("mllp", "http"):
        factory = protocol.Factory.forProtocol(Tag)
        factory.tag = name.encode()
        endpoints.serverFromString(
            reactor, "systemd:domain=INET:name=" + name
        ).listen(factory)
    def wait_for_parent():
        sys.stdin.read()  # until the parent closes our stdin
        reactor.callFromThread(reactor.stop)

    import threading
    threading.Thread(target=wait_for_parent, daemon=True).start()
    reactor.callWhenRunning(print, "listening", flush=True)
    reactor.run()
    """
)


def test_systemd_endpoint_adopts_named_fds() -> None:
    """``systemd:domain=INET:name=mllp`` (as in overread.service) adopts the fd
    named mllp in LISTEN_FDNAMES, and name=http the other one."""
    listeners = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        listeners.append(sock)
    fds = [s.fileno() for s in listeners]
    ports = [s.getsockname()[1] for s in listeners]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, fds)],
        pass_fds=fds,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == b"listening\n"
        for sock in listeners:
            sock.close()  # the child holds its own copies now
        tags = []
        for port in ports:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                tags.append(conn.recv(16))
        assert tags == [b"mllp", b"http"]
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
