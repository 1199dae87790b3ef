"""A test RIS: an MLLP server in the test process that can be told how to answer.

It listens on 127.0.0.1 (a fixed port, so it can go down and come back up on
the same address), reads framed messages, and answers each one as the current
``mode`` says: ``AA``, ``AE``, ``AR`` (an ACK with that code and MSA-2 = the
message's MSH-10; any other MSA-1, and the segments after it, as :func:`ack_for` reads a
mode), ``stall`` (read it, never answer), ``swallow`` (apply it
as an AA would, but never answer: the ACK lost on the way back) or ``close``
(drop the connection without answering). A ``script`` of modes is used first, one per
message, then ``mode``.

Like a RIS that deduplicates by MSH-10, it applies a message (``applied``) only
the first time it accepts it with AA; every arrival is kept in ``received``.

Given an ``ssl.SSLContext`` it speaks MLLP over TLS: a connection whose
handshake fails is dropped (counted in ``handshake_failures``), and the common
name of each client certificate it accepted is kept in ``client_names``.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from listener.hl7v2.mllp import MllpFramer, frame
from listener.hl7v2.segments import read_header


def ack_for(control_id: str, code: str) -> bytes:
    """A minimal v2.5.1 ACK to ``control_id``; a ``code`` holding a CR is MSA-1, then the segments
    after the MSA (``"AE\\rERR||PID^1^3|204^Unknown key^HL70357|E"``)."""
    code, _, after = code.partition("\r")
    return (
        f"MSH|^~\\&|RIS|HOSP|OVERREAD|READCO|20260302090000||ACK^O01|R{control_id}|P|2.5.1\rMSA|{code}|{control_id}\r"
        + (f"{after}\r" if after else "")
    ).encode()


class TestRis:
    """A scriptable MLLP server (threads; stop() takes it down, start() brings it back)."""

    __test__ = False  # not a pytest test class

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.tls = tls
        self.handshake_failures = 0
        self.client_names: list[str] = []
        self.mode = "AA"
        self.script: deque[str] = deque()
        self.received: list[tuple[str, bytes]] = []
        self.applied: list[str] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The Twisted client endpoint string that reaches this RIS."""
        return f"tcp:host=127.0.0.1:port={self.port}"

    def start(self) -> None:
        """Listen (again) on the port."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.listener = sock
        self.thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Go down: stop listening and drop every connection (connections are then refused)."""
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            conns, self.connections = self.connections, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _next_mode(self) -> str:
        with self.lock:
            return self.script.popleft() if self.script else self.mode

    def _handshake(self, conn: socket.socket) -> socket.socket | None:
        """The TLS side of ``conn`` (None when the handshake failed and the connection was dropped)."""
        assert self.tls is not None
        try:
            tls = self.tls.wrap_socket(conn, server_side=True)
        except OSError:  # ssl.SSLError included: untrusted peer, no certificate, reset
            with self.lock:
                self.handshake_failures += 1
            conn.close()
            return None
        subject = dict(item for rdn in (tls.getpeercert() or {}).get("subject", ()) for item in rdn)
        with self.lock:
            self.client_names.append(str(subject.get("commonName", "")))
            self.connections.append(tls)
        return tls

    def _serve(self, conn: socket.socket) -> None:
        framer = MllpFramer()
        if self.tls is not None:
            wrapped = self._handshake(conn)
            if wrapped is None:
                return
            conn = wrapped
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for payload in framer.feed(data):
                    header = read_header(payload)
                    control_id = header.control_id if header is not None else ""
                    mode = self._next_mode()
                    with self.lock:
                        self.received.append((control_id, payload))
                    if mode == "close":
                        conn.close()
                        return
                    if mode in ("AA", "swallow"):
                        with self.lock:
                            if control_id not in self.applied:
                                self.applied.append(control_id)
                    if mode in ("stall", "swallow"):
                        continue
                    conn.sendall(frame(ack_for(control_id, mode)))
        except OSError:
            return
        finally:
            conn.close()

    def received_ids(self) -> list[str]:
        """MSH-10 of every message that arrived, duplicates included."""
        with self.lock:
            return [c for c, _ in self.received]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll until ``condition()`` holds (AssertionError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out; received {self.received_ids()}, applied {self.applied}")


def write_destinations(path: Path, ris: TestRis) -> None:
    """A destinations file at ``path`` naming one destination ``ris``: the test RIS, with a long
    connection backoff (only a kick brings the worker back within a test) and dead-lettered NACKs."""
    path.write_text(
        "version: 1\n"
        "destinations:\n"
        "  ris:\n"
        f"    endpoint: {ris.endpoint}\n"
        "    message: {sending_application: OVERREAD, sending_facility: READCO, receiving_application: RIS}\n"
        "    retry: {max_attempts: 10, backoff_base_seconds: 120, backoff_max_seconds: 600,"
        " ack_timeout_seconds: 2, on_reject: dead_letter}\n",
        encoding="utf-8",
    )
