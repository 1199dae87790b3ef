"""The internal model: one shape for a radiology report, whatever its wire format.

Pure values: frozen, slotted dataclasses holding tuples, never lists. Nothing here
imports HL7 or FHIR code; decoders in ``listener.hl7v2`` and ``listener.fhir``
build these values, and every later layer (QA, routing, store) reads only them.

Patient data lives in :class:`Patient` and in report text. It is kept in the store
and never logged: ``logs.py`` has no key for it.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from itertools import repeat
from operator import call
from typing import Any, TypeVar

_T = TypeVar("_T")


class ResultStatus(str, enum.Enum):
    """Where the report stands (HL7 table 0123 / FHIR DiagnosticReport.status)."""

    PRELIMINARY = "preliminary"
    FINAL = "final"
    CORRECTED = "corrected"
    AMENDED = "amended"
    CANCELLED = "cancelled"
    PARTIAL = "partial"
    UNKNOWN = "unknown"


class SectionKind(str, enum.Enum):
    """The report sections the rules know about."""

    INDICATION = "indication"
    TECHNIQUE = "technique"
    COMPARISON = "comparison"
    FINDINGS = "findings"
    IMPRESSION = "impression"
    COMMUNICATION = "communication"
    ADDENDUM = "addendum"
    OTHER = "other"


class TextKind(enum.StrEnum):
    """What a report's text came from: plain text, or a document the text checks cannot read."""

    TEXT = "text"
    PDF = "pdf"
    CDA = "cda"
    BINARY = "binary"
    NONE = "none"  # nothing usable


class Disposition(enum.StrEnum):
    """What the listener did with a message: decoded its reports, acknowledged it unprocessed, or refused it."""

    ACCEPTED = "accepted"
    IGNORED = "ignored"  # a type the feed acknowledges without processing
    REJECTED = "rejected"


class Severity(str, enum.Enum):
    """Severity of a QA finding; ordering is ``info < warning < error``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """Return 0, 1 or 2 so severities compare by weight."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}

#: Finding categories (docs/qa-rules.md): a fixed vocabulary, rule ids are ``category.name``.
CATEGORIES: tuple[str, ...] = (
    "comparison",
    "laterality",
    "contradiction",
    "completeness",
    "alignment",
    "communication",
    "coding",
    "compliance",
    "turnaround",
    "consistency",
)

#: Routing buckets (docs/routing.md), in precedence order.
BUCKETS: tuple[str, ...] = ("always_final", "selective_overread", "process_check", "release")

#: Order priorities (``Report.priority``), most urgent first: mappings, sites.yaml and routing policies name these.
PRIORITIES: tuple[str, ...] = ("stat", "asap", "routine")


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent the message: MSH-3/MSH-4 (or the FHIR client), and the feed it maps to."""

    application: str
    facility: str
    feed: str = "default"


@dataclass(frozen=True, slots=True)
class Patient:
    """Patient identity. Kept in the store; never logged, never in an error message."""

    id: str
    id_authority: str = ""
    sex: str = ""  # "F", "M", "O", "U" or "" (HL7 table 0001 letters)
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class Procedure:
    """The ordered procedure (OBR-4 / DiagnosticReport.code)."""

    code: str
    coding_system: str = ""
    text: str = ""
    modifiers: tuple[str, ...] = ()
    local_code: str = ""  # the sender's own code when ``code`` was taken from elsewhere


@dataclass(frozen=True, slots=True)
class Reader:
    """The radiologist who interpreted the study (OBR-32 / resultsInterpreter)."""

    id: str
    name: str = ""
    type: str = "unknown"  # "internal", "external" or "unknown"
    location: str = ""  # state / country code where the reader sat, when known


@dataclass(frozen=True, slots=True)
class PeerReview:
    """An explicit peer-review score a report carries (the mapping's ``peer_review_obx``).

    ``grade`` is a RADPEER grade (``1``, ``2a``, ``2b``, ``3a``, ``3b``);
    ``scorer`` the responsible observer's id ("" when none); ``scored_at`` the
    observation's time, None when the OBX has none.
    """

    grade: str
    scorer: str = ""
    scored_at: datetime | None = None


#: The RADPEER grades, least to most severe by clinical significance (docs/outcomes.md).
RADPEER_GRADES = ("1", "2a", "3a", "2b", "3b")

#: Most reports one message may carry: OBR groups of an HL7 v2 ORU, DiagnosticReports of a FHIR
#: Bundle. One message is one study's worth; more is refused before any report is decoded, so one
#: message's decoding, storing and routing stay bounded (docs/hl7-input.md, docs/http-api.md).
MAX_REPORTS_PER_MESSAGE = 50


@dataclass(frozen=True, slots=True)
class Section:
    """One section of the report text, with its place in ``Report.text``."""

    kind: SectionKind
    heading: str
    start: int  # offset of the section body in Report.text
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Times:
    """When things happened. Naive datetimes are the sender's local time."""

    observation: datetime | None = None  # OBR-7: images acquired
    report: datetime | None = None  # OBR-22: report status changed / written
    received: datetime | None = None  # set by us, UTC
    message: datetime | None = None  # MSH-7


@dataclass(frozen=True, slots=True)
class Report:
    """One radiology report (one OBR group, or one DiagnosticReport)."""

    message_id: str
    message_type: str
    version: str
    sender: Sender
    accession: str
    patient: Patient
    procedure: Procedure
    status: ResultStatus
    times: Times
    text: str
    sections: tuple[Section, ...] = ()
    status_raw: str = ""
    placer_order: str = ""
    filler_order: str = ""
    modality: str = ""
    body_region: str = ""
    order_laterality: str = ""  # "left", "right", "bilateral" or ""
    priority: str = "routine"  # one of PRIORITIES
    reader: Reader | None = None
    site: str = ""
    financial_class: str = ""  # PV1-20 (e.g. Medicare), for compliance rules
    reason: str = ""
    diagnosis_codes: tuple[str, ...] = ()
    comparison_text: str = ""
    text_kind: TextKind = TextKind.TEXT
    obr_index: int = 1  # which OBR group of the message this report is (1-based)
    charset: str = ""  # the codec the text was read with
    abnormal_flags: tuple[str, ...] = ()  # OBX-8 values seen (e.g. "AA": critical per sender)
    warnings: tuple[str, ...] = ()  # lenient-decoding notes; locations only, never values
    peer_review: PeerReview | None = None  # an explicit score in the report (docs/outcomes.md)

    def section(self, kind: SectionKind) -> Section | None:
        """Return the first section of ``kind``, or None."""
        for sec in self.sections:
            if sec.kind is kind:
                return sec
        return None

    def sections_of(self, kind: SectionKind) -> tuple[Section, ...]:
        """Return every section of ``kind`` in text order."""
        return tuple(sec for sec in self.sections if sec.kind is kind)


@dataclass(frozen=True, slots=True)
class Evidence:
    """A quoted span of report text that supports a finding."""

    section: str
    start: int  # offsets into Report.text
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One QA defect. ``message`` never contains patient data."""

    rule: str  # "category.name"
    severity: Severity
    message: str
    evidence: tuple[Evidence, ...] = ()
    suggestion: str = ""

    @property
    def category(self) -> str:
        """The category half of the rule id."""
        return self.rule.partition(".")[0]


@dataclass(frozen=True, slots=True)
class Route:
    """The routing decision for one report."""

    bucket: str
    pool: str
    priority: str
    reasons: tuple[str, ...]
    corrections: tuple[str, ...] = ()
    policy_version: str = ""
    deadline: datetime | None = None
    explanation: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------
# building frozen values


def frozen_builder(cls: type[_T]) -> Callable[..., _T]:
    """A constructor of the frozen, slotted dataclass ``cls`` from every field's value, positional, in field order.

    It builds what ``cls(*values)`` builds (an equal value, each field the same object): a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` (a look-up of the method,
    an argument tuple and a check per field), where this sets the slots through their descriptors in
    one C loop. For a class of many fields (a mention's sixteen: half the instructions of a call with
    keywords); below five or so the fixed cost of the loop makes it dearer than ``__init__``
    (docs/benchmarks.md, "Worker CPU, round 11"). Only for a class whose every field is an
    ``__init__`` argument and that has no ``__post_init__`` (TypeError otherwise).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is not None and params.frozen and "__mypyc_attrs__" in vars(cls):
        # Compiled by mypyc (docs/development.md, "Compiled modules"): a native class keeps its
        # fields in C struct members, not slots, and its constructor is already a C call.
        return cls
    if params is None or not params.frozen or "__slots__" not in vars(cls) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass without __post_init__")
    every = fields(cls)  # type: ignore[arg-type]  # (a dataclass: checked above)
    names = [f.name for f in every if f.init]
    if len(names) != len(every):
        raise TypeError(f"{cls.__name__} has a field outside __init__")
    setters = tuple(getattr(cls, name).__set__ for name in names)
    count = len(setters)
    new = object.__new__

    def build(*values: Any) -> _T:
        if len(values) != count:
            raise TypeError(f"{cls.__name__} takes {count} values, not {len(values)}")
        value = new(cls)
        _consume(map(call, setters, repeat(value, count), values))
        return value

    return build


#: Runs an iterator to its end, keeping nothing.
_consume: Callable[[Iterable[object]], None] = deque[object](maxlen=0).extend
