"""Build HL7 v2 acknowledgments (ACK/NACK), per HL7 v2.5.1 chapter 2.

Pure: no I/O, no clock, no logging. The time and our own control id are
arguments; the result is message bytes (no MLLP framing, see ``mllp.frame``).

What goes out:

* ``MSH``: the received encoding characters when they are usable (distinct,
  printable ASCII, not alphanumeric), else ``|^~\\&``; sender and receiver
  swapped (our MSH-3/4 are the received MSH-5/6 and vice versa); MSH-7 ``now``
  as ``YYYYMMDDHHMMSS+ZZZZ``; MSH-9 ``ACK^<event>^ACK`` (``ACK^<event>`` before
  v2.3.1, which has no message structure component); MSH-10 our control id;
  MSH-11 the received processing id (``P`` when absent or odd); MSH-12 the
  received version when we support it, else ``2.5.1``. In enhanced mode
  MSH-15/16 are ``NE`` so that the peer never acknowledges our acknowledgment.
  MSH-18 repeats the received character set (first repetition, when it looks
  like a table 0211 value): the ACK is in the message's charset, because
  echoed fields are the received bytes and our own texts are ASCII.
* ``MSA``: MSA-1 the code, MSA-2 the received MSH-10 (empty when no header
  could be read).
* v2.5 and later: one ``ERR`` per error, ERR-2 the location as ERL
  (``SEG^seq^field^repetition^component^subcomponent``), ERR-3
  ``code^text^HL70357``, ERR-4 severity. Before v2.5 (where ACK allows a
  single ERR): MSA-3 the text, one ``ERR`` whose ERR-1 repeats one ELD per
  error (``SEG^seq^field^code&text&HL70357``).

Everything echoed from the received message is sanitized: control characters
(CR, LF, 0x0B, 0x1C, NUL, ...) removed, repetitions dropped, length capped, a
dangling escape or a truncated UTF-8 sequence removed. Received bytes are
echoed as they came (latin-1 round trip); our own texts are made ASCII and
escaped for the delimiters in use. Texts never contain patient data: callers
pass texts that name locations, not values (see ``listener.errors``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from listener.errors import HL7_ERROR_TEXT, DecodeError
from listener.hl7v2.escape import escape_delimiters as _escape
from listener.hl7v2.segments import SUPPORTED_VERSIONS, MessageHeader, Separators, check_separators

__all__ = [
    "ACK_CODES",
    "DEFAULT_VERSION",
    "SEVERITIES",
    "AckErrorDetail",
    "AckTemplates",
    "accept_ack_code",
    "ack_code_for",
    "build_ack",
    "is_enhanced_mode",
    "should_send_accept_ack",
]

#: MSH-12 of an ACK answering a message whose version we do not support.
DEFAULT_VERSION = "2.5.1"

#: Table 0008: original mode (AA/AE/AR) and enhanced accept (CA/CE/CR) codes.
ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_SUCCESS_CODES = frozenset({"AA", "CA"})
_ORIGINAL_TO_ACCEPT = {"AA": "CA", "AE": "CE", "AR": "CR"}

#: Table 0516 error severity.
SEVERITIES = frozenset({"E", "W", "I"})

_STANDARD = Separators()
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# A whole segment ("MSH[2]", a segment sequence error) has no field: ERL-3 is optional.
_LOCATION = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<seq>[1-9][0-9]{0,3})\])?"
    r"(?:-(?P<field>[1-9][0-9]{0,3})(?:\.(?P<comp>[1-9][0-9]{0,3}))?(?:\.(?P<sub>[1-9][0-9]{0,3}))?)?$"
)
_TABLE_0357_CODE = re.compile(r"^[0-9]{1,3}$")
#: A plausible table 0211 character set name (``8859/1``, ``UNICODE UTF-8``...).
_CHARSET = re.compile(r"^[A-Z0-9][A-Z0-9 /._-]{0,29}$")
_SHORT_CODE = re.compile(r"^[A-Z0-9]{1,3}$")
#: Table 0103 processing ids.
_PROCESSING_IDS = frozenset({"D", "P", "T"})

# Length caps (HL7 v2.5.1 lengths, generous where later versions allow more).
_HD_MAX = 227
_CONTROL_ID_MAX = 199
_TEXT_MAX = 199


@dataclass(frozen=True, slots=True)
class AckErrorDetail:
    """What an ACK reports of one error (or warning): one ERR (v2.5+) or one ERR-1 repetition.

    A value to put in an answer, not an exception: nothing raises it.

    Attributes:
        code: HL7 table 0357 code, e.g. ``"101"``.
        location: ``SEG-n``, ``SEG-n.c``, ``SEG-n.c.s`` or ``SEG[k]-n...`` (k-th
            occurrence of the segment), or ``SEG`` / ``SEG[k]`` for a whole
            segment; ``""`` when no location applies.
        severity: table 0516: ``E`` error, ``W`` warning, ``I`` information.
        text: human text naming what is wrong, never a value (no patient data).
            Empty means the table 0357 text for ``code``.
    """

    code: str
    location: str = ""
    severity: str = "E"
    text: str = ""

    def __post_init__(self) -> None:
        if not _TABLE_0357_CODE.match(self.code):
            raise ValueError("AckErrorDetail.code must be a table 0357 code (1 to 3 digits)")
        if self.severity not in SEVERITIES:
            raise ValueError("AckErrorDetail.severity must be E, W or I")

    @classmethod
    def from_decode_error(cls, error: DecodeError, *, severity: str = "E") -> AckErrorDetail:
        """The ERR content for a DecodeError (its message names a location only)."""
        return cls(code=error.hl7_code, location=error.location, severity=severity, text=error.message)

    @property
    def display_text(self) -> str:
        """``text``, or the table 0357 text of ``code`` when ``text`` is empty."""
        return self.text or HL7_ERROR_TEXT.get(self.code, "Error")


def build_ack(
    header: MessageHeader | None,
    code: str,
    *,
    now: datetime,
    control_id: str,
    errors: Sequence[AckErrorDetail] = (),
    text: str = "",
    templates: AckTemplates | None = None,
) -> bytes:
    """Build the acknowledgment of one received message.

    Args:
        header: what :func:`~listener.hl7v2.segments.read_header` could read of
            the received MSH, or None for an unreadable frame (the NACK is then
            addressed to nobody and MSA-2 is empty, but still parses).
        code: MSA-1, one of AA, AE, AR, CA, CE, CR (see :func:`ack_code_for`).
        now: the time of the answer, timezone-aware (MSH-7).
        control_id: our own unique MSH-10 for this ACK.
        errors: one entry per ERR (v2.5+) or per ERR-1 repetition (before v2.5).
        text: MSA-3 text message. Before v2.5 it defaults to the first error's
            text; from v2.5 on MSA-3 is deprecated and only written when given
            (and dropped from v2.7, which withdrew it).
        templates: keeps what the answer takes from the header apart from MSH-7 and MSH-10
            (:class:`AckTemplates`); None: worked out for this answer alone. The bytes are the
            same either way.

    Returns:
        The message bytes: segments each terminated by CR, no MLLP framing.

    Raises:
        ValueError: ``code`` is not an acknowledgment code, ``now`` is naive or
            ``control_id`` is empty (programming errors, not message errors).
    """
    if code not in ACK_CODES:
        raise ValueError("code must be one of AA, AE, AR, CA, CE, CR")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not _clean(control_id).strip():
        raise ValueError("control_id must not be empty")

    parts = _ack_parts(header) if templates is None or header is None else templates.parts(header)
    seps, vkey = parts.seps, parts.vkey
    f = seps.field
    our_id = _escape(_ascii(control_id, _CONTROL_ID_MAX), seps)
    segments = [f"{parts.msh_head}{_timestamp(now)}{parts.msh_middle}{our_id}{parts.msh_tail}"]

    control = (
        ""
        if header is None
        else _echo(header.field(10), header.separators, seps, reuse=parts.reuse, cap=_CONTROL_ID_MAX)
    )
    msa = ["MSA", code, control.strip(" ")]
    old_style = vkey < (2, 5)
    if old_style:
        msa_text = text or (errors[0].display_text if errors else "")
    else:
        msa_text = text if vkey < (2, 7) else ""
    if msa_text:
        msa.append(_escape(_ascii(msa_text, 80), seps))
    segments.append(f.join(msa))

    if old_style:
        if errors:
            eld = seps.repetition.join(_eld(e, seps) for e in errors)
            segments.append(f"ERR{f}{eld}")
    else:
        for error in errors:
            segments.append(f.join(["ERR", "", _erl(error.location, seps), _cwe(error, seps), error.severity]))

    return ("\r".join(segments) + "\r").encode("latin-1")


@dataclass(frozen=True, slots=True)
class _AckParts:
    """What an answer takes from the received header, MSH-7 and MSH-10 aside.

    The answer's MSH is ``msh_head`` + MSH-7 (our time) + ``msh_middle`` + MSH-10 (our control
    id) + ``msh_tail``.
    """

    seps: Separators
    reuse: bool
    vkey: tuple[int, ...]
    msh_head: str
    msh_middle: str
    msh_tail: str


def _ack_parts(header: MessageHeader | None) -> _AckParts:
    seps, reuse = _output_separators(header)
    version = _version(header, reuse)
    vkey = _version_key(version)
    f = seps.field

    def echo(n: int, cap: int) -> str:
        if header is None:
            return ""
        return _echo(header.field(n), header.separators, seps, reuse=reuse, cap=cap)

    event = _component(header, 9, 2, reuse).upper()
    event = event if _SHORT_CODE.match(event) else ""
    message_type = f"ACK{seps.component}{event}"
    if vkey >= (2, 3, 1):
        message_type += f"{seps.component}ACK"
    processing_id = _component(header, 11, 1, reuse).upper()
    processing_id = processing_id if processing_id in _PROCESSING_IDS else "P"
    enhanced = is_enhanced_mode(header)

    head = ["MSH", seps.encoding_characters, echo(5, _HD_MAX), echo(6, _HD_MAX), echo(3, _HD_MAX), echo(4, _HD_MAX)]
    tail = [processing_id, version]
    charset = _charset(header, reuse)
    if enhanced or charset:
        tail += ["", "", "NE" if enhanced else "", "NE" if enhanced else ""]
    if charset:
        tail += ["", charset]
    # MSH-8 (security) stays empty.
    return _AckParts(seps, reuse, vkey, f.join(head) + f, f"{f}{f}{message_type}{f}", f + f.join(tail))


class AckTemplates:
    """The header-dependent part of answers, kept per header apart from MSH-7 and MSH-10.

    A sender's messages differ in their time and control id and seldom elsewhere in MSH, so
    most answers reuse the part worked out for an earlier message: the reactor thread builds one
    answer per message (docs/benchmarks.md, "The daemon's main process, third pass"). At most
    ``limit`` headers are kept; when full, the kept ones are dropped and it starts again.
    Used from one thread (a dict under the interpreter lock also survives a second one).
    """

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._parts: dict[tuple[tuple[str, ...], ...], _AckParts] = {}

    def parts(self, header: MessageHeader) -> _AckParts:
        """The answer's parts for ``header`` (its separators follow from MSH-1 and MSH-2)."""
        fields = header.fields
        key = (fields[:7], fields[8:10], fields[11:])
        found = self._parts.get(key)
        if found is None:
            if len(self._parts) >= self._limit:
                self._parts.clear()
            found = self._parts[key] = _ack_parts(header)
        return found


def is_enhanced_mode(header: MessageHeader | None) -> bool:
    """True when the sender asked for enhanced acknowledgment (MSH-15 or MSH-16 set)."""
    return header is not None and bool(header.accept_ack_type or header.application_ack_type)


def accept_ack_code(outcome: str) -> str:
    """Map an original-mode outcome to the enhanced accept code: AA/AE/AR -> CA/CE/CR.

    Args:
        outcome: AA, AE or AR (CA, CE, CR are returned unchanged).

    Raises:
        ValueError: ``outcome`` is not an acknowledgment code.
    """
    if outcome in _ORIGINAL_TO_ACCEPT:
        return _ORIGINAL_TO_ACCEPT[outcome]
    if outcome in ("CA", "CE", "CR"):
        return outcome
    raise ValueError("outcome must be one of AA, AE, AR")


def ack_code_for(header: MessageHeader | None, outcome: str) -> str:
    """The MSA-1 code to send: the outcome in original mode, its accept code in enhanced mode."""
    return accept_ack_code(outcome) if is_enhanced_mode(header) else outcome


def should_send_accept_ack(header: MessageHeader | None, code: str) -> bool:
    """Whether to answer at all, per MSH-15 (table 0155).

    Original mode (MSH-15 and MSH-16 empty), or no readable header: always.
    Enhanced mode: ``NE`` never, ``ER`` only for an error or reject, ``SU``
    only for success, ``AL``, empty or an unknown value: always (answering is
    the safe side: a sender that gets no answer resends).

    Args:
        header: the received header, or None.
        code: the code we would send (AA/AE/AR or CA/CE/CR).
    """
    if header is None or not is_enhanced_mode(header):
        return True
    mode = header.accept_ack_type
    if mode == "NE":
        return False
    if mode == "ER":
        return code not in _SUCCESS_CODES
    if mode == "SU":
        return code in _SUCCESS_CODES
    return True


# -- helpers -------------------------------------------------------------


def _output_separators(header: MessageHeader | None) -> tuple[Separators, bool]:
    """The received separators when safe to reuse (and True), else the standard ones."""
    if header is None:
        return _STANDARD, False
    try:
        check_separators(header)
    except DecodeError:
        return _STANDARD, False
    seps = header.separators
    chars = (seps.field, seps.component, seps.repetition, seps.escape, seps.subcomponent)
    # check_separators allows any non-alphanumeric character; an answer must
    # also never carry control bytes (0x0B, 0x1C would break MLLP framing).
    if not all("!" <= c <= "~" for c in chars):
        return _STANDARD, False
    return seps, True


def _component(header: MessageHeader | None, n: int, c: int, reuse: bool) -> str:
    """MSH-n.c, split with the standard ``^`` when the received separators are unusable."""
    if header is None:
        return ""
    if reuse:
        return header.component(n, c).strip()
    parts = header.field(n).split(_STANDARD.component)
    return parts[c - 1].strip() if c - 1 < len(parts) else ""


def _charset(header: MessageHeader | None, reuse: bool) -> str:
    """MSH-18's first repetition when it looks like a table 0211 name, else ""."""
    if header is None:
        return ""
    repetition = header.separators.repetition if reuse else _STANDARD.repetition
    value = header.field(18).split(repetition, 1)[0].strip().upper()
    return value if _CHARSET.match(value) else ""


def _version(header: MessageHeader | None, reuse: bool) -> str:
    version = _component(header, 12, 1, reuse)
    return version if version in SUPPORTED_VERSIONS else DEFAULT_VERSION


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _timestamp(now: datetime) -> str:
    offset = now.utcoffset()
    assert offset is not None  # checked by build_ack
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    # One %-format of the fields, not strftime: a quarter of the CPU, once per ACK on the
    # reactor thread (docs/benchmarks.md, "The daemon's main process"). Same text for every
    # year from 1000 on.
    return "%04d%02d%02d%02d%02d%02d%s%02d%02d" % (  # noqa: UP031 - the fastest form
        now.year,
        now.month,
        now.day,
        now.hour,
        now.minute,
        now.second,
        sign,
        hours,
        mins,
    )


def _clean(value: str) -> str:
    return _CONTROL_CHARS.sub("", value)


def _ascii(value: str, cap: int) -> str:
    """Our own text: printable ASCII only, capped."""
    value = _clean(value).encode("ascii", "replace").decode("ascii")
    return value[:cap].strip()


def _echo(raw: str, received: Separators, out: Separators, *, reuse: bool, cap: int) -> str:
    """Sanitize one received field for echoing.

    With reusable separators the field is echoed with its components (first
    repetition only); otherwise its delimiters cannot be trusted and the whole
    field is echoed as one escaped text value.
    """
    value = _clean(raw)
    if reuse:
        value = value.split(received.repetition, 1)[0]
        cut = len(value) > cap
        value = value[:cap]
        if value.count(out.escape) % 2:
            # An odd count means a dangling escape (often cut by the cap).
            value = value[: value.rindex(out.escape)]
    else:
        cut = len(value) > cap
        value = _escape(value[:cap], out)
    # Only the cap cuts a UTF-8 sequence: a value that fits is echoed whole, so a latin-1
    # value ending in a letter such as é (one byte that leads a UTF-8 sequence) keeps it.
    return _trim_utf8(value) if cut else value


def _trim_utf8(value: str) -> str:
    """Drop a UTF-8 sequence the cap cut in half at the end (values are latin-1 decoded bytes)."""
    try:
        value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return value[: exc.start]
    return value


def _location_parts(location: str) -> tuple[str, str, str, str, str] | None:
    match = _LOCATION.match(location.strip().upper())
    if match is None:
        return None
    return (
        match["seg"],
        match["seq"] or "1",
        match["field"] or "",
        match["comp"] or "",
        match["sub"] or "",
    )


def _erl(location: str, seps: Separators) -> str:
    """ERR-2 (ERL): SEG^seq^field^repetition^component^subcomponent."""
    parts = _location_parts(location)
    if parts is None:
        return ""
    seg, seq, field, comp, sub = parts
    items = [seg, seq, field] if field else [seg, seq]
    if comp:
        items += ["1", comp]
        if sub:
            items.append(sub)
    return seps.component.join(items)


def _cwe(error: AckErrorDetail, seps: Separators) -> str:
    """ERR-3 (CWE): code^text^HL70357."""
    text = _escape(_ascii(error.display_text, _TEXT_MAX), seps)
    return seps.component.join([error.code, text, "HL70357"])


def _eld(error: AckErrorDetail, seps: Separators) -> str:
    """One ERR-1 repetition (ELD, before v2.5): SEG^seq^field^code&text&HL70357."""
    parts = _location_parts(error.location)
    seg, seq, field = parts[:3] if parts is not None else ("", "", "")
    text = _escape(_ascii(error.display_text, _TEXT_MAX), seps)
    code = seps.subcomponent.join([error.code, text, "HL70357"])
    return seps.component.join([seg, seq, field, code])
