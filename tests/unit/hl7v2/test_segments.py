"""Unit tests for the tolerant first look at HL7 v2 bytes."""

from listener.hl7v2.segments import decode_text, read_header, split_messages, strip_envelope


def test_read_header_custom_encoding_characters() -> None:
    """MSH-1/MSH-2 define the delimiters; a 3-character MSH-2 falls back per position."""
    header = read_header(b"MSH|^~}|APP|FAC|||199305021853||BAR^P01|CTRL1|P|2.4\r")
    assert header is not None
    assert header.separators.escape == "}"
    assert header.separators.subcomponent == "&"
    assert header.control_id == "CTRL1"
    assert header.message_type == "BAR^P01"


def test_read_header_rejects_non_hl7() -> None:
    """Bytes that do not start with MSH give no header, never an exception."""
    assert read_header(b"(.idx/.msg)") is None
    assert read_header(b"\r") is None
    assert read_header(b"") is None


def test_strip_envelope_removes_mllp_and_bom() -> None:
    """MLLP start/end blocks and a UTF-8 BOM are not part of the message."""
    assert strip_envelope(b"\x0b\xef\xbb\xbfMSH|^~\\&|\x1c\r") == b"MSH|^~\\&|"


def test_decode_text_prefers_valid_utf8_over_declared_latin1() -> None:
    """A message that declares 8859/1 but holds UTF-8 is read as UTF-8."""
    assert decode_text("en \u2013 dash".encode(), "8859/1") == ("en \u2013 dash", "utf-8")


def test_decode_text_latin1_bytes_never_fail() -> None:
    """Latin-1 bytes invalid as UTF-8 decode with the declared or fallback codec."""
    text, codec = decode_text(b"\xb160%\xf7", "")
    assert text == "\u00b160%\u00f7"
    assert codec == "cp1252"


def test_split_messages_drops_batch_envelope() -> None:
    """BHS/BTS are envelope; each MSH starts a message; orphans form their own."""
    text = "BHS|^~\\&\rEVN|A04\rMSH|^~\\&|A\r\rPID|1\rBTS|1\r"
    assert split_messages(text) == [(2, ["EVN|A04"]), (3, ["MSH|^~\\&|A", "PID|1"])]
