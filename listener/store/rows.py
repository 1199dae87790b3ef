"""Row-to-value conversions both SQL backends share (SQLite and PostgreSQL read the same columns).

Each backend passes its own ``moment``: how a stored time column becomes an
aware UTC datetime (SQLite stores text, PostgreSQL a ``timestamptz``). The
store contract: docs/store.md.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from listener.hl7v2.keys import searched_keys
from listener.outcomes.history import prelim_minutes, summarize, summarize_document
from listener.store.base import (
    BucketBin,
    HistoryEntry,
    LoneVersions,
    MessageSummary,
    PriorFacts,
    ReportRecord,
    StoredForms,
    TaskPool,
    TrafficBin,
    WindowVersions,
    require_aware,
)
from listener.store.compact import pack_json, split_route, unpack_json

#: The columns of a message's summary row, selected from ``messages m``: :func:`message_summary` reads them.
SUMMARY_COLUMNS = (
    "m.id, m.control_id, m.sender_application, m.sender_facility, m.feed,"
    " m.received, m.transport, m.state, m.ack_code, m.error_code,"
    " (SELECT count(*) FROM reports r WHERE r.message_id = m.id),"
    " m.raw IS NOT NULL, m.processing"
)


def message_summary(row: Sequence[Any], moment: Callable[[Any], datetime]) -> MessageSummary:
    """A MessageSummary from a row of the backends' ``SUMMARY_COLUMNS``."""
    return MessageSummary(
        message_pk=int(row[0]),
        control_id=row[1],
        sender_application=row[2],
        sender_facility=row[3],
        feed=row[4],
        received=moment(row[5]),
        transport=row[6],
        state=row[7],
        ack_code=row[8],
        error_code=row[9],
        report_count=int(row[10]),
        raw_kept=bool(row[11]),
        processing=int(row[12]),
    )


def history_entry(row: Sequence[Any], moment: Callable[[Any], datetime]) -> HistoryEntry:
    """A HistoryEntry of (message id, seq, control id, received, transport, feed, report, findings, bucket, kept).

    The report and findings are read in either stored form (listener/store/compact.py).
    """
    pk, seq, cid, received, transport, feed, report, findings, bucket, kept = row
    return HistoryEntry(
        int(pk),
        int(seq),
        str(cid),
        moment(received),
        str(transport),
        str(feed),
        unpack_json(report),
        unpack_json(findings),
        str(bucket),
        bool(kept),
    )


#: Above every message_pk (the largest 64-bit integer): the upper cursor of an unbounded listing.
NO_PK_ABOVE = 2**63 - 1

#: The message columns :meth:`~listener.store.base.Store.messages` filters on by exact value.
_EXACT_COLUMNS = ("state", "ack_code", "sender_application", "sender_facility", "control_id", "transport")
#: Of those, the MSH keys: stored as the latin-1 reading of the message's bytes, they match any
#: stored form of the text searched (listener/hl7v2/keys.py).
_KEY_COLUMNS = frozenset({"sender_application", "sender_facility", "control_id"})


@dataclass(frozen=True, slots=True)
class MessageFilters:
    """The filters of :meth:`~listener.store.base.Store.messages` other than its cursors and order,
    as one WHERE clause both SQL backends run (docs/store.md, "Newest first").

    Raises:
        ValueError: a naive ``since``/``until``, or ``patient_authority`` without ``patient_id``.
    """

    since: datetime | None = None
    until: datetime | None = None
    state: str | None = None
    ack_code: str | None = None
    sender_application: str | None = None
    sender_facility: str | None = None
    control_id: str | None = None
    transport: str | None = None
    accession: str | None = None
    patient_id: str | None = None
    patient_authority: str | None = None
    bucket: str | None = None

    def __post_init__(self) -> None:
        if self.since is not None:
            require_aware(self.since, "since")
        if self.until is not None:
            require_aware(self.until, "until")
        if self.patient_authority is not None and self.patient_id is None:
            raise ValueError("patient_authority narrows patient_id: give both")

    def where(self, mark: str, stamp: Callable[[datetime], object]) -> tuple[str, list[object]]:
        """The conditions on ``messages m`` after the cursors (``m.id > {mark} AND m.id < {mark}``
        first), and their parameters after the cursors'. ``mark`` is the backend's placeholder
        (``?``, ``%s``), ``stamp`` turns a time into the backend's parameter for ``m.received``.

        Every condition is served by an index: accession and patient by the reports' indexes,
        control id by its own, the window by ``received``, the bucket by ``reports_message_bucket``.
        """
        where = [f"m.id > {mark}", f"m.id < {mark}"]
        params: list[object] = []
        if self.since is not None:
            where.append(f"m.received >= {mark}")
            params.append(stamp(self.since))
        if self.until is not None:
            where.append(f"m.received < {mark}")
            params.append(stamp(self.until))
        for column in _EXACT_COLUMNS:
            value = getattr(self, column)
            if value is not None:
                forms = searched_keys(value) if column in _KEY_COLUMNS else (value,)
                if len(forms) == 1:
                    where.append(f"m.{column} = {mark}")
                else:
                    where.append(f"m.{column} IN ({', '.join([mark] * len(forms))})")
                params.extend(forms)
        if self.accession is not None:
            where.append(f"m.id IN (SELECT r.message_id FROM reports r WHERE r.accession = {mark})")
            params.append(self.accession)
        if self.patient_id is not None:
            patient = f"r.patient_id = {mark}"
            params.append(self.patient_id)
            if self.patient_authority is not None:
                patient += f" AND r.patient_authority = {mark}"
                params.append(self.patient_authority)
            where.append(f"m.id IN (SELECT r.message_id FROM reports r WHERE {patient})")
        if self.bucket is not None:
            # A probe of reports_message_bucket per message, in message order: a page
            # ends once it is full, so a common bucket reads little (docs/store.md).
            where.append(f"EXISTS (SELECT 1 FROM reports r WHERE r.message_id = m.id AND r.bucket = {mark})")
            params.append(self.bucket)
        return " AND ".join(where), params


class MessageListing(abc.ABC):
    """:meth:`~listener.store.base.Store.messages` for both SQL backends: the filters'
    WHERE clause (:class:`MessageFilters`) and the walk of the primary key, page by page.

    A backend gives its placeholder (``_MARK``), its page size (``_PAGE_ROWS``) and three hooks:
    how a time becomes a parameter, how a statement is read, how a row becomes a summary.
    """

    #: The backend's parameter placeholder (``?``, ``%s``).
    _MARK: ClassVar[str]
    #: Rows read per statement.
    _PAGE_ROWS: ClassVar[int]

    @abc.abstractmethod
    def _listing_stamp(self, moment: datetime) -> object:
        """``moment`` as the backend's parameter for ``m.received``."""

    @abc.abstractmethod
    def _listing_rows(self, sql: str, params: Sequence[object]) -> Sequence[Sequence[Any]]:
        """The rows of one page (raises StoreError when the store cannot be read)."""

    @abc.abstractmethod
    def _listing_summary(self, row: Sequence[Any]) -> MessageSummary:
        """The summary of a row of :data:`SUMMARY_COLUMNS`."""

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
        """Iterate stored messages by ``message_pk``, optionally filtered (see :meth:`Store.messages`).

        Args:
            after: only messages with a larger ``message_pk`` (a cursor).
            before: only messages with a smaller ``message_pk`` (the cursor of
                ``newest_first`` paging).
            newest_first: largest ``message_pk`` first (the primary key walked
                backwards; docs/store.md, "Newest first").
            since: only messages received at or after this time.
            until: only messages received before this time.
            limit: stop after this many (after filtering).
            state, ack_code, transport: only messages with exactly this value.
            sender_application, sender_facility, control_id: only messages with this
                key, typed as text: any of its stored forms (:func:`searched_keys`).
            accession: only messages with a report of this accession.
            patient_id, patient_authority: only messages with a report of this
                patient (the authority only narrows ``patient_id``).
            bucket: only messages with a report routed to this bucket.

        Raises:
            StoreError: the store cannot be read.
            ValueError: a naive ``since``/``until``, or ``patient_authority`` alone.
        """
        filters = MessageFilters(
            since=since,
            until=until,
            state=state,
            ack_code=ack_code,
            sender_application=sender_application,
            sender_facility=sender_facility,
            control_id=control_id,
            transport=transport,
            accession=accession,
            patient_id=patient_id,
            patient_authority=patient_authority,
            bucket=bucket,
        )
        mark = self._MARK
        where, params = filters.where(mark, self._listing_stamp)
        order = "DESC" if newest_first else ""
        sql = f"SELECT {SUMMARY_COLUMNS} FROM messages m WHERE {where} ORDER BY m.id {order} LIMIT {mark}"
        low = after if after is not None else 0
        high = before if before is not None else NO_PK_ABOVE
        remaining = limit
        while remaining is None or remaining > 0:
            size = self._PAGE_ROWS if remaining is None else min(self._PAGE_ROWS, remaining)
            rows = self._listing_rows(sql, (low, high, *params, size))
            for row in rows:
                yield self._listing_summary(row)
            if len(rows) < size:
                return
            if newest_first:
                high = int(rows[-1][0])
            else:
                low = int(rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)


#: The message columns :meth:`~listener.store.base.Store.traffic` groups by, after the bin.
TRAFFIC_COLUMNS = ("sender_application", "sender_facility", "transport", "ack_code", "state")


def _ordered(columns: Sequence[str], collate: str) -> str:
    return ", ".join(f"{c}{collate}" for c in columns)


def traffic_sql(hour: str, window: str, collate: str = "") -> str:
    """The GROUP BY of :meth:`~listener.store.base.Store.traffic` by hour over ``messages m``.

    ``hour`` is the backend's SQL for the hour of ``m.received`` (the leading
    expression of its ``messages_traffic`` index, so the groups come in index
    order), ``window`` its conditions for the window (with the placeholders),
    ``collate`` what follows each text column in ORDER BY so every backend
    orders by code point. Counts are ``n``.
    """
    columns = [f"m.{c}" for c in TRAFFIC_COLUMNS]
    return (
        f"SELECT {hour} AS bin, {', '.join(columns)}, count(*) AS n FROM messages m WHERE {window}"
        f" GROUP BY {hour}, {', '.join(columns)} ORDER BY {hour}, {_ordered(columns, collate)}"
    )


def bucket_mix_sql(hour: str, window: str, collate: str = "") -> str:
    """The GROUP BY of :meth:`~listener.store.base.Store.bucket_mix` by hour (see :func:`traffic_sql`).

    ``reports`` holds the current processing's reports only (a reprocess moves
    the earlier ones to ``processings``); each one's bucket is read from the
    ``reports_message_bucket`` index.
    """
    return (
        f"SELECT {hour} AS bin, r.bucket, count(*) AS n FROM messages m JOIN reports r ON r.message_id = m.id"
        f" WHERE {window} GROUP BY {hour}, r.bucket ORDER BY {hour}, r.bucket{collate}"
    )


def by_day(hours: str, day: str, columns: Sequence[str], collate: str = "") -> str:
    """The hourly counts of ``hours`` (:func:`traffic_sql` or :func:`bucket_mix_sql`) added up by day.

    ``day`` is the backend's SQL for the day of an hour ``bin``.
    """
    names = ", ".join(columns)
    return (
        f"SELECT {day} AS day, {names}, sum(n) FROM ({hours}) AS hours"
        f" GROUP BY day, {names} ORDER BY day, {_ordered(columns, collate)}"
    )


def traffic_bins(rows: Sequence[Sequence[Any]], moment: Callable[[Any], datetime]) -> tuple[TrafficBin, ...]:
    """TrafficBins of the rows of :func:`traffic_sql`; ``moment`` turns a bin value into its aware UTC start."""
    return tuple(
        TrafficBin(moment(start), str(app), str(facility), str(transport), str(ack), str(state), int(count))
        for start, app, facility, transport, ack, state, count in rows
    )


def bucket_bins(rows: Sequence[Sequence[Any]], moment: Callable[[Any], datetime]) -> tuple[BucketBin, ...]:
    """BucketBins of the rows of :func:`bucket_mix_sql`."""
    return tuple(BucketBin(moment(start), str(bucket), int(count)) for start, bucket, count in rows)


#: The ``reports`` columns of a version summary, in :func:`version_columns`' order (docs/store.md,
#: "Version summaries").
VERSION_COLUMNS = ("received", "stage", "clinical_at", "prelim_minutes", "summary")
#: How many version summaries a schema step back-fills per batch (bounds its memory).
VERSION_BATCH = 500
_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; a sender time whose UTC form falls outside year 1..9999 is clamped to that range."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return _EARLIEST if value.year == 1 else _LATEST


def version_columns(
    report_json: str, findings_json: str, received: datetime, processed: bool
) -> tuple[datetime, int | None, datetime, float | None, str]:
    """The :data:`VERSION_COLUMNS` of a report row.

    Its message's receive time; the report's stage (None when the message is
    not processed: the row is no version of its accession); its clinical time
    (the report time, else the receive time); for a preliminary with an
    observation time, the minutes from that to the clinical time as the
    scorecard's ``prelim_minutes`` counts them (None otherwise, or when
    negative); the :meth:`~listener.outcomes.history.ReadSummary.to_text` of
    its summary.
    """
    found = summarize(report_json, findings_json)
    return version_values(found.stage, found.report_time, found.observation_time, found.to_text(), received, processed)


def version_values(
    stage: int,
    report_time: datetime | None,
    observation_time: datetime | None,
    summary: str,
    received: datetime,
    processed: bool,
) -> tuple[datetime, int | None, datetime, float | None, str]:
    """:func:`version_columns` from a report's summary already made (its stage, times and text)."""
    clinical = _utc(report_time) if report_time is not None else received
    return (
        received,
        stage if processed else None,
        clinical,
        prelim_minutes(stage, observation_time, report_time or received),
        summary,
    )


#: The ``reports`` columns a prior look-up reads, in :func:`prior_values`' order (docs/store.md,
#: "Prior look-up columns").
PRIOR_COLUMNS = ("study_date", "modality", "body_region", "procedure_code", "cancelled")


def _json_text(value: Any) -> str | None:
    """A JSON value as the stores' SQL read it as text: a string as it is, null (or absent) None,
    anything else its JSON text (the serializer writes these fields as strings or null)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def prior_facts(doc: dict[str, Any]) -> PriorFacts:
    """What a prior look-up reads of a report document (see :class:`PriorFacts`).

    The same values the look-up's SQL read from the JSON before these columns
    existed (``coalesce`` of the observation and report times cut to 10
    characters; modality, body region and procedure code, "" when null or
    absent; status ``cancelled``): schema step 11 back-fills stored rows with
    that SQL itself.
    """
    times, procedure = doc.get("times"), doc.get("procedure")
    times = times if isinstance(times, dict) else {}
    observation, reported = _json_text(times.get("observation")), _json_text(times.get("report"))
    day = observation if observation is not None else reported
    code = procedure.get("code") if isinstance(procedure, dict) else None
    return PriorFacts(
        None if day is None else day[:10],
        _json_text(doc.get("modality")) or "",
        _json_text(doc.get("body_region")) or "",
        _json_text(code) or "",
        doc.get("status") == "cancelled",
    )


def prior_values(facts: PriorFacts, received_day: str) -> tuple[str, str, str, str, int]:
    """The :data:`PRIOR_COLUMNS` of a report row: its facts, the study date falling back to
    ``received_day`` (its message's receive date, UTC, ``YYYY-MM-DD``)."""
    day = facts.study_day if facts.study_day is not None else received_day
    return day, facts.modality, facts.body_region, facts.procedure_code, int(facts.cancelled)


def stored_forms(record: ReportRecord, *, packed: bool) -> StoredForms:
    """The column values ``record`` alone decides; ``packed``: with the SQLite forms of its JSON too.

    The same values the writer makes when a record comes without them: the
    daemon's worker processes make them (docs/hardening.md, "Worker processes"),
    so the daemon's one writer thread only inserts (docs/store.md, "Compact storage").
    """
    found, doc = summarize_document(record.report_json, record.findings_json)
    route, explanation = split_route(record.route_json)
    return StoredForms(
        route,
        explanation,
        found.stage,
        found.report_time,
        found.observation_time,
        found.to_text(),
        prior_facts(doc),
        pack_json(record.report_json) if packed else None,
        pack_json(record.findings_json) if packed else None,
    )


def forms_of(record: ReportRecord) -> StoredForms:
    """``record``'s forms: those it came with, else made now (without the SQLite JSON forms)."""
    return record.forms if record.forms is not None else stored_forms(record, packed=False)


def with_forms(records: tuple[ReportRecord, ...], *, packed: bool) -> tuple[ReportRecord, ...]:
    """``records``, each carrying its :func:`stored_forms` (built field by field: ``dataclasses.replace``
    costs about 30 us a record)."""
    return tuple(
        ReportRecord(
            accession=r.accession,
            report_json=r.report_json,
            findings_json=r.findings_json,
            route_json=r.route_json,
            bucket=r.bucket,
            patient_id=r.patient_id,
            patient_authority=r.patient_authority,
            forms=stored_forms(r, packed=packed),
        )
        for r in records
    )


def window_versions_sql(windows: int, mark: str, cast: str = "", collate: str = "") -> str:
    """The one statement of PostgreSQL's :meth:`~listener.store.base.Store.window_versions` over
    ``reports r``.

    ``mark`` is the placeholder, ``cast`` what follows a window bound
    placeholder (``::timestamptz``), ``collate`` what makes ``min()`` of
    accessions compare by code point. Parameters: the receive window (since,
    until) then its start again; the receive window twice; each window's bounds
    and the receive window again (none of those when ``windows`` is 0). Its rows
    are :func:`window_version_rows`'s.

    ``m`` holds the window's accessions with another report row (a version or
    not), found one of two ways (docs/store.md, "The overread page on
    PostgreSQL"). When the store's first report was received less than one
    window length before the window (``s.wide``: the window holds most of the
    store), every accession's rows are counted in ``reports_accession``'s order
    (a group aggregate over the whole index, no hash of it) and the window's
    rows keep the few counted twice or more. Otherwise (a short window of a
    long store) each window row's accession is looked up in
    ``reports_accession`` (``EXISTS``: a hash join, or a probe per row), which
    reads no more of the index than the window needs. ``s.wide`` is one
    uncorrelated value, so the plan gates each way with a one-time filter and
    runs only the chosen one.

    The lone versions are the window's rows whose accession is NOT IN ``m``: a
    probe of ``m``'s hash (a hashed sub-plan), not a second join of every row's
    accession, and the planner then expects as many rows as there are and
    counts the groups by hashing instead of sorting them. ``m`` is read twice,
    so the server keeps it as it is computed (a materialized CTE).
    """
    window = f"r.received >= {mark} AND r.received < {mark} AND r.stage IS NOT NULL AND r.accession != ''"
    wide = f"s AS (SELECT min(f.received) >= {mark}{cast} - ({mark}{cast} - {mark}{cast}) AS wide FROM reports f)"
    counted = "SELECT g.accession FROM reports g WHERE g.accession != '' GROUP BY g.accession HAVING count(*) > 1"
    multi = (
        f"m AS (SELECT DISTINCT r.accession FROM reports r WHERE {window} AND r.accession IN ({counted})"
        " AND (SELECT s.wide FROM s) IS TRUE"
        f" UNION ALL SELECT DISTINCT r.accession FROM reports r WHERE {window} AND EXISTS ({OTHER_ROW})"
        " AND (SELECT s.wide FROM s) IS NOT TRUE)"
    )
    if not windows:
        return f"WITH {wide}, {multi} SELECT -1, '', NULL, 0, m.accession FROM m"
    values = ", ".join(f"({i}, {mark}{cast}, {mark}{cast})" for i in range(windows))
    return (
        f"WITH {wide}, {multi}, w (i, s, u) AS (VALUES {values}) SELECT -1, '', NULL, 0, m.accession FROM m"
        f" UNION ALL SELECT w.i, r.summary, r.prelim_minutes, count(*), min(r.accession{collate})"
        f" FROM reports r JOIN w ON r.clinical_at >= w.s AND r.clinical_at < w.u WHERE {window}"
        " AND r.accession NOT IN (SELECT m.accession FROM m) GROUP BY w.i, r.summary, r.prelim_minutes"
    )


def window_versions_params(
    since: datetime, until: datetime, bounds: Sequence[datetime], *, windows: bool
) -> tuple[datetime, ...]:
    """The parameters of :func:`window_versions_sql`: ``bounds`` are the windows' (start, end) in turn."""
    return (since, until, since, since, until, since, until, *bounds, *((since, until) if windows else ()))


#: A report row of the same accession as ``reports r`` other than ``r``.
OTHER_ROW = "SELECT 1 FROM reports o WHERE o.accession = r.accession AND o.id != r.id"


def window_version_rows(rows: Sequence[Sequence[Any]]) -> WindowVersions:
    """The WindowVersions of the rows of :func:`window_versions_sql`: a row with window -1 names
    an accession with another row; the others are counted groups of lone versions."""
    multi = sorted(str(row[4]) for row in rows if int(row[0]) < 0)
    return WindowVersions(tuple(multi), lone_rows([row for row in rows if int(row[0]) >= 0]))


def lone_rows(rows: Sequence[Sequence[Any]]) -> tuple[LoneVersions, ...]:
    """LoneVersions of rows of (window, summary, prelim minutes, count, smallest accession)."""
    return tuple(
        LoneVersions(int(i), str(summary), None if minutes is None else float(minutes), int(count), str(first))
        for i, summary, minutes, count, first in rows
    )


# ------------------------------------------------------------ report searches

#: The columns of a report search's row, from ``reports r`` joined to ``messages m`` (each backend
#: reads them into a StoredReport; a Task search adds its completion time as the 9th).
REPORT_COLUMNS = (
    "r.id, m.received, m.transport, r.accession, r.report_json, r.findings_json, r.route_json, r.explanation"
)
#: The reports a search reads: those of processed messages (the current processing's).
REPORT_FROM = "FROM reports r JOIN messages m ON m.id = r.message_id WHERE m.state = 'processed'"


@dataclass(frozen=True, slots=True)
class ReportSearchSql:
    """The statements of :class:`~listener.store.base.ReportReader` for both SQL backends, newest
    report first; each backend spells how its JSON columns are read.

    Attributes:
        mark: the backend's parameter placeholder (``?``, ``%s``).
        field: SQL of one text value of a JSON object: (SQL of the JSON text, key) -> SQL.
        report: SQL of a report row's ``report_json`` as JSON text, by table alias (SQLite
            unpacks its compact storage, docs/store.md "Compact storage").
        corrections: SQL of the number of items of ``r.route_json``'s ``corrections`` (0 when none).
    """

    mark: str
    field: Callable[[str, str], str]
    report: Callable[[str], str]
    corrections: str

    def _search(self, where: str, params: list[object]) -> tuple[str, list[object]]:
        return f"SELECT {REPORT_COLUMNS} {REPORT_FROM} {where} ORDER BY r.id DESC LIMIT {self.mark}", params

    def _pool(self, where: str, params: list[object], pool: str | None) -> str:
        if pool is None:
            return where
        params.append(pool)
        return f"{where} AND {self.field('r.route_json', 'pool')} = {self.mark}"

    def stage(self, alias: str) -> str:
        """SQL for how far a stored report of a processed message stands: 0 preliminary (or other),
        1 final, 2 corrected/amended; read from its version summary's ``stage`` (docs/store.md,
        "Version summaries"), not from its JSON."""
        return f"(CASE {alias}.stage WHEN 1 THEN 1 WHEN 2 THEN 2 ELSE 0 END)"

    def routed(self, pool: str | None) -> tuple[str, list[object]]:
        """Reports with a route (optionally to one pool): the statement (its last parameter is the
        limit) and the parameters before the limit."""
        params: list[object] = []
        return self._search(self._pool("AND r.route_json != 'null'", params, pool), params)

    def with_findings(self, fhir_id: str | None, accession: str | None) -> tuple[str, list[object]]:
        """Reports that have findings: one by its FHIR id (HTTP messages only), or all of an accession."""
        where = "AND r.findings_json != '[]'"
        params: list[object] = []
        if fhir_id is not None:
            where += f" AND m.transport = 'http' AND {self.field(self.report('r'), 'fhir_id')} = {self.mark}"
            params.append(fhir_id)
        if accession is not None:
            where += f" AND r.accession = {self.mark}"
            params.append(accession)
        return self._search(where, params)

    def message_of(self, fhir_id: str) -> tuple[str, list[object]]:
        """The message_pk of the HTTP message whose current report has FHIR id ``fhir_id`` (the id of
        its Location): the statement (its last parameter is the limit) and the parameters before it.
        Any message state: a report can be found whatever its route or findings."""
        sql = (
            "SELECT m.id FROM reports r JOIN messages m ON m.id = r.message_id"
            f" WHERE m.transport = 'http' AND {self.field(self.report('r'), 'fhir_id')} = {self.mark}"
            f" ORDER BY r.id DESC LIMIT {self.mark}"
        )
        return sql, [fhir_id]

    def _tasks(self, status: str | None, pool: str | None) -> tuple[str, list[object], str]:
        """The conditions of a Task search and their parameters, and the SQL of its completion time."""
        done = (
            "(SELECT min(m2.received) FROM reports r2 JOIN messages m2 ON m2.id = r2.message_id"
            " WHERE m2.state = 'processed' AND r2.accession = r.accession AND r2.id > r.id"
            f" AND {self.stage('r2')} > {self.stage('r')})"
        )
        where = f"AND r.route_json != 'null' AND NOT (r.bucket = 'release' AND {self.corrections} = 0)"
        params: list[object] = []
        where = self._pool(where, params, pool)
        if status == "requested":
            where += f" AND (r.accession = '' OR {done} IS NULL)"
        elif status == "completed":
            where += f" AND r.accession != '' AND {done} IS NOT NULL"
        return where, params, done

    def tasks(self, status: str | None, pool: str | None) -> tuple[str, list[object]]:
        """Routed reports that stand for a Task, each row with when its Task was completed (its 9th
        column; see :meth:`~listener.store.base.ReportReader.tasks`).

        A report released with no correction asks nobody for anything: no Task. A Task is
        completed once a later report of the same accession arrived that supersedes its report
        (a final for a preliminary, a corrected or amended report for a final); a second copy at
        the same stage does not complete it. ``status``: "requested" (open only), "completed",
        or None (both).
        """
        where, params, done = self._tasks(status, pool)
        sql = (
            f"SELECT {REPORT_COLUMNS}, CASE WHEN r.accession = '' THEN NULL ELSE {done} END"
            f" {REPORT_FROM} {where} ORDER BY r.id DESC LIMIT {self.mark}"
        )
        return sql, params

    def open_task_pools(self) -> tuple[str, list[object]]:
        """The newest open Tasks (its last parameter is their limit) counted by their route's pool
        (``""`` when none), with the earliest receive time (see
        :meth:`~listener.store.base.ReportReader.open_task_pools`); rows (pool, count, oldest)."""
        where, params, _ = self._tasks("requested", None)
        pool = self.field("r.route_json", "pool")
        sql = (
            f"SELECT pool, count(*), min(received) FROM (SELECT coalesce({pool}, '') AS pool, m.received AS received"
            f" {REPORT_FROM} {where} ORDER BY r.id DESC LIMIT {self.mark}) AS open GROUP BY pool"
        )
        return sql, params


def task_pools(rows: Sequence[Sequence[Any]], moment: Callable[[Any], datetime]) -> list[TaskPool]:
    """TaskPools of the rows of :meth:`ReportSearchSql.open_task_pools`, sorted by pool."""
    return sorted((TaskPool(str(pool), int(n), moment(oldest)) for pool, n, oldest in rows), key=lambda p: p.pool)
