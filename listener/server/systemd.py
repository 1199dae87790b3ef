"""systemd integration: readiness, status and watchdog notifications.

Layer: Twisted shell (the watchdog takes an ``IReactorTime``, so tests pass
``task.Clock``). Promise: no dependency beyond the standard library, and nothing
here ever raises into the reactor; outside systemd every call is a no-op that
returns False or None.

The ``sd_notify`` protocol is one datagram of newline-separated ``KEY=VALUE``
assignments sent to the AF_UNIX socket named in ``$NOTIFY_SOCKET``; a leading
``@`` names a socket in the abstract namespace.

Socket activation needs no code here: Twisted's ``systemd:`` endpoint adopts
the inherited descriptors. With ``FileDescriptorName=mllp`` in the socket unit
the endpoint string is ``systemd:domain=INET:name=mllp``. Twisted reads
``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES`` once, when
``twisted.internet.endpoints`` is first imported, and then deletes
``LISTEN_PID`` and ``LISTEN_FDS`` from ``os.environ``; so the daemon must not
fork before that import, and code that checks those variables afterwards
finds them gone.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

__all__ = [
    "notify",
    "notify_ready",
    "notify_reloading",
    "notify_status",
    "notify_stopping",
    "start_watchdog",
    "watchdog_interval",
]

# Status texts are operator-facing; keep them one short line.
_MAX_STATUS = 200


def _address(environ: Mapping[str, str]) -> str | None:
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    # Unset, empty, or a transport we do not speak (systemd >= 254 also
    # accepts "vsock:"): behave as if not under systemd.
    return None


def notify(state: str, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Send *state* to the service manager.

    Args:
        state: newline-separated assignments, e.g. ``"READY=1"``.
        environ: where to look up ``NOTIFY_SOCKET`` (tests pass a dict).

    Returns:
        True if the datagram was sent; False when ``NOTIFY_SOCKET`` is unset or
        unusable, or sending failed. Never raises: a missed notification must
        not take the daemon down (systemd's watchdog will notice if it matters).
    """
    address = _address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True


def notify_ready(status: str | None = None, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd start-up is complete (``READY=1``), optionally with a status.

    Send it once the listening ports are open and the store is usable:
    ``Type=notify`` units count as started only then.
    """
    state = "READY=1"
    if status is not None:
        state += "\n" + _status(status)
    return notify(state, environ=environ)


def notify_reloading(*, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd a reload (SIGHUP) has begun; send ``READY=1`` when done.

    ``MONOTONIC_USEC`` is included because systemd 253+ requires it with
    ``RELOADING=1`` for ``Type=notify-reload`` units, and older ones ignore it.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", environ=environ)


def notify_stopping(*, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell systemd the daemon is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1", environ=environ)


def notify_status(text: str, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Set the one-line status shown by ``systemctl status``.

    The text must not carry message data; newlines are replaced by spaces and it
    is cut to 200 characters.
    """
    return notify(_status(text), environ=environ)


def _status(text: str) -> str:
    one_line = " ".join(text.splitlines())
    return "STATUS=" + one_line[:_MAX_STATUS]


def watchdog_interval(environ: Mapping[str, str] = os.environ, *, pid: int | None = None) -> float | None:
    """Return how often to send ``WATCHDOG=1``, in seconds, or None for never.

    systemd sets ``WATCHDOG_USEC`` (from ``WatchdogSec=``) and, usually,
    ``WATCHDOG_PID``. A ``WATCHDOG_PID`` naming another process means the
    variables were inherited and are not for us. We ping at half the timeout,
    as sd_watchdog_enabled(3) recommends.

    Args:
        environ: the environment to read.
        pid: our process id (default ``os.getpid()``).

    Returns:
        Half the watchdog timeout in seconds, or None when the watchdog is off,
        the values are malformed, or they belong to another process.
    """
    raw_usec = environ.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid:
        try:
            watchdog_pid = int(raw_pid)
        except ValueError:
            return None
        if watchdog_pid != (os.getpid() if pid is None else pid):
            return None
    return usec / 2_000_000


def start_watchdog(
    reactor: IReactorTime,
    *,
    environ: Mapping[str, str] = os.environ,
    pid: int | None = None,
) -> LoopingCall | None:
    """Ping ``WATCHDOG=1`` every :func:`watchdog_interval` seconds.

    The pings run on the reactor, so a wedged reactor stops them and systemd
    restarts the service (``Restart=on-failure`` covers watchdog timeouts).

    Args:
        reactor: the clock to schedule on (``task.Clock`` in tests).
        environ: the environment holding ``NOTIFY_SOCKET`` and ``WATCHDOG_*``.
        pid: our process id, for the ``WATCHDOG_PID`` check.

    Returns:
        The running LoopingCall (stop it on shutdown), or None if the watchdog
        is not enabled for this process.
    """
    interval = watchdog_interval(environ, pid=pid)
    if interval is None or _address(environ) is None:
        return None
    call = LoopingCall(notify, "WATCHDOG=1", environ=environ)
    call.clock = reactor
    # notify() never raises, so the Deferred only fires when stopped.
    call.start(interval, now=True)
    return call
