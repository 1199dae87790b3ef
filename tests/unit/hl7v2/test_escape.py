"""Unit and property tests for reading HL7 escape sequences (escape.unescape_value)."""

from __future__ import annotations

import logging

import hl7
import pytest
from hl7.util import unescape
from hypothesis import given
from hypothesis import strategies as st

from listener.hl7v2.escape import MAX_FORMAT_REPEAT, escape_delimiters, unescape_value
from listener.hl7v2.segments import Separators

SEPS = Separators()
_CONTAINER = hl7.Segment(sequence=[], esc="\\", separators="\r|~^&")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", "a|b^c&d~e\\f"),
        ("line\\.br\\next", "line\rnext"),
        ("x\\.sp2\\y", "x\r\ry"),
        ("\\X4142\\", "AB"),
        ("\\X41ZZ42\\", "A"),
        ("\\H\\bold\\N\\", "_bold_"),
        ("a\\\\b", "ab"),
        ("a\\Cxxxx\\b\\Q\\c", "abc"),
        ("tail\\unterminated", "tail"),
    ],
)
def test_sequences(raw: str, expected: str) -> None:
    """Each kind of sequence reads as HL7 chapter 2.7 (and python-hl7) reads it."""
    assert unescape_value(raw, SEPS) == expected


@pytest.mark.parametrize("raw", ["\\.spXY\\", "\\.sp\u00ff\u00ff\\", "\\.sp" + "9" * 5000 + "\\", "\\.sp999999999\\"])
def test_python_hl7_failure_modes_are_gone(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    """Counts that are not digits, too long for int(), or huge give at most MAX_FORMAT_REPEAT
    line breaks; nothing is logged (python-hl7 raises, allocates a gigabyte, or logs the field)."""
    with caplog.at_level(logging.DEBUG):
        out = unescape_value("text " + raw, SEPS)
    assert out.startswith("text ") and len(out) <= 5 + MAX_FORMAT_REPEAT
    assert caplog.records == []


def test_unknown_sequence_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """An unknown sequence is dropped silently: python-hl7 logs the whole field (patient data)."""
    with caplog.at_level(logging.DEBUG):
        assert unescape_value("MARKER \\Q\\ text", SEPS) == "MARKER  text"
    assert caplog.records == []


_WORDS = st.sampled_from(["F", "S", "T", "R", "E", ".br", ".sp", ".sp3", ".in", ".ce", "X41", "X4a4B"])


@given(st.lists(st.one_of(st.text(alphabet="ab |^&~\r", max_size=5), _WORDS.map(lambda w: f"\\{w}\\")), max_size=8))
def test_same_as_python_hl7_on_well_formed_values(parts: list[str]) -> None:
    """Property: on well-formed sequences, the reading is python-hl7's (so findings do not change)."""
    value = "".join(parts)
    assert unescape_value(value, SEPS) == unescape(_CONTAINER, value)


@given(st.text(max_size=60))
def test_escape_then_unescape_round_trips(text: str) -> None:
    """Property: escaping delimiters and reading back gives the text; any text reads without error."""
    assert unescape_value(escape_delimiters(text, SEPS), SEPS) == text
    unescape_value(text, SEPS)
