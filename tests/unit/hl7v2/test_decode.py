"""Unit tests for HL7 v2 ORU decoding, on messages written here."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.errors import DecodeError, InvalidValue, MissingField, SegmentSequenceError, UnsupportedMessage
from listener.hl7v2.decode import decode_message
from listener.hl7v2.mapping import MappingSet
from listener.model import ResultStatus, SectionKind
from listener.pipeline import Pipeline
from tests.conftest import RECEIVED

MARKER = "ZZMARKERZZ"

BASE = [
    "MSH|^~\\&|RISX|GENHOSP|OVERREAD|QA|20261120021500||ORU^R01^ORU_R01|CTRL0001|P|2.5.1",
    f"PID|1||MRN{MARKER}^^^GENHOSP^MR||{MARKER}^PAT||19700102|F",
    "PV1|1|E",
    "ORC|RE|PL123|ACC1001",
    "OBR|1|PL123|ACC1001|70450^CT HEAD WO CONTRAST^C4|||20261120020100|||||||||||||||20261120021400||CT|P||^^^^^S||||R51.9^Headache^I10|RAD7&NIGHT&ALEX|||||||||||||26^Professional^C4~LT^Left^C4",
    "OBX|1|TX|18785-6^Indication^LN||Headache.||||||P",
    "OBX|2|TX|18782-3^Findings^LN||No acute hemorrhage.~Ventricles normal.||||||P",
    "OBX|3|TX|19005-8^Impression^LN||No acute intracranial abnormality.||||||P",
]


def _msg(segments: list[str], sep: str = "\r") -> bytes:
    return sep.join(segments).encode() + sep.encode()


def _decode(pipeline: Pipeline, raw: bytes, mappings: MappingSet | None = None):  # type: ignore[no-untyped-def]
    return decode_message(raw, mappings or pipeline.mappings, received_at=RECEIVED, procedures=pipeline.procedures)


def test_standard_oru_fields(pipeline: Pipeline) -> None:
    """A standard v2.5.1 ORU decodes into every model field the mapping names."""
    decoded = _decode(pipeline, _msg(BASE))
    (report,) = decoded.reports
    assert report.accession == "ACC1001"
    assert report.status is ResultStatus.PRELIMINARY
    assert report.procedure.code == "70450" and report.procedure.coding_system == "CPT"
    assert report.procedure.modifiers == ("26", "LT")
    assert report.order_laterality == "left"
    assert report.priority == "stat"
    assert report.reader is not None and report.reader.id == "RAD7" and report.reader.name == "ALEX NIGHT"
    assert report.patient.sex == "F" and str(report.patient.birth_date) == "1970-01-02"
    assert report.diagnosis_codes == ("R51.9",)
    assert report.times.observation is not None and report.times.observation.hour == 2
    kinds = [s.kind for s in report.sections]
    assert kinds == [SectionKind.INDICATION, SectionKind.FINDINGS, SectionKind.IMPRESSION]
    assert report.section(SectionKind.FINDINGS).text == "No acute hemorrhage.\nVentricles normal."  # type: ignore[union-attr]


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators_bom_and_mllp(pipeline: Pipeline, sep: str) -> None:
    """CR, LF, CRLF, a UTF-8 BOM and MLLP framing bytes all decode the same."""
    raw = b"\x0b\xef\xbb\xbf" + _msg(BASE, sep) + b"\x1c\r"
    assert _decode(pipeline, raw).reports[0].accession == "ACC1001"


def test_ft_escapes(pipeline: Pipeline) -> None:
    """FT escape sequences: field, component, subcomponent, repetition, escape, hex, line break."""
    segs = BASE[:5] + ["OBX|1|FT|18782-3^Findings^LN||A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F\\X41\\\\.br\\Next line||||||F"]
    report = _decode(pipeline, _msg(segs)).reports[0]
    assert report.text == "A|B^C&D~E\\FA\nNext line"


def test_custom_encoding_characters(pipeline: Pipeline) -> None:
    """MSH-1/MSH-2 other than |^~\\& are honoured everywhere."""
    segs = [s.replace("|", "#").replace("^", "@") for s in BASE]
    segs[0] = segs[0].replace("#@~\\&#", "#@~\\&#", 1)
    report = _decode(pipeline, _msg(segs)).reports[0]
    assert report.procedure.code == "70450"
    assert report.section(SectionKind.IMPRESSION) is not None


def test_status_from_obx_when_obr25_empty(pipeline: Pipeline) -> None:
    """Without OBR-25 the most common OBX-11 decides; status words are mapped."""
    segs = list(BASE)
    segs[4] = segs[4].replace("||CT|P||", "||CT|||")
    segs[5:] = [s.replace("||||||P", "||||||Wet Read") for s in segs[5:]]
    report = _decode(pipeline, _msg(segs)).reports[0]
    assert report.status is ResultStatus.PRELIMINARY
    assert report.status_raw == "Wet Read"


def test_headings_in_one_ft_obx(pipeline: Pipeline) -> None:
    """A whole report in one FT OBX with \\.br\\ breaks is sectioned by its headings."""
    text = "CLINICAL HISTORY: Fall.\\.br\\TECHNIQUE: Axial CT.\\.br\\COMPARISON: None.\\.br\\FINDINGS:\\.br\\Normal.\\.br\\IMPRESSION:\\.br\\Negative."
    segs = BASE[:5] + [f"OBX|1|FT|RPT^Report||{text}||||||F"]
    report = _decode(pipeline, _msg(segs)).reports[0]
    kinds = [s.kind for s in report.sections]
    assert kinds == [
        SectionKind.INDICATION,
        SectionKind.TECHNIQUE,
        SectionKind.COMPARISON,
        SectionKind.FINDINGS,
        SectionKind.IMPRESSION,
    ]
    assert report.comparison_text == "None."
    for sec in report.sections:
        assert report.text[sec.start : sec.end] == sec.text


def test_ed_pdf_is_recorded_not_decoded(pipeline: Pipeline) -> None:
    """A base64 PDF in ED marks the report as PDF with no text."""
    segs = BASE[:5] + ["OBX|1|ED|18748-4^Report^LN||^Application^PDF^Base64^JVBERi0xLjQKJcOkw7zDtsOfCg==||||||F"]
    report = _decode(pipeline, _msg(segs)).reports[0]
    assert report.text_kind == "pdf" and report.text == ""


def test_ed_base64_text(pipeline: Pipeline) -> None:
    """Base64 plain text in ED is decoded as report text."""
    import base64

    data = base64.b64encode(b"FINDINGS:\nNormal.\nIMPRESSION:\nNegative.").decode()
    segs = BASE[:5] + [f"OBX|1|ED|18748-4^Report^LN||^TEXT^PLAIN^Base64^{data}||||||F"]
    report = _decode(pipeline, _msg(segs)).reports[0]
    assert report.section(SectionKind.IMPRESSION).text == "Negative."  # type: ignore[union-attr]


def test_two_obr_groups_give_two_reports(pipeline: Pipeline) -> None:
    """Each OBR group is its own report with its own OBX text."""
    segs = BASE + [
        "OBR|2|PL124|ACC1002|70551^MRI BRAIN WO^C4|||20261120020100||||||||||||||||MR|F",
        "OBX|1|TX|19005-8^Impression^LN||Normal MRI.||||||F",
    ]
    reports = _decode(pipeline, _msg(segs)).reports
    assert [r.accession for r in reports] == ["ACC1001", "ACC1002"]
    assert reports[1].text == "Normal MRI." and reports[1].status is ResultStatus.FINAL


def test_cpt_from_alternate_identifier_and_local_table(pipeline: Pipeline) -> None:
    """CPT comes from OBR-4.4 when OBR-4.6 says C4, else the feed's local code table."""
    segs = list(BASE)
    segs[4] = segs[4].replace("70450^CT HEAD WO CONTRAST^C4", "CTHD^CT HEAD^L^70450^CT HEAD WO^C4")
    proc = _decode(pipeline, _msg(segs)).reports[0].procedure
    assert (proc.code, proc.local_code) == ("70450", "CTHD")
    segs[4] = segs[4].replace("CTHD^CT HEAD^L^70450^CT HEAD WO^C4", "CTHD^CT HEAD^L")
    mapping = replace(pipeline.mappings.default, local_codes={"CTHD": "70450"})
    proc = _decode(pipeline, _msg(segs), MappingSet(mapping)).reports[0].procedure
    assert proc.code == "70450"


@pytest.mark.parametrize(
    ("change", "error", "code", "location"),
    [
        (lambda s: [s[0].replace("ORU^R01^ORU_R01", "ADT^A01")] + s[1:], UnsupportedMessage, "200", "MSH-9"),
        (lambda s: [s[0].replace("ORU^R01^ORU_R01", "ORU^R30")] + s[1:], UnsupportedMessage, "201", "MSH-9.2"),
        (lambda s: [s[0].replace("|P|2.5.1", "|X|2.5.1")] + s[1:], UnsupportedMessage, "202", "MSH-11"),
        (lambda s: [s[0].replace("|P|2.5.1", "|P|2.1")] + s[1:], UnsupportedMessage, "203", "MSH-12"),
        (lambda s: [s[0].replace("CTRL0001", "")] + s[1:], MissingField, "101", "MSH-10"),
        (
            lambda s: s[:3] + ["ORC|RE|PL123", s[4].replace("|PL123|ACC1001|", "|PL123||")] + s[5:],
            MissingField,
            "101",
            "OBR-3.1",
        ),
        (lambda s: s[:4], SegmentSequenceError, "100", "ORC[1]"),
        (lambda s: s[:3], SegmentSequenceError, "100", "OBR"),
        (lambda s: s + ["MSH|^~\\&|A|B"], SegmentSequenceError, "100", "MSH[2]"),
        (lambda s: s[:2] + ["junk line"] + s[2:], SegmentSequenceError, "100", "segment 3"),
        (lambda s: s[:2] + ["pv1|1|E"] + s[2:], SegmentSequenceError, "100", "segment 3"),
        (lambda s: s[:5] + [f"OBX|1|TX|X||{MARKER}\x00||||||F"], InvalidValue, "102", "MSH"),
    ],
)
def test_decode_errors_are_specific_and_free_of_values(pipeline: Pipeline, change, error, code, location) -> None:  # type: ignore[no-untyped-def]
    """Bad input gets the right table 0357 code and location, and no message value."""
    with pytest.raises(error) as info:
        _decode(pipeline, _msg(change(list(BASE))))
    assert info.value.hl7_code == code
    assert info.value.location == location
    assert MARKER not in str(info.value) and "MRN" not in str(info.value)


def test_ignored_types_are_acknowledged_not_processed(pipeline: Pipeline) -> None:
    """A type in the feed's ignore list decodes to disposition 'ignored' with no reports."""
    mapping = replace(pipeline.mappings.default, ignore=("ADT^A01",))
    segs = [BASE[0].replace("ORU^R01^ORU_R01", "ADT^A01")] + BASE[1:3]
    decoded = _decode(pipeline, _msg(segs), MappingSet(mapping))
    assert decoded.disposition == "ignored" and decoded.reports == ()


def test_inline_obx_and_wrapped_lines(pipeline: Pipeline) -> None:
    """OBX glued to the OBR line with a space, and a wrapped OBX value, are repaired."""
    segs = BASE[:4] + [BASE[4] + "| OBX||TX|18782-3^F^LN|1|First line.", "continued here.||||||P"]
    report = _decode(pipeline, _msg(segs)).reports[0]
    assert report.text == "First line.\ncontinued here."


def test_bad_birth_date_is_a_warning_without_value(pipeline: Pipeline) -> None:
    """An unparseable PID-7 is dropped with a location-only warning."""
    segs = list(BASE)
    segs[1] = segs[1].replace("19700102", "19700102T999")
    report = _decode(pipeline, _msg(segs)).reports[0]
    assert report.patient.birth_date is None
    assert report.warnings == ("PID-7.1: not a valid date; ignored",)


def test_never_another_exception_on_random_mutations(pipeline: Pipeline) -> None:
    """Byte-level mutations of a valid message decode or raise DecodeError only."""
    import random

    rng = random.Random(1234)
    base = bytearray(_msg(BASE))
    for _ in range(1500):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[pos] = rng.randrange(256)
            elif op < 0.7:
                del data[pos]
            else:
                data.insert(pos, rng.choice(b"|^~\\&\r\n\x00\x0b\x1c"))
        try:
            _decode(pipeline, bytes(data))
        except DecodeError:
            pass


@pytest.mark.parametrize(
    ("change", "location"),
    [
        (lambda h: h.replace("CTRL0001", "C" * 200), "MSH-10"),
        (lambda h: h.replace("|RISX|", "|" + "R" * 228 + "|"), "MSH-3"),
        (lambda h: h.replace("|GENHOSP|", "|" + "G" * 200 + "^x^ISO|"), "MSH-4.1"),
    ],
)
def test_over_long_header_keys_are_refused_naming_the_field(pipeline: Pipeline, change, location: str) -> None:  # type: ignore[no-untyped-def]
    """MSH-3/MSH-4 (227, 199 per component) and MSH-10 (199) over their caps: AE 102 at the field, no value."""
    with pytest.raises(InvalidValue) as info:
        _decode(pipeline, _msg([change(BASE[0])] + BASE[1:]))
    assert (info.value.hl7_code, info.value.location) == ("102", location)
    assert "CCCC" not in info.value.message and "RRRR" not in info.value.message


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decoder_raises_only_decode_errors(pipeline: Pipeline, data: st.DataObject) -> None:
    """Property: BASE with random bytes inserted, replaced or cut gives a decode or a DecodeError
    subclass, never another exception (an unexpected one would become AE 207)."""
    raw = bytearray(_msg(BASE))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        pos = data.draw(st.integers(min_value=0, max_value=len(raw)))
        junk = data.draw(
            st.binary(max_size=12)
            | st.sampled_from([b"\\.sp", b"\\X", b"\\", b"|", b"^", b"\r", b"MSH|^~\\&|", b"\x0b", b"\x00"])
        )
        cut = data.draw(st.integers(min_value=0, max_value=8))
        raw[pos : pos + cut] = junk
    try:
        _decode(pipeline, bytes(raw))
    except DecodeError:
        pass


_FIELD_TEXT = st.text(alphabet="abcXYZ 09.,:^&~\\-", max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fields_after_obx_8_never_change_the_text(pipeline: Pipeline, data: st.DataObject) -> None:
    """Property: a text row's fields after OBX-8 (status, times, observers...) change neither its text,
    its sections, its text kind nor its abnormal flags; so a row read only up to OBX-8 (the split
    stops there: docs/benchmarks.md, "Worker CPU, round 11") reads as the whole row would, short rows
    and NTEs included."""
    rows: list[str] = []
    for n in range(data.draw(st.integers(min_value=1, max_value=4), label="rows")):
        if data.draw(st.booleans(), label="nte"):
            fields = ["NTE", str(n + 1), "L", data.draw(_FIELD_TEXT, label="comment")]
        else:
            fields = [
                "OBX",
                str(n + 1),
                data.draw(st.sampled_from(["TX", "ST", "NM", "CE", "FT"]), label="OBX-2"),
                data.draw(st.sampled_from(["18782-3^Findings^LN", "19005-8^Impression^LN", "&GDT", ""]), label="OBX-3"),
                "",
                data.draw(_FIELD_TEXT, label="OBX-5"),
                data.draw(st.sampled_from(["", "mm", "cm^centimetre"]), label="OBX-6"),
                "",
                data.draw(st.sampled_from(["", "A", "h^High", " n "]), label="OBX-8"),
            ]
        cut = data.draw(st.integers(min_value=3, max_value=len(fields)), label="cut")
        rows.append("|".join(fields[:cut]))
    extra = data.draw(st.lists(_FIELD_TEXT, min_size=1, max_size=10), label="fields after OBX-8")
    head = [s for s in BASE if not s.startswith("OBX")]
    # A Z-segment closes both messages: blanks that end a message are trimmed with its envelope, so a
    # short last row ending in a blank would read without it where the whole row keeps it.
    tail = ["ZQA|1"]
    whole = _decode(pipeline, _msg(head + [r + "|" * (9 - r.count("|")) + "|".join(extra) for r in rows] + tail))
    short = _decode(pipeline, _msg(head + rows + tail))
    (a,), (b,) = whole.reports, short.reports
    assert (a.text, a.sections, a.text_kind, a.abnormal_flags) == (b.text, b.sections, b.text_kind, b.abnormal_flags)
