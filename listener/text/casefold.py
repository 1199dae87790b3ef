"""Case-insensitive patterns run case-sensitively over a lower-cased ASCII text.

Pure: no I/O, no clock. ``re.IGNORECASE`` folds the case of every character
it compares, and ``re`` tests a branch's first character quickly only when it
is a plain one, so a large case-insensitive alternation costs several times
an exact one. On an ASCII text, ``str.lower`` changes only ``A-Z`` and keeps
every offset, so a case-insensitive pattern matches the text exactly where
its *twin* (the same pattern, ASCII letters lower-cased, without
``IGNORECASE``) matches the lowered text: same span, same groups' spans, same
``lastgroup``. Callers that read only offsets and group names run the twin;
a non-ASCII text, or a pattern without a twin, keeps the original.
"""

from __future__ import annotations

import re

from listener.text.cache import TextCache

__all__ = ["INLINE_FLAGS", "lowered_flags", "lowered_source", "lowered_text", "lowered_twin"]

# What the lowering keeps as it is (group names, escapes) or lower-cases (an ASCII letter).
_KEPT_OR_LETTER = re.compile(r"\(\?P<\w+>|\(\?P=\w+\)|\(\?P|\\.|[A-Za-z]", re.DOTALL)
#: An inline flag group (``(?i)``, ``(?x:...)``): a pattern holding one has no lowered twin.
INLINE_FLAGS = re.compile(r"\(\?[aiLmsux-]")
# Escapes that name a character by its code (which may be an upper-case letter) or a back reference.
_CODE_ESCAPE = re.compile(r"\\[0-9xuUN]")


def lowered_source(source: str) -> str:
    """``source`` with its ASCII letters lower-cased, escapes (``\\S``, ``\\W``) and group names kept."""
    return _KEPT_OR_LETTER.sub(lambda m: m.group().lower() if m.group().isalpha() else m.group(), source)


def lowered_flags(source: str, flags: int) -> int:
    """The flags of a lower-case twin of ``source`` (lowered), which only ever searches lower-cased ASCII text.

    Without ``IGNORECASE``; with ``re.ASCII`` too when ``source`` holds no
    ``\\s`` or ``\\S``: on ASCII text ``re.ASCII``'s ``\\w``, ``\\b`` and ``\\d``
    hold exactly where a str pattern's do, and ``re`` tests them with a table
    instead of asking the Unicode database (four calls for a character that
    is no letter). A str pattern's ``\\s`` also holds for ``\\x1c``-``\\x1f``,
    and ASCII's does not, so a pattern with ``\\s`` keeps Unicode's classes.
    """
    flags &= ~re.IGNORECASE
    if "\\s" in source or "\\S" in source:
        return flags
    return (flags & ~re.UNICODE) | re.ASCII


def lowered_twin(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """The case-sensitive twin of a case-insensitive ``pattern`` for lower-cased ASCII text.

    None when the pattern is not case-insensitive, has inline flags, a
    non-ASCII character (``re`` folds the Kelvin sign to ``k``) or an escape
    by character code, or its twin does not compile: the caller then uses
    ``pattern`` itself.
    """
    source = pattern.pattern
    if not pattern.flags & re.IGNORECASE or not source.isascii():
        return None
    if INLINE_FLAGS.search(source) or _CODE_ESCAPE.search(source):
        return None
    try:
        lowered = lowered_source(source)
        return re.compile(lowered, lowered_flags(lowered, pattern.flags))
    except re.error:
        return None


def lowered_text(text: str, cache: TextCache | None) -> str | None:
    """``text.lower()`` when ``text`` is ASCII (same offsets), else None; once per report with a ``cache``."""
    if cache is None:
        return text.lower() if text.isascii() else None
    lowered = cache.lowered
    if text in lowered:
        return lowered[text]
    found = lowered[text] = text.lower() if text.isascii() else None
    return found
