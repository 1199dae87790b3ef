"""Unit and property tests for the ACK/NACK builder and acknowledgment-mode helpers.

Every ACK built here is parsed back with python-hl7; ACKs in versions hl7apy
knows are also validated by hl7apy at STRICT level, so the structure (segments,
fields, data types) is proven by two independent implementations.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.errors import MissingField
from listener.hl7v2.ack import (
    AckErrorDetail,
    AckTemplates,
    accept_ack_code,
    ack_code_for,
    build_ack,
    is_enhanced_mode,
    should_send_accept_ack,
)
from listener.hl7v2.mllp import MllpFramer, frame
from listener.hl7v2.segments import MessageHeader, read_header
from tests.strategies import ack_errors, hostile_msh

CORPUS = Path(__file__).resolve().parents[2] / "data" / "hl7"
FUZZ_FILES = sorted((CORPUS / "nhapi-fuzz").glob("*.hl7"))
NOW = datetime(2026, 11, 23, 9, 30, 5, tzinfo=timezone(timedelta(hours=-5)))
MARKER = "ZZCANARY"

# Versions hl7apy 1.3.5 can validate ACKs for (it lacks 2.7.1, and has no ACK
# structure for 2.2/2.3); python-hl7 still parses those in every test.
HL7APY_VERSIONS = ["2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2"]
# Bytes an ACK must never carry: every control character but the CR segment terminator.
FORBIDDEN = re.compile(rb"[\x00-\x0c\x0e-\x1f\x7f]")


def oru(version: str = "2.5.1", *, msh15: str = "", msh16: str = "", control_id: str = "MSG00042") -> MessageHeader:
    """A radiology ORU header from the RIS, with a patient marker in PID."""
    raw = (
        f"MSH|^~\\&|RIS|HOSP^1.2.3^ISO|OVERREAD|READCO|20261123092959||ORU^R01^ORU_R01|{control_id}|P|{version}"
        f"|||{msh15}|{msh16}\r"
        f"PID|1||{MARKER}^^^HOSP^MR||{MARKER}^PAT||19700101|F\r"
        "OBR|1||ACC1|71046^XR CHEST 2 VIEWS^CPT4\r"
    ).encode()
    header = read_header(raw)
    assert header is not None
    return header


def ack_text(header: MessageHeader | None, code: str = "AA", **kwargs: object) -> str:
    """build_ack with fixed time and control id, as text (the bytes are latin-1)."""
    data = build_ack(header, code, now=NOW, control_id="ACK0001", **kwargs)  # type: ignore[arg-type]
    assert FORBIDDEN.search(data) is None
    assert data.endswith(b"\r")
    return data.decode("latin-1")


def segments(text: str) -> list[list[str]]:
    """Split an ACK into segments and fields (our own, trivial reading)."""
    field_sep = text[3]
    return [seg.split(field_sep) for seg in text.split("\r") if seg]


def validate_strict(text: str) -> None:
    """hl7apy STRICT parse and validate; raises on any structural error."""
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate() is True


# -- MSH and MSA ------------------------------------------------------------


def test_aa_swaps_sender_and_receiver_and_validates_strictly() -> None:
    """An AA for a v2.5.1 ORU: swapped MSH-3..6, own MSH-10, MSA-2 echo, hl7apy-valid."""
    text = ack_text(oru())
    assert text == (
        "MSH|^~\\&|OVERREAD|READCO|RIS|HOSP^1.2.3^ISO|20261123093005-0500||ACK^R01^ACK|ACK0001|P|2.5.1\r"
        "MSA|AA|MSG00042\r"
    )
    parsed = hl7.parse(text)
    assert str(parsed.segment("MSA")[2]) == "MSG00042"
    validate_strict(text)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "20260102030405+0000"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))), "20260102030405+0530"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=3, minutes=30))), "20260102030405-0330"),
    ],
)
def test_msh7_is_now_with_offset(now: datetime, expected: str) -> None:
    """MSH-7 is the given time as YYYYMMDDHHMMSS+ZZZZ, in the time's own offset."""
    data = build_ack(oru(), "AA", now=now, control_id="C")
    assert segments(data.decode())[0][6] == expected


def test_programming_errors_raise_value_error() -> None:
    """A naive time, an unknown code or an empty control id are caller bugs."""
    with pytest.raises(ValueError, match="timezone"):
        build_ack(oru(), "AA", now=datetime(2026, 1, 1), control_id="C")
    with pytest.raises(ValueError, match="code"):
        build_ack(oru(), "XX", now=NOW, control_id="C")
    with pytest.raises(ValueError, match="control_id"):
        build_ack(oru(), "AA", now=NOW, control_id="\x00 ")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.3.1", "2.3.1"),
        ("2.4", "2.4"),
        ("2.7", "2.7"),
        ("2.8.2", "2.8.2"),
        ("2.9", "2.5.1"),
        ("", "2.5.1"),
        ("3.0", "2.5.1"),
    ],
)
def test_msh12_echoes_supported_versions_only(version: str, expected: str) -> None:
    """MSH-12 echoes a version we support; anything else is answered in 2.5.1."""
    assert segments(ack_text(oru(version), "AR"))[0][11] == expected


def test_msh9_has_no_structure_component_before_231() -> None:
    """MSG gained its message-structure component in v2.3.1."""
    assert segments(ack_text(oru("2.3")))[0][8] == "ACK^R01"
    assert segments(ack_text(oru("2.3.1")))[0][8] == "ACK^R01^ACK"


@pytest.mark.parametrize(("received", "expected"), [("P", "P"), ("T", "T"), ("D^T", "D"), ("", "P"), ("X0", "P")])
def test_msh11_echoes_processing_id(received: str, expected: str) -> None:
    """MSH-11 echoes a table 0103 processing id, P otherwise."""
    header = read_header(f"MSH|^~\\&|A|B|C|D|2026||ORU^R01|1|{received}|2.5.1\r".encode())
    assert segments(ack_text(header))[0][10] == expected


# -- ERR --------------------------------------------------------------------


def test_v251_one_err_per_error_with_erl_cwe_and_severity() -> None:
    """v2.5+: one ERR per error: ERR-2 ERL, ERR-3 code^text^HL70357, ERR-4 severity."""
    errors = [
        AckErrorDetail("101", "PID-3"),
        AckErrorDetail("102", "OBR-7.1", "W", "Observation time is not a date"),
        AckErrorDetail("207"),
    ]
    text = ack_text(oru(), "AE", errors=errors)
    segs = segments(text)
    assert [s[0] for s in segs] == ["MSH", "MSA", "ERR", "ERR", "ERR"]
    assert segs[1] == ["MSA", "AE", "MSG00042"]
    assert segs[2] == ["ERR", "", "PID^1^3", "101^Required field missing^HL70357", "E"]
    assert segs[3] == ["ERR", "", "OBR^1^7^1^1", "102^Observation time is not a date^HL70357", "W"]
    assert segs[4] == ["ERR", "", "", "207^Application internal error^HL70357", "E"]
    validate_strict(text)
    assert len(hl7.parse(text).segments("ERR")) == 3


@pytest.mark.parametrize(
    ("location", "erl"),
    [
        ("PID-3", "PID^1^3"),
        ("OBR-4.1", "OBR^1^4^1^1"),
        ("obx[3]-5.1.2", "OBX^3^5^1^1^2"),
        ("", ""),
        ("somewhere", ""),
        ("PID-0", ""),
    ],
)
def test_location_becomes_erl(location: str, erl: str) -> None:
    """SEG[k]-n.c.s maps to ERL SEG^k^n^1^c^s (repetition 1); anything else is left empty."""
    segs = segments(ack_text(oru(), "AE", errors=[AckErrorDetail("101", location)]))
    assert segs[2][2] == erl


@pytest.mark.parametrize("version", HL7APY_VERSIONS)
def test_hl7apy_strictly_validates_acks_of_every_version(version: str) -> None:
    """AA and AE-with-errors ACKs are structurally valid in every version hl7apy knows."""
    errors = [AckErrorDetail("101", "PID-3.1"), AckErrorDetail("102", "OBR[2]-7.1.2", "W", "bad ^ thing")]
    validate_strict(ack_text(oru(version)))
    validate_strict(ack_text(oru(version), "AE", errors=errors))


@pytest.mark.parametrize("version", ["2.2", "2.3", "2.3.1", "2.4"])
def test_before_25_msa3_text_and_single_err_with_eld_repetitions(version: str) -> None:
    """Before v2.5: MSA-3 text, one ERR (ACK allows one), ERR-1 repeats an ELD per error."""
    errors = [AckErrorDetail("101", "PID-3.1"), AckErrorDetail("203", "MSH-12", text="Version & more")]
    text = ack_text(oru(version), "AR", errors=errors)
    segs = segments(text)
    assert [s[0] for s in segs] == ["MSH", "MSA", "ERR"]
    assert segs[1] == ["MSA", "AR", "MSG00042", "Required field missing"]
    assert segs[2] == [
        "ERR",
        "PID^1^3^101&Required field missing&HL70357~MSH^1^12^203&Version \\T\\ more&HL70357",
    ]
    parsed = hl7.parse(text)
    eld = parsed.segment("ERR")[1]
    assert len(eld) == 2
    assert parsed.unescape(str(eld[1][3][1])) == "Version & more"


def test_explicit_text_goes_to_msa3() -> None:
    """An explicit text overrides the default MSA-3, and is kept in v2.5/2.6 where MSA-3 remains."""
    assert segments(ack_text(oru("2.4"), "AE", errors=[AckErrorDetail("101")], text="Check PID"))[1][3] == "Check PID"
    assert segments(ack_text(oru("2.5.1"), "AE", text="Check PID"))[1][3] == "Check PID"
    assert len(segments(ack_text(oru("2.5.1"), "AE", errors=[AckErrorDetail("101")]))[1]) == 3
    assert len(segments(ack_text(oru("2.8"), "AE", text="withdrawn in 2.7"))[1]) == 3


def test_our_texts_are_escaped_and_round_trip() -> None:
    """Delimiters in our texts are escaped; python-hl7 unescapes them back."""
    wording = "Bad |field^comp~rep\\esc&sub"
    text = ack_text(oru(), "AE", errors=[AckErrorDetail("102", "OBX-5", text=wording)])
    parsed = hl7.parse(text)
    err3 = parsed.segment("ERR")[3]
    assert len(err3[0]) == 3
    assert parsed.unescape(str(err3[0][1])) == wording


def test_our_texts_are_ascii_and_capped() -> None:
    """Our texts lose control characters, become ASCII and stay short."""
    segs = segments(ack_text(oru(), "AE", errors=[AckErrorDetail("102", text="caf\u00e9\x00\r\n" + "x" * 500)]))
    cwe = segs[2][3].split("^")
    assert cwe[1].startswith("caf?")
    assert len(cwe[1]) <= 199


def test_ack_error_validates_its_fields() -> None:
    """Codes are table 0357 digits and severities table 0516 letters."""
    with pytest.raises(ValueError):
        AckErrorDetail("ABC")
    with pytest.raises(ValueError):
        AckErrorDetail("101", severity="X")
    assert AckErrorDetail("999").display_text == "Error"


def test_ack_error_from_decode_error() -> None:
    """A DecodeError's code, location and location-only message become the ERR content."""
    error = AckErrorDetail.from_decode_error(MissingField("PID-3 patient identifier is empty", location="PID-3"))
    assert error == AckErrorDetail("101", "PID-3", "E", "PID-3 patient identifier is empty")


# -- encoding characters ----------------------------------------------------


def test_custom_encoding_characters_from_corpus() -> None:
    """A three-character MSH-2 (^~}) is echoed as ^~}& and our texts escape with }."""
    raw = (CORPUS / "hapi" / "bar_p01_encoding_chars_3_only_lf.hl7").read_bytes()
    header = read_header(raw)
    text = ack_text(header, "AE", errors=[AckErrorDetail("101", "PID-3", text="a^b}c")])
    assert text.startswith("MSH|^~}&|RADIOLOGY|MIR1|ADMISSION|ADT1|")
    segs = segments(text)
    assert segs[0][8:12] == ["ACK^P01^ACK", "ACK0001", "P", "2.4"]
    assert segs[2] == ["ERR", "PID^1^3^101&a}S}b}E}c&HL70357"]
    parsed = hl7.parse(text)
    assert parsed.esc == "}"
    assert str(parsed.segment("MSA")[2]) == "908594ADT30502185327"
    assert parsed.unescape(str(parsed.segment("ERR")[1][0][3][1])) == "a^b}c"
    validate_strict(text)


def test_custom_field_separator_is_reused() -> None:
    """Another field separator (#) is echoed and used throughout."""
    header = read_header(b"MSH#^~\\&#RIS#H#OVR#R#2026##ORU^R01#ID9#P#2.5.1\r")
    text = ack_text(header, "AE", errors=[AckErrorDetail("101", "PID-3", text="a#b")])
    assert text.startswith("MSH#^~\\&#OVR#R#RIS#H#")
    assert segments(text)[2] == ["ERR", "", "PID^1^3", "101^a\\F\\b^HL70357", "E"]
    assert str(hl7.parse(text).segment("MSA")[2]) == "ID9"


@pytest.mark.parametrize(
    "raw",
    [
        b"MSH|0~00|A|B|C|D|2026||ORU^R01|ID^9|P|2.8.1000\r",  # repeated, alphanumeric delimiters
        b"MSH\x0b^~\\&\x0bA\x0bB\x0bC\x0bD\x0b2026\x0b\x0bORU^R01\x0bID^9\x0bP\x0b2.8.1000\r",  # MLLP byte
        b"MSH|^~\x1c&|A|B|C|D|2026||ORU^R01|ID^9|P|2.8.1000\r",  # control byte in MSH-2
    ],
)
def test_unusable_delimiters_fall_back_to_standard_ones(raw: bytes) -> None:
    """Delimiters that are ambiguous or control bytes are never echoed; fields become escaped text."""
    text = ack_text(read_header(raw), "AR", errors=[AckErrorDetail("102", "MSH-2")])
    assert text.startswith("MSH|^~\\&|")
    segs = segments(text)
    assert segs[0][11] == "2.5.1"
    assert segs[1][2] == "ID\\S\\9"
    assert hl7.parse(text).unescape(str(hl7.parse(text).segment("MSA")[2])) == "ID^9"
    validate_strict(text.replace("MSA|AR|ID\\S\\9", "MSA|AR|ID9"))


# -- unreadable and hostile input -------------------------------------------


def test_no_header_still_gives_a_parseable_nack() -> None:
    """An unreadable frame gets a NACK with empty routing fields and empty MSA-2."""
    text = ack_text(None, "AR", errors=[AckErrorDetail("100", "MSH-1", text="No MSH segment")])
    segs = segments(text)
    assert segs[0] == ["MSH", "^~\\&", "", "", "", "", "20261123093005-0500", "", "ACK^^ACK", "ACK0001", "P", "2.5.1"]
    assert segs[1] == ["MSA", "AR", ""]
    assert str(hl7.parse(text).segment("ERR")[3]) == "100^No MSH segment^HL70357"
    # MSA-2 is required, so hl7apy's STRICT level refuses the empty one; it still parses.
    parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT)


def test_fuzz_corpus_is_present() -> None:
    """The hostile inputs ship in tests/data/hl7/nhapi-fuzz; their absence must fail, not skip."""
    assert len(FUZZ_FILES) >= 6


@pytest.mark.parametrize("path", FUZZ_FILES, ids=lambda p: p.name)
def test_fuzzer_inputs_give_clean_parseable_nacks(path: Path) -> None:
    """Every nHapi fuzzer input yields a NACK without control bytes that both parsers read."""
    header = read_header(path.read_bytes())
    text = ack_text(header, "AR", errors=[AckErrorDetail("207")])
    assert [s[0] for s in segments(text)] == ["MSH", "MSA", "ERR"]
    parsed = hl7.parse(text)
    assert str(parsed.segment("MSA")[1]) == "AR"
    parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT)
    assert MllpFramer().feed(frame(text.encode("latin-1"))) == [text.encode("latin-1")]


def test_hostile_echoed_fields_are_sanitized_and_capped() -> None:
    """Control bytes vanish, repetitions drop, long fields are capped, broken escapes and UTF-8 trimmed."""
    long_app = "A" * 10_000
    cut_utf8 = "B" * 226 + "\u00e9".encode().decode("latin-1")  # 2-byte é straddling the cap
    raw = (f"MSH|^~\\&|{long_app}|F\x00A\x0bC\x1c|RECV~OTHER|{cut_utf8}|2026||ORU^R01|C\x7f1\\|P|2.5.1\r").encode(
        "latin-1"
    )
    segs = segments(ack_text(read_header(raw), "AE", errors=[AckErrorDetail("101")]))
    our_app, our_fac, their_app, their_fac = segs[0][2:6]
    assert our_app == "RECV"
    assert our_fac == "B" * 226
    assert their_app == "A" * 227
    assert their_fac == "FAC"
    assert segs[1][2] == "C1"


def test_patient_data_is_never_echoed() -> None:
    """Only MSH fields are echoed: a marker in PID never reaches the NACK."""
    errors = [AckErrorDetail("101", "PID-3"), AckErrorDetail("102", "PID-7")]
    for version in ("2.4", "2.5.1"):
        assert MARKER not in ack_text(oru(version), "AE", errors=errors)


@given(hostile_msh(), st.lists(ack_errors(), max_size=4), st.sampled_from(["AA", "AE", "AR", "CA", "CE", "CR"]))
def test_any_header_gives_a_clean_parseable_ack(raw: bytes, errors: list[AckErrorDetail], code: str) -> None:
    """Property: whatever MSH a sender writes, the ACK is clean, parses, and frames losslessly."""
    header = read_header(raw)
    data = build_ack(header, code, now=NOW, control_id="ACK0001", errors=errors)
    assert FORBIDDEN.search(data) is None
    assert b"MARKER" not in data  # in PID only; the hostile alphabet cannot spell it
    text = data.decode("latin-1")
    parsed = hl7.parse(text)
    names = [str(seg[0]) for seg in parsed]
    assert names[:2] == ["MSH", "MSA"]
    assert str(parsed.segment("MSA")[1]) == code
    assert all(name == "ERR" for name in names[2:])
    assert MllpFramer().feed(frame(data)) == [data]


@given(
    hostile_msh(),
    st.text(alphabet="0123456789.|^~", max_size=12),
    st.text(alphabet="AB12|^~\\&", max_size=12),
    st.lists(ack_errors(), max_size=2),
    st.sampled_from(["AA", "AE", "CR"]),
)
def test_templates_give_the_same_bytes(
    raw: bytes, msh7: str, msh10: str, errors: list[AckErrorDetail], code: str
) -> None:
    """Property: an answer built from kept header parts is the answer built from the header alone,
    for the header itself and for a copy with another MSH-7 and MSH-10 (the kept parts' reuse);
    a limit of two headers makes the templates drop and rebuild their parts along the way."""
    header = read_header(raw)
    templates = AckTemplates(limit=2)

    def both(h: MessageHeader | None) -> tuple[bytes, bytes]:
        kept = build_ack(h, code, now=NOW, control_id="ACK0001", errors=errors, templates=templates)
        return kept, build_ack(h, code, now=NOW, control_id="ACK0001", errors=errors)

    first, alone = both(header)
    assert first == alone
    if header is not None:
        fields = list(header.fields) + [""] * max(0, 11 - len(header.fields))
        fields[7], fields[10] = msh7, msh10
        other = MessageHeader(header.separators, tuple(fields))
        kept, alone = both(other)
        assert kept == alone
        assert both(oru())[0] == both(oru())[1]  # a third header: the limit drops the first two


def test_templates_tell_headers_apart_beyond_msh10() -> None:
    """Headers alike up to MSH-10 but not after it (version, processing id, modes, charset) each get
    their own answer from shared templates."""
    templates = AckTemplates()
    headers = [
        oru(version, msh15=msh15, msh16=msh16)
        for version in ("2.5.1", "2.3", "2.7")
        for msh15, msh16 in (("", ""), ("AL", "NE"), ("", "ER"))
    ]
    charset = read_header(
        b"MSH|^~\\&|RIS|HOSP^1.2.3^ISO|OVERREAD|READCO|20261123092959||ORU^R01^ORU_R01|MSG00042|P|2.5.1"
        b"||||||UNICODE UTF-8\r"
    )
    debug = read_header(
        b"MSH|^~\\&|RIS|HOSP^1.2.3^ISO|OVERREAD|READCO|20261123092959||ORU^R01^ORU_R01|MSG00042|D|2.5.1\r"
    )
    for header in [*headers, charset, debug, *headers]:
        kept = build_ack(header, "AA", now=NOW, control_id="ACK0001", templates=templates)
        assert kept == build_ack(header, "AA", now=NOW, control_id="ACK0001")
    # Three versions, original or enhanced mode (both enhanced pairs answer alike), and two more.
    assert len({build_ack(h, "AA", now=NOW, control_id="ACK0001") for h in [*headers, charset, debug]}) == 8


# -- acknowledgment modes ---------------------------------------------------


@pytest.mark.parametrize(
    ("msh15", "msh16", "enhanced"),
    [("", "", False), ("AL", "", True), ("", "AL", True), ("NE", "NE", True), ("al", "", True)],
)
def test_enhanced_mode_when_msh15_or_msh16_set(msh15: str, msh16: str, enhanced: bool) -> None:
    """Enhanced acknowledgment is requested by a non-empty MSH-15 or MSH-16."""
    assert is_enhanced_mode(oru(msh15=msh15, msh16=msh16)) is enhanced
    assert is_enhanced_mode(None) is False


@pytest.mark.parametrize(("outcome", "accept"), [("AA", "CA"), ("AE", "CE"), ("AR", "CR"), ("CA", "CA")])
def test_accept_ack_code_maps_original_codes(outcome: str, accept: str) -> None:
    """AA/AE/AR become CA/CE/CR; accept codes pass through."""
    assert accept_ack_code(outcome) == accept


def test_accept_ack_code_refuses_unknown_codes() -> None:
    """Anything that is not an acknowledgment code is a caller bug."""
    with pytest.raises(ValueError):
        accept_ack_code("OK")


def test_ack_code_for_depends_on_mode() -> None:
    """Original mode answers the outcome, enhanced mode its accept code."""
    assert ack_code_for(oru(), "AE") == "AE"
    assert ack_code_for(None, "AR") == "AR"
    assert ack_code_for(oru(msh15="AL"), "AE") == "CE"
    assert ack_code_for(oru(msh16="AL"), "AA") == "CA"


@pytest.mark.parametrize(
    ("msh15", "msh16", "code", "send"),
    [
        # original mode: always
        ("", "", "AA", True),
        ("", "", "AR", True),
        # NE: never
        ("NE", "AL", "CA", False),
        ("NE", "AL", "CR", False),
        # ER: only errors and rejects
        ("ER", "", "CA", False),
        ("ER", "", "CE", True),
        ("ER", "", "CR", True),
        # SU: only success
        ("SU", "", "CA", True),
        ("SU", "", "CE", False),
        ("SU", "", "CR", False),
        # AL, empty in enhanced mode, or an unknown value: always
        ("AL", "", "CA", True),
        ("AL", "", "CR", True),
        ("", "AL", "CA", True),
        ("", "NE", "CE", True),
        ("XX", "", "CE", True),
    ],
)
def test_should_send_accept_ack_honours_msh15(msh15: str, msh16: str, code: str, send: bool) -> None:
    """MSH-15 (table 0155) decides whether the accept acknowledgment is sent."""
    assert should_send_accept_ack(oru(msh15=msh15, msh16=msh16), code) is send


def test_unreadable_header_is_always_answered() -> None:
    """With no header there is no MSH-15 to honour: always answer."""
    assert should_send_accept_ack(None, "AR") is True


def test_enhanced_mode_ack_asks_for_no_acknowledgment() -> None:
    """In enhanced mode our ACK sets MSH-15/16 to NE; in original mode it leaves them out."""
    enhanced = ack_text(oru(msh15="AL", msh16="NE"), "CA")
    assert segments(enhanced)[0][14:16] == ["NE", "NE"]
    validate_strict(enhanced)
    assert len(segments(ack_text(oru(), "AA"))[0]) == 12


# -- character set ----------------------------------------------------------


def _with_msh18(value: str, version: str = "2.5.1", msh15: str = "") -> MessageHeader:
    raw = (
        f"MSH|^~\\&|RIS|HOSP|OVERREAD|READCO|20261123092959||ORU^R01^ORU_R01|C1|P|{version}"
        f"|||{msh15}|||{value}\rPID|1||{MARKER}\r"
    ).encode("latin-1")
    header = read_header(raw)
    assert header is not None
    return header


@pytest.mark.parametrize("version", ["2.3.1", "2.5.1", "2.7"])
@pytest.mark.parametrize("charset", ["8859/1", "UNICODE UTF-8"])
def test_msh18_charset_is_repeated_in_the_ack(version: str, charset: str) -> None:
    """An ACK declares the character set the message declared (MSH-18), so a peer decodes
    the echoed MSH-3..6 and MSA-2 bytes the way it encoded them; hl7apy validates it."""
    text = ack_text(_with_msh18(charset, version))
    msh = segments(text)[0]
    assert len(msh) == 18 and msh[17] == charset and msh[14:16] == ["", ""]
    if version in HL7APY_VERSIONS:
        validate_strict(text)


def test_msh18_with_enhanced_mode_and_repetitions() -> None:
    """In enhanced mode MSH-15/16 stay NE next to MSH-18; only MSH-18's first repetition
    (the message's default charset) is declared."""
    text = ack_text(_with_msh18("UNICODE UTF-8~8859/1", msh15="AL"), "CA")
    msh = segments(text)[0]
    assert msh[14:] == ["NE", "NE", "", "UNICODE UTF-8"]
    validate_strict(text)


@pytest.mark.parametrize("value", ["", "  ", "x\\F\\y", MARKER.lower() + "?!", "A" * 40])
def test_msh18_absent_or_odd_is_not_declared(value: str) -> None:
    """No MSH-18 (or one that is not a character set name) gives an ACK without MSH-18."""
    msh = segments(ack_text(_with_msh18(value)))[0]
    assert len(msh) == 12  # MSH-1 is the separator: MSH..MSH-12 split into 12 items


@pytest.mark.parametrize("control_id", ["é", "Café", "R-1-à"])
def test_a_latin1_control_id_ending_in_a_letter_is_echoed_whole(control_id: str) -> None:
    """A latin-1 MSA-2 whose last byte leads a UTF-8 sequence (é is 0xE9) is no cut UTF-8
    sequence: only a value the cap cut is trimmed, so the sender gets its own control id back."""
    raw = f"MSH|^~\\&|RIS|HOSP|OVERREAD|READCO|20261123092959||ORU^R01|{control_id}|P|2.5.1||||||8859/1\r"
    data = build_ack(read_header(raw.encode("latin-1")), "AA", now=NOW, control_id="ACK0001")
    assert b"\rMSA|AA|" + control_id.encode("latin-1") + b"\r" in data


def test_utf8_echo_stays_utf8_bytes() -> None:
    """A UTF-8 sending application name comes back as the same UTF-8 bytes under UNICODE UTF-8."""
    raw = "MSH|^~\\&|RÖNTGEN|HOSP|OVERREAD|READCO|20261123092959||ORU^R01|C1|P|2.5.1||||||UNICODE UTF-8\r".encode()
    header = read_header(raw)
    data = build_ack(header, "AA", now=NOW, control_id="ACK0001")
    assert "RÖNTGEN".encode() in data
    assert data.decode("utf-8").split("|")[4] == "RÖNTGEN"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(hostile_msh(), min_size=1, max_size=3),
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(3, 21), st.text(alphabet="AB2.P|^~\\&#NE", max_size=6)),
        min_size=1,
        max_size=12,
    ),
)
def test_templates_follow_a_sender_that_changes_its_header(
    raws: list[bytes], steps: list[tuple[int, int, str]]
) -> None:
    """Property: senders whose messages change one MSH field at a time (MSH-8, MSH-9, MSH-11, the
    modes, the charset...) get, from one shared set of templates, the answer built from each header
    alone; a limit of three makes the set drop and rebuild along the way (review of the ACK
    templates: no difference found)."""
    templates = AckTemplates(limit=3)
    headers = [read_header(raw) for raw in raws]
    for which, n, value in steps:
        header = headers[which % len(headers)]
        if header is not None:
            fields = list(header.fields) + [""] * max(0, n + 1 - len(header.fields))
            fields[n] = value
            header = headers[which % len(headers)] = MessageHeader(header.separators, tuple(fields))
        kept = build_ack(header, "AA", now=NOW, control_id="ACK0001", templates=templates)
        assert kept == build_ack(header, "AA", now=NOW, control_id="ACK0001")
