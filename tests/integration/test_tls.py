"""Mutual TLS on an ssl: endpoint: a client certificate from the configured CA is required."""

from __future__ import annotations

import datetime
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from listener.hl7v2.mllp import MllpFramer, frame
from tests.integration.conftest import RunningDaemon, free_port, msa, with_control_id


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    cn: str,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    issuer: x509.Name | None,
    *,
    ca: bool = False,
    san: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer or _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


@pytest.fixture(name="pki")
def fixture_pki(tmp_path: Path) -> Path:
    """A CA, a server certificate, a client from the CA (CN ris-1), another (CN other) and a stranger."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca, ca_key = _issue("Test CA", None, None, ca=True)
    _write(pki / "ca", ca)
    server, server_key = _issue("localhost", ca_key, ca.subject, san="localhost")
    _write(pki / "server", server, server_key)
    for cn in ("ris-1", "other"):
        cert, key = _issue(cn, ca_key, ca.subject)
        _write(pki / cn, cert, key)
    stranger, stranger_key = _issue("ris-1", None, None)
    _write(pki / "stranger", stranger, stranger_key)
    return pki


def _client(pki: Path, who: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if who:
        context.load_cert_chain(str(pki / f"{who}.crt"), str(pki / f"{who}.key"))
    return context


def _request(port: int, context: ssl.SSLContext, payload: bytes) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(frame(payload))
        framer = MllpFramer()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            frames = framer.feed(data)
            if frames:
                return frames[0]


def _tls_daemon(tmp_path: Path, pki: Path, more: str = "") -> tuple[int, RunningDaemon]:
    """A started daemon on an ssl: endpoint requiring a client certificate from the test CA
    (``more``: further configuration lines), and its port."""
    port = free_port()
    config = tmp_path / "overread.yaml"
    config.write_text(
        f"mllp: ssl:{port}:interface=127.0.0.1\n"
        f"tls_certificate: {pki / 'server.crt'}\ntls_private_key: {pki / 'server.key'}\n"
        f"tls_client_ca: {pki / 'ca.crt'}\n{more}"
    )
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", port=port)
    # The fixture passes --mllp tcp:...; the config's ssl: endpoint must win here.
    daemon.extra = ("--config", str(config), "--mllp", f"ssl:{port}:interface=127.0.0.1")
    daemon.start()
    return port, daemon


def test_mutual_tls_accepts_only_allowed_client_certificates(tmp_path: Path, pki: Path, oru: bytes) -> None:
    """A client certificate from the CA with an allowed CN gets AA; no certificate, a
    self-signed one, or a CA-issued one with another CN is refused."""
    port, daemon = _tls_daemon(tmp_path, pki, "tls_allowed_subjects: [ris-1]\n")
    try:
        assert msa(_request(port, _client(pki, "ris-1"), with_control_id(oru, "TLS1")))[0] == "AA"
        for who in (None, "stranger", "other"):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                _request(port, _client(pki, who), with_control_id(oru, f"TLS-{who}"))
    finally:
        assert daemon.stop() == 0
    assert [m["message_id"] for m in daemon.messages()] == ["TLS1"]
    events = {line["event"] for line in daemon.log_lines()}
    assert "tls_peer_rejected" in events
    # The CA-issued certificate with another CN: the daemon closed it and says why.
    closed = [
        (line.get("closed_by"), line.get("reason"))
        for line in daemon.log_lines()
        if line["event"] == "connection_closed"
    ]
    assert ("daemon", "tls_subject_not_allowed") in closed


def test_a_failed_handshake_is_logged_closed_by_the_daemon_once(tmp_path: Path, pki: Path, oru: bytes) -> None:
    """A client with no certificate, one from another CA, or no TLS at all: the daemon's TLS layer
    ends the handshake, and its connection_closed says so (docs/operations.md, "A connection
    closed"), not a sender-side network error; a sender refusing our certificate ended it itself.
    The handshake failure is logged once per connection."""
    port, daemon = _tls_daemon(tmp_path, pki)
    try:
        for who in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                _request(port, _client(pki, who), with_control_id(oru, f"TLS-{who}"))
        # A sender speaking plain MLLP to the TLS port: no handshake at all, the daemon ends it.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(frame(with_control_id(oru, "TLS-plain")))
            while plain.recv(65536):
                pass
        # A sender that does not trust our CA refuses our certificate with an alert: its doing.
        distrustful = ssl.create_default_context()
        distrustful.load_cert_chain(str(pki / "ris-1.crt"), str(pki / "ris-1.key"))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _request(port, distrustful, with_control_id(oru, "TLS-distrustful"))
        assert msa(_request(port, _client(pki, "ris-1"), with_control_id(oru, "TLS2")))[0] == "AA"
    finally:
        assert daemon.stop() == 0
    lines = daemon.log_lines()
    failed = [line["conn"] for line in lines if line["event"] == "tls_handshake_failed"]
    assert len(failed) == len(set(failed)) == 4
    closed = {
        line["conn"]: (line["closed_by"], line["reason"]) for line in lines if line["event"] == "connection_closed"
    }
    assert [closed[conn] for conn in failed] == [("daemon", "tls_handshake_failed")] * 3 + [
        ("peer", "tls_handshake_failed")
    ]
    # The accepted sender closes its socket without a TLS close_notify (Python's ssl does not send
    # one): Twisted reports that as a lost connection, as docs/operations.md says.
    assert closed[max(closed)] == ("peer", "connection_lost")
