"""HL7 v2 escaping of text values we write (HL7 v2.5.1 chapter 2.7).

Pure: strings in, strings out; no I/O, no clock, no logging. Shared by the
ACK builder (``ack.py``) and the routing message builder (``encode.py``).

Two levels:

* :func:`escape_delimiters` escapes the five delimiter characters (the escape
  character first, so that the sequences it writes are not escaped again).
* :func:`escape_value` makes any text safe for one field, component or
  subcomponent: the value is capped (before escaping, so an escape sequence is
  never cut in half), line breaks (CR, LF, CRLF) become ``\\.br\\`` (which
  python-hl7 and most engines read back as CR), every other control character
  is dropped (0x0B and 0x1C would break MLLP framing, NUL breaks C engines),
  then the delimiters are escaped.
"""

from __future__ import annotations

import re

from listener.hl7v2.segments import Separators

__all__ = ["escape_delimiters", "escape_value", "strip_controls"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def escape_delimiters(value: str, seps: Separators) -> str:
    """Escape the field, component, subcomponent, repetition and escape characters.

    Args:
        value: the text (already free of control characters).
        seps: the delimiters of the message being written.

    Returns:
        ``value`` with ``\\F\\``, ``\\S\\``, ``\\T\\``, ``\\R\\``, ``\\E\\`` in place
        of the delimiters (written with the message's own escape character).
    """
    e = seps.escape
    out = value.replace(e, f"{e}E{e}")
    for char, letter in (
        (seps.field, "F"),
        (seps.component, "S"),
        (seps.subcomponent, "T"),
        (seps.repetition, "R"),
    ):
        out = out.replace(char, f"{e}{letter}{e}")
    return out


def strip_controls(value: str) -> str:
    """Remove every C0 control character and DEL (line breaks included)."""
    return _CONTROL_CHARS.sub("", value)


def escape_value(value: str, seps: Separators, *, cap: int, line_breaks: bool = True) -> str:
    """Make ``value`` safe to write as one HL7 field, component or subcomponent.

    Args:
        value: any text, e.g. from a report or a policy file.
        seps: the delimiters of the message being written.
        cap: the maximum number of characters kept from ``value`` (counted
            before escaping; a line break counts as one character).
        line_breaks: True writes line breaks as ``\\.br\\`` (text types: ST,
            TX, FT, CE text); False turns them into a space (identifiers).

    Returns:
        The escaped value; unescaping it gives ``value`` capped, with its line
        breaks as CR (or spaces) and its other control characters removed.
    """
    lines = [strip_controls(line) for line in _LINE_BREAK.split(value)]
    kept: list[str] = []
    room = cap
    for i, line in enumerate(lines):
        if i:
            if room <= 0:
                break
            room -= 1  # the line break itself
        kept.append(line[: max(room, 0)])
        room -= len(kept[-1])
        if room < 0:
            break
    escaped = [escape_delimiters(line, seps) for line in kept]
    joiner = f"{seps.escape}.br{seps.escape}" if line_breaks else " "
    return joiner.join(escaped)
