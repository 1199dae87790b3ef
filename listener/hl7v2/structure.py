"""ORU^R01 segment order: one message, one patient, orders whose parts agree.

Pure: segment strings in, None or a SegmentSequenceError (HL7 table 0357 code
100) out; no I/O, no clock, no logging.

Why: a payload can hold parts of two messages. The framer drops a frame that a
sender restarts with 0x0B (``listener.hl7v2.mllp``), but a sender that resends
without a start block, a relay that concatenates, or a file edited by hand can
still glue the head of message A to (part of) message B. Decoded as one, such a
payload can give A's patient with B's accession and report. These rules refuse
every arrangement that the ORU^R01 structure forbids and that a splice produces
(HL7 v2.5.1 chapter 7, ORU^R01 abstract message syntax: MSH, then per patient
PID [PD1] [NK1...] [PV1 [PV2]], then per order [ORC] OBR ... [OBX...]):

1. One message (:func:`check_one_message`, run on the text before anything
   else, so it also guards types a feed acknowledges without decoding):
   no 0x0B (the MLLP start block, which only starts a message) anywhere, and
   MSH only at the start: no later line is an MSH and no line holds a message
   header glued inside it (``MSH``, a delimiter, two to five distinct
   delimiter characters other than it, and that delimiter again:
   ``MSH|^~\\&|``). A delimiter here is any character that is neither
   alphanumeric nor blank. Report text cannot hold this sequence (the field
   separator must be sent escaped, ``\\F\\``), nor can base64.
2. One patient. At most one PID and at most one PV1 (ORU^R01 allows several
   PATIENT_RESULT groups, but the listener files every report of a message
   under one patient, so a second patient is refused rather than misfiled).
3. Patient before orders. PID, PD1, NK1, PV1 and PV2 come before the first
   ORC or OBR.
4. An ORC is the head of its order: its OBR comes before the next ORC and
   before the end of the message. (Other segments may sit between them: HL7
   v2.7+ messages put PRT, TXA and even OBX rows there, and the corpus holds
   one; OBX rows before the first OBR are likewise tolerated, as v2.7+ allows
   patient-level observations.)
5. An order's numbers agree: when an ORC and its OBR both value the placer
   order number (ORC-2, OBR-2) or the filler order number (ORC-3, OBR-3), the
   first components are equal (HL7 v2.5.1 4.5.1.2 and 4.5.1.3: "must be the
   same").
6. OBR set ids count the orders: a valued OBR-1 is the OBR's position in
   the message (1, 2, 3..., leading zeros allowed), as HL7 numbers them
   (v2.5.1 4.5.3.1). A second message's first order is "1" again, and a
   line glued from two messages' halves rarely holds the right number.
7. At most :data:`~listener.model.MAX_REPORTS_PER_MESSAGE` (50) orders: each
   OBR is one report to decode, check, store and route, and one message of
   20,000 orders held a worker and the store for a minute while other senders
   waited (docs/hl7-input.md). The 51st OBR is refused before any report is
   decoded.

What these rules cannot see: a splice inside one segment of each message
whose halves still make a well-formed segment (A's PID cut after PID-3, glued
to B's PID tail, then B's orders) is indistinguishable from a real message;
so is A's MSH+PID followed by B's orders from the ORC on. Only the framer's
restart rule, and senders that frame each message, prevent those.

Errors name the segment and its occurrence ("PID[2]", "OBR[2]-3"), never a value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from listener.errors import SegmentSequenceError
from listener.hl7v2.segments import MessageHeader
from listener.model import MAX_REPORTS_PER_MESSAGE

__all__ = ["check_one_message", "check_oru_structure"]

#: A message header inside a line: MSH, delimiter d, 2-5 delimiters, d again
#: (distinctness is checked in Python: a backreference cannot express it).
_EMBEDDED_MSH = re.compile(r"MSH([^\w\s])[^\w\s]{2,5}\1")

_PATIENT_SEGMENTS = frozenset({"PID", "PD1", "NK1", "PV1", "PV2"})
_ORDER_SEGMENTS = frozenset({"ORC", "OBR"})
_ONE_PER_MESSAGE = frozenset({"PID", "PV1"})


def check_one_message(text: str) -> None:
    """Refuse text that holds the start of a second message (rule 1).

    Args:
        text: the whole message text, MLLP envelope stripped.

    Raises:
        SegmentSequenceError: code 100 at ``MSH[2]`` (where the second message starts).
    """
    if "\x0b" in text:
        raise SegmentSequenceError(
            "the message holds an MLLP start block (0x0B): a second message starts inside it", location="MSH[2]"
        )
    # The substring test (no copy of the text) keeps the regex off almost every message.
    if text.find("MSH", 1) >= 0:
        for match in _EMBEDDED_MSH.finditer(text, 1):
            delimiter, encoding = match.group(1), match.group(0)[4:-1]
            if delimiter not in encoding and len(set(encoding)) == len(encoding):
                raise SegmentSequenceError("the message holds a second message header (MSH)", location="MSH[2]")


def check_oru_structure(segments: Sequence[str], header: MessageHeader) -> None:
    """Refuse a segment list that is not one ORU^R01 (see the module docstring).

    Args:
        segments: the message's segments, MSH first (as the decoder splits them).
        header: its header, for the delimiters.

    Raises:
        SegmentSequenceError: code 100, located at the offending segment
            (``SEG[k]``, k its occurrence) or field (``OBR[k]-3``).
    """
    seps = header.separators
    seen: dict[str, int] = {}
    in_orders = False
    pending_orc: tuple[int, list[str]] | None = None
    for index, segment in enumerate(segments):
        name = segment[:3]
        nth = seen[name] = seen.get(name, 0) + 1
        # (Each error below is located at f"{name}[{nth}]", formatted only when raised.)
        if name == "MSH" and index > 0:  # rule 1, for callers that skipped check_one_message
            raise SegmentSequenceError("a second message header (MSH)", location=f"{name}[{nth}]")
        if name in _ONE_PER_MESSAGE and nth > 1:
            raise SegmentSequenceError(f"a second {name} segment: one patient per message", location=f"{name}[{nth}]")
        if name in _PATIENT_SEGMENTS and in_orders:
            raise SegmentSequenceError(f"{name} after the first order (ORC/OBR)", location=f"{name}[{nth}]")
        if name == "ORC":
            if pending_orc is not None:
                raise SegmentSequenceError("ORC without its OBR", location=f"ORC[{pending_orc[0]}]")
            in_orders = True
            pending_orc = (nth, segment.split(seps.field))
        elif name == "OBR":
            if nth > MAX_REPORTS_PER_MESSAGE:
                raise SegmentSequenceError(
                    f"more than {MAX_REPORTS_PER_MESSAGE} orders (OBR segments) in one message",
                    location=f"{name}[{nth}]",
                )
            in_orders = True
            fields = segment.split(seps.field)
            if pending_orc is not None:
                _check_order_numbers(pending_orc[1], fields, nth, seps.component)
                pending_orc = None
            set_id = _field(fields, 1).strip()
            # The length test keeps int() off huge digit strings (ValueError past 4300 digits).
            if set_id and not (set_id.isascii() and set_id.isdigit() and len(set_id) <= 9 and int(set_id) == nth):
                raise SegmentSequenceError(
                    "OBR set id is not the order's position in the message", location=f"OBR[{nth}]-1"
                )
    if pending_orc is not None:
        raise SegmentSequenceError("ORC without its OBR", location=f"ORC[{pending_orc[0]}]")


def _check_order_numbers(orc: list[str], obr: list[str], nth: int, component: str) -> None:
    for n in (2, 3):
        placed = _field(orc, n).split(component)[0].strip()
        ordered = _field(obr, n).split(component)[0].strip()
        if placed and ordered and placed != ordered:
            raise SegmentSequenceError(f"OBR-{n} differs from ORC-{n} of its order", location=f"OBR[{nth}]-{n}")


def _field(fields: list[str], n: int) -> str:
    return fields[n] if n < len(fields) else ""
