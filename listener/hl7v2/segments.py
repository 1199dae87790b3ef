"""Sans-I/O first look at an HL7 v2 message: envelope, header, character set, segments.

Pure: bytes in, values out; no I/O, no clock, no logging.

Everything here is deliberately tolerant, because an ACK or NACK must be built
even for a message that later fails to decode: :func:`read_header` reads what it
can of MSH from raw bytes, whatever the character set and segment separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from listener.errors import UNSUPPORTED_VERSION_ID, InvalidValue, SegmentSequenceError, UnsupportedMessage

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"
UTF8_BOM = b"\xef\xbb\xbf"

DEFAULT_ENCODING_CHARACTERS = "^~\\&"

#: MSH-12 values we decode (HL7 v2.2 to v2.8.x).
SUPPORTED_VERSIONS = frozenset(
    {"2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"}
)

#: MSH-18 values (HL7 table 0211 and common variants) -> Python codec.
CHARSETS = {
    "": "",
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
}

_SEGMENT_SPLIT = re.compile(r"\r\n|\n|\r")

# Caps on the header fields the shell uses as keys and writes to logs (the
# duplicate key is MSH-3, MSH-4, MSH-10). The decoder refuses a message over a
# cap with AE 102 (``check_header_lengths``) and the shell never keys or logs
# an over-long value (``MessageHeader.oversized_field``, ``log_fields``).
#: MSH-10 is an ST; 199 characters is the largest ST length HL7 v2.7+ allows.
MAX_CONTROL_ID_LENGTH = 199
#: MSH-3 and MSH-4 are HDs: namespace id (IS, 20) + universal id (ST, 199) +
#: universal id type (ID, 6) + two component separators = 227.
MAX_HD_LENGTH = 227
#: No HD component may be longer than an ST (199), whatever the field total.
MAX_HD_COMPONENT_LENGTH = 199
#: Longest header value :meth:`MessageHeader.log_fields` returns.
LOG_VALUE_MAX = 64
#: MSH fields kept by :func:`read_header` (v2.8.2 defines MSH-1 to MSH-25):
#: a first line made of separators costs no more than this many strings.
MAX_HEADER_FIELDS = 40

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Separators:
    """The delimiters declared by MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it should be echoed in an answer."""
        return self.component + self.repetition + self.escape + self.subcomponent


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """What could be read of MSH. Values are raw (not unescaped), components kept.

    ``fields[n]`` is MSH-n for n >= 1 (MSH-1 is the field separator itself);
    ``fields[0]`` is the segment name. Missing fields read as "".
    """

    separators: Separators
    fields: tuple[str, ...]
    #: (MSH-3.1, MSH-4.1, MSH-10) once :attr:`key` has read them (not part of the value).
    _key: tuple[str, str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def field(self, n: int) -> str:
        """Return MSH-n, or "" when the message is shorter."""
        return self.fields[n] if n < len(self.fields) else ""

    def component(self, n: int, c: int) -> str:
        """Return MSH-n.c (1-based component)."""
        parts = self.field(n).split(self.separators.component)
        return parts[c - 1] if c - 1 < len(parts) else ""

    @property
    def key(self) -> tuple[str, str, str]:
        """(sending application, sending facility, control id): the message's key.

        Read once per header: the daemon's reactor thread asks for these about fifteen times
        per message (docs/benchmarks.md, "The daemon's main process, third pass").
        """
        key = self._key
        if key is None:
            key = (self.component(3, 1).strip(), self.component(4, 1).strip(), self.field(10).strip())
            object.__setattr__(self, "_key", key)
        return key

    @property
    def sending_application(self) -> str:
        return self.key[0]

    @property
    def sending_facility(self) -> str:
        return self.key[1]

    @property
    def control_id(self) -> str:
        return self.key[2]

    @property
    def message_code(self) -> str:
        return self.component(9, 1).strip().upper()

    @property
    def trigger_event(self) -> str:
        return self.component(9, 2).strip().upper()

    @property
    def message_type(self) -> str:
        """``ORU^R01`` style (code and event only)."""
        code, event = self.message_code, self.trigger_event
        return f"{code}^{event}" if event else code

    @property
    def processing_id(self) -> str:
        return self.component(11, 1).strip().upper()

    @property
    def version(self) -> str:
        return self.component(12, 1).strip()

    @property
    def accept_ack_type(self) -> str:
        return self.field(15).strip().upper()

    @property
    def application_ack_type(self) -> str:
        return self.field(16).strip().upper()

    @property
    def charset(self) -> str:
        """MSH-18, first repetition, upper case."""
        return self.field(18).split(self.separators.repetition)[0].strip().upper()

    def oversized(self, n: int) -> str:
        """The location of MSH-n (3, 4 or 10) if it is over its cap, else "".

        MSH-10 is capped at :data:`MAX_CONTROL_ID_LENGTH`; MSH-3 and MSH-4 at
        :data:`MAX_HD_LENGTH` as a whole ("MSH-3") and at
        :data:`MAX_HD_COMPONENT_LENGTH` per component ("MSH-3.2"). Lengths are
        of the raw field (escapes not expanded); other fields are not capped.
        """
        value = self.field(n)
        if n == 10:
            return "MSH-10" if len(value) > MAX_CONTROL_ID_LENGTH else ""
        if n not in (3, 4):
            return ""
        if len(value) > MAX_HD_LENGTH:
            return f"MSH-{n}"
        for c, component in enumerate(value.split(self.separators.component), start=1):
            if len(component) > MAX_HD_COMPONENT_LENGTH:
                return f"MSH-{n}.{c}"
        return ""

    @property
    def oversized_field(self) -> str:
        """The first of MSH-3, MSH-4, MSH-10 over its cap ("MSH-10", "MSH-3.1", ...), or "".

        When it is not "", the shell must not use the header's sender or
        control id as a key, nor log them: the decoder refuses the message
        with AE 102 at this location. :meth:`log_fields` already blanks them.
        """
        for n in (3, 4, 10):
            location = self.oversized(n)
            if location:
                return location
        return ""

    def log_fields(self) -> dict[str, str]:
        """Header values safe to bind to a log line, under ``logs.py`` keys.

        Returns ``control_id``, ``sender_app``, ``sender_facility`` and
        ``message_type``. A value whose field is over its cap is "" (an
        over-long key is refused, never logged); the others have control
        characters replaced by "?" and are cut to :data:`LOG_VALUE_MAX`
        characters without splitting a UTF-8 sequence (values are the
        latin-1 reading of the bytes, so one character is one byte).
        """
        return {
            "control_id": "" if self.oversized(10) else _log_value(self.control_id),
            "sender_app": "" if self.oversized(3) else _log_value(self.sending_application),
            "sender_facility": "" if self.oversized(4) else _log_value(self.sending_facility),
            "message_type": _log_value(self.message_type),
        }


def _log_value(value: str) -> str:
    value = value[:LOG_VALUE_MAX]
    if len(value) == LOG_VALUE_MAX and not value.isascii():
        # Drop a UTF-8 sequence the cut left incomplete (at most 3 bytes).
        try:
            value.encode("latin-1").decode("utf-8")
        except UnicodeEncodeError:
            pass  # not a byte string read as latin-1: nothing to trim
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":
                value = value[: exc.start]
    return _CONTROL_CHARACTERS.sub("?", value)


def strip_envelope(raw: bytes) -> bytes:
    """Remove MLLP framing bytes, a UTF-8 BOM and surrounding blank space."""
    data = raw.strip(b" \t\r\n" + START_BLOCK + END_BLOCK)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :].lstrip(b" \t\r\n")
    return data


def read_header(raw: bytes) -> MessageHeader | None:
    """Read MSH from the first segment of ``raw``, tolerating anything.

    Args:
        raw: a message as received (MLLP framing and a UTF-8 BOM tolerated).

    Returns:
        The header, or None when the bytes do not start with an MSH segment
        that has a usable field separator (not alphanumeric, blank, NUL or a
        line end: ``MSH``, ``MSH\\r...``, ``MSH\\n``). Only the first
        :data:`MAX_HEADER_FIELDS` fields are kept; values are the latin-1
        reading of the bytes, uncapped (see :attr:`MessageHeader.oversized_field`).

    Never raises, whatever the bytes (a property test and the fuzzer check it).
    """
    data = strip_envelope(raw)
    if not data.startswith(b"MSH"):
        return None
    # Only the first line is decoded: the rest of a large message is not
    # copied, and latin-1 maps every byte, so decoding cannot fail.
    cr, lf = data.find(b"\r"), data.find(b"\n")
    ends = [i for i in (cr, lf) if i >= 0]
    first = data[: min(ends)].decode("latin-1") if ends else data.decode("latin-1")
    if len(first) < 4:
        return None
    field_sep = first[3]
    if field_sep.isalnum() or field_sep in " \r\n\x00":
        return None
    rest = first[4:]
    enc, _, _ = rest.partition(field_sep)
    seps = _separators(field_sep, enc)
    # MSH-1 is the field separator itself, MSH-2 the encoding characters, so
    # splitting after "MSH|" yields MSH-2 onwards.
    fields = ("MSH", field_sep, *rest.split(field_sep, MAX_HEADER_FIELDS)[: MAX_HEADER_FIELDS - 2])
    return MessageHeader(separators=seps, fields=fields)


def check_header_lengths(header: MessageHeader) -> None:
    """Refuse header keys over their caps (AE 102 at MSH-3, MSH-4 or MSH-10, or a component).

    Raises:
        InvalidValue: naming the field, never its value.
    """
    location = header.oversized_field
    if location:
        raise InvalidValue(
            "field is longer than the listener accepts for a sender or message control id",
            location=location,
            hl7_code="102",
        )


def _separators(field_sep: str, enc: str) -> Separators:
    defaults = DEFAULT_ENCODING_CHARACTERS
    chars = [enc[i] if i < len(enc) else defaults[i] for i in range(4)]
    return Separators(field_sep, chars[0], chars[1], chars[2], chars[3])


def check_separators(header: MessageHeader) -> None:
    """Refuse encoding characters that cannot be parsed unambiguously (MSH-2)."""
    seps = header.separators
    chars = (seps.field, seps.component, seps.repetition, seps.escape, seps.subcomponent)
    enc = header.field(2)
    if len(set(chars)) != len(chars) or any(c.isalnum() or c in " \r\n" for c in chars) or len(enc) > 5:
        raise SegmentSequenceError(
            "encoding characters are missing, repeated or not usable as delimiters",
            location="MSH-2",
            hl7_code="102",
        )


def check_version(header: MessageHeader) -> None:
    """Raise UnsupportedMessage (203) unless MSH-12 is a version we decode."""
    if header.version not in SUPPORTED_VERSIONS:
        raise UnsupportedMessage(
            "version is not supported (2.2 to 2.8 are)",
            location="MSH-12",
            hl7_code=UNSUPPORTED_VERSION_ID,
        )


def decode_text(raw: bytes, declared: str, *, fallback: str = "cp1252") -> tuple[str, str]:
    """Decode message bytes to text, never failing.

    Strategy: real feeds declare 8859/1 (or nothing) and send UTF-8, so bytes that
    are valid UTF-8 *and* contain multi-byte sequences are read as UTF-8 whatever
    MSH-18 says; latin-1 text is almost never valid UTF-8 by accident. Otherwise
    the declared charset is used, then ``fallback``, then latin-1 (which maps
    every byte).

    Args:
        raw: message bytes (envelope already stripped).
        declared: MSH-18 as read, upper case.
        fallback: codec for messages that declare nothing and are not UTF-8.

    Returns:
        (text, codec actually used)
    """
    codec = CHARSETS.get(declared.upper(), "")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if codec in ("", "ascii", "utf-8") or not text.isascii():
            return text, "utf-8"
    for candidate in (codec, fallback):
        if candidate and candidate != "utf-8":
            try:
                return raw.decode(candidate), candidate
            except (UnicodeDecodeError, LookupError):
                continue
    return raw.decode("latin-1"), "latin-1"


def split_messages(text: str) -> list[tuple[int, list[str]]]:
    """Split the text of a file (one or many messages, maybe batched) into messages.

    Returns (line number of the message's first segment, its segments) pairs.
    File and batch envelope segments (FHS, BHS, BTS, FTS) are dropped. Segments
    that come before any MSH form a message of their own, so a batch whose
    message lost its MSH is reported, not silently merged. Blank lines, MLLP
    framing bytes and a UTF-8 BOM (as text or as latin-1 bytes) are skipped.
    """
    messages: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    for line_no, line in enumerate(_SEGMENT_SPLIT.split(text), start=1):
        seg = line.strip("\x0b\x1c").lstrip("\ufeff")
        if seg.startswith("\xef\xbb\xbf"):
            seg = seg[3:]
        if not seg.strip():
            continue
        name = seg[:3]
        if name in ("FHS", "BHS", "BTS", "FTS"):
            current = None
            continue
        if name == "MSH" or current is None:
            current = []
            messages.append((line_no, current))
        current.append(seg)
    return messages
