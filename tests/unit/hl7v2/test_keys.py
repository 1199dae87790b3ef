"""The MSH keys between their stored form (the latin-1 reading of the bytes) and people (listener/hl7v2/keys.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.hl7v2.keys import searched_keys, shown_key
from listener.hl7v2.segments import CHARSETS, read_header


def stored(raw: bytes) -> str:
    """How the store keeps MSH-10 of a message with these bytes: read_header's latin-1 reading."""
    header = read_header(b"MSH|^~\\&|APP|FAC|||20261206||ORU^R01|" + raw + b"|P|2.5\r")
    assert header is not None
    return header.control_id


def test_a_utf8_key_is_shown_as_written_and_found_by_typing_it() -> None:
    key = stored("é-ü-1".encode())
    assert key == "Ã©-Ã¼-1"
    assert shown_key(key) == "é-ü-1"
    assert shown_key(key, "UNICODE UTF-8") == "é-ü-1"
    assert key in searched_keys("é-ü-1")


def test_a_latin1_key_is_shown_with_its_charset_and_found_by_typing_it() -> None:
    key = stored("é".encode("latin-1"))
    assert key == "é"
    assert shown_key(key, "8859/1") == "é"
    assert shown_key(key) == "é"  # undeclared and not UTF-8: latin-1, as stored
    assert searched_keys("é")[0] == "é"  # the text as typed first
    assert "Ã©" in searched_keys("é")  # and as UTF-8 bytes


def test_a_key_is_read_with_the_declared_charset_when_it_is_not_utf8() -> None:
    key = stored("€-Ж".encode())
    assert shown_key(key, "8859/1") == "€-Ж"  # valid UTF-8 wins, as for the message's text
    cyrillic = stored("Жук".encode("iso8859-5"))
    assert shown_key(cyrillic, "8859/5") == "Жук"
    assert shown_key(cyrillic) == cyrillic  # undeclared: latin-1, as stored
    assert cyrillic in searched_keys("Жук")
    euro = stored("€1".encode("iso8859-15"))
    assert shown_key(euro, "8859/15") == "€1"
    assert euro in searched_keys("€1")


@pytest.mark.parametrize("text", ["HAL20261119143127-4471", "123", "", "fhir-0f3a"])
def test_ascii_keys_are_themselves(text: str) -> None:
    assert shown_key(text) == text
    assert shown_key(text, "8859/5") == text
    assert searched_keys(text) == (text,)


def test_a_key_that_is_no_byte_reading_is_shown_as_it_is() -> None:
    # A FHIR client's name comes from the configuration, as text.
    assert shown_key("Kliniken Süd ✚") == "Kliniken Süd ✚"
    assert searched_keys("Kliniken Süd ✚")[0] == "Kliniken Süd ✚"


def test_control_characters_are_kept_for_the_output_to_escape() -> None:
    # The CLI's terminal stream and the console escape them (listener/cli_common.terminal_safe).
    key = stored("é\x1b[2J".encode())
    assert shown_key(key) == "é\x1b[2J"


@given(raw=st.binary(max_size=40), declared=st.sampled_from(sorted(CHARSETS)))
def test_whatever_is_shown_is_found_again(raw: bytes, declared: str) -> None:
    """Typing what a page shows finds the message: the stored key is among the searched forms."""
    key = raw.decode("latin-1")
    assert key in searched_keys(shown_key(key, declared))
