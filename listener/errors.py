"""The whole exception tree of the listener.

Every layer raises only its own type. Messages name a location ("PID-3",
"mappings/default.yaml:12"), never a value taken from a message: these texts go
into NACKs, OperationOutcomes and logs, and a value could be patient data.
"""

from __future__ import annotations

# HL7 table 0357 (message error condition codes) used by DecodeError.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_RECORD_LOCKED = "206"
APPLICATION_INTERNAL_ERROR = "207"

HL7_ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    APPLICATION_RECORD_LOCKED: "Application record locked",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

#: What each HL7 v2.5 table 0357 code tells an operator when a peer (the RIS) answers with it in
#: ERR-3: the code's name and, in our words, what the receiver objected to (docs/outbound.md,
#: "Answers"). ``0`` is "no error" and is never shown.
HL7_ERROR_MEANING = {
    SEGMENT_SEQUENCE_ERROR: "segments missing or not in the order the receiver expects",
    REQUIRED_FIELD_MISSING: "a field the receiver needs is empty",
    DATA_TYPE_ERROR: "a value is not of the type the receiver expects (a date, a number...)",
    TABLE_VALUE_NOT_FOUND: "a coded value is not one the receiver knows",
    UNSUPPORTED_MESSAGE_TYPE: "the receiver does not take this message type (MSH-9)",
    UNSUPPORTED_EVENT_CODE: "the receiver does not take this trigger event (MSH-9.2)",
    UNSUPPORTED_PROCESSING_ID: "the receiver does not take this processing id (MSH-11: P, T or D)",
    UNSUPPORTED_VERSION_ID: "the receiver does not take this HL7 version (MSH-12)",
    UNKNOWN_KEY_IDENTIFIER: "the receiver has no record of something the message names (an order, a patient)",
    DUPLICATE_KEY_IDENTIFIER: "the receiver already has the record the message would add",
    APPLICATION_RECORD_LOCKED: "the record is locked at the receiver; a later try may pass",
    APPLICATION_INTERNAL_ERROR: "the receiver failed on its side; its own log says why",
}


def hl7_error_label(code: str) -> str:
    """A table 0357 code as operators read it: ``200 Unsupported message type: the receiver ...``.

    A code HL7 v2.5 does not define (a site's own) is shown as it is.
    """
    name = HL7_ERROR_TEXT.get(code)
    return f"{code} {name}: {HL7_ERROR_MEANING[code]}" if name is not None else code


class ListenerError(Exception):
    """Base of every error the listener raises on purpose."""


class FramingError(ListenerError):
    """The byte stream is not valid MLLP; the connection is closed."""


class DecodeError(ListenerError):
    """A message could not be turned into Reports.

    Attributes:
        hl7_code: HL7 table 0357 code for the ERR segment.
        location: where the problem is, as ``SEG-n`` or ``SEG-n.c`` (may be empty).
    """

    hl7_code = APPLICATION_INTERNAL_ERROR

    def __init__(self, message: str, *, location: str = "", hl7_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        if hl7_code is not None:
            self.hl7_code = hl7_code

    @property
    def code_name(self) -> str:
        """Short name of the HL7 error code, for CLI and JSON output."""
        return HL7_ERROR_TEXT.get(self.hl7_code, "Error")


class SegmentSequenceError(DecodeError):
    """Segments are missing or in an order we cannot use (code 100)."""

    hl7_code = SEGMENT_SEQUENCE_ERROR


class MissingField(DecodeError):
    """A field the mapping requires is empty (code 101)."""

    hl7_code = REQUIRED_FIELD_MISSING


class InvalidValue(DecodeError):
    """A field has a value of the wrong type or outside its table (102/103)."""

    hl7_code = DATA_TYPE_ERROR


class UnsupportedMessage(DecodeError):
    """The message type, event, processing id or version is not accepted (200-203)."""

    hl7_code = UNSUPPORTED_MESSAGE_TYPE


class ConfigError(ListenerError, ValueError):
    """A configuration, mapping or policy file is invalid.

    Attributes:
        path: the file.
        line: 1-based line number, or None when the whole file is at fault.
        column: 1-based column of a YAML syntax error, or None (not in the message text).
    """

    def __init__(self, message: str, *, path: str, line: int | None = None, column: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.message = message
        self.path = path
        self.line = line
        self.column = column


class StoreError(ListenerError):
    """The store could not take or give data; the sender should retry (AR 207).

    Its text is ours: an operation and, for a database's error, :func:`database_error`'s
    description of it, never the database's own text (docs/monitoring.md, "Logs").

    Attributes:
        error_type: the class of the database's exception behind it ("" when there was none).
        error_code: its SQLite result code name or PostgreSQL SQLSTATE ("" when it has none).
    """

    def __init__(self, message: str, *, error_type: str = "", error_code: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_code = error_code


def database_error_code(exc: BaseException) -> str:
    """The code a database gave ``exc``: SQLite's result code name (``SQLITE_CONSTRAINT_CHECK``),
    PostgreSQL's SQLSTATE (``23505``), the code a :class:`StoreError` carries, or ""."""
    if isinstance(exc, StoreError):
        return exc.error_code
    code = getattr(exc, "sqlite_errorname", None) or getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) else ""


def database_error_type(exc: BaseException) -> str:
    """The class of the database's exception behind ``exc`` (a :class:`StoreError`'s ``error_type``), else ``exc``'s."""
    if isinstance(exc, StoreError) and exc.error_type:
        return exc.error_type
    return type(exc).__name__


def database_error(exc: BaseException) -> str:
    """``exc`` described without its text: its class and its database code.

    ``IntegrityError SQLITE_CONSTRAINT_UNIQUE``, ``UniqueViolation SQLSTATE 23505``, ``OSError``.
    A database's text can quote the values of a row (PostgreSQL's DETAIL ``Key (accession)=(...)
    already exists`` or ``Failing row contains (...)``, a trigger's message in SQLite), and those
    are patient data: this is what logs, answers and health texts say instead
    (docs/monitoring.md, "Logs").
    """
    name = database_error_type(exc)
    code = database_error_code(exc)
    if not code:
        return name
    return f"{name} SQLSTATE {code}" if not code.startswith("SQLITE_") else f"{name} {code}"


# FHIR OperationOutcome issue types (http://hl7.org/fhir/issue-type) used by FhirDecodeError.
FHIR_ISSUE_CODES = frozenset(
    {
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "code-invalid",
        "not-supported",
        "not-found",
        "too-costly",
        "business-rule",
        "processing",
        "exception",
    }
)

#: FHIR issue type -> the nearest HL7 table 0357 code (store and CLI speak both).
_FHIR_TO_HL7 = {
    "required": REQUIRED_FIELD_MISSING,
    "value": DATA_TYPE_ERROR,
    "code-invalid": TABLE_VALUE_NOT_FOUND,
    "structure": SEGMENT_SEQUENCE_ERROR,
    "not-supported": UNSUPPORTED_MESSAGE_TYPE,
}


class FhirDecodeError(DecodeError):
    """A FHIR body could not be turned into Reports (answered with an OperationOutcome).

    Attributes:
        issue_code: OperationOutcome ``issue.code`` (http://hl7.org/fhir/issue-type).
        expression: FHIRPath of the offending element (``DiagnosticReport.status``), or "".
        issues: every (issue_code, expression, message) found, the first one first; messages
            name locations only, never values.
    """

    def __init__(
        self,
        message: str,
        *,
        issue_code: str = "invalid",
        expression: str = "",
        issues: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        if issue_code not in FHIR_ISSUE_CODES:
            issue_code = "invalid"
        super().__init__(message, location=expression, hl7_code=_FHIR_TO_HL7.get(issue_code, DATA_TYPE_ERROR))
        self.issue_code = issue_code
        self.expression = expression
        self.issues = issues or ((issue_code, expression, message),)


class FhirUnsupportedMediaType(FhirDecodeError):
    """The Content-Type is not FHIR JSON (HTTP 415)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, issue_code="not-supported")
