"""overread send without a daemon to talk to: exit 2 and what to check (docs/cli.md, "overread send")."""

from __future__ import annotations

import socket

import pytest

from listener.cli import main
from tests.conftest import REPO


def test_nothing_listening_says_to_start_the_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused connection names the address, the system's reason and how the daemon is started."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the send: nothing listens there
    sample = REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7"
    assert main(["send", "--to", f"127.0.0.1:{port}", str(sample)]) == 2
    err = capsys.readouterr().err
    assert f"cannot connect to 127.0.0.1:{port} (Connection refused)" in err
    assert "is the daemon running" in err and "make run" in err
