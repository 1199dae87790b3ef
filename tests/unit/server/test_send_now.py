"""send_now: an answer goes to a plain TCP socket at once, or behind what is queued, never out of order."""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor

from listener.server.wire import send_now


def _connection() -> tuple[tcp.Connection, socket.socket, MemoryReactor]:
    """A real TCP-style Twisted connection over one end of a socket pair (the other end returned)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reactor = MemoryReactor()
    conn = tcp.Connection(ours, Protocol(), reactor)
    conn.connected = True
    return conn, theirs, reactor


def _read_all(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(60)  # a bug that sends less fails the test, not hangs it
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_an_answer_goes_to_the_socket_at_once() -> None:
    """Nothing queued: the bytes are in the socket before the reactor turns, and it watches nothing."""
    conn, theirs, reactor = _connection()
    ack = b"\x0bMSH|ack\x1c\r"
    send_now(conn, ack)
    assert _read_all(theirs, len(ack)) == ack
    assert reactor.getWriters() == []


def test_what_the_socket_does_not_take_is_queued_and_later_answers_go_behind_it() -> None:
    """A full socket: the rest waits in Twisted's buffer, and the next answer goes after it (even
    once the socket has room again)."""
    conn, theirs, reactor = _connection()
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    first = bytes(range(256)) * 4096  # 1 MiB, far more than the socket takes at once
    send_now(conn, first)
    assert reactor.getWriters() == [conn]  # the rest is queued, the reactor watches the socket
    theirs.settimeout(60)
    received = theirs.recv(1 << 16)  # the socket has room again, the rest is still queued
    send_now(conn, b"second")
    while len(received) < len(first) + 6:
        if conn.doWrite() is not None:
            raise AssertionError("the connection was lost")
        received += theirs.recv(1 << 16)
    assert received == first + b"second"
    assert reactor.getWriters() == []
