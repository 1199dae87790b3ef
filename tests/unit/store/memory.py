"""An in-memory :class:`~listener.store.base.Store` for the contract tests, and nothing else.

A test double, not a product backend: dicts and lists, kept only while the
object lives. It exists to show that the Store protocol is the whole contract:
the shared store tests run against it and against SQLite alike
(``conftest.py``), so a behaviour the tests rely on that only SQLite has shows
up as a failure here.

Writes go through the real :class:`~listener.store.writer.GroupCommitWriter`,
driving a :class:`MemorySession`: a transaction is a copy of the tables to go
back to, a savepoint another one, so group commit (one job's failure undoes
only its own writes) is exercised without SQLite. Reads see committed state
only: the session holds the tables' lock from begin to commit or rollback.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from listener.errors import StoreError
from listener.hl7v2.keys import searched_keys
from listener.store.base import (
    HISTORY_LIMIT,
    OUTBOX_STATES,
    SCORER_MAX,
    TEXT_MAX,
    AuditEntry,
    BucketBin,
    CachedComparison,
    DestinationState,
    HistoryEntry,
    LoneVersions,
    MessageDetail,
    MessageRecord,
    MessageSummary,
    OutboxClaim,
    OutboxDepth,
    OutboxEvent,
    OutboxRow,
    OutboxState,
    OutboxStats,
    PriorStudy,
    Processing,
    ReportRow,
    SaveResult,
    SchemaStep,
    ScoreRecord,
    StoredReport,
    StoredScore,
    TaskPool,
    TrafficBin,
    WindowVersions,
    audit_target_json,
    bin_start,
    open_windows,
    require_aware,
    require_step,
)
from listener.store.rows import version_columns
from listener.store.writer import GroupCommitWriter

T = TypeVar("T")

__all__ = ["MemoryStore"]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _stamp(value: datetime) -> str:
    """A time as the event texts show it (fixed-width UTC)."""
    return _utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True)
class _Message:
    pk: int
    control_id: str
    sender_application: str
    sender_facility: str
    feed: str
    received: datetime
    transport: str
    state: str
    ack_code: str
    error_code: str
    ack: bytes
    raw: bytes | None
    processing: int = 1
    processed: datetime | None = None

    def key(self) -> tuple[str, str, str]:
        return (self.sender_application, self.sender_facility, self.control_id)


@dataclass(frozen=True)
class _Report:
    id: int
    message_pk: int
    row: ReportRow
    patient_id: str
    patient_authority: str


@dataclass
class _Tables:
    """Everything the store holds. Every row is immutable (a change replaces it), so a copy of
    the containers is a full snapshot for a transaction's or a savepoint's undo."""

    messages: dict[int, _Message] = field(default_factory=dict)
    reports: list[_Report] = field(default_factory=list)
    processings: list[tuple[int, Processing]] = field(default_factory=list)
    outbox: dict[int, OutboxRow] = field(default_factory=dict)
    events: list[tuple[int, OutboxEvent]] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    destinations: dict[str, DestinationState] = field(default_factory=dict)
    last_id: dict[str, int] = field(default_factory=dict)
    probed: datetime | None = None
    scores: list[StoredScore] = field(default_factory=list)
    comparisons: dict[str, CachedComparison] = field(default_factory=dict)

    def next_id(self, table: str) -> int:
        """Ids are never reused, even after a delete."""
        self.last_id[table] = self.last_id.get(table, 0) + 1
        return self.last_id[table]

    def snapshot(self) -> _Tables:
        return _Tables(
            dict(self.messages),
            list(self.reports),
            list(self.processings),
            dict(self.outbox),
            list(self.events),
            list(self.audit),
            dict(self.destinations),
            dict(self.last_id),
            self.probed,
            list(self.scores),
            dict(self.comparisons),
        )

    def restore(self, saved: _Tables) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(saved, f.name))

    def find(self, app: str, facility: str, control_id: str) -> _Message | None:
        return next((m for m in self.messages.values() if m.key() == (app, facility, control_id)), None)

    def reports_of(self, pk: int) -> tuple[ReportRow, ...]:
        return tuple(sorted((r.row for r in self.reports if r.message_pk == pk), key=lambda r: r.seq))

    def add_event(self, row_id: int, at: datetime, event: str, detail: str = "") -> None:
        self.events.append((row_id, OutboxEvent(_utc(at), event, detail[:TEXT_MAX])))


class MemorySession:
    """The writer's :class:`~listener.store.writer.Session` over :class:`_Tables`."""

    def __init__(self, tables: _Tables, lock: threading.Lock) -> None:
        self.handle = tables
        self._lock = lock
        self._begun: _Tables | None = None
        self._job: _Tables | None = None

    @property
    def in_transaction(self) -> bool:
        return self._begun is not None

    def begin(self) -> None:
        self._lock.acquire()
        self._begun = self.handle.snapshot()

    def savepoint(self) -> None:
        self._job = self.handle.snapshot()

    def release(self) -> None:
        self._job = None

    def rollback_to(self) -> None:
        assert self._job is not None
        self.handle.restore(self._job)
        self._job = None

    def commit(self) -> None:
        self._begun = None
        self._lock.release()

    def rollback(self) -> None:
        assert self._begun is not None
        self.handle.restore(self._begun)
        self._begun = None
        self._lock.release()

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ writes


def _summary(t: _Tables, m: _Message) -> MessageSummary:
    return MessageSummary(
        message_pk=m.pk,
        control_id=m.control_id,
        sender_application=m.sender_application,
        sender_facility=m.sender_facility,
        feed=m.feed,
        received=m.received,
        transport=m.transport,
        state=m.state,
        ack_code=m.ack_code,
        error_code=m.error_code,
        report_count=len(t.reports_of(m.pk)),
        raw_kept=m.raw is not None,
        processing=m.processing,
    )


def _insert_children(t: _Tables, pk: int, record: MessageRecord, created: datetime) -> None:
    for seq, r in enumerate(record.reports):
        row = ReportRow(seq, r.accession, r.bucket, r.report_json, r.findings_json, r.route_json)
        t.reports.append(_Report(t.next_id("reports"), pk, row, r.patient_id, r.patient_authority))
    for o in record.outbox:
        row_id = t.next_id("outbox")
        t.outbox[row_id] = OutboxRow(
            id=row_id,
            destination=o.destination,
            accession=o.accession,
            control_id=o.control_id,
            payload=o.payload,
            state="pending",
            attempts=0,
            next_attempt_at=created,
            last_error="",
            created=created,
            delivered_at=None,
            message_pk=pk,
        )
    _insert_scores(t, record.scores, pk)


def _insert_scores(t: _Tables, scores: Sequence[ScoreRecord], message_pk: int | None) -> int:
    def key(s: ScoreRecord) -> tuple[str, str, str, str, datetime]:
        return (s.accession, s.source, s.scorer, s.grade, _utc(s.scored_at))

    new = 0
    for s in scores:
        kept = dataclasses.replace(s, scorer=s.scorer[:SCORER_MAX], note=s.note[:TEXT_MAX], scored_at=_utc(s.scored_at))
        if any(key(old.score) == key(kept) for old in t.scores):
            continue
        t.scores.append(StoredScore(t.next_id("scores"), kept, message_pk))
        new += 1
    return new


def _never_accepted(t: _Tables, pk: int) -> bool:
    return not any(o.message_pk == pk for o in t.outbox.values()) and all(
        p.state == "rejected" for m, p in t.processings if m == pk
    )


def _stored_answer(m: _Message) -> SaveResult:
    return SaveResult(m.pk, True, m.ack, m.ack_code, m.state, m.processing)


def _replace_processing(
    t: _Tables, pk: int, record: MessageRecord, *, now: datetime, superseded_by: str, expected_processing: int | None
) -> SaveResult:
    m = t.messages.get(pk)
    if m is None:
        raise StoreError(f"message {pk} is not in the store")
    if expected_processing is not None and m.processing != expected_processing:
        raise StoreError(f"message {pk} was processed again meanwhile (now processing {m.processing}); run again")
    now = _utc(now)
    kept_raw = m.raw if (record.raw is not None and m.raw is not None and m.raw != record.raw) else None
    t.processings.append(
        (
            pk,
            Processing(
                number=m.processing,
                processed=m.processed or m.received,
                superseded=now,
                superseded_by=superseded_by[:TEXT_MAX],
                feed=m.feed,
                state=m.state,
                ack_code=m.ack_code,
                error_code=m.error_code,
                ack=m.ack,
                raw=kept_raw,
                reports=t.reports_of(pk),
            ),
        )
    )
    t.reports = [r for r in t.reports if r.message_pk != pk]
    t.messages[pk] = dataclasses.replace(
        m,
        feed=record.feed,
        state=record.state,
        ack_code=record.ack_code,
        error_code=record.error_code,
        ack=record.ack,
        processing=m.processing + 1,
        processed=now,
        raw=record.raw if record.raw is not None else m.raw,
        control_id=record.control_id,
    )
    _insert_children(t, pk, record, now)
    return SaveResult(pk, False, record.ack, record.ack_code, record.state, m.processing + 1)


def _insert(t: _Tables, record: MessageRecord) -> SaveResult:
    app, facility = record.sender_application, record.sender_facility
    if record.replaces and record.replaces != record.control_id:
        refused = t.find(app, facility, record.replaces)
        if refused is not None and refused.state == "rejected" and _never_accepted(t, refused.pk):
            taken = t.find(app, facility, record.control_id)
            if taken is not None:
                return _stored_answer(taken)
            return _replace_processing(
                t, refused.pk, record, now=record.received, superseded_by="resend", expected_processing=None
            )
    stored = t.find(app, facility, record.control_id)
    if stored is not None:
        same_outcome = (stored.state, stored.ack_code, stored.error_code) == (
            record.state,
            record.ack_code,
            record.error_code,
        )
        if (
            stored.state != "rejected"
            or record.state == "quarantined"
            or same_outcome
            or not _never_accepted(t, stored.pk)
        ):
            return _stored_answer(stored)
        return _replace_processing(
            t, stored.pk, record, now=record.received, superseded_by="resend", expected_processing=None
        )
    pk = t.next_id("messages")
    received = _utc(record.received)
    t.messages[pk] = _Message(
        pk,
        record.control_id,
        app,
        facility,
        record.feed,
        received,
        record.transport,
        record.state,
        record.ack_code,
        record.error_code,
        record.ack,
        record.raw,
    )
    _insert_children(t, pk, record, received)
    return SaveResult(pk, False, record.ack, record.ack_code, record.state)


def _update_pending(
    t: _Tables, row_id: int, now: datetime, event: str, detail: str, holder: str | None, **changes: Any
) -> bool:
    row = t.outbox.get(row_id)
    if row is None or row.state != "pending" or (holder is not None and row.lease_holder != holder):
        return False
    t.outbox[row_id] = dataclasses.replace(
        row, attempts=row.attempts + 1, lease_holder="", lease_expires=None, **changes
    )
    t.add_event(row_id, now, event, detail)
    return True


def _later(t: _Tables, row: OutboxRow, states: tuple[str, ...]) -> bool:
    """True when a later row of the row's (destination, accession) is in one of ``states``."""
    return any(
        o.destination == row.destination and o.accession == row.accession and o.id > row.id and o.state in states
        for o in t.outbox.values()
    )


# ------------------------------------------------------------------ report searches


def _json_field(text: str, name: str) -> Any:
    value = json.loads(text)
    return value.get(name) if isinstance(value, dict) else None


def _stage(text: str) -> int:
    return {"final": 1, "corrected": 2, "amended": 2}.get(str(_json_field(text, "status")), 0)


class MemoryReports:
    """The :class:`~listener.store.base.ReportReader` over a :class:`MemoryStore`'s committed tables."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def _processed(self) -> list[tuple[_Report, _Message]]:
        """Reports of processed messages, newest first."""
        t = self._store.tables
        rows = [(r, t.messages[r.message_pk]) for r in t.reports]
        return sorted(((r, m) for r, m in rows if m.state == "processed"), key=lambda rm: -rm[0].id)

    @staticmethod
    def _stored(r: _Report, m: _Message) -> StoredReport:
        return StoredReport(
            r.id, m.received, m.transport, r.row.accession, r.row.report_json, r.row.findings_json, r.row.route_json
        )

    def routed(self, *, pool: str | None, limit: int) -> list[StoredReport]:
        def search() -> list[StoredReport]:
            return [
                self._stored(r, m)
                for r, m in self._processed()
                if r.row.route_json != "null" and (pool is None or _json_field(r.row.route_json, "pool") == pool)
            ][:limit]

        return self._store.read(search)

    def with_findings(
        self, *, fhir_id: str | None = None, accession: str | None = None, limit: int
    ) -> list[StoredReport]:
        def search() -> list[StoredReport]:
            return [
                self._stored(r, m)
                for r, m in self._processed()
                if r.row.findings_json != "[]"
                and (
                    fhir_id is None or (m.transport == "http" and _json_field(r.row.report_json, "fhir_id") == fhir_id)
                )
                and (accession is None or r.row.accession == accession)
            ][:limit]

        return self._store.read(search)

    def message_of(self, fhir_id: str) -> int | None:
        def search() -> int | None:
            t = self._store.tables
            for r in sorted(t.reports, key=lambda r: -r.id):
                m = t.messages[r.message_pk]
                if m.transport == "http" and _json_field(r.row.report_json, "fhir_id") == fhir_id:
                    return r.message_pk
            return None

        return self._store.read(search)

    def tasks(self, *, status: str | None, pool: str | None, limit: int) -> list[tuple[StoredReport, datetime | None]]:
        def search() -> list[tuple[StoredReport, datetime | None]]:
            processed = self._processed()

            def completed(r: _Report) -> datetime | None:
                if r.row.accession == "":
                    return None
                later = [
                    m.received
                    for r2, m in processed
                    if r2.row.accession == r.row.accession
                    and r2.id > r.id
                    and _stage(r2.row.report_json) > _stage(r.row.report_json)
                ]
                return min(later, default=None)

            found = []
            for r, m in processed:
                if r.row.route_json == "null":
                    continue
                corrections = _json_field(r.row.route_json, "corrections")
                if r.row.bucket == "release" and not (isinstance(corrections, list) and corrections):
                    continue
                if pool is not None and _json_field(r.row.route_json, "pool") != pool:
                    continue
                done = completed(r)
                if (status == "requested" and done is not None) or (status == "completed" and done is None):
                    continue
                found.append((self._stored(r, m), done))
            return found[:limit]

        return self._store.read(search)

    def open_task_pools(self, *, limit: int) -> list[TaskPool]:
        pools: dict[str, TaskPool] = {}
        for row, _ in self.tasks(status="requested", pool=None, limit=limit):
            name = str(_json_field(row.route_json, "pool") or "")
            found = pools.get(name)
            oldest = row.received if found is None else min(found.oldest, row.received)
            pools[name] = TaskPool(name, (found.open if found else 0) + 1, oldest)
        return [pools[name] for name in sorted(pools)]


# ------------------------------------------------------------------ the store


class MemoryStore:
    """A :class:`~listener.store.base.Store` in dicts and lists (tests only)."""

    def __init__(self) -> None:
        self.tables = _Tables()
        self._lock = threading.Lock()
        self._closed = False
        self._writer: GroupCommitWriter[_Tables] = GroupCommitWriter(
            lambda: MemorySession(self.tables, self._lock), name="memory-store-writer"
        )
        self._reports = MemoryReports(self)
        self.migrations_run: tuple[SchemaStep, ...] = ()

    # ------------------------------------------------------------ plumbing

    def read(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the committed tables."""
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            return work()

    def _write(self, what: str, work: Callable[[_Tables], T]) -> T:
        return self._writer.execute(work, what).result()

    @property
    def reports(self) -> MemoryReports:
        return self._reports

    # ------------------------------------------------------------ messages

    def find_duplicate(self, sender_application: str, sender_facility: str, control_id: str) -> SaveResult | None:
        def look() -> SaveResult | None:
            m = self.tables.find(sender_application, sender_facility, control_id)
            return _stored_answer(m) if m is not None else None

        return self.read(look)

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        return self._writer.execute(lambda t: _insert(t, record), "save")

    def save(self, record: MessageRecord) -> SaveResult:
        return self.submit(record).result()

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
        if since is not None:
            require_aware(since, "since")
        if until is not None:
            require_aware(until, "until")
        if patient_authority is not None and patient_id is None:
            raise ValueError("patient_authority narrows patient_id: give both")
        # The MSH keys match any stored form of the text searched (listener/hl7v2/keys.py).
        accepted = {
            name: (value,) if name in ("state", "ack_code", "transport") else searched_keys(value)
            for name, value in {
                "state": state,
                "ack_code": ack_code,
                "sender_application": sender_application,
                "sender_facility": sender_facility,
                "control_id": control_id,
                "transport": transport,
            }.items()
            if value is not None
        }

        def with_report(m: _Message) -> bool:
            if accession is None and patient_id is None and bucket is None:
                return True
            mine = [r for r in self.tables.reports if r.message_pk == m.pk]
            if accession is not None and not any(r.row.accession == accession for r in mine):
                return False
            if bucket is not None and not any(r.row.bucket == bucket for r in mine):
                return False
            return patient_id is None or any(
                r.patient_id == patient_id and (patient_authority is None or r.patient_authority == patient_authority)
                for r in mine
            )

        def select() -> list[MessageSummary]:
            found = [
                _summary(self.tables, m)
                for pk, m in sorted(self.tables.messages.items(), reverse=newest_first)
                if pk > (after or 0)
                and (before is None or pk < before)
                and (since is None or m.received >= since)
                and (until is None or m.received < until)
                and all(getattr(m, name) in values for name, values in accepted.items())
                and with_report(m)
            ]
            return found if limit is None else found[:limit]

        yield from self.read(select)

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]:
        require_aware(before, "before")
        if not patient_id:
            raise ValueError("patient_id must not be empty")
        if limit <= 0:
            return ()

        def select() -> tuple[PriorStudy, ...]:
            latest: dict[str, tuple[_Report, _Message]] = {}
            for r in self.tables.reports:
                m = self.tables.messages[r.message_pk]
                if (r.patient_id, r.patient_authority) != (patient_id, patient_authority):
                    continue
                if r.row.accession in ("", exclude_accession) or m.state != "processed" or m.received >= before:
                    continue
                if r.row.accession not in latest or r.id > latest[r.row.accession][0].id:
                    latest[r.row.accession] = (r, m)
            out = []
            for r, m in sorted(latest.values(), key=lambda rm: -rm[0].id):
                doc = json.loads(r.row.report_json)
                if (doc.get("status") or "") == "cancelled":
                    continue
                times = doc.get("times") or {}
                day = str(times.get("observation") or times.get("report") or _stamp(m.received))[:10]
                try:
                    study_date = date.fromisoformat(day)
                except ValueError:
                    continue
                code = (doc.get("procedure") or {}).get("code") or ""
                out.append(
                    PriorStudy(
                        r.row.accession, study_date, doc.get("modality") or "", doc.get("body_region") or "", code
                    )
                )
            return tuple(out[:limit])

        return self.read(select)

    def report_history(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[HistoryEntry, ...]:
        if not accession or limit <= 0:
            return ()

        def select() -> tuple[HistoryEntry, ...]:
            out = []
            for r in self.tables.reports:
                m = self.tables.messages[r.message_pk]
                if r.row.accession != accession or m.state != "processed":
                    continue
                out.append(
                    HistoryEntry(
                        m.pk,
                        r.row.seq,
                        m.control_id,
                        _utc(m.received),
                        m.transport,
                        m.feed,
                        r.row.report_json,
                        r.row.findings_json,
                        r.row.bucket,
                        m.raw is not None,
                    )
                )
            out.sort(key=lambda e: (e.message_pk, e.seq))
            return tuple(out[:limit])

        return self.read(select)

    def buckets_of(self, message_pks: Sequence[int]) -> dict[int, tuple[str, ...]]:
        wanted = set(message_pks)

        def select() -> dict[int, tuple[str, ...]]:
            found: dict[int, set[str]] = {}
            for r in self.tables.reports:
                if r.message_pk in wanted and r.row.bucket:
                    found.setdefault(r.message_pk, set()).add(r.row.bucket)
            return {pk: tuple(sorted(buckets)) for pk, buckets in sorted(found.items())}

        return self.read(select)

    def report_histories(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[HistoryEntry, ...]]:
        found = {a: self.report_history(a, limit=limit) for a in sorted(set(accessions))}
        return {a: rows for a, rows in found.items() if rows}

    def accessions_received(self, since: datetime, until: datetime) -> tuple[str, ...]:
        require_aware(since, "since")
        require_aware(until, "until")

        def select() -> tuple[str, ...]:
            found = set()
            for r in self.tables.reports:
                m = self.tables.messages[r.message_pk]
                if m.state == "processed" and r.row.accession and since <= m.received < until:
                    found.add(r.row.accession)
            return tuple(sorted(found))

        return self.read(select)

    def window_versions(
        self, since: datetime, until: datetime, windows: Sequence[tuple[datetime, datetime]]
    ) -> WindowVersions:
        open_windows(since, until, windows)

        def select() -> WindowVersions:
            rows = Counter(r.row.accession for r in self.tables.reports)
            multi: set[str] = set()
            groups: dict[tuple[int, str, float | None], list[str]] = {}
            for r in self.tables.reports:
                m = self.tables.messages[r.message_pk]
                if m.state != "processed" or not r.row.accession or not since <= m.received < until:
                    continue
                if rows[r.row.accession] > 1:
                    multi.add(r.row.accession)
                    continue
                _, _, clinical, minutes, summary = version_columns(
                    r.row.report_json, r.row.findings_json, m.received, True
                )
                for i, (start, end) in enumerate(windows):
                    if start <= clinical < end:
                        groups.setdefault((i, summary, minutes), []).append(r.row.accession)
            lone = tuple(
                LoneVersions(i, summary, minutes, len(found), min(found))
                for (i, summary, minutes), found in groups.items()
            )
            return WindowVersions(tuple(sorted(multi)), lone)

        return self.read(select)

    def traffic(self, since: datetime, until: datetime, *, step: str) -> tuple[TrafficBin, ...]:
        require_aware(since, "since")
        require_aware(until, "until")
        require_step(step)

        def select() -> tuple[TrafficBin, ...]:
            counts = Counter(
                (bin_start(m.received, step), m.sender_application, m.sender_facility, m.transport, m.ack_code, m.state)
                for m in self.tables.messages.values()
                if since <= m.received < until
            )
            return tuple(TrafficBin(*key, count=n) for key, n in sorted(counts.items()))

        return self.read(select)

    def bucket_mix(self, since: datetime, until: datetime, *, step: str) -> tuple[BucketBin, ...]:
        require_aware(since, "since")
        require_aware(until, "until")
        require_step(step)

        def select() -> tuple[BucketBin, ...]:
            counts: Counter[tuple[datetime, str]] = Counter()
            for r in self.tables.reports:
                m = self.tables.messages[r.message_pk]
                if since <= m.received < until:
                    counts[bin_start(m.received, step), r.row.bucket] += 1
            return tuple(BucketBin(start, bucket, n) for (start, bucket), n in sorted(counts.items()))

        return self.read(select)

    def cached_comparisons(self, keys: Sequence[str]) -> dict[str, str]:
        wanted = tuple(keys)
        return self.read(
            lambda: {k: c.result_json for k in wanted if (c := self.tables.comparisons.get(k)) is not None}
        )

    def cache_comparisons(self, items: Sequence[CachedComparison]) -> int:
        batch = tuple(items)
        if not batch:
            return 0

        def write(t: _Tables) -> int:
            for c in batch:
                t.comparisons[c.key] = dataclasses.replace(c, computed_at=_utc(c.computed_at))
            return len(batch)

        return self._write("caching comparisons", write)

    def drop_comparisons(self) -> int:
        def drop(t: _Tables) -> int:
            count = len(t.comparisons)
            t.comparisons = {}
            return count

        return self._write("dropping cached comparisons", drop)

    def record_scores(self, scores: Sequence[ScoreRecord]) -> int:
        batch = tuple(scores)
        if not batch:
            return 0
        return self._write("recording scores", lambda t: _insert_scores(t, batch, None))

    def scores(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[StoredScore, ...]:
        if not accession or limit <= 0:
            return ()
        return self.read(lambda: tuple(s for s in self.tables.scores if s.score.accession == accession)[:limit])

    def scores_of_accessions(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[StoredScore, ...]]:
        found = {a: self.scores(a, limit=limit) for a in sorted(set(accessions))}
        return {a: scores for a, scores in found.items() if scores}

    def newest_message_pk(self) -> int:
        return self.read(lambda: max(self.tables.messages, default=0))

    def message_raw(self, message_pk: int) -> bytes | None:
        return self.read(lambda: m.raw if (m := self.tables.messages.get(message_pk)) is not None else None)

    def message_detail(self, message_pk: int) -> MessageDetail | None:
        def detail() -> MessageDetail | None:
            t = self.tables
            m = t.messages.get(message_pk)
            if m is None:
                return None
            outbox = tuple(
                (row, tuple(e for row_id, e in t.events if row_id == row.id))
                for _, row in sorted(t.outbox.items())
                if row.message_pk == message_pk
            )
            processings = tuple(sorted((p for pk, p in t.processings if pk == message_pk), key=lambda p: p.number))
            return MessageDetail(
                summary=_summary(t, m),
                processed=m.processed or m.received,
                ack=m.ack,
                raw=m.raw,
                reports=t.reports_of(message_pk),
                processings=processings,
                outbox=outbox,
            )

        return self.read(detail)

    def replace_processing(
        self,
        message_pk: int,
        record: MessageRecord,
        *,
        now: datetime,
        superseded_by: str,
        expected_processing: int | None,
    ) -> SaveResult:
        require_aware(now, "now")
        return self._write(
            "reprocessing",
            lambda t: _replace_processing(
                t, message_pk, record, now=now, superseded_by=superseded_by, expected_processing=expected_processing
            ),
        )

    def purge_raw(self, older_than: datetime) -> int:
        require_aware(older_than, "older_than")

        def purge(t: _Tables) -> int:
            old = [m for m in t.messages.values() if m.raw is not None and m.received < older_than]
            for m in old:
                t.messages[m.pk] = dataclasses.replace(m, raw=None)
            t.processings = [
                (pk, dataclasses.replace(p, raw=None) if p.processed < older_than else p) for pk, p in t.processings
            ]
            return len(old)

        return self._write("purging raw bodies", purge)

    # ------------------------------------------------------------ audit

    def record_audit(
        self, *, at: datetime, actor: str, via: str, action: str, target: dict[str, Any], rows: int, detail: str = ""
    ) -> int:
        require_aware(at, "at")

        def append(t: _Tables) -> int:
            entry = AuditEntry(
                t.next_id("audit"),
                _utc(at),
                actor[:200],
                via,
                action,
                audit_target_json(target),
                int(rows),
                detail[:TEXT_MAX],
            )
            t.audit.append(entry)
            return entry.id

        return self._write("recording an audit entry", append)

    def audit(
        self, *, since: datetime | None = None, action: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        if since is not None:
            require_aware(since, "since")

        def select() -> list[AuditEntry]:
            found = [
                e
                for e in self.tables.audit
                if (since is None or e.at >= since) and (action is None or e.action == action)
            ]
            return found if limit is None else found[:limit]

        return self.read(select)

    # ------------------------------------------------------------ outbox

    def outbox_due(self, destination: str, now: datetime, limit: int = 100) -> list[OutboxRow]:
        require_aware(now, "now")

        def due() -> list[OutboxRow]:
            rows = [
                o
                for _, o in sorted(self.tables.outbox.items())
                if o.destination == destination and o.state == "pending"
            ]
            heads: dict[str, OutboxRow] = {}
            for o in rows:
                heads.setdefault(o.accession, o)
            return sorted((o for o in heads.values() if o.next_attempt_at <= now), key=lambda o: o.id)[:limit]

        return self.read(due)

    def outbox_claim(
        self, destination: str, holder: str, now: datetime, lease_until: datetime, limit: int = 1
    ) -> list[OutboxClaim]:
        require_aware(now, "now")
        require_aware(lease_until, "lease_until")
        if not holder:
            raise ValueError("a claim needs a holder")

        def claim(t: _Tables) -> list[OutboxClaim]:
            heads: dict[str, OutboxRow] = {}
            for _, o in sorted(t.outbox.items()):
                if o.destination == destination and o.state == "pending":
                    heads.setdefault(o.accession, o)
            free = sorted(
                (
                    o
                    for o in heads.values()
                    if o.next_attempt_at <= now and (o.lease_expires is None or o.lease_expires <= now)
                ),
                key=lambda o: o.id,
            )[:limit]
            claims = []
            for o in free:
                previous = o.lease_holder if o.lease_holder != holder else ""
                t.outbox[o.id] = dataclasses.replace(o, lease_holder=holder, lease_expires=_utc(lease_until))
                if previous:
                    t.add_event(o.id, now, "lease_taken_over", f"from {previous}")
                claims.append(OutboxClaim(t.outbox[o.id], previous))
            return claims

        return self._write("claiming outbox rows", claim)

    def outbox_renew(self, row_id: int, holder: str, lease_until: datetime) -> bool:
        require_aware(lease_until, "lease_until")

        def renew(t: _Tables) -> bool:
            row = t.outbox.get(row_id)
            if row is None or row.state != "pending" or row.lease_holder != holder:
                return False
            t.outbox[row_id] = dataclasses.replace(row, lease_expires=_utc(lease_until))
            return True

        return self._write("renewing a lease", renew)

    def outbox_release(self, holder: str, destination: str | None = None) -> int:
        def release(t: _Tables) -> int:
            mine = [
                o
                for o in t.outbox.values()
                if o.lease_holder == holder
                and o.state == "pending"
                and (destination is None or o.destination == destination)
            ]
            for o in mine:
                t.outbox[o.id] = dataclasses.replace(o, lease_holder="", lease_expires=None)
            return len(mine)

        return self._write("releasing leases", release)

    def outbox_delivered(self, row_id: int, now: datetime, *, holder: str | None = None) -> bool:
        require_aware(now, "now")
        return self._write(
            "marking delivered",
            lambda t: _update_pending(
                t, row_id, now, "delivered", "", holder, state="delivered", delivered_at=_utc(now)
            ),
        )

    def outbox_failed(
        self, row_id: int, now: datetime, next_attempt_at: datetime, error_text: str, *, holder: str | None = None
    ) -> bool:
        require_aware(now, "now")
        require_aware(next_attempt_at, "next_attempt_at")
        text = error_text[:TEXT_MAX]
        return self._write(
            "recording a failure",
            lambda t: _update_pending(
                t,
                row_id,
                now,
                "failed",
                f"{text}; next attempt {_stamp(next_attempt_at)}",
                holder,
                next_attempt_at=_utc(next_attempt_at),
                last_error=text,
            ),
        )

    def outbox_dead(self, row_id: int, now: datetime, error_text: str, *, holder: str | None = None) -> bool:
        require_aware(now, "now")
        text = error_text[:TEXT_MAX]
        return self._write(
            "dead-lettering",
            lambda t: _update_pending(t, row_id, now, "dead", text, holder, state="dead", last_error=text),
        )

    def outbox_list(
        self, state: OutboxState | None = None, *, destination: str | None = None, limit: int | None = None
    ) -> list[OutboxRow]:
        if state is not None and state not in OUTBOX_STATES:
            raise ValueError(f"state must be one of {', '.join(OUTBOX_STATES)}")

        def select() -> list[OutboxRow]:
            found = [
                o
                for _, o in sorted(self.tables.outbox.items())
                if (state is None or o.state == state) and (destination is None or o.destination == destination)
            ]
            return found if limit is None else found[:limit]

        return self.read(select)

    def outbox_rows_of(self, *, accession: str, destination: str | None = None) -> list[OutboxRow]:
        return self.read(
            lambda: [
                o
                for _, o in sorted(self.tables.outbox.items())
                if o.accession == accession and (destination is None or o.destination == destination)
            ]
        )

    def outbox_retry(self, ids: Sequence[int] | None, now: datetime, *, force: bool = False) -> tuple[int, ...]:
        require_aware(now, "now")
        wanted = None if ids is None else {int(i) for i in ids}

        def retry(t: _Tables) -> tuple[int, ...]:
            revived = [
                o.id
                for _, o in sorted(t.outbox.items())
                if o.state == "dead"
                and (wanted is None or o.id in wanted)
                and (force or not _later(t, o, ("delivered",)))
            ]
            for row_id in revived:
                t.outbox[row_id] = dataclasses.replace(
                    t.outbox[row_id], state="pending", attempts=0, next_attempt_at=_utc(now)
                )
                t.add_event(row_id, now, "retried", "forced" if force else "")
            return tuple(revived)

        return self._write("retrying the outbox", retry)

    def outbox_purge(
        self, *, delivered_before: datetime | None = None, dead_ids: Sequence[int] = (), destination: str | None = None
    ) -> int:
        if delivered_before is not None:
            require_aware(delivered_before, "delivered_before")
        dead = {int(i) for i in dead_ids}

        def purge(t: _Tables) -> int:
            gone = {
                o.id
                for o in t.outbox.values()
                if (o.state == "dead" and o.id in dead)
                or (
                    delivered_before is not None
                    and o.state == "delivered"
                    and o.delivered_at is not None
                    and o.delivered_at < delivered_before
                    and (destination is None or o.destination == destination)
                )
            }
            t.outbox = {i: o for i, o in t.outbox.items() if i not in gone}
            t.events = [(i, e) for i, e in t.events if i not in gone]
            return len(gone)

        return self._write("purging the outbox", purge)

    def outbox_stats(self, now: datetime) -> OutboxStats:
        require_aware(now, "now")

        def stats() -> OutboxStats:
            groups: dict[tuple[str, str], list[OutboxRow]] = {}
            for o in self.tables.outbox.values():
                groups.setdefault((o.destination, o.state), []).append(o)
            depth = tuple(
                OutboxDepth(dest, rows[0].state, len(rows), now - min(o.created for o in rows))
                for (dest, _), rows in sorted(groups.items())
            )
            pending = [d.oldest_age for d in depth if d.state == "pending"]
            return OutboxStats(depth, max(pending) if pending else None)

        return self.read(stats)

    def outbox_resend(
        self, ids: Sequence[int], now: datetime, *, force: bool = False, note: str = ""
    ) -> list[tuple[int, int]]:
        require_aware(now, "now")

        def resend(t: _Tables) -> list[tuple[int, int]]:
            pairs = []
            for row_id in (int(i) for i in ids):
                old = t.outbox.get(row_id)
                if old is None or old.state != "delivered" or (not force and _later(t, old, ("pending", "delivered"))):
                    continue
                new_id = t.next_id("outbox")
                t.outbox[new_id] = dataclasses.replace(
                    old,
                    id=new_id,
                    state="pending",
                    attempts=0,
                    next_attempt_at=_utc(now),
                    last_error="",
                    created=_utc(now),
                    delivered_at=None,
                    resent_from=row_id,
                )
                t.add_event(row_id, now, "resent", f"queued again as row {new_id}{note}")
                t.add_event(new_id, now, "queued", f"resend of row {row_id}{note}")
                pairs.append((row_id, new_id))
            return pairs

        return self._write("resending", resend)

    def outbox_kick(self, destination: str | None, now: datetime, note: str = "") -> int:
        require_aware(now, "now")

        def kick(t: _Tables) -> int:
            mine = [o for o in t.outbox.values() if destination is None or o.destination == destination]
            for o in mine:
                if o.state == "pending" and o.next_attempt_at > now:
                    t.outbox[o.id] = dataclasses.replace(o, next_attempt_at=_utc(now))
                    t.add_event(o.id, now, "kicked", f"due now{note}")
            names = (
                [destination]
                if destination is not None
                else sorted({o.destination for o in t.outbox.values()} | set(t.destinations))
            )
            for name in names:
                t.destinations[name] = dataclasses.replace(self._state(t, name), kick_requested_at=_utc(now))
            return sum(1 for o in mine if o.state == "pending")

        return self._write("kicking the outbox", kick)

    # ------------------------------------------------------------ destinations

    @staticmethod
    def _state(t: _Tables, name: str) -> DestinationState:
        return t.destinations.get(name) or DestinationState(name, 0, "", None, None, None)

    def destination_states(self, destination: str | None = None) -> list[DestinationState]:
        return self.read(
            lambda: [
                s for name, s in sorted(self.tables.destinations.items()) if destination is None or name == destination
            ]
        )

    def destination_connect_failed(
        self, destination: str, now: datetime, failures: int, error_text: str, next_connect_at: datetime
    ) -> None:
        require_aware(now, "now")

        def failed(t: _Tables) -> None:
            t.destinations[destination] = dataclasses.replace(
                self._state(t, destination),
                connect_failures=failures,
                last_connect_error=error_text[:TEXT_MAX],
                last_connect_error_at=_utc(now),
                next_connect_at=_utc(next_connect_at),
            )

        self._write("recording a connection failure", failed)

    def destination_connected(self, destination: str, now: datetime) -> None:
        require_aware(now, "now")

        def connected(t: _Tables) -> None:
            if destination in t.destinations:
                t.destinations[destination] = dataclasses.replace(
                    t.destinations[destination], connect_failures=0, next_connect_at=None
                )

        self._write("recording a connection", connected)

    # ------------------------------------------------------------ lifecycle

    def probe(self, now: datetime) -> None:
        def write(t: _Tables) -> None:
            t.probed = _utc(now)

        self._write("health probe", write)

    def health_reason(self) -> str:
        return "" if self._writer.alive() and not self._closed else "store writer stopped"

    def health(self) -> bool:
        return not self.health_reason()

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            self._closed = True
