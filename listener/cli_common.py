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
import os
from datetime import datetime, timedelta

__all__ = ["os_actor", "parse_time", "parse_window"]


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
