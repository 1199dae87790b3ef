"""HL7 v2 ORU^R01 bytes -> Reports (one per OBR group).

Pure: no I/O, no clock (the receive time is an argument), no logging.

Strategy: python-hl7's full parse of every segment costs more than the rest of
the daemon's per-message work (it builds a container for every field,
repetition, component and subcomponent). The decoder reads a dozen values per
message, so the message is split into segments, the segments the feed's mapping
names (MSH, PID, ORC, OBR, TQ1, DG1, ...) into fields, and each value the
mapping asks for is cut out of its field and unescaped
(``escape.unescape_value``, python-hl7's reading without its failure modes);
OBX rows are cut into the few fields the text needs. hl7apy
validates the whole structure only for feeds configured ``validation: strict``.

Every failure is a DecodeError with an HL7 table 0357 code and a location; no
error message contains a value from the message.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone

import hl7

from listener.errors import (
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_PROCESSING_ID,
    InvalidValue,
    MissingField,
    SegmentSequenceError,
    UnsupportedMessage,
)
from listener.hl7v2.escape import unescape_value
from listener.hl7v2.mapping import FieldPath, Mapping, MappingSet, inline_split_pattern
from listener.hl7v2.segments import (
    MessageHeader,
    Separators,
    check_header_lengths,
    check_separators,
    check_version,
    decode_text,
    read_header,
    strip_envelope,
)
from listener.hl7v2.structure import check_one_message, check_oru_structure
from listener.model import (
    RADPEER_GRADES,
    Disposition,
    Patient,
    PeerReview,
    Procedure,
    Reader,
    Report,
    ResultStatus,
    Sender,
    TextKind,
    Times,
)
from listener.procedures import ProcedureTable
from listener.text.sections import TEXT_HINT, sectionize

#: MSH-11 processing ids we accept (table 0103).
PROCESSING_IDS = frozenset({"P", "D", "T"})

# Segments that never carry fields a mapping can name and are not parsed.
_TEXT_SEGMENTS = frozenset({"OBX", "NTE"})

_TS_RE = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?$")
_ICD10_RE = re.compile(r"^[A-TV-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?$")


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """What one HL7 v2 message decoded to.

    ``disposition`` is "accepted" (reports hold one Report per OBR group) or
    "ignored" (a type the feed acknowledges without processing; no reports).
    """

    header: MessageHeader
    mapping: Mapping
    disposition: Disposition
    reports: tuple[Report, ...]
    charset: str


def decode_message(
    raw: bytes,
    mappings: MappingSet,
    *,
    received_at: datetime,
    procedures: ProcedureTable | None = None,
) -> DecodedMessage:
    """Decode one HL7 v2 message.

    Args:
        raw: the message bytes (MLLP framing and a UTF-8 BOM are tolerated).
        mappings: the mapping set; the feed is chosen by MSH-3/MSH-4.
        received_at: when we received it (aware, UTC).
        procedures: the CPT table, for modality and body region.

    Returns:
        The decoded message.

    Raises:
        DecodeError: with ``hl7_code`` and ``location``; never another exception.
    """
    data = strip_envelope(raw)
    if not data:
        raise SegmentSequenceError("empty message", location="MSH")
    header = read_header(data)
    if header is None:
        if data[:3] in (b"BHS", b"FHS"):
            raise UnsupportedMessage(
                "batches (FHS/BHS) are not accepted; send one message per frame", location=data[:3].decode()
            )
        raise SegmentSequenceError("the message does not start with an MSH segment", location="MSH")
    check_separators(header)
    # Before the mapping lookup: an over-long sender is never used as a key.
    check_header_lengths(header)
    mapping = mappings.for_sender(header.sending_application, header.sending_facility)
    _check_header(header, mapping)
    text, charset = decode_text(data, header.charset, fallback=mapping.charset_fallback)
    # Before the ignore test: a message a feed ignores must not hide another one.
    check_one_message(text)
    if header.message_type in mapping.ignore or header.message_code in mapping.ignore:
        return DecodedMessage(header, mapping, Disposition.IGNORED, (), charset)
    if "\x00" in text:
        raise InvalidValue("the message contains NUL bytes", location="MSH", hl7_code="102")
    segments = _segments(text, header, mapping)
    check_oru_structure(segments, header)
    if mapping.validation == "strict":
        from listener.hl7v2.strict import validate_structure  # hl7apy: loaded only when a feed asks

        validate_structure(segments, header)
    reports = _reports(segments, header, mapping, charset, received_at, procedures)
    return DecodedMessage(header, mapping, Disposition.ACCEPTED, reports, charset)


def _check_header(header: MessageHeader, mapping: Mapping) -> None:
    if not header.message_code:
        raise MissingField("message type is empty", location="MSH-9")
    if not header.control_id:
        raise MissingField("message control id is empty", location="MSH-10")
    if not header.version:
        raise MissingField("version id is empty", location="MSH-12")
    kind = header.message_type
    if kind not in mapping.accept and kind not in mapping.ignore and header.message_code not in mapping.ignore:
        known_codes = {a.split("^")[0] for a in mapping.accept}
        if header.message_code in known_codes:
            raise UnsupportedMessage(
                "trigger event is not accepted on this feed", location="MSH-9.2", hl7_code=UNSUPPORTED_EVENT_CODE
            )
        raise UnsupportedMessage("message type is not accepted on this feed", location="MSH-9")
    if header.processing_id not in PROCESSING_IDS:
        raise UnsupportedMessage(
            "processing id is not P, D or T", location="MSH-11", hl7_code=UNSUPPORTED_PROCESSING_ID
        )
    check_version(header)


_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")


def _split_inline(text: str, field_sep: str, names: tuple[str, ...], compiled: re.Pattern[str] | None) -> str:
    """Put a CR before each of ``names`` that follows "<field sep><space>" inside a line."""
    # The pattern can only match where "<sep> <name><sep>" occurs: most
    # messages have none, and a substring test is far cheaper than the scan.
    if not any(f"{field_sep} {name}{field_sep}" in text for name in names):
        return text
    pattern = compiled if compiled is not None and field_sep == "|" else inline_split_pattern(field_sep, names)
    return pattern.sub("\r", text)


def _split_lines(text: str) -> list[str]:
    """Lines split on CRLF, CR or LF, blank ones dropped (without a regex scan)."""
    return [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line.strip()]


def _segments(text: str, header: MessageHeader, mapping: Mapping) -> list[str]:
    field_sep = header.separators.field
    if mapping.split_inline_segments:
        text = _split_inline(text, field_sep, mapping.split_inline_segments, mapping.inline_split)
    segments: list[str] = []
    # Whether a name is a segment id, once per name: a report repeats a few (an OBX per line of text),
    # and a pattern call costs more than the look-up (docs/benchmarks.md, "Worker CPU, round 8").
    ids: dict[str, bool] = {}
    for line in _split_lines(text):
        line = line.strip("\x0b\x1c")
        if not line:
            continue
        name = line[:3]
        is_id = ids.get(name)
        if is_id is None:
            is_id = ids[name] = _SEGMENT_ID.fullmatch(name) is not None
        if len(line) >= 3 and is_id and (len(line) == 3 or line[3] == field_sep):
            if name == "MSH" and segments:
                raise SegmentSequenceError("a second message header (MSH)", location="MSH[2]")
            if name in ("BHS", "FHS", "BTS", "FTS") and segments:
                raise UnsupportedMessage(
                    "batches and several messages in one frame are not accepted; send one message per frame",
                    location=name,
                )
            segments.append(line)
        elif segments and segments[-1][:3] in _TEXT_SEGMENTS:
            # A line break inside an OBX value (wrapped base64, pasted text):
            # continue the previous segment rather than invent a segment.
            segments[-1] += "\n" + line
        else:
            raise SegmentSequenceError(
                f"segment {len(segments) + 1} does not start with a segment id", location=f"segment {len(segments) + 1}"
            )
    if not segments or not segments[0].startswith("MSH"):
        raise SegmentSequenceError("the message does not start with an MSH segment", location="MSH")
    return segments


class _Seg:
    """One segment cut into fields, each value unescaped when read.

    Strategy: python-hl7's parse builds a container per field, repetition,
    component and subcomponent (five per empty field), which costs more than
    the rest of the pipeline. The decoder reads a dozen values per message, so
    each is cut out of its field string on demand and only that value is
    unescaped (``escape.unescape_value``).
    """

    __slots__ = ("name", "fields", "seps")

    def __init__(self, raw: str, header: MessageHeader) -> None:
        self.name = raw[:3]
        self.seps = header.separators
        parts = raw.split(self.seps.field)
        # MSH-1 is the field separator itself: shift so fields[n] is always SEG-n.
        self.fields = ["MSH", self.seps.field, *parts[1:]] if self.name == "MSH" else parts

    def extract(self, path: FieldPath, repeat: int = 1) -> str:
        """SEG-f[.c[.s]] of repetition ``repeat``, unescaped ('' when absent)."""
        if path.field >= len(self.fields):
            return ""
        value = self.fields[path.field]
        if self.name == "MSH" and path.field in (1, 2):
            return value
        reps = value.split(self.seps.repetition)
        if repeat > len(reps):
            return ""
        comps = reps[repeat - 1].split(self.seps.component)
        comp = path.component or 1
        if comp > len(comps):
            return ""
        subs = comps[comp - 1].split(self.seps.subcomponent)
        sub = path.subcomponent or 1
        if sub > len(subs):
            return ""
        return _unescape(self.seps, subs[sub - 1])

    def components(self, field_no: int, repeat: int = 1) -> list[str]:
        """All components of one repetition of a field, unescaped, trailing empties dropped."""
        if field_no >= len(self.fields):
            return []
        reps = self.fields[field_no].split(self.seps.repetition)
        if repeat > len(reps):
            return []
        out = [
            _unescape(self.seps, c.split(self.seps.subcomponent)[0])
            for c in reps[repeat - 1].split(self.seps.component)
        ]
        while out and not out[-1]:
            out.pop()
        return out

    def subcomponents(self, field_no: int, component: int = 1) -> list[str]:
        """The subcomponents of one component of the first repetition."""
        if field_no >= len(self.fields):
            return []
        comps = self.fields[field_no].split(self.seps.repetition)[0].split(self.seps.component)
        if component > len(comps):
            return []
        return [_unescape(self.seps, s) for s in comps[component - 1].split(self.seps.subcomponent)]

    def repetitions(self, field_no: int) -> int:
        if field_no >= len(self.fields) or not self.fields[field_no]:
            return 0
        return self.fields[field_no].count(self.seps.repetition) + 1


@dataclass(slots=True)
class _Group:
    obr: _Seg
    orc: _Seg | None
    extra: dict[str, list[_Seg]]
    text_rows: list[str]


def _reports(
    segments: list[str],
    header: MessageHeader,
    mapping: Mapping,
    charset: str,
    received_at: datetime,
    procedures: ProcedureTable | None,
) -> tuple[Report, ...]:
    read = mapping.read_fields
    seps = header.separators
    msh = _Seg(segments[0], header)
    top: dict[str, list[_Seg]] = {}
    groups: list[_Group] = []
    pending_orc: _Seg | None = None
    for raw_seg in segments[1:]:
        name = raw_seg[:3]
        if name in _TEXT_SEGMENTS:
            if groups:
                groups[-1].text_rows.append(raw_seg)
        elif name in read:
            seg = _Seg(raw_seg, header)
            if name == "OBR":
                groups.append(_Group(seg, pending_orc, {}, []))
                pending_orc = None
            elif name == "ORC":
                pending_orc = seg
            elif groups and name not in ("PID", "PV1", "PD1"):
                groups[-1].extra.setdefault(name, []).append(seg)
            else:
                top.setdefault(name, []).append(seg)
    if not groups:
        raise SegmentSequenceError("an ORU^R01 needs at least one OBR segment", location="OBR")
    return tuple(
        _report(n, group, msh, top, header, mapping, charset, received_at, procedures, seps)
        for n, group in enumerate(groups, start=1)
    )


class _GroupFields:
    """Reads mapping paths from the segments of one OBR group."""

    def __init__(self, msh: _Seg, top: dict[str, list[_Seg]], group: _Group) -> None:
        self.by_name: dict[str, list[_Seg]] = {"MSH": [msh], "OBR": [group.obr]}
        if group.orc is not None:
            self.by_name["ORC"] = [group.orc]
        for name, segs in top.items():
            self.by_name.setdefault(name, []).extend(segs)
        for name, segs in group.extra.items():
            self.by_name.setdefault(name, []).extend(segs)

    def value(self, path: FieldPath, repeat: int = 1) -> str:
        segs = self.by_name.get(path.segment)
        if not segs:
            return ""
        return segs[0].extract(path, repeat)

    def first(self, paths: Sequence[FieldPath]) -> tuple[str, FieldPath | None]:
        for path in paths:
            value = self.value(path).strip()
            if value and value != '""':
                return value, path
        return "", None

    def segments(self, name: str) -> list[_Seg]:
        return self.by_name.get(name, [])


def _report(
    index: int,
    group: _Group,
    msh: _Seg,
    top: dict[str, list[_Seg]],
    header: MessageHeader,
    mapping: Mapping,
    charset: str,
    received_at: datetime,
    procedures: ProcedureTable | None,
    delims: Separators,
) -> Report:
    reader = _GroupFields(msh, top, group)
    fields = mapping.fields
    warnings: list[str] = []

    accession, _ = reader.first(fields["accession"])
    if not accession:
        where = str(fields["accession"][0]) if fields["accession"] else "OBR-3"
        raise MissingField("accession number is empty", location=where)
    patient_id, _ = reader.first(fields["patient_id"])
    if not patient_id:
        where = str(fields["patient_id"][0]) if fields["patient_id"] else "PID-3"
        raise MissingField("patient identifier is empty", location=where)
    authority, _ = reader.first(fields["patient_id_authority"])
    sex_raw, _ = reader.first(fields["patient_sex"])
    sex = sex_raw[:1].upper() if sex_raw[:1].upper() in ("F", "M", "O", "U", "A", "N") else ""
    birth_raw, birth_path = reader.first(fields["patient_birth_date"])
    birth = _parse_date(birth_raw)
    if birth_raw and birth is None:
        warnings.append(f"{birth_path}: not a valid date; ignored")

    procedure = _procedure(reader, mapping)
    status, status_raw = _status(reader, group, mapping, header)
    priority_raw, _ = reader.first(fields["priority"])
    priority = mapping.priority_values.get(priority_raw.upper(), "routine")

    times = Times(
        observation=_time(reader, fields["observation_time"], warnings),
        report=_time(reader, fields["report_time"], warnings),
        received=received_at,
        message=_parse_ts(header.field(7).split(header.separators.component)[0]),
    )
    lines, hints, text_kind, flags = _text_rows(group.text_rows, header, mapping, delims)
    peer_review = _peer_review(group.text_rows, header, mapping, warnings) if mapping.peer_review_obx else None
    text = "\n".join(lines)
    offsets: list[tuple[int, str]] = []
    pos = 0
    for line, hint in zip(lines, hints, strict=False):
        offsets.append((pos, hint))
        pos += len(line) + 1
    sections = sectionize(text, mapping.heading_rules, _collapse_hints(offsets)) if text.strip() else ()
    comparison = next((s.text for s in sections if s.kind.value == "comparison"), "")

    modality_raw, _ = reader.first(fields["modality"])
    entry = procedures.get(procedure.code) if procedures is not None else None
    modality = (
        entry.modality
        if entry
        else (procedures.modality_for(modality_raw, procedure.text) if procedures else modality_raw.upper())
    )
    reason, _ = reader.first(fields["reason"])
    site, _ = reader.first(fields["site"])
    diagnoses = _diagnoses(reader, fields["diagnosis_codes"], fields["reason"])

    return Report(
        message_id=header.control_id,
        message_type=header.message_type,
        version=header.version,
        sender=Sender(header.sending_application, header.sending_facility, mapping.name),
        accession=accession,
        patient=Patient(id=patient_id, id_authority=authority, sex=sex, birth_date=birth),
        procedure=procedure,
        status=status,
        status_raw=status_raw,
        times=times,
        text=text,
        sections=sections,
        placer_order=reader.first(fields["placer_order"])[0],
        filler_order=reader.first(fields["filler_order"])[0],
        modality=modality,
        body_region=entry.body_region if entry else "",
        order_laterality=_order_laterality(procedure, entry.laterality if entry else ""),
        priority=priority,
        reader=_reader_of(reader, fields["reader"]),
        site=site,
        financial_class=reader.first(fields["financial_class"])[0].upper(),
        reason=reason,
        diagnosis_codes=diagnoses,
        comparison_text=comparison,
        text_kind=TextKind(text_kind if text.strip() or text_kind != "text" else "none"),
        obr_index=index,
        charset=charset,
        abnormal_flags=flags,
        warnings=tuple(warnings),
        peer_review=peer_review,
    )


def _collapse_hints(offsets: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for offset, hint in offsets:
        if not out or out[-1][1] != hint:
            out.append((offset, hint))
    return out


def _procedure(reader: _GroupFields, mapping: Mapping) -> Procedure:
    value, path = reader.first(mapping.fields["procedure"])
    if path is None:
        raise MissingField(
            "procedure code is empty",
            location=str(mapping.fields["procedure"][-1]) if mapping.fields["procedure"] else "OBR-4",
        )
    seg = reader.segments(path.segment)[0]
    comps = seg.components(path.field) if not path.component else [value]
    comps += [""] * (6 - len(comps))
    code, text, system, alt_code, alt_text, alt_system = (c.strip() for c in comps[:6])
    systems = mapping.cpt_coding_systems
    cpt = ""
    if system.upper() in systems:
        cpt = code
    elif alt_system.upper() in systems:
        cpt = alt_code
    elif code.upper() in mapping.local_codes:
        cpt = mapping.local_codes[code.upper()]
    elif mapping.cpt_from_local_code is not None:
        match = mapping.cpt_from_local_code.search(code)
        if match:
            cpt = match.group(1)
    modifiers: list[str] = []
    for mod_path in mapping.fields["procedure_modifiers"]:
        segs = reader.segments(mod_path.segment)
        if segs:
            for rep in range(1, segs[0].repetitions(mod_path.field) + 1):
                mod = segs[0].extract(FieldPath(mod_path.segment, mod_path.field, 1), rep).strip().upper()
                if mod:
                    modifiers.append(mod)
    return Procedure(
        code=cpt or code,
        coding_system="CPT" if cpt else system,
        text=text or alt_text,
        modifiers=tuple(modifiers),
        local_code=code if cpt and cpt != code else "",
    )


def _status(reader: _GroupFields, group: _Group, mapping: Mapping, header: MessageHeader) -> tuple[ResultStatus, str]:
    raw, _ = reader.first(mapping.fields["status"])
    if not raw:
        counts = Counter(_obx_field(row, header, 11).strip() for row in group.text_rows if row.startswith("OBX"))
        counts.pop("", None)
        raw = counts.most_common(1)[0][0] if counts else ""
    if not raw:
        return ResultStatus.UNKNOWN, ""
    return mapping.status_values.get(" ".join(raw.upper().split()), ResultStatus.UNKNOWN), raw


def _time(reader: _GroupFields, paths: Sequence[FieldPath], warnings: list[str]) -> datetime | None:
    raw, path = reader.first(paths)
    if not raw:
        return None
    value = _parse_ts(raw)
    if value is None:
        warnings.append(f"{path}: not a valid timestamp; ignored")
    return value


def _parse_ts(raw: str) -> datetime | None:
    raw = raw.strip()
    if not raw or not _TS_RE.match(raw):
        return None
    try:
        value = hl7.parse_datetime(raw)
    except (ValueError, TypeError, OverflowError):
        return None
    if not isinstance(value, datetime):
        return None
    offset = value.utcoffset()
    return value.replace(tzinfo=timezone(offset)) if offset is not None else value


def _parse_date(raw: str) -> date | None:
    value = _parse_ts(raw) if len(raw.strip()) >= 8 else None
    return value.date() if value else None


def _reader_of(reader: _GroupFields, paths: Sequence[FieldPath]) -> Reader | None:
    for path in paths:
        segs = reader.segments(path.segment)
        if not segs:
            continue
        seg = segs[0]
        first = seg.extract(FieldPath(path.segment, path.field, 1, 1))
        sub = (seg.subcomponents(path.field) + ["", "", ""])[:3]
        if any(sub[1:]):  # ID&FAMILY&GIVEN in component 1 (the standard NDL/CNN form)
            rid, family, given = sub
        else:  # ID^FAMILY^GIVEN as components (common in practice)
            comps = seg.components(path.field)
            comps += [""] * (3 - len(comps))
            rid, family, given = comps[:3]
            rid = rid or first
        if rid or family:
            name = " ".join(p for p in (given.strip(), family.strip()) if p)
            return Reader(id=rid.strip() or name, name=name)
    return None


def _diagnoses(
    reader: _GroupFields, dg1_paths: Sequence[FieldPath], reason_paths: Sequence[FieldPath]
) -> tuple[str, ...]:
    codes: list[str] = []
    for path in dg1_paths:
        for seg in reader.segments(path.segment):
            code = seg.extract(path).strip().upper()
            if code and code not in codes:
                codes.append(code)
    for path in reason_paths:
        segs = reader.segments(path.segment)
        if segs:
            code = segs[0].extract(FieldPath(path.segment, path.field, 1)).strip().upper()
            if _ICD10_RE.match(code) and code not in codes:
                codes.append(code)
    return tuple(codes)


_SIDE_WORDS = {
    "LT": "left",
    "LEFT": "left",
    "RT": "right",
    "RIGHT": "right",
    "BILAT": "bilateral",
    "BILATERAL": "bilateral",
    "BIL": "bilateral",
    "BOTH": "bilateral",
}


def _order_laterality(procedure: Procedure, table_laterality: str) -> str:
    for mod in procedure.modifiers:
        if mod in ("LT", "RT"):
            return _SIDE_WORDS[mod]
        if mod == "50":
            return "bilateral"
    if table_laterality == "bilateral":
        return "bilateral"
    sides = {_SIDE_WORDS[w] for w in re.findall(r"[A-Z]+", procedure.text.upper()) if w in _SIDE_WORDS}
    if len(sides) == 1:
        return sides.pop()
    if len(sides) > 1:
        return "bilateral"
    return ""


def _obx_field(row: str, header: MessageHeader, n: int) -> str:
    parts = row.split(header.separators.field, n + 1)
    return parts[n] if n < len(parts) else ""


def _obx_system(ident: list[str]) -> str:
    """The coding system of an OBX-3 split into components (upper case, "" when none)."""
    return ident[2].strip().upper() if len(ident) > 2 else ""


def _peer_review(rows: list[str], header: MessageHeader, mapping: Mapping, warnings: list[str]) -> PeerReview | None:
    """The explicit RADPEER score of the group: the last OBX matching ``peer_review_obx``.

    OBX-5 holds the grade (``2b``, or a coded value whose first component is
    it), OBX-16.1 the scorer's id, OBX-14 the time it was scored. A value that
    is no grade is ignored with a warning naming the location only.
    """
    wanted = mapping.peer_review_obx
    assert wanted is not None
    seps = header.separators
    found: PeerReview | None = None
    for row in rows:
        if not row.startswith("OBX"):
            continue
        fields = row.split(seps.field)
        fields += [""] * (17 - len(fields))
        ident = fields[3].split(seps.component)
        code = ident[0].split(seps.subcomponent)[-1].strip().upper()
        if not wanted.matches(code, _obx_system(ident)):
            continue
        grade = fields[5].split(seps.repetition)[0].split(seps.component)[0].strip().lower()
        if grade not in RADPEER_GRADES:
            warnings.append(f"OBX-5 of the peer review OBX ({wanted.code}): not a RADPEER grade; ignored")
            continue
        scorer = fields[16].split(seps.repetition)[0].split(seps.component)[0].strip()
        scored_at = _parse_ts(fields[14].split(seps.component)[0])
        found = PeerReview(grade, scorer, scored_at)
    return found


def _text_obx_kind(obx2: str, obx3: str, mapping: Mapping, seps: Separators) -> tuple[str, str, str, str] | None:
    """(value type, code, label, section hint) of a text OBX with this OBX-2 and OBX-3; None: not report text.

    Skipped value types, codes and labels (the mapping's ``obx_skip``) and the
    peer-review score OBX (read by ``_peer_review``) are not report text.
    """
    value_type = obx2.strip().upper()
    ident = obx3.split(seps.component)
    code = ident[0].split(seps.subcomponent)[-1].strip().upper()
    label = ident[1].strip() if len(ident) > 1 else ""
    if value_type in mapping.obx_skip_types or code in mapping.obx_skip or label.upper() in mapping.obx_skip:
        return None
    if mapping.peer_review_obx is not None and mapping.peer_review_obx.matches(code, _obx_system(ident)):
        return None  # the explicit score: read by _peer_review, not report text
    return value_type, code, label, mapping.obx_sections.get(code, TEXT_HINT)


#: The last field of a text row (NTE or OBX) that :func:`_text_rows` reads (OBX-8, abnormal flags).
_TEXT_FIELDS = 8


def _text_rows(
    rows: list[str], header: MessageHeader, mapping: Mapping, delims: Separators
) -> tuple[list[str], list[str], str, tuple[str, ...]]:
    """Report text lines from OBX/NTE rows, each with its section hint."""
    seps = header.separators
    lines: list[str] = []
    hints: list[str] = []
    kind = "text"
    flags: list[str] = []
    # A report's text OBXs mostly repeat one OBX-2 and OBX-3 (one row per line): what those two
    # decide (value type, code, label, section hint; None: the row is not report text) is worked
    # out once per distinct pair.
    kinds: dict[tuple[str, str], tuple[str, str, str, str] | None] = {}
    for row in rows:
        # Only fields 2 to 8 are read (NTE-3; OBX-2, -3, -5, -6 and -8): the split stops after field 8
        # (the rest stays one piece), where a text OBX has some 17 (docs/benchmarks.md, "Worker CPU, round 11").
        fields = row.split(seps.field, _TEXT_FIELDS + 1)
        if len(fields) <= _TEXT_FIELDS:
            fields += [""] * (_TEXT_FIELDS + 1 - len(fields))
        if row.startswith("NTE"):
            for rep in fields[3].split(seps.repetition):
                lines.extend(_unescape(delims, rep).split("\n"))
                hints.extend([TEXT_HINT] * (len(lines) - len(hints)))
            continue
        pair = (fields[2], fields[3])
        if pair in kinds:
            known = kinds[pair]
        else:
            known = kinds[pair] = _text_obx_kind(fields[2], fields[3], mapping, seps)
        if known is None:
            continue
        value_type, code, label, hint = known
        if fields[8]:
            flag = fields[8].split(seps.component)[0].strip().upper()
            if flag and flag not in flags:
                flags.append(flag)
        new: list[str] = []
        if value_type == "ED":
            text, kind_here = _ed_text(fields[5], seps.component)
            if kind_here != "text":
                kind = kind_here
            new.extend(text.split("\n") if text else [])
        else:
            for rep in fields[5].split(seps.repetition):
                if value_type in ("CE", "CWE", "CNE", "CF"):
                    comps = rep.split(seps.component)
                    value = comps[1] if len(comps) > 1 and comps[1] else comps[0]
                    new.append(_unescape(delims, value))
                elif value_type in ("NM", "SN", "NA", "DT", "TS", "TM", "DTM"):
                    value = " ".join(c for c in rep.split(seps.component) if c)
                    unit = fields[6].split(seps.component)[0]
                    if value:
                        new.append(
                            f"{_unescape(delims, label or code)}: {_unescape(delims, value)} {_unescape(delims, unit)}".rstrip()
                        )
                else:
                    new.extend(_unescape(delims, rep).split("\n"))
        lines.extend(new)
        hints.extend([hint] * len(new))
    return lines, hints, kind, tuple(flags)


def _unescape(delims: Separators, value: str) -> str:
    # Most values hold neither the escape character nor a CR: unescaping
    # returns such a value unchanged, and so would the CR/LF rewrite.
    esc = delims.escape
    if esc and esc not in value and "\r" not in value:
        return value
    # \.br\ and friends become CR; our text model uses LF.
    return unescape_value(value, delims).replace("\r\n", "\n").replace("\r", "\n")


def _ed_text(value: str, component_sep: str) -> tuple[str, str]:
    """Text of an ED value: base64 text or CDA decoded; PDF and binary only recorded."""
    comps = value.split(component_sep)
    comps += [""] * (5 - len(comps))
    _source, media, subtype, encoding, data = (c.strip() for c in comps[:5])
    media, subtype, encoding = media.upper(), subtype.upper(), encoding.upper()
    if subtype == "PDF" or media in ("IMAGE", "AUDIO", "VIDEO") or subtype in ("JPEG", "PNG", "TIFF", "DICOM"):
        return "", "pdf" if subtype == "PDF" else "binary"
    if encoding.startswith("BASE64") or encoding == "B64":
        try:
            blob = base64.b64decode(data.replace("\\.br\\", ""), validate=False)
        except (binascii.Error, ValueError):
            return "", "binary"
        if blob.startswith(b"%PDF"):
            return "", "pdf"
        text = blob.decode("utf-8", errors="replace")
    else:
        text = data
    if subtype in ("XML", "CDA", "X-HL7-CDA-LEVEL-ONE") or text.lstrip().startswith("<"):
        return _xml_text(text), "cda"
    return text.replace("\r\n", "\n").replace("\r", "\n"), "text"


def _xml_text(text: str) -> str:
    try:
        # expat >= 2.4.1 (CPython 3.11) refuses entity expansion bombs; ElementTree never fetches external entities.
        root = ET.fromstring(text.encode("utf-8"))  # noqa: S314 - see the line above; docs/hardening.md
    except ET.ParseError:
        return ""
    # CDA narrative: section titles and texts, in document order.
    lines: list[str] = []
    for elem in root.iter():
        tag = elem.tag.rsplit("}", 1)[-1]
        if tag == "title":
            title = "".join(elem.itertext()).strip()
            if title:
                lines.append(f"{title.upper()}:")
        elif tag == "text":
            body = " ".join(" ".join(elem.itertext()).split())
            if body:
                lines.append(body)
    return "\n".join(lines)
