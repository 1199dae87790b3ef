"""The PostgreSQL store: the same schema as SQLite, psycopg 3, group commit.

Layer: storage (threads, sockets), no Twisted and no logging: errors are raised
as :class:`~listener.errors.StoreError` naming the operation and the error's
class only (a server's message can quote stored values), and the server
decides what to log. Configured with ``store: postgresql://...``
(docs/store.md).

Connections and threads:
    * writes (saves, outbox updates, purges) all go through one
      :class:`~listener.store.writer.GroupCommitWriter`, whose thread alone owns
      the write connection: a batch of saves shares one transaction and one
      commit, each save after the first in its own savepoint. A future resolves only after the
      server acknowledged the COMMIT, which with ``synchronous_commit`` on
      (enforced for the writer's session) means the WAL is flushed: commit
      before ACK holds as with SQLite;
    * reads use one separate autocommit connection under a lock (each read is
      one statement, READ COMMITTED), and the report searches another;
    * a connection found broken (server restart, failover, network) is opened
      again at the next transaction or read; the write or read that met the
      break fails with StoreError (the sender gets no ACK and resends).

Duplicates: the unique key (sender_application, sender_facility, control_id)
decides. ``INSERT ... ON CONFLICT DO NOTHING`` waits for another
transaction holding the same key, so two writers (two daemons on one database)
saving the same message at once store it once; the second reads the first's
row and answers with its stored ACK.

The password never appears in this module's texts: it comes from the
environment (``PGPASSWORD``, libpq's own) or from the ``password`` argument
(the config's ``store_password_file``), never from the URL (the config refuses
one there), and :func:`display_url` is what callers print.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import psycopg
from psycopg.pq import TransactionStatus

from listener.errors import StoreError
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
    ScoreRecord,
    StoredReport,
    StoredScore,
    TaskPool,
    TrafficBin,
    WindowVersions,
    audit_target_json,
    open_windows,
    read_prior_studies,
    require_aware,
    require_step,
)
from listener.store.compact import join_route, pack_raw, unpack_raw
from listener.store.pg_schema import (
    CORRECTIONS_SQL,
    IN_USE_LOCK,
    OUTBOX_ORDER_LOCK,
    PG_SCHEMA_VERSION,
    PgConnection,
    PgMigration,
    migrate,
    pending_migrations,
    schema_version,
)
from listener.store.pgurl import display_url
from listener.store.rows import (
    PRIOR_COLUMNS,
    SUMMARY_COLUMNS,
    TRAFFIC_COLUMNS,
    VERSION_COLUMNS,
    MessageListing,
    ReportSearchSql,
    bucket_bins,
    by_day,
    forms_of,
    history_entry,
    message_summary,
    prior_values,
    task_pools,
    traffic_bins,
    traffic_sql,
    version_values,
    window_version_rows,
    window_versions_params,
    window_versions_sql,
)
from listener.store.schema import newer_schema_text
from listener.store.writer import DEFAULT_MAX_BATCH, GroupCommitWriter, StoreHealth, store_error

T = TypeVar("T")

_PAGE = 500  # rows per page for messages() and per chunk for purge_raw()
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT_S = 10
_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR, TransactionStatus.ACTIVE)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _stored_score(row: Sequence[Any]) -> StoredScore:
    """A StoredScore of (id, accession, grade, source, scorer, note, scored_at, message_id)."""
    pk, acc, grade, source, scorer, note, at, msg = row
    return StoredScore(
        int(pk),
        ScoreRecord(str(acc), grade, source, _utc(at), str(scorer), str(note)),
        int(msg) if msg is not None else None,
    )


def _window(since: datetime, until: datetime, step: str) -> bool:
    """Check a window and step (ValueError when naive or unknown); False when the window is empty."""
    require_aware(since, "since")
    require_aware(until, "until")
    require_step(step)
    return since < until


#: A message's UTC hour (a timestamp without zone): the leading expression of the ``messages_traffic`` index.
_HOUR = "date_trunc('hour', m.received AT TIME ZONE 'UTC')"
#: The console reads' window: whole hours of that index, then the exact times (start, end, start, end).
_WINDOW = (
    f"{_HOUR} BETWEEN date_trunc('hour', %s::timestamptz AT TIME ZONE 'UTC')"
    " AND date_trunc('hour', %s::timestamptz AT TIME ZONE 'UTC') AND m.received >= %s AND m.received < %s"
)
#: A report's UTC hour, from its own receive time (its message's).
_REPORT_HOUR = "date_trunc('hour', r.received AT TIME ZONE 'UTC')"
#: Text ordered by code point, as SQLite and Python order it, whatever the database's collation.
_C = ' COLLATE "C"'
#: :meth:`PostgresStore.bucket_mix` by hour (parameters: the window's start and end).
_BUCKET_MIX_SQL = (
    f"SELECT {_REPORT_HOUR} AS bin, r.bucket, count(*) AS n FROM reports r"
    f" WHERE r.received >= %s AND r.received < %s GROUP BY {_REPORT_HOUR}, r.bucket"
    f" ORDER BY {_REPORT_HOUR}, r.bucket{_C}"
)


def _utc_of_naive(value: datetime) -> datetime:
    """An aware UTC datetime of a UTC timestamp without zone."""
    return value.replace(tzinfo=UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


#: Every session's planner settings (docs/store.md, "The overread page on PostgreSQL"). No JIT: the store's
#: statements take milliseconds, and the server compiles one whose estimate is large (the open
#: Tasks' per-row sub-select) for half a second before running it in a tenth of that. A sort or
#: hash of a 100,000-report window (the overread page's version counts) fits in work_mem
#: instead of spilling to disk; a session runs one statement at a time.
SESSION_SETTINGS = ("SET jit = off", "SET work_mem = '32MB'")


def _connect(url: str, password: str | None, *, writer: bool) -> PgConnection:
    """An autocommit connection in UTC with :data:`SESSION_SETTINGS` (the writer's with
    synchronous_commit at least ``on``)."""
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}
    if password is not None:
        kwargs["password"] = password
    kwargs.setdefault("application_name", "overread")
    try:
        conn = psycopg.connect(url, **kwargs)
    except psycopg.Error as exc:
        raise store_error("connecting to PostgreSQL", exc) from None
    try:
        conn.execute("SET TIME ZONE 'UTC'")
        for setting in SESSION_SETTINGS:
            conn.execute(setting)
        if writer:
            row = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
            if row is not None and row[0] == "off":
                # An answer sent before the WAL flush could be lost with the server.
                conn.execute("SET synchronous_commit = on")
    except psycopg.Error as exc:
        conn.close()
        raise store_error("preparing the PostgreSQL session", exc) from None
    return conn


def connect_session(url: str, password: str | None, *, writer: bool) -> PgConnection:
    """An autocommit session as the store's own (UTC; a writer's with synchronous_commit on), for ``overread store copy``."""
    return _connect(url, password, writer=writer)


def _connect_writer(url: str, password: str | None) -> PgConnection:
    """The writer's session, holding the store's in-use advisory lock SHARED for as long as it lives.

    ``overread store copy`` takes that lock EXCLUSIVE: it refuses a store
    that a daemon (or an operator's command) has open, and while it copies, an
    open here is refused rather than writing into a store being moved
    (docs/store.md, "Moving a store"). The server drops the lock with the
    session; a session opened again after a break takes it again.
    """
    conn = _connect(url, password, writer=True)
    try:
        row = conn.execute(
            "SELECT pg_try_advisory_lock_shared(%s, hashtext(current_schema()))", (IN_USE_LOCK,)
        ).fetchone()
    except psycopg.Error as exc:
        conn.close()
        raise store_error("taking the store's in-use lock", exc) from None
    if row is None or row[0] is None:
        conn.close()
        raise StoreError(f"{display_url(url)}: no schema to use (the search_path names none that exists)")
    if not row[0]:
        conn.close()
        raise StoreError(f"{display_url(url)} is being copied (overread store copy holds it); wait for the copy to end")
    return conn


def _broken(conn: PgConnection) -> bool:
    return conn.closed or conn.broken


class PostgresSession:
    """The writer thread's :class:`~listener.store.writer.Session` on one PostgreSQL connection.

    The connection is in autocommit mode: these statements are the only
    transaction control. A broken connection is replaced at the next
    :meth:`begin` (the batch that met the break failed with it).
    """

    def __init__(self, connect: Callable[[], PgConnection]) -> None:
        self._connect = connect
        self._conn = connect()
        # A released savepoint's RELEASE waits to travel with the next SAVEPOINT
        # (one round trip for both, sent as one simple query); COMMIT and
        # ROLLBACK end the savepoint anyway.
        self._release_pending = False

    @property
    def handle(self) -> PgConnection:
        """The connection jobs write on."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        """True inside a transaction the server still holds open (also one aborted by an error, until ROLLBACK)."""
        return not _broken(self._conn) and self._conn.info.transaction_status in _IN_TRANSACTION

    def begin(self) -> None:
        """BEGIN (READ COMMITTED), on a fresh connection if the last one broke."""
        if _broken(self._conn):
            self._conn.close()
            self._conn = self._connect()
        self._release_pending = False
        self._conn.execute("BEGIN")

    def savepoint(self) -> None:
        """SAVEPOINT job (after the RELEASE of the previous job's, in the same round trip)."""
        if self._release_pending:
            self._release_pending = False
            self._conn.execute("RELEASE SAVEPOINT job; SAVEPOINT job")
        else:
            self._conn.execute("SAVEPOINT job")

    def release(self) -> None:
        """RELEASE SAVEPOINT job: sent with the next SAVEPOINT, or made needless by COMMIT or ROLLBACK."""
        self._release_pending = True

    def rollback_to(self) -> None:
        """ROLLBACK TO SAVEPOINT job, then RELEASE it."""
        self._conn.execute("ROLLBACK TO SAVEPOINT job")
        self._conn.execute("RELEASE SAVEPOINT job")

    def commit(self) -> None:
        """COMMIT; returns once the server has made it durable."""
        self._release_pending = False
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        """ROLLBACK."""
        self._release_pending = False
        self._conn.execute("ROLLBACK")

    def close(self) -> None:
        """Give the store's in-use lock back, then close the connection.

        The server drops a session's locks only once its backend has ended, a moment after the
        connection closes; unlocked first, a store closed here is free to the next open (a
        migration, ``overread store copy``) the moment this returns, not a moment later.
        """
        try:
            if not self._conn.closed:
                self._conn.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            pass  # a broken session: the server drops its locks when it notices
        finally:
            self._conn.close()


class _Reader:
    """One autocommit read connection under a lock, opened again when found broken."""

    def __init__(self, connect: Callable[[], PgConnection], *, lazy: bool = False) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: PgConnection | None = None if lazy else connect()
        self._closed = False

    def run(self, what: str, work: Callable[[PgConnection], T]) -> T:
        """Run ``work`` on the connection; a read that meets a dropped session runs once more on a new one."""
        error: StoreError
        with self._lock:
            for attempt in (1, 2):
                try:
                    return work(self._open())
                except (psycopg.Error, StoreError) as exc:
                    if attempt == 1 and self._conn is not None and _broken(self._conn):
                        continue  # reads change nothing: safe to run again
                    error = store_error(what, exc)
                    break
        raise error  # outside the except block: the server's text is not even __context__

    def _open(self) -> PgConnection:
        if self._closed:
            raise StoreError("store is closed")
        if self._conn is None or _broken(self._conn):
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._conn = self._connect()
        return self._conn

    def rows(self, what: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.run(what, lambda conn: conn.execute(sql, params).fetchall())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


#: :meth:`PostgresStore.prior_studies`'s statement (parameters: patient id, authority, the
#: accession to leave out, the receive time before which, the limit).
_PRIOR_STUDIES_SQL = (
    "SELECT accession, study_date, modality, body_region, procedure_code"
    " FROM (SELECT DISTINCT ON (accession) id, accession, study_date, modality, body_region,"
    " procedure_code, cancelled FROM reports WHERE patient_id = %s AND patient_authority = %s"
    " AND accession NOT IN ('', %s) AND stage IS NOT NULL AND received < %s"
    " ORDER BY accession DESC, id DESC) latest"
    " WHERE cancelled = 0 ORDER BY id DESC LIMIT %s"
)


class PriorReader:
    """A read session on a PostgreSQL store, for prior look-ups only.

    A pipeline worker process reads its reports' prior studies through one itself (the same
    statement as :meth:`PostgresStore.prior_studies`), as it does a SQLite store's file through
    :class:`listener.store.sqlite.PriorReader`, instead of asking the daemon over its pipe: the
    daemon's process then spends no CPU on them, and no message waits for the two crossings
    (docs/hardening.md, "Worker processes"). The session opens at the first look-up and again
    after a break (one more session on the server per worker process: docs/deployment.md). One
    thread uses it.

    Args:
        url: the store's URL (no password in it).
        password: the password (the config's ``store_password_file``), or None (``PGPASSWORD``).
    """

    def __init__(self, url: str, password: str | None = None) -> None:
        self._reader = _Reader(lambda: _connect(url, password, writer=False), lazy=True)

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]:
        """As :meth:`PostgresStore.prior_studies`.

        Raises:
            StoreError: the server cannot be reached or the store cannot be read.
            ValueError: ``patient_id`` is empty or ``before`` is naive.
        """
        return read_prior_studies(
            self._reader.rows, _PRIOR_STUDIES_SQL, patient_id, patient_authority, before, exclude_accession, limit
        )

    def close(self) -> None:
        """Close the session."""
        self._reader.close()


# ------------------------------------------------------------------- rows

OUTBOX_COLUMNS = (
    "o.id, o.destination, o.accession, o.control_id, o.payload, o.state, o.attempts,"
    " o.next_attempt_at, o.last_error, o.created, o.delivered_at, o.message_id, o.resent_from,"
    " o.lease_holder, o.lease_expires"
)


def _summary(row: Sequence[Any]) -> MessageSummary:
    return message_summary(row, _utc)


def _outbox_row(row: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        id=int(row[0]),
        destination=row[1],
        accession=row[2],
        control_id=row[3],
        payload=bytes(row[4]),
        state=row[5],
        attempts=int(row[6]),
        next_attempt_at=_utc(row[7]),
        last_error=row[8],
        created=_utc(row[9]),
        delivered_at=_opt_utc(row[10]),
        message_pk=int(row[11]),
        resent_from=int(row[12]) if row[12] is not None else None,
        lease_holder=row[13] or "",
        lease_expires=_opt_utc(row[14]),
    )


def _add_event(conn: PgConnection, outbox_id: int, at: datetime, event: str, detail: str = "") -> None:
    conn.execute(
        "INSERT INTO outbox_events (outbox_id, at, event, detail) VALUES (%s, %s, %s, %s)",
        (outbox_id, at, event, detail[:TEXT_MAX]),
    )


def _report_rows(conn: PgConnection, message_pk: int) -> tuple[ReportRow, ...]:
    return tuple(
        ReportRow(
            seq=int(r[0]),
            accession=r[1],
            bucket=r[2],
            report_json=r[3],
            findings_json=r[4],
            route_json=join_route(r[5], r[6]),
        )
        for r in conn.execute(
            "SELECT seq, accession, bucket, report_json, findings_json, route_json, explanation FROM reports"
            " WHERE message_id = %s ORDER BY seq",
            (message_pk,),
        )
    )


def _reports_from_json(text: str) -> tuple[ReportRow, ...]:
    return tuple(
        ReportRow(
            seq=int(r["seq"]),
            accession=str(r["accession"]),
            bucket=str(r["bucket"]),
            report_json=str(r["report_json"]),
            findings_json=str(r["findings_json"]),
            route_json=str(r["route_json"]),
        )
        for r in json.loads(text)
    )


def _message_detail(conn: PgConnection, message_pk: int) -> MessageDetail | None:
    row = conn.execute(
        f"SELECT {SUMMARY_COLUMNS}, m.processed, m.ack, m.raw FROM messages m WHERE m.id = %s", (message_pk,)
    ).fetchone()
    if row is None:
        return None
    head = _summary(row)
    processings = tuple(
        Processing(
            number=int(p[0]),
            processed=_utc(p[1]),
            superseded=_utc(p[2]),
            superseded_by=p[3],
            feed=p[4],
            state=p[5],
            ack_code=p[6],
            error_code=p[7],
            ack=bytes(p[8]),
            raw=unpack_raw(p[9]),
            reports=_reports_from_json(p[10]),
        )
        for p in conn.execute(
            "SELECT number, processed, superseded, superseded_by, feed, state, ack_code, error_code, ack, raw,"
            " reports_json FROM processings WHERE message_id = %s ORDER BY number",
            (message_pk,),
        ).fetchall()
    )
    outbox = []
    rows = conn.execute(
        f"SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.message_id = %s ORDER BY o.id", (message_pk,)
    ).fetchall()
    for o in rows:
        events = tuple(
            OutboxEvent(_utc(e[0]), e[1], e[2])
            for e in conn.execute(
                "SELECT at, event, detail FROM outbox_events WHERE outbox_id = %s ORDER BY id", (o[0],)
            ).fetchall()
        )
        outbox.append((_outbox_row(o), events))
    return MessageDetail(
        summary=head,
        processed=_utc(row[13]) if row[13] is not None else head.received,
        ack=bytes(row[14]),
        raw=unpack_raw(row[15]),
        reports=_report_rows(conn, message_pk),
        processings=processings,
        outbox=tuple(outbox),
    )


# ------------------------------------------------------------------ writing


def _lock_accessions(conn: PgConnection, pairs: Sequence[tuple[str, str]]) -> None:
    """Serialize the outbox inserts of each (destination, accession) until this transaction ends.

    Outbox ids come from a sequence when a row is inserted, not when it
    commits: without this lock, two daemons saving rows of one accession at
    once could commit them in the other order than their ids, and the worker,
    which sends an accession's rows by id, would send the later decision
    first, or send it before the earlier row was even visible. Holding a
    transaction-level advisory lock on the pair from before the insert to
    the commit makes id order commit order for the pair (docs/store.md,
    "Several daemons on one database"). Pairs are locked in sorted order; a
    hash collision only serializes two unrelated accessions.
    """
    for destination, accession in sorted(set(pairs)):
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (OUTBOX_ORDER_LOCK, f"{destination}\x1f{accession}")
        )


def _insert_children(conn: PgConnection, pk: int, record: MessageRecord, created: datetime, received: datetime) -> None:
    """Insert a record's reports, outbox rows and scores for message ``pk`` (writer thread); ``received``
    is the message's receive time (each report's version summary keeps it)."""
    # One statement per row: psycopg's executemany enters pipeline mode, which
    # costs more than it saves for the one or two reports of a message.
    processed = record.state == "processed"
    received_day = received.astimezone(UTC).date().isoformat()
    for seq, r in enumerate(record.reports):
        f = forms_of(r)
        conn.execute(
            "INSERT INTO reports (message_id, seq, accession, bucket, report_json, findings_json,"
            f" route_json, explanation, patient_id, patient_authority, {', '.join(VERSION_COLUMNS)},"
            f" {', '.join(PRIOR_COLUMNS)}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                pk,
                seq,
                r.accession,
                r.bucket,
                r.report_json,
                r.findings_json,
                f.route,
                f.explanation,
                r.patient_id,
                r.patient_authority,
                *version_values(f.stage, f.report_time, f.observation_time, f.summary, received, processed),
                *prior_values(f.prior, received_day),
            ),
        )
    # One row at a time, in order: ids order an accession's rows.
    _lock_accessions(conn, [(o.destination, o.accession) for o in record.outbox])
    for o in record.outbox:
        conn.execute(
            "INSERT INTO outbox (message_id, destination, accession, control_id, payload,"
            " next_attempt_at, created, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (pk, o.destination, o.accession, o.control_id, o.payload, created, created, created),
        )
    if record.scores:
        _insert_scores(conn, record.scores, pk)


def _insert_scores(conn: PgConnection, scores: Sequence[ScoreRecord], message_pk: int | None) -> int:
    new = 0
    for s in scores:
        cur = conn.execute(
            "INSERT INTO scores (accession, grade, source, scorer, note, scored_at, message_id)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (accession, source, scorer, grade, scored_at) DO NOTHING",
            (s.accession, s.grade, s.source, s.scorer[:SCORER_MAX], s.note[:TEXT_MAX], s.scored_at, message_pk),
        )
        new += max(cur.rowcount, 0)
    return new


def _never_accepted(conn: PgConnection, message_pk: int) -> bool:
    row = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE message_id = %(pk)s)"
        " AND NOT EXISTS (SELECT 1 FROM processings WHERE message_id = %(pk)s AND state != 'rejected')",
        {"pk": message_pk},
    ).fetchone()
    return bool(row and row[0])


def _replace_processing(
    conn: PgConnection,
    message_pk: int,
    record: MessageRecord,
    *,
    now: datetime,
    superseded_by: str,
    expected_processing: int | None,
) -> SaveResult:
    """Keep the current processing as a numbered earlier one and store ``record`` as the new one
    (the rules of :func:`listener.store.operations.replace_processing`)."""
    row = conn.execute(
        "SELECT processing, processed, received, feed, state, ack_code, error_code, ack, raw FROM messages"
        " WHERE id = %s FOR UPDATE",
        (message_pk,),
    ).fetchone()
    if row is None:
        raise StoreError(f"message {message_pk} is not in the store")
    number, processed, received, feed, state, ack_code, error_code, ack, stored_raw = row
    raw = unpack_raw(stored_raw)
    if expected_processing is not None and number != expected_processing:
        raise StoreError(f"message {message_pk} was processed again meanwhile (now processing {number}); run again")
    old_reports = [
        {
            "seq": r.seq,
            "accession": r.accession,
            "bucket": r.bucket,
            "report_json": r.report_json,
            "findings_json": r.findings_json,
            "route_json": r.route_json,
        }
        for r in _report_rows(conn, message_pk)
    ]
    new_raw = record.raw
    kept_raw = stored_raw if (new_raw is not None and raw is not None and raw != new_raw) else None
    conn.execute(
        "INSERT INTO processings (message_id, number, processed, superseded, superseded_by, feed, state, ack_code,"
        " error_code, ack, raw, reports_json) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            message_pk,
            number,
            processed if processed is not None else received,
            now,
            superseded_by[:TEXT_MAX],
            feed,
            state,
            ack_code,
            error_code,
            ack,
            kept_raw,
            json.dumps(old_reports, ensure_ascii=False),
        ),
    )
    conn.execute("DELETE FROM reports WHERE message_id = %s", (message_pk,))
    conn.execute(
        "UPDATE messages SET feed = %s, state = %s, ack_code = %s, error_code = %s, ack = %s, processing = %s,"
        " processed = %s, raw = coalesce(%s, raw), control_id = %s WHERE id = %s",
        (
            record.feed,
            record.state,
            record.ack_code,
            record.error_code,
            record.ack,
            number + 1,
            now,
            pack_raw(new_raw, record.packed_raw),
            record.control_id,
            message_pk,
        ),
    )
    _insert_children(conn, message_pk, record, now, received)
    return SaveResult(message_pk, False, record.ack, record.ack_code, record.state, int(number) + 1)


_KEY = "sender_application = %s AND sender_facility = %s AND control_id = %s"


def _replace_rejected(conn: PgConnection, record: MessageRecord) -> SaveResult | None:
    """The accepted resend of a rejected message stored under another key (``record.replaces``)."""
    row = conn.execute(
        f"SELECT id, state FROM messages WHERE {_KEY} FOR UPDATE",
        (record.sender_application, record.sender_facility, record.replaces),
    ).fetchone()
    if row is None or row[1] != "rejected" or not _never_accepted(conn, int(row[0])):
        return None
    taken = conn.execute(
        f"SELECT id, ack, ack_code, state, processing FROM messages WHERE {_KEY}",
        (record.sender_application, record.sender_facility, record.control_id),
    ).fetchone()
    if taken is not None:
        pk, ack, ack_code, state, processing = taken
        return SaveResult(int(pk), True, bytes(ack), str(ack_code), str(state), int(processing))
    return _replace_processing(
        conn, int(row[0]), record, now=record.received, superseded_by="resend", expected_processing=None
    )


def _insert_record(conn: PgConnection, record: MessageRecord) -> SaveResult:
    """Write one message with its reports and outbox rows (writer thread); the rules of SQLite's save."""
    if record.replaces and record.replaces != record.control_id:
        replaced = _replace_rejected(conn, record)
        if replaced is not None:
            return replaced
    inserted = conn.execute(
        "INSERT INTO messages (sender_application, sender_facility, control_id, feed, received,"
        " transport, state, ack_code, error_code, ack, raw) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (sender_application, sender_facility, control_id) DO NOTHING RETURNING id",
        (
            record.sender_application,
            record.sender_facility,
            record.control_id,
            record.feed,
            record.received,
            record.transport,
            record.state,
            record.ack_code,
            record.error_code,
            record.ack,
            pack_raw(record.raw, record.packed_raw),
        ),
    ).fetchone()
    if inserted is None:
        # The key is stored (earlier, earlier in this batch, or by another writer
        # whose transaction this INSERT waited for): read it, locked against a
        # concurrent replacement.
        found = conn.execute(
            f"SELECT id, ack, ack_code, state, error_code, processing FROM messages WHERE {_KEY} FOR UPDATE",
            (record.sender_application, record.sender_facility, record.control_id),
        ).fetchone()
        if found is None:
            raise StoreError("the message key vanished while saving")
        pk, ack, ack_code, state, error_code, processing = found
        same_outcome = (state, ack_code, error_code) == (record.state, record.ack_code, record.error_code)
        if state != "rejected" or record.state == "quarantined" or same_outcome or not _never_accepted(conn, int(pk)):
            return SaveResult(int(pk), True, bytes(ack), str(ack_code), str(state), int(processing))
        # A message we rejected was never accepted: its resend replaces the rejection.
        return _replace_processing(
            conn, int(pk), record, now=record.received, superseded_by="resend", expected_processing=None
        )
    pk = int(inserted[0])
    _insert_children(conn, pk, record, record.received, record.received)
    return SaveResult(pk, False, record.ack, record.ack_code, record.state)


# ----------------------------------------------------------- report searches


#: The searches' statements (listener/store/rows.py), in PostgreSQL's words.
_SEARCH_SQL = ReportSearchSql(
    mark="%s",
    field=lambda json, key: f"({json}::json ->> '{key}')",
    report=lambda alias: f"{alias}.report_json",
    # The reports_tasks index's predicate says the same (listener/store/pg_schema.py, step 10).
    corrections=CORRECTIONS_SQL.format(alias="r."),
)


def _stored(row: Sequence[Any]) -> StoredReport:
    return StoredReport(
        report_pk=int(row[0]),
        received=_utc(row[1]),
        transport=str(row[2]),
        accession=str(row[3]),
        report_json=str(row[4]),
        findings_json=str(row[5]),
        route_json=join_route(row[6], row[7]),
    )


class PostgresReports:
    """The PostgreSQL :class:`~listener.store.base.ReportReader` on its own read connection."""

    def __init__(self, connect: Callable[[], PgConnection]) -> None:
        self._reader = _Reader(connect, lazy=True)

    def _rows(self, search: tuple[str, list[object]], limit: int) -> list[StoredReport]:
        sql, params = search
        return [_stored(row) for row in self._reader.rows("searching reports", sql, (*params, limit))]

    def routed(self, *, pool: str | None, limit: int) -> list[StoredReport]:
        """Reports with a route (optionally to one pool)."""
        return self._rows(_SEARCH_SQL.routed(pool), limit)

    def with_findings(
        self, *, fhir_id: str | None = None, accession: str | None = None, limit: int
    ) -> list[StoredReport]:
        """Reports that have findings: one by its FHIR id (HTTP messages only), or all of an accession."""
        return self._rows(_SEARCH_SQL.with_findings(fhir_id, accession), limit)

    def message_of(self, fhir_id: str) -> int | None:
        """The message_pk of the HTTP message whose report has this FHIR id (from Location), or None."""
        sql, params = _SEARCH_SQL.message_of(fhir_id)
        rows = self._reader.rows("finding a report by its FHIR id", sql, (*params, 1))
        return int(rows[0][0]) if rows else None

    def tasks(self, *, status: str | None, pool: str | None, limit: int) -> list[tuple[StoredReport, datetime | None]]:
        """Routed reports that stand for a Task, each with when its Task was completed (see ReportReader.tasks)."""
        sql, params = _SEARCH_SQL.tasks(status, pool)
        rows = self._reader.rows("searching tasks", sql, (*params, limit))
        return [(_stored(row), _opt_utc(row[8])) for row in rows]

    def open_task_pools(self, *, limit: int) -> list[TaskPool]:
        """The newest ``limit`` open Tasks counted by pool (see ReportReader.open_task_pools)."""
        sql, params = _SEARCH_SQL.open_task_pools()
        return task_pools(self._reader.rows("counting open tasks", sql, (*params, limit)), _utc)

    def counted(self, what: str, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """The rows of a count over the reports, read on this connection (the store's
        :meth:`PostgresStore.bucket_mix`: it then runs beside the store's own reads)."""
        return self._reader.rows(what, sql, params)

    def close(self) -> None:
        """Close the read connection."""
        self._reader.close()


# --------------------------------------------------------------- the store


#: Accessions or keys per statement of the many-key reads (one array parameter each).
_KEYS_PER_QUERY = 500


class PostgresStore(MessageListing, StoreHealth):
    """The :class:`~listener.store.base.Store` on a PostgreSQL database.

    Args:
        url: ``postgresql://user@host:port/dbname`` (libpq's URL or key=value
            form; ``options=-csearch_path=NAME`` picks a schema). No password
            in it: give ``password`` or set ``PGPASSWORD``.
        password: the password (read from the config's ``store_password_file``), or None.
        max_batch: most saves committed in one group transaction.
        on_commit: hook called with each commit's job count (see GroupCommitWriter).
        migrate_schema: migrate an older store (the daemon); False refuses one
            that is not current (the operator's commands).

    Raises:
        StoreError: the server cannot be reached, or the schema cannot be created or migrated.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_commit: Callable[[int], object] | None = None,
        migrate_schema: bool = True,
    ) -> None:
        self.url = url
        #: The URL to print: no password.
        self.display_url = display_url(url)

        def connect_writer() -> PostgresSession:
            return PostgresSession(lambda: _connect_writer(url, password))

        def connect_reader() -> PgConnection:
            return _connect(url, password, writer=False)

        #: The schema steps this open ran, oldest first (the daemon logs each as ``store_migrated``).
        self.migrations_run: tuple[PgMigration, ...] = ()

        def setup(conn: PgConnection) -> None:
            if not migrate_schema:
                version = schema_version(conn)
                if version > PG_SCHEMA_VERSION:
                    raise StoreError(newer_schema_text(version, PG_SCHEMA_VERSION))
                if version == 0:
                    raise StoreError(f"no store in {self.display_url} (the daemon creates it at its first start)")
                if version < PG_SCHEMA_VERSION:
                    raise StoreError(
                        f"store schema version {version} is older than this program's {PG_SCHEMA_VERSION}:"
                        " run `overread store migrate` (docs/store.md)"
                    )
                return
            before = migrate(conn)
            if before > 0:
                self.migrations_run = tuple(pending_migrations(before))

        try:
            self._writer: GroupCommitWriter[PgConnection] = GroupCommitWriter(
                connect_writer, setup=setup, max_batch=max_batch, on_commit=on_commit
            )
        except StoreError as exc:
            raise StoreError(f"{self.display_url}: {exc}") from None
        self.last_save_error = ""
        self.last_probe_error = ""
        self.save_failures = 0
        try:
            self._reader = _Reader(connect_reader)
        except StoreError:
            self._writer.close()
            raise
        self._reports = PostgresReports(connect_reader)

    @property
    def writer(self) -> GroupCommitWriter[PgConnection]:
        """The group-commit writer (its ``commits``/``jobs_committed`` feed metrics)."""
        return self._writer

    @property
    def reports(self) -> PostgresReports:
        """The searches over stored reports, on their own connection."""
        return self._reports

    def _rows(self, what: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._reader.rows(what, sql, params)

    def _write(self, what: str, work: Callable[[PgConnection], T]) -> T:
        return self._writer.execute(work, what).result()

    # --------------------------------------------------------------- messages

    def find_duplicate(self, sender_application: str, sender_facility: str, control_id: str) -> SaveResult | None:
        """Return the stored answer for the key, as a duplicate, or None."""
        rows = self._rows(
            "duplicate lookup",
            f"SELECT id, ack, ack_code, state, processing FROM messages WHERE {_KEY}",
            (sender_application, sender_facility, control_id),
        )
        if not rows:
            return None
        pk, ack, ack_code, state, processing = rows[0]
        return SaveResult(int(pk), True, bytes(ack), str(ack_code), str(state), int(processing))

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        """Queue ``record``; the future resolves when it is durably committed (or is the stored duplicate)."""
        future = self._writer.execute(lambda conn: _insert_record(conn, record), "save")
        future.add_done_callback(self._note_save)
        return future

    def save(self, record: MessageRecord) -> SaveResult:
        """Save ``record`` durably, blocking until committed (see :meth:`submit`)."""
        return self.submit(record).result()

    def probe(self, now: datetime) -> None:
        """A real write through the writer (one row rewritten, committed durably)."""
        require_aware(now, "now")
        self._probe_with(
            lambda: self._write(
                "health probe",
                lambda conn: conn.execute(
                    "INSERT INTO health_probe (id, at) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                    (now,),
                ),
            )
        )

    # health_reason() is StoreHealth's (listener/store/writer.py), on these two hooks.
    def _writer_alive(self) -> bool:
        return self._writer.alive()

    def _health_read(self) -> None:
        self._rows("health check", "SELECT 1")

    def health(self) -> bool:
        """Return True when the writer runs, the database can be read, and the last save and probe succeeded."""
        return not self.health_reason()

    # messages() is MessageListing's (listener/store/rows.py): one query for both backends.
    _MARK = "%s"
    _PAGE_ROWS = _PAGE

    def _listing_stamp(self, moment: datetime) -> object:
        return moment  # psycopg sends an aware datetime as timestamptz

    def _listing_rows(self, sql: str, params: Sequence[object]) -> Sequence[Sequence[Any]]:
        return self._rows("listing messages", sql, params)

    def _listing_summary(self, row: Sequence[Any]) -> MessageSummary:
        return _summary(row)

    def buckets_of(self, message_pks: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """Each given message's current reports' buckets (see :meth:`Store.buckets_of`): one
        round trip per :data:`_KEYS_PER_QUERY` messages, through ``reports_message_bucket``."""
        wanted = sorted(set(message_pks))
        found: dict[int, list[str]] = {}
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start : start + _KEYS_PER_QUERY]
            rows = self._rows(
                "reading messages' buckets",
                "SELECT DISTINCT message_id, bucket FROM reports"
                " WHERE message_id = ANY(%s) AND bucket != '' ORDER BY message_id, bucket",
                (chunk,),
            )
            for pk, bucket in rows:
                found.setdefault(int(pk), []).append(str(bucket))
        return {pk: tuple(buckets) for pk, buckets in found.items()}

    def newest_message_pk(self) -> int:
        """The largest message_pk stored (0 when none)."""
        rows = self._rows("reading the newest message", "SELECT coalesce(max(id), 0) FROM messages")
        return int(rows[0][0])

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]:
        """A patient's earlier studies, newest stored first (see :meth:`Store.prior_studies`).

        As SQLite's: the newest row of each accession, read from the ``reports_patient`` index
        (backwards: each accession's newest first, ``DISTINCT ON`` keeps it), without the report
        JSON (docs/store.md, "Prior look-up columns").
        """
        return read_prior_studies(
            self._rows, _PRIOR_STUDIES_SQL, patient_id, patient_authority, before, exclude_accession, limit
        )

    def report_history(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[HistoryEntry, ...]:
        """Every stored report of an accession, in storage order (see :meth:`Store.report_history`)."""
        if not accession or limit <= 0:
            return ()
        rows = self._rows(
            "reading an accession's history",
            "SELECT m.id, r.seq, m.control_id, m.received, m.transport, m.feed, r.report_json,"
            " r.findings_json, r.bucket, m.raw IS NOT NULL"
            " FROM reports r JOIN messages m ON m.id = r.message_id"
            " WHERE r.accession = %s AND m.state = 'processed' ORDER BY m.id, r.seq LIMIT %s",
            (accession, limit),
        )
        return tuple(history_entry(row, _utc) for row in rows)

    def report_histories(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[HistoryEntry, ...]]:
        """Many accessions' histories in one round trip per :data:`_KEYS_PER_QUERY` accessions
        (see :meth:`Store.report_histories`); ``row_number()`` keeps each accession's first ``limit`` rows."""
        wanted = sorted({a for a in accessions if a})
        if not wanted or limit <= 0:
            return {}
        found: dict[str, list[HistoryEntry]] = {}
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start : start + _KEYS_PER_QUERY]
            rows = self._rows(
                "reading accessions' histories",
                "SELECT accession, id, seq, control_id, received, transport, feed, report_json,"
                " findings_json, bucket, kept FROM (SELECT r.accession, m.id, r.seq, m.control_id,"
                " m.received, m.transport, m.feed, r.report_json, r.findings_json, r.bucket,"
                " m.raw IS NOT NULL AS kept,"
                " row_number() OVER (PARTITION BY r.accession ORDER BY m.id, r.seq) AS n"
                " FROM reports r JOIN messages m ON m.id = r.message_id"
                " WHERE r.accession = ANY(%s) AND m.state = 'processed') AS h"
                " WHERE n <= %s ORDER BY accession, id, seq",
                (chunk, limit),
            )
            for acc, *row in rows:
                found.setdefault(str(acc), []).append(history_entry(row, _utc))
        return {acc: tuple(entries) for acc, entries in found.items()}

    def accessions_received(self, since: datetime, until: datetime) -> tuple[str, ...]:
        """The accessions with a report of a processed message received in ``[since, until)``
        (see :meth:`Store.accessions_received`), through the ``messages_received`` index."""
        require_aware(since, "since")
        require_aware(until, "until")
        if until <= since:
            return ()
        rows = self._rows(
            "reading the accessions of a window",
            "SELECT DISTINCT r.accession FROM messages m JOIN reports r ON r.message_id = m.id"
            " WHERE m.received >= %s AND m.received < %s AND m.state = 'processed' AND r.accession != ''"
            " ORDER BY r.accession",
            (since, until),
        )
        return tuple(str(accession) for (accession,) in rows)

    def window_versions(
        self, since: datetime, until: datetime, windows: Sequence[tuple[datetime, datetime]]
    ) -> WindowVersions:
        """The window's versions split into those that may pair and the lone ones, counted (see
        :meth:`Store.window_versions`), in one statement: the accessions with another row
        from the ``reports_versions`` and ``reports_accession`` indexes (every accession's rows
        counted in index order when the window holds most of the store, else a look-up of the
        window's accessions), the lone versions from ``reports_versions`` again, each probing
        those accessions' hash (:func:`~listener.store.rows.window_versions_sql`)."""
        if not open_windows(since, until, windows):
            return WindowVersions((), ())
        bounds = [t for window in windows for t in window]
        sql = window_versions_sql(len(windows), "%s", "::timestamptz", _C)
        params = window_versions_params(since, until, bounds, windows=bool(windows))
        return window_version_rows(self._rows("reading the versions of a window", sql, params))

    def traffic(self, since: datetime, until: datetime, *, step: str) -> tuple[TrafficBin, ...]:
        """Messages received in ``[since, until)`` counted by UTC bin and kind (see :meth:`Store.traffic`).

        The ``messages_traffic`` index leads with the UTC hour, then the kind:
        the window is one range of it, read in group order (an index-only scan
        once vacuumed), so no sort. Days add up their hours' counts.
        """
        if not _window(since, until, step):
            return ()
        sql = traffic_sql(_HOUR, _WINDOW, _C)
        if step == "day":
            sql = by_day(sql, "date_trunc('day', bin)", TRAFFIC_COLUMNS, _C)
        return traffic_bins(self._rows("counting traffic", sql, (since, until, since, until)), _utc_of_naive)

    def bucket_mix(self, since: datetime, until: datetime, *, step: str) -> tuple[BucketBin, ...]:
        """The current reports of messages received in ``[since, until)`` by UTC bin and bucket
        (see :meth:`Store.bucket_mix`), counted from the ``reports_received_bucket`` index alone:
        each report row holds its message's receive time (its version summary, docs/store.md),
        so no message row is read. Grouped by hour, then by day. Read on the report searches'
        connection (:attr:`reports`), so the overread page counts its buckets while
        :meth:`window_versions` runs on the store's (docs/store.md, "The overread page on PostgreSQL")."""
        if not _window(since, until, step):
            return ()
        sql = _BUCKET_MIX_SQL
        if step == "day":
            sql = by_day(sql, "date_trunc('day', bin)", ("bucket",), _C)
        return bucket_bins(self._reports.counted("counting buckets", sql, (since, until)), _utc_of_naive)

    def cached_comparisons(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached results of the given keys (see :meth:`Store.cached_comparisons`)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start : start + _KEYS_PER_QUERY]
            for key, result in self._rows(
                "reading cached comparisons", "SELECT key, result_json FROM comparisons WHERE key = ANY(%s)", (chunk,)
            ):
                found[str(key)] = str(result)
        return found

    def cache_comparisons(self, items: Sequence[CachedComparison]) -> int:
        """Write compared pairs' results to the cache in one transaction (see :meth:`Store.cache_comparisons`)."""
        batch = [(c.key, c.accession, c.computed_at, c.result_json) for c in items]
        if not batch:
            return 0

        def write(conn: PgConnection) -> int:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO comparisons (key, accession, computed_at, result_json) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET accession = excluded.accession,"
                    " computed_at = excluded.computed_at, result_json = excluded.result_json",
                    batch,
                )
            return len(batch)

        return self._write("caching comparisons", write)

    def drop_comparisons(self) -> int:
        """Delete every cached comparison (see :meth:`Store.drop_comparisons`)."""
        return self._write(
            "dropping cached comparisons", lambda conn: max(conn.execute("DELETE FROM comparisons").rowcount, 0)
        )

    def record_scores(self, scores: Sequence[ScoreRecord]) -> int:
        """Store explicit scores in one transaction, skipping those already stored; return how many were new."""
        batch = tuple(scores)
        if not batch:
            return 0
        return self._write("recording scores", lambda conn: _insert_scores(conn, batch, None))

    def scores(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[StoredScore, ...]:
        """An accession's explicit scores in the order they were recorded."""
        if not accession or limit <= 0:
            return ()
        rows = self._rows(
            "reading an accession's scores",
            "SELECT id, accession, grade, source, scorer, note, scored_at, message_id FROM scores"
            " WHERE accession = %s ORDER BY id LIMIT %s",
            (accession, limit),
        )
        return tuple(_stored_score(row) for row in rows)

    def scores_of_accessions(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[StoredScore, ...]]:
        """Many accessions' scores in one round trip per :data:`_KEYS_PER_QUERY` accessions
        (see :meth:`Store.scores_of_accessions`); ``row_number()`` keeps each accession's first ``limit``."""
        wanted = sorted({a for a in accessions if a})
        if not wanted or limit <= 0:
            return {}
        found: dict[str, list[StoredScore]] = {}
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            rows = self._rows(
                "reading accessions' scores",
                "SELECT id, accession, grade, source, scorer, note, scored_at, message_id FROM (SELECT *,"
                " row_number() OVER (PARTITION BY accession ORDER BY id) AS n FROM scores"
                " WHERE accession = ANY(%s)) AS s WHERE n <= %s ORDER BY accession, id",
                (wanted[start : start + _KEYS_PER_QUERY], limit),
            )
            for row in rows:
                stored = _stored_score(row)
                found.setdefault(stored.score.accession, []).append(stored)
        return {acc: tuple(scores) for acc, scores in found.items()}

    def message_raw(self, message_pk: int) -> bytes | None:
        """Return a message's raw bytes, or None if purged, not kept or unknown."""
        rows = self._rows("reading a message", "SELECT raw FROM messages WHERE id = %s", (message_pk,))
        return unpack_raw(rows[0][0]) if rows else None

    def purge_raw(self, older_than: datetime) -> int:
        """Set ``raw`` to NULL for messages received before ``older_than``, in chunks (each its own job)."""
        require_aware(older_than, "older_than")

        def chunk(conn: PgConnection) -> int:
            cur = conn.execute(
                "UPDATE messages SET raw = NULL WHERE id IN (SELECT id FROM messages"
                " WHERE raw IS NOT NULL AND received < %s LIMIT %s)",
                (older_than, _PAGE),
            )
            conn.execute("UPDATE processings SET raw = NULL WHERE raw IS NOT NULL AND processed < %s", (older_than,))
            return max(cur.rowcount, 0)

        total = 0
        while True:
            count = self._write("purging raw bodies", chunk)
            total += count
            if count < _PAGE:
                return total

    # ----------------------------------------------------------------- outbox

    def outbox_due(self, destination: str, now: datetime, limit: int = 100) -> list[OutboxRow]:
        """Rows of ``destination`` to send now, each the oldest pending of its accession (a read, not a lease)."""
        require_aware(now, "now")
        rows = self._rows(
            "reading the outbox",
            f"SELECT {OUTBOX_COLUMNS} FROM outbox o"
            " WHERE o.destination = %s AND o.state = 'pending' AND o.next_attempt_at <= %s"
            " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.destination = o.destination"
            "   AND p.accession = o.accession AND p.state = 'pending' AND p.id < o.id)"
            " ORDER BY o.id LIMIT %s",
            (destination, now, limit),
        )
        return [_outbox_row(row) for row in rows]

    def outbox_claim(
        self, destination: str, holder: str, now: datetime, lease_until: datetime, limit: int = 1
    ) -> list[OutboxClaim]:
        """Lease the rows :meth:`outbox_due` would return, minus those leased to others, to ``holder``.

        One statement on the writer connection: the candidates are locked with
        ``FOR UPDATE SKIP LOCKED`` (a row another daemon is claiming or
        recording right now is skipped, not waited for) and leased in the same
        transaction. Under READ COMMITTED, a candidate another daemon leased and
        committed after this statement's snapshot is re-checked on its newest
        version, so its fresh lease excludes it (docs/outbound.md, "Leases").
        """
        require_aware(now, "now")
        require_aware(lease_until, "lease_until")
        if not holder:
            raise ValueError("a claim needs a holder")

        def claim(conn: PgConnection) -> list[OutboxClaim]:
            rows = conn.execute(
                "WITH c AS (SELECT o.id, o.lease_holder AS previous FROM outbox o"
                " WHERE o.destination = %(d)s AND o.state = 'pending' AND o.next_attempt_at <= %(now)s"
                " AND (o.lease_expires IS NULL OR o.lease_expires <= %(now)s)"
                " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.destination = o.destination"
                "   AND p.accession = o.accession AND p.state = 'pending' AND p.id < o.id)"
                " ORDER BY o.id LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED)"
                " UPDATE outbox o SET lease_holder = %(holder)s, lease_expires = %(until)s FROM c WHERE o.id = c.id"
                f" RETURNING {OUTBOX_COLUMNS}, c.previous",
                {"d": destination, "now": now, "limit": limit, "holder": holder, "until": lease_until},
            ).fetchall()
            claims = []
            for raw in sorted(rows, key=lambda r: int(r[0])):
                row = _outbox_row(raw)
                previous = raw[-1] if raw[-1] and raw[-1] != holder else ""
                if previous:
                    _add_event(conn, row.id, now, "lease_taken_over", f"from {previous}")
                claims.append(OutboxClaim(row, previous))
            return claims

        return self._write("claiming outbox rows", claim)

    def outbox_renew(self, row_id: int, holder: str, lease_until: datetime) -> bool:
        """Extend ``holder``'s lease on a pending row; False when it is not pending or not ``holder``'s."""
        require_aware(lease_until, "lease_until")
        return self._write(
            "renewing a lease",
            lambda conn: (
                conn.execute(
                    "UPDATE outbox SET lease_expires = %s WHERE id = %s AND state = 'pending' AND lease_holder = %s",
                    (lease_until, row_id, holder),
                ).rowcount
                == 1
            ),
        )

    def outbox_release(self, holder: str, destination: str | None = None) -> int:
        """Drop ``holder``'s leases on pending rows (of one destination, or all); return how many."""
        return self._write(
            "releasing leases",
            lambda conn: max(
                conn.execute(
                    "UPDATE outbox SET lease_holder = NULL, lease_expires = NULL"
                    " WHERE lease_holder = %(h)s AND state = 'pending'"
                    " AND (%(d)s::text IS NULL OR destination = %(d)s)",
                    {"h": holder, "d": destination},
                ).rowcount,
                0,
            ),
        )

    def _update_pending(
        self,
        what: str,
        sql: str,
        params: Sequence[object] | dict[str, object],
        row_id: int,
        now: datetime,
        event: str,
        detail: str,
    ) -> bool:
        def update(conn: PgConnection) -> bool:
            if conn.execute(sql, params).rowcount != 1:
                return False
            _add_event(conn, row_id, now, event, detail)
            return True

        return self._write(what, update)

    def outbox_delivered(self, row_id: int, now: datetime, *, holder: str | None = None) -> bool:
        """Mark a pending row delivered (counting the attempt); False if not pending (or not ``holder``'s)."""
        require_aware(now, "now")
        return self._update_pending(
            "marking delivered",
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,"
            " delivered_at = %(now)s, updated = %(now)s, lease_holder = NULL, lease_expires = NULL"
            f" WHERE id = %(id)s AND state = 'pending' AND {_HOLDER}",
            {"now": now, "id": row_id, "holder": holder},
            row_id,
            now,
            "delivered",
            "",
        )

    def outbox_failed(
        self, row_id: int, now: datetime, next_attempt_at: datetime, error_text: str, *, holder: str | None = None
    ) -> bool:
        """Count a failed attempt, keep its error text, schedule the next attempt, drop the lease."""
        require_aware(now, "now")
        require_aware(next_attempt_at, "next_attempt_at")
        text = error_text[:TEXT_MAX]
        return self._update_pending(
            "recording a failure",
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = %(next)s, last_error = %(text)s,"
            " updated = %(now)s, lease_holder = NULL, lease_expires = NULL"
            f" WHERE id = %(id)s AND state = 'pending' AND {_HOLDER}",
            {"next": next_attempt_at, "text": text, "now": now, "id": row_id, "holder": holder},
            row_id,
            now,
            "failed",
            f"{text}; next attempt {_ts(next_attempt_at)}",
        )

    def outbox_dead(self, row_id: int, now: datetime, error_text: str, *, holder: str | None = None) -> bool:
        """Count a final failed attempt, move the row to dead letter, drop the lease."""
        require_aware(now, "now")
        text = error_text[:TEXT_MAX]
        return self._update_pending(
            "dead-lettering",
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = %(text)s,"
            " updated = %(now)s, lease_holder = NULL, lease_expires = NULL"
            f" WHERE id = %(id)s AND state = 'pending' AND {_HOLDER}",
            {"text": text, "now": now, "id": row_id, "holder": holder},
            row_id,
            now,
            "dead",
            text,
        )

    def outbox_list(
        self,
        state: OutboxState | None = None,
        *,
        destination: str | None = None,
        limit: int | None = None,
    ) -> list[OutboxRow]:
        """Return outbox rows by id, optionally of one state and one destination."""
        if state is not None and state not in OUTBOX_STATES:
            raise ValueError(f"state must be one of {', '.join(OUTBOX_STATES)}")
        where, params = _filters((("o.state", state), ("o.destination", destination)))
        rows = self._rows(
            "listing the outbox",
            f"SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE {where} ORDER BY o.id LIMIT %s",
            (*params, limit),
        )
        return [_outbox_row(row) for row in rows]

    def outbox_retry(self, ids: Sequence[int] | None, now: datetime, *, force: bool = False) -> tuple[int, ...]:
        """Make dead rows pending again, due ``now``, attempts reset; a superseded row stays dead unless ``force``."""
        require_aware(now, "now")
        id_list = None if ids is None else [int(i) for i in ids]

        def retry(conn: PgConnection) -> tuple[int, ...]:
            chosen = "" if id_list is None else " AND o.id = ANY(%(ids)s)"
            revived = [
                int(row[0])
                for row in conn.execute(
                    f"SELECT o.id FROM outbox o WHERE o.state = 'dead'{chosen}"
                    " AND (%(force)s OR NOT EXISTS (SELECT 1 FROM outbox l"
                    "   WHERE l.destination = o.destination AND l.accession = o.accession"
                    "   AND l.id > o.id AND l.state = 'delivered'))"
                    " ORDER BY o.id FOR UPDATE",
                    {"ids": id_list, "force": force},
                ).fetchall()
            ]
            if revived:
                conn.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = %(now)s,"
                    " updated = %(now)s WHERE id = ANY(%(ids)s)",
                    {"now": now, "ids": revived},
                )
            for row_id in revived:
                _add_event(conn, row_id, now, "retried", "forced" if force else "")
            return tuple(revived)

        return self._write("retrying the outbox", retry)

    def outbox_purge(
        self,
        *,
        delivered_before: datetime | None = None,
        dead_ids: Sequence[int] = (),
        destination: str | None = None,
    ) -> int:
        """Delete delivered rows delivered before a time (of one destination), and the given dead rows."""
        if delivered_before is not None:
            require_aware(delivered_before, "delivered_before")
        dead = [int(i) for i in dead_ids]

        def purge(conn: PgConnection) -> int:
            count = 0
            if delivered_before is not None:
                where, params = _filters((("destination", destination),))
                count += max(
                    conn.execute(
                        f"DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < %s AND {where}",
                        (delivered_before, *params),
                    ).rowcount,
                    0,
                )
            if dead:
                count += max(
                    conn.execute("DELETE FROM outbox WHERE state = 'dead' AND id = ANY(%s)", (dead,)).rowcount, 0
                )
            return count

        return self._write("purging the outbox", purge)

    def outbox_stats(self, now: datetime) -> OutboxStats:
        """Return depth by destination and state, and the oldest pending row's age."""
        require_aware(now, "now")
        rows = self._rows(
            "reading outbox statistics",
            "SELECT destination, state, count(*), min(created) FROM outbox"
            " GROUP BY destination, state ORDER BY destination, state",
        )
        depth = tuple(
            OutboxDepth(dest, cast(OutboxState, state), int(count), now - _utc(oldest))
            for dest, state, count, oldest in rows
        )
        pending = [d.oldest_age for d in depth if d.state == "pending"]
        return OutboxStats(depth, max(pending) if pending else None)

    # ------------------------------------------------------------- operators

    def message_detail(self, message_pk: int) -> MessageDetail | None:
        """Everything stored about one message, or None when unknown (one read transaction)."""

        def read(conn: PgConnection) -> MessageDetail | None:
            # One snapshot for the message and its children.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return _message_detail(conn, message_pk)

        return self._reader.run("reading a message", read)

    def replace_processing(
        self,
        message_pk: int,
        record: MessageRecord,
        *,
        now: datetime,
        superseded_by: str,
        expected_processing: int | None,
    ) -> SaveResult:
        """Store ``record`` as a new processing of a stored message, keeping the current one numbered."""
        require_aware(now, "now")
        return self._write(
            "reprocessing",
            lambda conn: _replace_processing(
                conn, message_pk, record, now=now, superseded_by=superseded_by, expected_processing=expected_processing
            ),
        )

    def record_audit(
        self, *, at: datetime, actor: str, via: str, action: str, target: dict[str, Any], rows: int, detail: str = ""
    ) -> int:
        """Append one operator action to the audit log (durable when this returns); return its id."""
        require_aware(at, "at")

        def insert(conn: PgConnection) -> int:
            row = conn.execute(
                "INSERT INTO audit (at, actor, via, action, target, rows, detail) VALUES (%s,%s,%s,%s,%s,%s,%s)"
                " RETURNING id",
                (at, actor[:200], via, action, audit_target_json(target), int(rows), detail[:TEXT_MAX]),
            ).fetchone()
            return int(row[0]) if row is not None else 0

        return self._write("recording an audit entry", insert)

    def audit(
        self, *, since: datetime | None = None, action: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Audit entries, oldest first."""
        if since is not None:
            require_aware(since, "since")
        where, params = _filters((("action", action),))
        if since is not None:
            where += " AND at >= %s"
            params.append(since)
        rows = self._rows(
            "reading the audit log",
            f"SELECT id, at, actor, via, action, target, rows, detail FROM audit WHERE {where} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [AuditEntry(int(r[0]), _utc(r[1]), r[2], r[3], r[4], r[5], int(r[6]), r[7]) for r in rows]

    def outbox_resend(
        self, ids: Sequence[int], now: datetime, *, force: bool = False, note: str = ""
    ) -> list[tuple[int, int]]:
        """Queue delivered rows again (new pending rows, same payload); return (old id, new id) pairs."""
        require_aware(now, "now")

        def resend(conn: PgConnection) -> list[tuple[int, int]]:
            pairs = []
            for row_id in ids:
                found = conn.execute(
                    "SELECT o.message_id, o.destination, o.accession, o.control_id, o.payload FROM outbox o"
                    " WHERE o.id = %(id)s AND o.state = 'delivered'"
                    " AND (%(force)s OR NOT EXISTS (SELECT 1 FROM outbox l WHERE l.destination = o.destination"
                    "   AND l.accession = o.accession AND l.id > o.id AND l.state IN ('pending', 'delivered')))",
                    {"id": int(row_id), "force": force},
                ).fetchone()
                if found is None:
                    continue
                _lock_accessions(conn, [(found[1], found[2])])
                row = conn.execute(
                    "INSERT INTO outbox (message_id, destination, accession, control_id, payload, next_attempt_at,"
                    " created, updated, resent_from) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (*found, now, now, now, int(row_id)),
                ).fetchone()
                new_id = int(row[0]) if row is not None else 0
                _add_event(conn, int(row_id), now, "resent", f"queued again as row {new_id}{note}")
                _add_event(conn, new_id, now, "queued", f"resend of row {row_id}{note}")
                pairs.append((int(row_id), new_id))
            return pairs

        return self._write("resending", resend)

    def outbox_kick(self, destination: str | None, now: datetime, note: str = "") -> int:
        """Make waiting pending rows due now and ask the worker(s) to reconnect; return the pending rows."""
        require_aware(now, "now")

        def kick(conn: PgConnection) -> int:
            where, params = _filters((("destination", destination),))
            waiting = [
                int(r[0])
                for r in conn.execute(
                    f"SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at > %s AND {where}"
                    " ORDER BY id FOR UPDATE",
                    (now, *params),
                ).fetchall()
            ]
            if waiting:
                conn.execute(
                    "UPDATE outbox SET next_attempt_at = %(now)s, updated = %(now)s WHERE id = ANY(%(ids)s)",
                    {"now": now, "ids": waiting},
                )
            for row_id in waiting:
                _add_event(conn, row_id, now, "kicked", f"due now{note}")
            names = (
                [destination]
                if destination is not None
                else [
                    str(r[0])
                    for r in conn.execute(
                        "SELECT DISTINCT destination FROM outbox UNION SELECT destination FROM destination_state"
                    ).fetchall()
                ]
            )
            for name in names:
                conn.execute(
                    "INSERT INTO destination_state (destination, kick_requested_at, updated) VALUES (%(d)s, %(t)s, %(t)s)"
                    " ON CONFLICT (destination) DO UPDATE SET kick_requested_at = %(t)s, updated = %(t)s",
                    {"d": name, "t": now},
                )
            row = conn.execute(f"SELECT count(*) FROM outbox WHERE state = 'pending' AND {where}", params).fetchone()
            return int(row[0]) if row is not None else 0

        return self._write("kicking the outbox", kick)

    def outbox_rows_of(self, *, accession: str, destination: str | None = None) -> list[OutboxRow]:
        """An accession's outbox rows (optionally of one destination), by id."""
        where, params = _filters((("o.accession", accession), ("o.destination", destination)))
        return [
            _outbox_row(r)
            for r in self._rows(
                "listing the outbox", f"SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE {where} ORDER BY o.id", params
            )
        ]

    def destination_states(self, destination: str | None = None) -> list[DestinationState]:
        """Each destination's recorded connection state (failures, last error, kick request)."""
        where, params = _filters((("destination", destination),))
        return [
            DestinationState(r[0], int(r[1]), r[2], _opt_utc(r[3]), _opt_utc(r[4]), _opt_utc(r[5]))
            for r in self._rows(
                "reading destination state",
                "SELECT destination, connect_failures, last_connect_error, last_connect_error_at, next_connect_at,"
                f" kick_requested_at FROM destination_state WHERE {where} ORDER BY destination",
                params,
            )
        ]

    def destination_connect_failed(
        self, destination: str, now: datetime, failures: int, error_text: str, next_connect_at: datetime
    ) -> None:
        """Record a failed connection attempt (outbound worker)."""
        require_aware(now, "now")
        require_aware(next_connect_at, "next_connect_at")
        self._write(
            "recording a connection failure",
            lambda conn: conn.execute(
                "INSERT INTO destination_state (destination, connect_failures, last_connect_error,"
                " last_connect_error_at, next_connect_at, updated)"
                " VALUES (%(d)s, %(f)s, %(e)s, %(now)s, %(next)s, %(now)s)"
                " ON CONFLICT (destination) DO UPDATE SET connect_failures = %(f)s, last_connect_error = %(e)s,"
                " last_connect_error_at = %(now)s, next_connect_at = %(next)s, updated = %(now)s",
                {"d": destination, "f": failures, "e": error_text[:TEXT_MAX], "now": now, "next": next_connect_at},
            ),
        )

    def destination_connected(self, destination: str, now: datetime) -> None:
        """Record a successful connection after failures (outbound worker)."""
        require_aware(now, "now")
        self._write(
            "recording a connection",
            lambda conn: conn.execute(
                "UPDATE destination_state SET connect_failures = 0, next_connect_at = NULL, updated = %s"
                " WHERE destination = %s",
                (now, destination),
            ),
        )

    # -------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Commit every queued write, stop the writer, close the connections."""
        self._writer.close()
        self._reports.close()
        self._reader.close()


#: The lease condition of a worker's update: any row without a holder given, else only its own.
_HOLDER = "(%(holder)s::text IS NULL OR lease_holder = %(holder)s)"


def _filters(pairs: Sequence[tuple[str, object | None]]) -> tuple[str, list[object]]:
    """``col = %s AND ...`` for the pairs whose value is given (``TRUE`` when none), and their values."""
    where = [f"{column} = %s" for column, value in pairs if value is not None]
    return (" AND ".join(where) or "TRUE"), [value for _, value in pairs if value is not None]


def _ts(value: datetime) -> str:
    """A time as the SQLite store writes it in event texts (fixed-width UTC ISO 8601)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# ------------------------------------------------------------- maintenance


def stored_version(url: str, password: str | None = None) -> int:
    """The schema version of the store at ``url`` (0: none yet), for ``overread store migrate --list``.

    Raises:
        StoreError: the server cannot be reached or the schema is not an overread store.
    """
    conn = _connect(url, password, writer=False)
    try:
        return schema_version(conn)
    except psycopg.Error as exc:
        raise store_error(f"{display_url(url)}: reading the schema version", exc) from None
    finally:
        conn.close()


def migrate_store(url: str, password: str | None = None) -> tuple[int, tuple[PgMigration, ...]]:
    """Run the pending migrations of the store at ``url`` (``overread store migrate``).

    One transaction under the migration advisory lock: a daemon opening the
    store meanwhile waits for it, and a second migrator finds nothing to do.

    Returns:
        The version before, and the steps run.

    Raises:
        StoreError: no store there, the server cannot be reached, the schema is
            newer than this program's or not ours, or a step failed (then
            nothing changed); the text names the URL without its password.
    """
    where = display_url(url)
    conn = _connect(url, password, writer=True)
    try:
        if schema_version(conn) == 0:
            raise StoreError(f"no store in {where} (the daemon creates it at its first start)")
        before = migrate(conn)
    except StoreError as exc:
        raise StoreError(f"{where}: {exc}") from None
    except psycopg.Error as exc:
        raise store_error(f"{where}: migration failed, nothing changed", exc) from None
    finally:
        conn.close()
    return before, tuple(pending_migrations(before))
