"""Bytes to a Twisted connection at once, when its socket takes them.

Layer: reactor code (used on the reactor thread only). Both the MLLP intake's ACKs and the
requests the reactor sends its worker processes (listener/server/runner.py) go through
:func:`send_now`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["send_now"]


def send_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent at once when it is a plain socket connection with nothing queued.

    Twisted's ``write`` queues the bytes and asks the reactor to watch the socket for
    writing (an ``epoll_ctl``), sends them when the next poll says it may, then stops
    watching (another ``epoll_ctl``): two system calls and one more turn of the reactor per
    answer or request, for a socket that almost always takes it whole at once. Here the bytes go
    to the socket now; whatever it does not take (a full buffer) and any error go to
    ``write``, behind nothing, so the order and the connection-lost handling are
    Twisted's (docs/benchmarks.md, "The daemon's kernel time"). A TLS connection, or one
    with bytes still queued, is written as before. A Unix socket's connection (a worker
    process's) is a TCP connection's subclass in Twisted and is sent to the same way.
    """
    if (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and len(transport.dataBuffer) == transport.offset
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            data = data[sent:]
            if not data:
                return
    transport.write(data)
