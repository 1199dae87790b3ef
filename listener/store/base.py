"""What goes into the store, what comes out, and the `Store` protocol.

Layer: values and an interface, no I/O. Every backend (``sqlite.py`` is the
one there is) implements :class:`Store`; callers depend only on this module,
so a backend can be swapped without touching the pipeline or the server.

The store takes already-serialized JSON strings and wire bytes: it never imports
the model, HL7 or FHIR code, and never interprets what it keeps.

Times are aware datetimes; backends keep them in UTC and give them back in UTC.
A naive datetime is a programming error and is refused with ``ValueError`` when
the value is built, so it never reaches a writer thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol, get_args

Transport = Literal["mllp", "http"]
MessageState = Literal["processed", "rejected", "ignored", "quarantined"]
OutboxState = Literal["pending", "delivered", "dead"]
#: An explicit RADPEER grade (docs/outcomes.md, "Explicit scores").
ScoreGrade = Literal["1", "2a", "2b", "3a", "3b"]
#: Where an explicit score came from: an OBX of the final ORU, a FHIR resource, a CSV import, the CLI.
ScoreSource = Literal["obx", "fhir", "csv", "cli"]

#: Most characters a backend keeps of an error text, an event's or an audit entry's detail.
TEXT_MAX = 500
#: Ids kept per list in an audit entry's target (the count of the rest is kept too).
AUDIT_IDS_MAX = 500

TRANSPORTS: tuple[str, ...] = get_args(Transport)
MESSAGE_STATES: tuple[str, ...] = get_args(MessageState)
OUTBOX_STATES: tuple[str, ...] = get_args(OutboxState)
SCORE_GRADES: tuple[str, ...] = get_args(ScoreGrade)
SCORE_SOURCES: tuple[str, ...] = get_args(ScoreSource)
#: Most characters a backend keeps of a score's scorer.
SCORER_MAX = 200


def open_windows(since: datetime, until: datetime, windows: Sequence[tuple[datetime, datetime]] = ()) -> bool:
    """Whether ``[since, until)`` holds anything; refuse a naive bound of it or of ``windows``.

    Raises:
        ValueError: a naive time.
    """
    require_aware(since, "since")
    require_aware(until, "until")
    for start, end in windows:
        require_aware(start, "window start")
        require_aware(end, "window end")
    return since < until


def require_aware(value: datetime, name: str) -> None:
    """Refuse a naive datetime.

    Raises:
        ValueError: ``value`` has no UTC offset.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")


def audit_target_json(target: dict[str, Any]) -> str:
    """An audit target as stored: JSON with sorted keys, every list cut to :data:`AUDIT_IDS_MAX`
    items with the rest counted (``<key>_more``), every string cut to :data:`TEXT_MAX`."""
    out: dict[str, Any] = {}
    for key, value in target.items():
        if isinstance(value, list) and len(value) > AUDIT_IDS_MAX:
            out[key] = value[:AUDIT_IDS_MAX]
            out[f"{key}_more"] = len(value) - AUDIT_IDS_MAX
        elif isinstance(value, str):
            out[key] = value[:TEXT_MAX]
        else:
            out[key] = value
    return json.dumps(out, sort_keys=True)


def _require_one_of(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}")


# --------------------------------------------------------------------------- in


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """One decoded report of a message, with what QA and routing said about it.

    Attributes:
        accession: the order's accession number (also the outbox ordering key).
        report_json: the serialized Report.
        findings_json: the serialized findings (a JSON array).
        route_json: the serialized Route.
        bucket: the routing bucket, kept apart for queries.
        forms: the row's derived column values, made ahead of the save (a
            worker process makes them, off the daemon's writer thread), or
            None: the writer makes them. Derived from the fields above, so
            equality ignores it.
    """

    accession: str
    report_json: str
    findings_json: str
    route_json: str
    bucket: str
    patient_id: str = ""
    patient_authority: str = ""
    forms: StoredForms | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PriorFacts:
    """What a prior look-up reads of a report row, kept in its own columns (docs/store.md, "Prior
    look-up columns"); ``listener.store.rows.prior_facts`` takes them from the report's JSON.

    Attributes:
        study_day: the first 10 characters of the report's observation time, else of its report time,
            as the JSON gives them (the sender's local date); None when it gives neither (the row then
            keeps its message's receive date).
        modality, body_region, procedure_code: as the report gives them ("" when it gives none).
        cancelled: the report's status is ``cancelled``.
    """

    study_day: str | None
    modality: str
    body_region: str
    procedure_code: str
    cancelled: bool


@dataclass(frozen=True, slots=True)
class StoredForms:
    """The column values of a report row that its :class:`ReportRecord` alone decides (docs/store.md,
    "Compact storage" and "Version summaries"); ``listener.store.rows.stored_forms`` makes them.

    Attributes:
        route: the route's essentials (``reports.route_json``).
        explanation: the route's explanation, compressed (``reports.explanation``), or None.
        stage: the report's stage (the version summary's, before its message's state is known).
        report_time: the report's own time, or None.
        observation_time: its observation time, or None.
        summary: the version summary's text (``reports.summary``).
        prior: what a prior look-up reads of the row.
        report_json: the SQLite form of the report JSON (``compact.pack_json``), or None when not made.
        findings_json: the SQLite form of the findings JSON, or None when not made.
    """

    route: str
    explanation: bytes | None
    stage: int
    report_time: datetime | None
    observation_time: datetime | None
    summary: str
    prior: PriorFacts
    report_json: str | bytes | None = None
    findings_json: str | bytes | None = None


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """An explicit peer-review score of an accession (docs/outcomes.md, "Explicit scores").

    Attributes:
        accession: the scored accession (exact, not empty).
        grade: ``1``, ``2a``, ``2b``, ``3a`` or ``3b``.
        source: ``obx`` (the final ORU), ``fhir``, ``csv`` (an import) or ``cli``.
        scorer: who scored ("" when unknown); cut to :data:`SCORER_MAX`.
        note: free text ("" when none); cut to :data:`TEXT_MAX`.
        scored_at: when it was scored (aware).

    A score is stored once: the same (accession, source, scorer, grade,
    scored_at) recorded again adds nothing.

    Raises:
        ValueError: an empty accession, an unknown grade or source, a naive time.
    """

    accession: str
    grade: ScoreGrade
    source: ScoreSource
    scored_at: datetime
    scorer: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if not self.accession:
            raise ValueError("a score needs an accession")
        _require_one_of(self.grade, SCORE_GRADES, "grade")
        _require_one_of(self.source, SCORE_SOURCES, "source")
        require_aware(self.scored_at, "scored_at")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A routing message to send to a destination once the message is stored.

    Attributes:
        destination: the configured destination name (one worker each).
        accession: ordering key: rows of one (destination, accession) are sent in
            the order they were stored, never overtaking each other.
        control_id: MSH-10 of the outbound message (the RIS deduplicates on it).
        payload: the encoded outbound message, ready to frame.
    """

    destination: str
    accession: str
    control_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """Everything about one received message that must be stored before we answer.

    Attributes:
        control_id: MSH-10 (or the FHIR resource id).
        sender_application: MSH-3 (or the FHIR client identity).
        sender_facility: MSH-4 (may be empty).
        feed: the mapping feed the sender was matched to.
        received: when the message was received (aware).
        raw: the message bytes as received, or None when not kept.
        transport: ``mllp`` or ``http``.
        state: ``processed``, ``rejected`` or ``ignored``.
        ack_code: AA/AE/AR/CA/CE/CR (or the HTTP equivalent the server chose).
        ack: the exact answer bytes we will send, re-sent to duplicates.
        error_code: HL7 table 0357 code, or "" when there is none.
        reports: the reports decoded from the message.
        outbox: the routing messages to send, in order.
        replaces: the control id of a rejected message of the same sender that
            this one is the accepted resend of (FHIR: a refused body is kept
            under a key made from its bytes, the accepted one under the
            resource's identity); "" when none.
        scores: explicit scores the message carried, stored with its pk in
            the same transaction (idempotent, see :class:`ScoreRecord`).
        packed_raw: the stored form of ``raw`` made ahead
            (``listener.store.compact.pack_raw``: a worker process makes it, off
            the daemon's writer thread), or None: the writer makes it. Unused
            when ``raw`` is None; derived from ``raw``, so equality ignores it.

    Raises:
        ValueError: on a naive ``received`` or an unknown transport or state.
    """

    control_id: str
    sender_application: str
    sender_facility: str
    feed: str
    received: datetime
    raw: bytes | None
    transport: Transport
    state: MessageState
    ack_code: str
    ack: bytes
    error_code: str = ""
    reports: tuple[ReportRecord, ...] = ()
    outbox: tuple[OutboxItem, ...] = ()
    replaces: str = ""
    scores: tuple[ScoreRecord, ...] = ()
    packed_raw: bytes | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        require_aware(self.received, "received")
        _require_one_of(self.transport, TRANSPORTS, "transport")
        _require_one_of(self.state, MESSAGE_STATES, "state")


# -------------------------------------------------------------------------- out


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What the store knows after a save or a duplicate lookup.

    Attributes:
        message_pk: the store's id of the message row (the original one for a duplicate).
        duplicate: True when the (application, facility, control id) key was
            already stored; nothing new was written.
        ack: the answer to send: for a duplicate, the one stored the first time.
        ack_code: the code of that answer.
        state: the stored message's state ("" when not read).
        processing: the number of the stored processing (1 = the first;
            more after a reprocess or the resend of a rejected message).
    """

    message_pk: int
    duplicate: bool
    ack: bytes
    ack_code: str
    state: str = ""
    processing: int = 1


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """One stored message, without its bodies, for ``overread messages``.

    ``control_id`` is the ``message_id`` of docs/cli.md's JSON; ``message_pk`` is the
    cursor to pass as ``after=`` for the next page.
    """

    message_pk: int
    control_id: str
    sender_application: str
    sender_facility: str
    feed: str
    received: datetime
    transport: str
    state: str
    ack_code: str
    error_code: str
    report_count: int
    raw_kept: bool
    processing: int = 1


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One stored report of a message's processing, as stored (JSON text)."""

    seq: int
    accession: str
    bucket: str
    report_json: str
    findings_json: str
    route_json: str


@dataclass(frozen=True, slots=True)
class Processing:
    """An earlier processing of a message, kept when a later one replaced it.

    Attributes:
        number: 1 for the first processing, then 2, 3...
        processed: when it ran.
        superseded: when the next processing replaced it.
        superseded_by: why: ``resend`` (the sender resent a rejected message)
            or ``reprocess by <actor>``.
        raw: the bytes it read, when the next processing read different bytes
            (a resend may differ); None when they were the same.
        reports: its reports (accession, bucket, report, findings, route).
    """

    number: int
    processed: datetime
    superseded: datetime
    superseded_by: str
    feed: str
    state: str
    ack_code: str
    error_code: str
    ack: bytes
    raw: bytes | None
    reports: tuple[ReportRow, ...]


@dataclass(frozen=True, slots=True)
class PriorStudy:
    """One earlier study of a patient as stored: its accession's latest report.

    Attributes:
        accession: the prior's accession number.
        study_date: the sender's local date of the exam (the report's
            observation time; its report time, then its receive time, when
            the observation is missing).
        modality, body_region, procedure_code: as the report stored them
            ("" when it had none; QA derives them from the procedure code).
    """

    accession: str
    study_date: date
    modality: str = ""
    body_region: str = ""
    procedure_code: str = ""


def prior_lookup_wanted(patient_id: str, before: datetime, limit: int) -> bool:
    """Check a ``prior_studies`` call's arguments; False when there is nothing to read (``limit`` <= 0).

    Raises:
        ValueError: ``patient_id`` is empty or ``before`` is naive.
    """
    require_aware(before, "before")
    if not patient_id:
        raise ValueError("patient_id must not be empty: a report with no patient has no priors to look up")
    return limit > 0


def read_prior_studies(
    read: Callable[[str, str, Sequence[object]], Sequence[Sequence[Any]]],
    sql: str,
    patient_id: str,
    patient_authority: str,
    before: datetime,
    exclude_accession: str,
    limit: int,
    stamp: Callable[[datetime], object] = lambda moment: moment,
) -> tuple[PriorStudy, ...]:
    """A SQL store's ``prior_studies`` through ``read`` (what, statement, parameters -> rows): its
    store's reader or a worker process's own. ``sql`` takes the patient id, the authority, the
    accession to leave out, ``stamp(before)`` (a time as the backend stores it) and the limit.

    Raises:
        ValueError: ``patient_id`` is empty or ``before`` is naive.
    """
    if not prior_lookup_wanted(patient_id, before, limit):
        return ()
    return prior_studies_of(
        read("reading prior studies", sql, (patient_id, patient_authority, exclude_accession, stamp(before), limit))
    )


def prior_studies_of(rows: Iterable[Sequence[Any]]) -> tuple[PriorStudy, ...]:
    """The PriorStudy of each (accession, study day, modality, body region, procedure code) row,
    in order; a row whose day is in no ISO form is none (no date to compare). Both SQL stores'
    ``prior_studies`` read such rows."""
    out = []
    for accession, day, modality, region, code in rows:
        try:
            study_date = date.fromisoformat(str(day))
        except ValueError:
            continue  # a time the report stored in no ISO form: no date to compare, no prior
        out.append(PriorStudy(str(accession), study_date, str(modality), str(region), str(code)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One thing that happened to an outbox row: an attempt's result or an operator action."""

    at: datetime
    event: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action, as recorded (ids and counts only, never patient data).

    Attributes:
        actor: the OS user (CLI) or the HTTP client name.
        via: ``cli``, ``http`` or ``console`` (the web console).
        action: ``reprocess``, ``outbox resend``, ``outbox retry``, ``outbox purge``, ``outbox kick``...
        target: JSON text of what the action named (message pks, row ids, filters).
        rows: how many rows it changed.
        detail: a short note (``dry-run``, ``force``...).
    """

    id: int
    at: datetime
    actor: str
    via: str
    action: str
    target: str
    rows: int
    detail: str


@dataclass(frozen=True, slots=True)
class DestinationState:
    """A destination's connection state as the outbound worker last recorded it."""

    destination: str
    connect_failures: int
    last_connect_error: str
    last_connect_error_at: datetime | None
    next_connect_at: datetime | None
    kick_requested_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row as stored.

    Attributes:
        id: the row id; increases with commit order, so it orders an accession's rows.
        attempts: delivery attempts made so far (delivered, failed or dead-lettered).
        next_attempt_at: the row is not due before this time.
        last_error: text of the last failure ("" when none).
        created: when the row was stored (the message's received time).
        delivered_at: when it was delivered, or None.
        lease_holder: the instance id of the outbound worker that claimed the
            row for delivery ("" when no worker holds it; docs/outbound.md, "Leases").
        lease_expires: when that claim lapses unless renewed (None with no holder).
    """

    id: int
    destination: str
    accession: str
    control_id: str
    payload: bytes
    state: OutboxState
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created: datetime
    delivered_at: datetime | None
    message_pk: int = 0
    resent_from: int | None = None
    lease_holder: str = ""
    lease_expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxClaim:
    """A row :meth:`Store.outbox_claim` leased to a worker.

    Attributes:
        row: the row as it is after the claim (``lease_holder`` is the claimant).
        taken_over_from: the instance whose lease on the row had expired when it
            was claimed ("" when the row was not leased: new, released, or
            recorded by its last holder).
    """

    row: OutboxRow
    taken_over_from: str = ""


@dataclass(frozen=True, slots=True)
class MessageDetail:
    """Everything stored about one message, for ``overread show``.

    Attributes:
        summary: the message's row (current processing).
        processed: when the current processing ran.
        ack: the answer stored for it (sent to duplicates).
        raw: the bytes as received (None when purged or not kept).
        reports: the current processing's reports.
        processings: earlier processings, oldest first.
        outbox: the routing messages it produced, each with its events.
    """

    summary: MessageSummary
    processed: datetime
    ack: bytes
    raw: bytes | None
    reports: tuple[ReportRow, ...]
    processings: tuple[Processing, ...]
    outbox: tuple[tuple[OutboxRow, tuple[OutboxEvent, ...]], ...]


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """How many rows one destination has in one state, and the oldest one's age.

    ``oldest_age`` is measured from the oldest row's ``created`` to the ``now``
    given to :meth:`Store.outbox_stats`.
    """

    destination: str
    state: OutboxState
    count: int
    oldest_age: timedelta


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Queue depth by destination and state, and the oldest pending row's age."""

    depth: tuple[OutboxDepth, ...]
    oldest_pending_age: timedelta | None

    def count(self, state: OutboxState, destination: str | None = None) -> int:
        """Return how many rows are in ``state`` (for one destination or all)."""
        return sum(
            d.count for d in self.depth if d.state == state and (destination is None or d.destination == destination)
        )


@dataclass(frozen=True, slots=True)
class StoredReport:
    """One stored report of a processed message, with the message's receive time and transport.

    Attributes:
        report_pk: the store's id of the report; larger is newer (searches give newest first).
    """

    report_pk: int
    received: datetime
    transport: str
    accession: str
    report_json: str
    findings_json: str
    route_json: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One stored report of an accession, with the message that carried it (``overread history``).

    Attributes:
        message_pk: the store's id of the message.
        seq: the report's position in that message's current processing.
        control_id: MSH-10 (or the FHIR control id) of the message.
        received: when the message was received.
        transport: ``mllp`` or ``http``.
        feed: the mapping feed of the message.
        report_json: the serialized Report (status, reader, times, text...).
        findings_json: the serialized QA findings (a JSON array).
        bucket: the routing bucket.
        raw_kept: True while the message's raw bytes are stored (not purged).
    """

    message_pk: int
    seq: int
    control_id: str
    received: datetime
    transport: str
    feed: str
    report_json: str
    findings_json: str
    bucket: str
    raw_kept: bool


@dataclass(frozen=True, slots=True)
class LoneVersions:
    """Stored versions of accessions that have no other report row, counted alike
    (:meth:`Store.window_versions`; docs/store.md, "Version summaries").

    Attributes:
        window: which of the asked clinical windows they fall in (its index).
        summary: their :meth:`listener.outcomes.history.ReadSummary.to_text`.
        prelim_minutes: a preliminary's minutes from observation to report
            (:func:`listener.outcomes.history.prelim_minutes`; None: not counted).
        count: how many versions.
        first_accession: the smallest accession among them.
    """

    window: int
    summary: str
    prelim_minutes: float | None
    count: int
    first_accession: str


@dataclass(frozen=True, slots=True)
class WindowVersions:
    """The versions of a receive window, split (:meth:`Store.window_versions`; docs/store.md,
    "Version summaries").

    Attributes:
        multi: the accessions with another stored report row (at any time): those whose
            versions may pair (sorted by code point).
        lone: the other accessions' one version each, counted by window, summary and
            prelim minutes (the order of the groups is unspecified).
    """

    multi: tuple[str, ...]
    lone: tuple[LoneVersions, ...]


@dataclass(frozen=True, slots=True)
class StoredScore:
    """An explicit score as stored.

    Attributes:
        id: the store's id; larger is recorded later.
        score: what was recorded.
        message_pk: the message that carried it (None: an import or the CLI).
    """

    id: int
    score: ScoreRecord
    message_pk: int | None


@dataclass(frozen=True, slots=True)
class CachedComparison:
    """One compared pair's result as the comparisons cache keeps it (derived data).

    Attributes:
        key: the digest of everything the result depends on (see
            :func:`listener.outcome_data.comparison_key`); the store never
            interprets it.
        accession: the accession the pair belongs to.
        computed_at: when it was computed (aware).
        result_json: the comparison's JSON text.

    Raises:
        ValueError: an empty key or a naive time.
    """

    key: str
    accession: str
    computed_at: datetime
    result_json: str

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a cached comparison needs a key")
        require_aware(self.computed_at, "computed_at")


#: The bin widths :meth:`Store.traffic` and :meth:`Store.bucket_mix` group by (UTC hours or days).
Step = Literal["hour", "day"]
STEPS: tuple[str, ...] = get_args(Step)


def require_step(step: str) -> None:
    """Refuse a bin width other than ``hour`` or ``day``.

    Raises:
        ValueError: an unknown step.
    """
    _require_one_of(step, STEPS, "step")


def bin_start(value: datetime, step: str) -> datetime:
    """The start of the UTC hour or day ``value`` falls in (aware UTC)."""
    value = value.astimezone(UTC)
    if step == "day":
        return value.replace(hour=0, minute=0, second=0, microsecond=0)
    return value.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class TrafficBin:
    """How many messages of one kind were received in one UTC hour or day (the console overview).

    Attributes:
        start: the bin's first instant (aware UTC, on the hour or at midnight).
        sender_application, sender_facility, transport, ack_code, state: the
            messages' stored values (the current processing's state and answer).
        count: how many messages received in the bin have exactly these values.
    """

    start: datetime
    sender_application: str
    sender_facility: str
    transport: str
    ack_code: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class BucketBin:
    """How many reports were routed to one bucket among the messages received in one UTC hour or day.

    Attributes:
        start: the bin's first instant (aware UTC), by the message's receive time.
        bucket: the routing bucket as stored.
        count: the reports of the current processings of those messages in that bucket.
    """

    start: datetime
    bucket: str
    count: int


#: Report rows :meth:`Store.report_history` returns unless told otherwise.
HISTORY_LIMIT = 200


# --------------------------------------------------------------------- protocol


class ReportReader(Protocol):
    """Read-only searches over the reports of processed messages, newest first (the FHIR GET endpoints).

    Blocking reads: reactor code calls them from a thread. Only reports of
    messages in state ``processed`` are searched. The JSON texts are matched by
    these fields only: ``report_json`` ``status`` and ``fhir_id``,
    ``route_json`` ``pool`` and ``corrections``; ``findings_json`` ``[]`` means
    no findings and ``route_json`` ``null`` means not routed.
    """

    def routed(self, *, pool: str | None, limit: int) -> list[StoredReport]:
        """Reports with a route (optionally to one pool)."""
        ...

    def with_findings(
        self, *, fhir_id: str | None = None, accession: str | None = None, limit: int
    ) -> list[StoredReport]:
        """Reports that have findings: one by its FHIR id (HTTP messages only), or all of an accession."""
        ...

    def message_of(self, fhir_id: str) -> int | None:
        """The message_pk of the HTTP message that carried the report with this FHIR id (the id of
        the ``Location`` a POST answered; docs/http-api.md), or None."""
        ...

    def tasks(self, *, status: str | None, pool: str | None, limit: int) -> list[tuple[StoredReport, datetime | None]]:
        """Routed reports that stand for a Task, each with when its Task was completed (None: open).

        A report in bucket ``release`` with no ``corrections`` in its route
        stands for no Task. A Task is completed by the first later report of
        the same (non-empty) accession at a further stage (stages: final 1,
        corrected and amended 2, anything else 0); the datetime is that
        report's message's receive time. ``status``: "requested" (open only),
        "completed", or None (both).
        """
        ...

    def open_task_pools(self, *, limit: int) -> list[TaskPool]:
        """The newest ``limit`` open Tasks (those of ``tasks(status="requested", pool=None,
        limit=limit)``) counted by pool, with each pool's oldest receive time; sorted by pool.

        Counted by the database: no report's JSON is read (the console's worklist).
        """
        ...


@dataclass(frozen=True, slots=True)
class TaskPool:
    """The open Tasks of one pool (:meth:`ReportReader.open_task_pools`).

    Attributes:
        pool: the routes' ``pool`` ("" when they name none).
        open: how many open Tasks.
        oldest: the earliest receive time among them.
    """

    pool: str
    open: int
    oldest: datetime


class SchemaStep(Protocol):
    """One upgrade step an open ran on an older store (the daemon logs each)."""

    @property
    def version(self) -> int:
        """The schema version the step produced."""
        ...

    @property
    def label(self) -> str:
        """A short name of what the step changed."""
        ...


class Store(Protocol):
    """The durable store: messages, their results and the outbound queue.

    Durability: when :meth:`save` returns (or the future of :meth:`submit`
    resolves), the message, its reports and its outbox rows are committed
    together and durable; only then may the server answer the sender.

    Errors: every storage failure raises :class:`listener.errors.StoreError`
    whose text never contains stored data. Caller bugs (naive datetimes, bad
    arguments) raise ``ValueError``.

    Outbox order: rows of one (destination, accession) are handed out oldest
    first, one at a time: :meth:`outbox_due` returns a row only when it is the
    oldest *pending* row of its (destination, accession) and it is due. A
    dead-lettered row no longer blocks the rows after it; it can be revived with
    :meth:`outbox_retry` only while no later row of its (destination, accession)
    has been delivered, because sending it then would overwrite a newer decision
    at the RIS with an older one.

    Leases (docs/outbound.md, "Leases"): workers take rows with
    :meth:`outbox_claim`, which hands out the same rows as :meth:`outbox_due`
    minus those another worker holds, so any number of daemons on one store
    send each row from one of them at a time, and an accession's next row only
    after its previous one was recorded. Outbox ids follow commit order within
    each (destination, accession), on every backend.
    """

    def find_duplicate(self, sender_application: str, sender_facility: str, control_id: str) -> SaveResult | None:
        """Return the stored answer for this key (``duplicate=True``), or None.

        A blocking read: reactor code calls it from a thread (the MLLP intake
        has a lookup executor for it).
        """
        ...

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        """Queue ``record`` for saving; the future resolves once it is durable."""
        ...

    def save(self, record: MessageRecord) -> SaveResult:
        """Save ``record`` durably (blocking), or return the stored duplicate."""
        ...

    def messages(
        self,
        *,
        after: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        state: str | None = None,
        ack_code: str | None = None,
        sender_application: str | None = None,
        sender_facility: str | None = None,
        control_id: str | None = None,
        transport: str | None = None,
        accession: str | None = None,
        patient_id: str | None = None,
        patient_authority: str | None = None,
        bucket: str | None = None,
        before: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[MessageSummary]:
        """Iterate stored messages in storage order (``message_pk``), between the cursors
        ``after`` and ``before`` (both exclusive), in a time window, and with exact values
        for the other filters (accession, patient and bucket: a report's of the current
        processing). The MSH keys (``sender_application``, ``sender_facility``,
        ``control_id``) are text as typed: each matches any stored form of it
        (listener/hl7v2/keys.py, ``searched_keys``).

        ``newest_first`` gives the largest ``message_pk`` first: the primary key is walked
        backwards, never sorted, so a page of the newest costs what a page of the oldest
        does (docs/store.md, "Newest first"); page on with ``before`` set to the last
        message_pk seen.
        """
        ...

    def buckets_of(self, message_pks: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """The routing buckets (distinct, sorted, empty ones left out) of each given message's
        current reports, in one read per few hundred messages (the ``reports_message_bucket``
        index); a message with no such report, or not stored, is left out."""
        ...

    def traffic(self, since: datetime, until: datetime, *, step: str) -> tuple[TrafficBin, ...]:
        """Messages received in ``[since, until)`` counted by UTC bin (``step``: ``hour`` or
        ``day``), sender application and facility, transport, ack code and state.

        Ordered by bin start, then sender application, sender facility,
        transport, ack code and state; empty bins are left out. Counted by the
        database (GROUP BY) over the window's rows only (the ``messages_received``
        index). A blocking read: call it from a thread.

        Raises:
            ValueError: a naive time or an unknown step.
        """
        ...

    def bucket_mix(self, since: datetime, until: datetime, *, step: str) -> tuple[BucketBin, ...]:
        """The reports of messages received in ``[since, until)`` counted by UTC bin of the
        message's receive time and routing bucket, ordered by bin start then bucket.

        Only the current processing's reports count (a reprocessed message's
        earlier reports are kept apart and left out); messages of every state
        count. A blocking read: call it from a thread.

        Raises:
            ValueError: a naive time or an unknown step.
        """
        ...

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]:
        """A patient's earlier studies, newest stored first, at most ``limit``.

        The patient is its identifier and assigning authority, both exact
        (never its name). A study is an accession other than ``exclude_accession``
        with a processed message received before ``before``; its latest stored
        report speaks for it, and an accession whose latest report is
        cancelled is no study. A blocking read: call it from a thread.
        """
        ...

    def report_history(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[HistoryEntry, ...]:
        """Every stored report of ``accession`` (exact) from processed messages, at most ``limit``.

        Storage order (message, then the report's position in it): the
        current processing's reports only. An empty accession has no
        history. A blocking read: call it from a thread.
        """
        ...

    def report_histories(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[HistoryEntry, ...]]:
        """:meth:`report_history` of many accessions in one call: each given accession (empty
        ones and those with no report left out) with its rows, at most ``limit`` each."""
        ...

    def accessions_received(self, since: datetime, until: datetime) -> tuple[str, ...]:
        """The accessions (not empty, sorted, distinct) having a report of a processed message
        received in ``[since, until)``. A blocking read: call it from a thread.

        Work is bounded by the messages received in the window (an index on
        the receive time), not by the whole store.
        """
        ...

    def window_versions(
        self, since: datetime, until: datetime, windows: Sequence[tuple[datetime, datetime]]
    ) -> WindowVersions:
        """The versions of :meth:`accessions_received`, split in one read. ``multi``: the
        accessions that have another stored report row (at any time, a version or not): those
        whose versions may pair. ``lone``: the other accessions' one version (which pairs with
        none) whose clinical time is in each of ``windows`` (``[start, end)``), counted by window,
        summary and prelim minutes. A blocking read.

        Read from the stored version summaries (docs/store.md, "Version summaries"), never
        from the report JSON. Work is bounded by the window's reports (the ``reports_versions``
        index) and look-ups of their accessions (``reports_accession``).
        """
        ...

    def cached_comparisons(self, keys: Sequence[str]) -> dict[str, str]:
        """The comparisons cache's result JSON of each of ``keys`` found in it (absent keys are left out)."""
        ...

    def cache_comparisons(self, items: Sequence[CachedComparison]) -> int:
        """Keep compared pairs' results in the comparisons cache (a key already there is
        replaced) in one transaction; return how many were written."""
        ...

    def drop_comparisons(self) -> int:
        """Empty the comparisons cache (derived data; later reads compute it again); return the rows dropped."""
        ...

    def newest_message_pk(self) -> int:
        """The largest message_pk stored (0 when none)."""
        ...

    def record_scores(self, scores: Sequence[ScoreRecord]) -> int:
        """Store explicit scores (no message) in one transaction: all or none; return how many were new.

        A score already stored (same accession, source, scorer, grade and
        scored_at) is skipped, not an error.
        """
        ...

    def scores(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[StoredScore, ...]:
        """An accession's explicit scores (exact), in the order they were recorded, at most ``limit``."""
        ...

    def scores_of_accessions(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[StoredScore, ...]]:
        """:meth:`scores` of many accessions in one call: each given accession having a score (empty
        ones and those with none left out) with its scores, at most ``limit`` each."""
        ...

    def message_detail(self, message_pk: int) -> MessageDetail | None:
        """Everything stored about one message (bodies, reports, earlier processings, outbox rows)."""
        ...

    def replace_processing(
        self,
        message_pk: int,
        record: MessageRecord,
        *,
        now: datetime,
        superseded_by: str,
        expected_processing: int | None,
    ) -> SaveResult:
        """Store ``record`` as a new processing of a stored message; the current one is kept, numbered."""
        ...

    def record_audit(
        self, *, at: datetime, actor: str, via: str, action: str, target: dict[str, Any], rows: int, detail: str = ""
    ) -> int:
        """Append an operator action to the audit log; return its id."""
        ...

    def audit(
        self, *, since: datetime | None = None, action: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Audit entries, oldest first."""
        ...

    def outbox_resend(
        self, ids: Sequence[int], now: datetime, *, force: bool = False, note: str = ""
    ) -> list[tuple[int, int]]:
        """Queue delivered rows again as new rows; return (old id, new id) pairs."""
        ...

    def outbox_kick(self, destination: str | None, now: datetime, note: str = "") -> int:
        """Make waiting rows due now and ask the worker(s) to reconnect now; return the pending rows."""
        ...

    def outbox_rows_of(self, *, accession: str, destination: str | None = None) -> list[OutboxRow]:
        """An accession's outbox rows, by id."""
        ...

    def destination_states(self, destination: str | None = None) -> list[DestinationState]:
        """Each destination's recorded connection state."""
        ...

    def destination_connect_failed(
        self, destination: str, now: datetime, failures: int, error_text: str, next_connect_at: datetime
    ) -> None:
        """Record a failed connection attempt of a destination's worker."""
        ...

    def destination_connected(self, destination: str, now: datetime) -> None:
        """Record a successful connection after failures."""
        ...

    def message_raw(self, message_pk: int) -> bytes | None:
        """Return the raw bytes of a message, or None when purged, not kept or unknown."""
        ...

    def outbox_due(self, destination: str, now: datetime, limit: int = 100) -> list[OutboxRow]:
        """Return rows ready to send now: each the oldest pending of its accession (a read, not a lease)."""
        ...

    def outbox_claim(
        self, destination: str, holder: str, now: datetime, lease_until: datetime, limit: int = 1
    ) -> list[OutboxClaim]:
        """Lease up to ``limit`` rows of ``destination`` to ``holder`` until ``lease_until``, oldest first.

        A row is claimable when it is pending, due (``next_attempt_at <= now``),
        the oldest pending row of its (destination, accession), and not leased
        (no holder, or a lease that expired at or before ``now``). Claims are
        exclusive: two claimants, in one process or two, never both get a row
        (PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite and memory:
        one writer). Taking over an expired lease of another holder is recorded
        as the row's ``lease_taken_over`` event.
        """
        ...

    def outbox_renew(self, row_id: int, holder: str, lease_until: datetime) -> bool:
        """Extend ``holder``'s lease on a pending row; False when the row is no longer pending or leased to it."""
        ...

    def outbox_release(self, holder: str, destination: str | None = None) -> int:
        """Drop ``holder``'s leases on pending rows (of one destination or all); return how many."""
        ...

    def outbox_delivered(self, row_id: int, now: datetime, *, holder: str | None = None) -> bool:
        """Mark a pending row delivered and drop its lease; False if it was not pending.

        With ``holder``, only while the row is leased to ``holder``: a worker
        whose lease was taken over never overwrites the new holder's result.
        """
        ...

    def outbox_failed(
        self, row_id: int, now: datetime, next_attempt_at: datetime, error_text: str, *, holder: str | None = None
    ) -> bool:
        """Count a failed attempt, schedule the next and drop the lease; False if not pending (or not ``holder``'s)."""
        ...

    def outbox_dead(self, row_id: int, now: datetime, error_text: str, *, holder: str | None = None) -> bool:
        """Count a final failed attempt, dead-letter the row and drop the lease; False if not pending (or not ``holder``'s)."""
        ...

    def outbox_list(
        self,
        state: OutboxState | None = None,
        *,
        destination: str | None = None,
        limit: int | None = None,
    ) -> list[OutboxRow]:
        """Return outbox rows (optionally of one state and destination) by id."""
        ...

    def outbox_retry(self, ids: Sequence[int] | None, now: datetime, *, force: bool = False) -> tuple[int, ...]:
        """Revive dead rows (the given ids, or all when None); return the revived ids."""
        ...

    def outbox_purge(
        self,
        *,
        delivered_before: datetime | None = None,
        dead_ids: Sequence[int] = (),
        destination: str | None = None,
    ) -> int:
        """Delete delivered rows older than a time (of one destination) and the given dead rows; return the count."""
        ...

    def outbox_stats(self, now: datetime) -> OutboxStats:
        """Return queue depth by destination and state and the oldest pending age."""
        ...

    def purge_raw(self, older_than: datetime) -> int:
        """Drop the raw bytes of messages received before ``older_than``; return the count."""
        ...

    @property
    def reports(self) -> ReportReader:
        """The searches over stored reports (closed with the store)."""
        ...

    @property
    def migrations_run(self) -> tuple[SchemaStep, ...]:
        """The upgrade steps this open ran on an older store, oldest first (empty otherwise)."""
        ...

    def probe(self, now: datetime) -> None:
        """Make one real durable write (the health probe); raise StoreError when it fails."""
        ...

    def health_reason(self) -> str:
        """Why the store is unhealthy, or "" when it is healthy."""
        ...

    def health(self) -> bool:
        """Return True when the store can read and its writer is running."""
        ...

    def close(self) -> None:
        """Finish queued writes, then release every connection and thread."""
        ...
