"""HL7 v2 escaping of text values we write (HL7 v2.5.1 chapter 2.7).

Pure: strings in, strings out; no I/O, no clock, no logging. Shared by the
ACK builder (``ack.py``) and the routing message builder (``encode.py``).

Reading: :func:`unescape_value` expands the escape sequences of a received
value (chapter 2.7: delimiters, formatting, hex) the way python-hl7's
``unescape`` reads them, without its failure modes: python-hl7 raises
ValueError on ``\\.spX\\``, builds a string as long as any count asks
(``\\.sp999999999\\`` is a gigabyte), and logs the whole field, report text
included, when it meets a sequence it does not know.

Writing, two levels:

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

__all__ = ["MAX_FORMAT_REPEAT", "escape_delimiters", "escape_value", "strip_controls", "unescape_value"]

#: Largest count honoured in a formatting sequence such as ``\\.sp5\\``: a
#: count is a few blank lines in practice, and an uncapped one a memory bomb.
MAX_FORMAT_REPEAT = 64

#: Formatting sequences (2.7.6) as python-hl7 reads them; CR is a line break.
_FORMATTING = {
    ".br": "\r",
    ".sp": "\r",
    ".fi": "",
    ".nf": "",
    ".in": "    ",
    ".ti": "    ",
    ".sk": " ",
    ".ce": "\r",
}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

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


def unescape_value(value: str, seps: Separators) -> str:
    """Expand the escape sequences of one received value (the reverse of :func:`escape_delimiters`).

    Delimiter sequences (``\\F\\`` ``\\S\\`` ``\\T\\`` ``\\R\\`` ``\\E\\``) give the
    message's delimiters; formatting ones give CR, spaces or nothing, a count
    (``\\.sp3\\``) repeating them up to :data:`MAX_FORMAT_REPEAT` times;
    ``\\Xhh..\\`` gives one character per hex pair, up to the first pair that
    is not hex; highlighting (``\\H\\``, ``\\N\\``) gives "_" as python-hl7
    does. Character-set switches (``\\C..\\``, ``\\M..\\``), unknown and empty
    sequences, and an unterminated one at the end, are dropped.

    Never raises; linear in ``len(value)``.
    """
    esc = seps.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    pos = 0
    while True:
        start = value.find(esc, pos)
        if start < 0:
            out.append(value[pos:])
            break
        out.append(value[pos:start])
        end = value.find(esc, start + 1)
        if end < 0:
            break  # an unterminated sequence is dropped, as python-hl7 drops it
        out.append(_expand(value[start + 1 : end], seps))
        pos = end + 1
    return "".join(out)


def _expand(word: str, seps: Separators) -> str:
    if not word:
        return ""
    if len(word) == 1:
        return {
            "F": seps.field,
            "S": seps.component,
            "T": seps.subcomponent,
            "R": seps.repetition,
            "E": seps.escape,
            "H": "_",
            "N": "_",
        }.get(word, "")
    if word in _FORMATTING:
        return _FORMATTING[word]
    if word[:3] in _FORMATTING:
        count = word[3:]
        if not (count.isascii() and count.isdigit()):
            return ""
        # Compare lengths before int(): a huge digit string raises ValueError.
        times = MAX_FORMAT_REPEAT if len(count) > 4 else min(int(count), MAX_FORMAT_REPEAT)
        return _FORMATTING[word[:3]] * times
    if word[0] == "X":
        chars: list[str] = []
        digits = word[1:]
        for off in range(0, len(digits), 2):
            pair = digits[off : off + 2]
            if not _HEX_DIGITS.issuperset(pair):
                break
            chars.append(chr(int(pair, 16)))
        return "".join(chars)
    return ""
