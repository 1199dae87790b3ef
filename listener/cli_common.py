"""Helpers the operator commands share: time windows and the audit actor.

Layer: CLI (I/O for users). ``overread outbox``, ``messages``, ``reprocess``
and ``audit`` (docs/cli.md) read ``--since``/``--until`` the same way, and
the HTTP ``/api`` reads its ``since``/``until`` parameters with the same
:func:`parse_time` (docs/http-api.md). Every change an operator command makes
is recorded in the audit log with :func:`os_actor` (docs/operations.md,
"Audit"). This module imports nothing else of the package, so every command
(and the daemon) can use it without importing another command.
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import re
from datetime import datetime, timedelta
from typing import TextIO, cast

__all__ = ["os_actor", "parse_time", "parse_window", "terminal_safe", "terminal_output"]


def os_actor() -> str:
    """Who runs this command, for the audit log: the OS user (and the sudo caller)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER", "")
    return f"{sudo} (sudo as {user})" if sudo and sudo != user else user


def parse_time(text: str, now: datetime) -> datetime:
    """An aware datetime from ISO 8601 text with an offset, or ``Nd`` days / ``Nh`` hours before ``now``.

    Raises:
        ValueError: none of these forms, or a naive time.
    """
    text = text.strip()
    if text.endswith("d") and text[:-1].isascii() and text[:-1].isdigit():
        return now - timedelta(days=int(text[:-1]))
    if text.endswith("h") and text[:-1].isascii() and text[:-1].isdigit():
        return now - timedelta(hours=int(text[:-1]))
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("naive time")
    return value


def parse_window(args: argparse.Namespace, now: datetime) -> dict[str, datetime] | str:
    """``--since``/``--until`` of a command as ``{"since": t, "until": t}``, or the error text."""
    window: dict[str, datetime] = {}
    for name in ("since", "until"):
        text = getattr(args, name, None)
        if text:
            try:
                window[name] = parse_time(text, now)
            except (ValueError, OverflowError):
                return f"--{name}: {text!r} is not an ISO 8601 time with an offset (or Nd, Nh)"
    return window


#: Characters a terminal acts on rather than shows: C0 controls but tab and line feed, DEL, and C1
#: controls (0x9b is a CSI on some terminals).
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal would act on written as ``\\xNN``.

    Stored values come from senders (MSH-3, MSH-10, report text, a RIS's answers): an escape
    sequence among them must not recolour, retitle or clear the operator's terminal
    (docs/cli.md, "Output on a terminal").
    """
    return _TERMINAL_CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _TerminalText(io.TextIOBase):
    """A text stream that writes :func:`terminal_safe` text to ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(terminal_safe(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return True


def terminal_output(stream: TextIO) -> TextIO:
    """``stream`` itself when it is not a terminal (a file or a pipe gets the bytes as stored),
    else a stream that shows control characters as ``\\xNN`` (:func:`terminal_safe`)."""
    try:
        tty = stream.isatty()
    except ValueError:  # closed
        return stream
    return cast(TextIO, _TerminalText(stream)) if tty else stream
