"""Unit tests for the tolerant first look at HL7 v2 bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.errors import InvalidValue
from listener.hl7v2.segments import (
    LOG_VALUE_MAX,
    MAX_CONTROL_ID_LENGTH,
    MAX_HD_COMPONENT_LENGTH,
    MAX_HD_LENGTH,
    MAX_HEADER_FIELDS,
    check_header_lengths,
    decode_text,
    read_header,
    split_messages,
    strip_envelope,
)
from tests.strategies import hostile_msh


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


# --- read_header never raises; header key caps ------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"MSH", b"MSH\r", b"MSH\rPID|1", b"MSH\n", b"MSH\r\n", b"\x0bMSH\x1c\r", b"MSH\x00|", b"MSH ^~\\&", b"MSHA^~"],
)
def test_read_header_without_a_field_separator_gives_none(raw: bytes) -> None:
    """MSH with no usable field separator (nothing, a line end, NUL, blank, a letter) is not a header."""
    assert read_header(raw) is None


@pytest.mark.parametrize(
    ("raw", "field_sep", "component"),
    [
        (b"MSH|", "|", "^"),
        (b"MSH|^", "|", "^"),
        (b"MSH|#", "|", "#"),
        (b"MSH\xa6^~\\&\xa6APP\xa6FAC", "\u00a6", "^"),
        (b"MSH|\xff\xfe|APP", "|", "\u00ff"),
    ],
)
def test_read_header_truncated_and_non_ascii_separators(raw: bytes, field_sep: str, component: str) -> None:
    """Truncated encoding characters fall back per position; a non-ASCII byte can be a delimiter."""
    header = read_header(raw)
    assert header is not None
    assert (header.separators.field, header.separators.component) == (field_sep, component)
    assert header.control_id == "" and header.oversized_field == ""


def test_read_header_bounds_fields_and_reads_only_the_first_line() -> None:
    """A first line of separators keeps MAX_HEADER_FIELDS fields; a huge message is not copied."""
    header = read_header(b"MSH|" + b"|" * 1_000_000 + b"\rPID|1")
    assert header is not None and len(header.fields) == MAX_HEADER_FIELDS
    big = read_header(b"MSH|^~\\&|APP|FAC|||20261120||ORU^R01|C1|P|2.5.1\r" + b"OBX|" * 1_000_000)
    assert big is not None and big.control_id == "C1" and len(big.fields) == 13


@given(st.binary(max_size=300))
def test_read_header_never_raises_on_any_bytes(raw: bytes) -> None:
    """Property: any bytes, with or without an MSH prefix, give None or a header, never an exception."""
    for data in (raw, b"MSH" + raw, b"MSH|" + raw):
        header = read_header(data)
        if header is not None:
            assert header.oversized_field in ("", "MSH-3", "MSH-4", "MSH-10") or header.oversized_field[:6] in (
                "MSH-3.",
                "MSH-4.",
            )
            assert all(len(v) <= LOG_VALUE_MAX for v in header.log_fields().values())


@given(hostile_msh())
def test_hostile_headers_give_clean_log_fields(raw: bytes) -> None:
    """Property: log_fields() never carries a control character nor more than LOG_VALUE_MAX characters."""
    header = read_header(raw)
    if header is not None:
        for value in header.log_fields().values():
            assert len(value) <= LOG_VALUE_MAX
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


def _header(msh3: str = "RIS", msh4: str = "HOSP", msh10: str = "C1"):  # type: ignore[no-untyped-def]
    header = read_header(f"MSH|^~\\&|{msh3}|{msh4}|||20261120||ORU^R01|{msh10}|P|2.5.1\r".encode("latin-1"))
    assert header is not None
    return header


@pytest.mark.parametrize(
    ("kwargs", "location"),
    [
        ({"msh10": "C" * MAX_CONTROL_ID_LENGTH}, ""),
        ({"msh10": "C" * (MAX_CONTROL_ID_LENGTH + 1)}, "MSH-10"),
        ({"msh3": "A" * MAX_HD_COMPONENT_LENGTH + "^" + "1" * 20 + "^ISO"}, ""),
        ({"msh3": "A" * (MAX_HD_LENGTH + 1)}, "MSH-3"),
        ({"msh3": "A" * (MAX_HD_COMPONENT_LENGTH + 1)}, "MSH-3.1"),
        ({"msh4": "FAC^" + "2" * (MAX_HD_COMPONENT_LENGTH + 1)}, "MSH-4.2"),
        ({"msh4": "F" * (MAX_HD_LENGTH + 1), "msh10": "C" * 500}, "MSH-4"),
    ],
)
def test_oversized_header_keys(kwargs: dict[str, str], location: str) -> None:
    """Each key field at its cap passes; one character more is named (field or component),
    refused with 102, and blanked in log_fields(), while the other values stay."""
    header = _header(**kwargs)
    assert header.oversized_field == location
    logged = header.log_fields()
    if not location:
        check_header_lengths(header)
        assert logged["control_id"] == header.control_id[:LOG_VALUE_MAX]
        return
    with pytest.raises(InvalidValue) as info:
        check_header_lengths(header)
    assert (info.value.hl7_code, info.value.location) == ("102", location)
    assert "AAAA" not in str(info.value) and "CCCC" not in str(info.value)
    key = {"MSH-3": "sender_app", "MSH-4": "sender_facility", "MSH-10": "control_id"}[location.split(".")[0]]
    assert logged[key] == ""
    assert logged["message_type"] == "ORU^R01"


def test_log_fields_cut_without_splitting_utf8_and_replace_controls() -> None:
    """Values are cut to LOG_VALUE_MAX without leaving half a UTF-8 sequence; controls become '?'."""
    app = ("x" * (LOG_VALUE_MAX - 1) + "\u00e9").encode("utf-8").decode("latin-1")  # 65 latin-1 chars
    header = _header(msh3=app, msh10="C\x1b[31m1")
    logged = header.log_fields()
    assert logged["sender_app"] == "x" * (LOG_VALUE_MAX - 1)
    assert logged["control_id"] == "C?[31m1"
