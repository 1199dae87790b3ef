"""Structure validation with hl7apy, for feeds configured ``validation: strict``.

Pure: text in, None or a DecodeError out. hl7apy costs tens of milliseconds per
message, so it never runs for lenient feeds (the default). Its verdict becomes
the NACK's HL7 error code and location; its message text is discarded because
hl7apy quotes values in some errors.
"""

from __future__ import annotations

import re

from hl7apy import exceptions as hx
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from listener.errors import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_VERSION_ID,
    DecodeError,
)
from listener.hl7v2.segments import MessageHeader

_ELEMENT_RE = re.compile(r"\b([A-Z][A-Z0-9]{2})_(\d{1,3})(?:\.[A-Z][A-Z0-9]{1,3}_(\d{1,3}))?\b")

_DATA_ERRORS: tuple[type[Exception], ...] = (
    hx.InvalidDataType,
    hx.InvalidDateFormat,
    hx.InvalidDateOffset,
    hx.InvalidMicrosecondsPrecision,
    hx.MaxLengthReached,
    hx.InvalidHighlightRange,
    hx.InvalidEncodingChars,
)
_STRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    hx.ChildNotFound,
    hx.ChildNotValid,
    hx.InvalidName,
    hx.MaxChildLimitReached,
    hx.ParserError,
)


def _location(text: str, segment_names: set[str]) -> str:
    for match in _ELEMENT_RE.finditer(text):
        seg, fld, comp = match.groups()
        if seg in segment_names:
            return f"{seg}-{int(fld)}" + (f".{int(comp)}" if comp else "")
    return ""


def _code_for(exc: Exception) -> str:
    if isinstance(exc, hx.UnsupportedVersion):
        return UNSUPPORTED_VERSION_ID
    if isinstance(exc, _DATA_ERRORS):
        return DATA_TYPE_ERROR
    if isinstance(exc, hx.ValidationError):
        text = str(exc).lower()
        if "missing required" in text:
            return REQUIRED_FIELD_MISSING
        if "table" in text:
            return TABLE_VALUE_NOT_FOUND
        return DATA_TYPE_ERROR
    if isinstance(exc, hx.MaxChildLimitReached) and "<Component" in str(exc):
        return DATA_TYPE_ERROR
    if isinstance(exc, _STRUCTURE_ERRORS):
        return SEGMENT_SEQUENCE_ERROR
    if isinstance(exc, ValueError):  # hl7apy's datatype checks raise plain ValueError
        return DATA_TYPE_ERROR
    return APPLICATION_INTERNAL_ERROR


def validate_structure(segments: list[str], header: MessageHeader) -> None:
    """Validate the whole message against its declared version's structure.

    Raises:
        DecodeError: with the table 0357 code and location of the first problem.
    """
    names = {seg[:3] for seg in segments}
    try:
        message = parse_message("\r".join(segments), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
    except (hx.HL7apyException, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        code = _code_for(exc)
        location = _location(str(exc), names)
        raise DecodeError(
            f"message structure is not valid for HL7 {header.version} (strict validation)",
            location=location,
            hl7_code=code,
        ) from None
