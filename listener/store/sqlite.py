"""The embedded store: one SQLite file, WAL, synchronous=FULL, group commit.

Layer: storage (threads, files), no Twisted and no logging: errors are raised as
:class:`~listener.errors.StoreError` whose text never quotes stored data, and the
server decides what to log.

Connections and threads:
    * writes (saves, outbox updates, purges) all go through one
      :class:`~listener.store.writer.GroupCommitWriter`, whose thread alone owns
      the write connection, so writes never wait for each other's locks and share
      fsyncs;
    * reads use one separate connection, guarded by a lock: each read is one
      short statement (an autocommit read transaction), and in WAL mode a reader
      never waits for the writer or its fsync. ``messages()`` pages with a
      keyset cursor so the lock is never held while the caller iterates.

Checkpoints: the writer connection does not copy the WAL into the database
file on its commit path (an automatic checkpoint there stalled every ~60th
commit for 5-20 ms, the ACK p99). A checkpointer thread with its own
connection runs a PASSIVE checkpoint every :data:`CHECKPOINT_EVERY` committed
jobs; PASSIVE never blocks the writer. As a backstop the writer still
checkpoints itself once the WAL passes :data:`WRITER_AUTOCHECKPOINT` pages,
which is cheap when the checkpointer has already copied nearly every frame,
and lets the WAL restart from its beginning.

Durability: every committed write is durable when its future resolves with
``synchronous=FULL`` (the default: the WAL is fsynced at each commit). ``NORMAL``
survives a process crash (kill -9) but may lose the last commits on power loss;
``EXTRA`` adds a directory fsync. The file is created 0600 before SQLite opens it;
SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from listener.errors import StoreError
from listener.store import operations as ops
from listener.store.base import (
    HISTORY_LIMIT,
    OUTBOX_STATES,
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
    OutboxRow,
    OutboxState,
    OutboxStats,
    PriorStudy,
    SaveResult,
    ScoreRecord,
    StoredScore,
    TrafficBin,
    WindowVersions,
    open_windows,
    read_prior_studies,
    require_aware,
    require_step,
)
from listener.store.compact import pack_raw, register_functions, unpack_raw
from listener.store.queries import ReportQueries
from listener.store.rows import (
    OTHER_ROW,
    TRAFFIC_COLUMNS,
    MessageListing,
    bucket_bins,
    bucket_mix_sql,
    by_day,
    history_entry,
    lone_rows,
    traffic_bins,
    traffic_sql,
)
from listener.store.schema import (
    SCHEMA_VERSION,
    Migration,
    migrate,
    newer_schema_text,
    pending_migrations,
    schema_version,
)
from listener.store.writer import DEFAULT_MAX_BATCH, GroupCommitWriter, StoreHealth, store_error

T = TypeVar("T")

Synchronous = Literal["FULL", "EXTRA", "NORMAL"]

#: The database file inside the state directory.
DB_FILENAME = "overread.db"
#: How long a connection waits for another process's write lock.
DEFAULT_BUSY_TIMEOUT_MS = 5000
_PAGE = 500  # rows per page for messages() and per chunk for purge_raw()
#: Keys per statement of cached_comparisons() (well under SQLite's bound on host parameters).
_KEYS_PER_QUERY = 500
#: Committed jobs between two background PASSIVE checkpoints (a message writes
#: about 16 pages, so about 500 pages).
CHECKPOINT_EVERY = 32
#: The writer connection's own automatic checkpoint threshold (pages): a backstop.
WRITER_AUTOCHECKPOINT = 4000

# ------------------------------------------------------------------------ times


_ts = ops.ts
_dt = ops.dt


#: A message's UTC hour as SQLite reads it: the leading expression of the ``messages_traffic`` index.
_HOUR = "substr(m.received, 1, 13)"
#: The console reads' window: whole hours of that index, then the exact times (start, end, start, end).
_WINDOW = f"{_HOUR} BETWEEN substr(?, 1, 13) AND substr(?, 1, 13) AND m.received >= ? AND m.received < ?"


def _bin_of(since: datetime, until: datetime, step: str) -> Callable[[str], datetime]:
    """Check a window and step; return how a bin's text (an hour's 13 or a day's 10 leading
    characters of a stored time) becomes its aware UTC start."""
    require_aware(since, "since")
    require_aware(until, "until")
    require_step(step)
    if step == "day":
        return lambda key: datetime.fromisoformat(f"{key}T00:00:00+00:00")
    return lambda key: datetime.fromisoformat(f"{key}:00:00+00:00")


# ------------------------------------------------------------------ connections


def create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 (or tighten it), and make its name durable.

    SQLite creates its ``-wal``/``-shm`` files with the database file's mode, so
    they follow. Existing ones are tightened too (left by a looser tool).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        sidecar = Path(f"{path}{suffix}")
        if sidecar.exists():
            os.chmod(sidecar, 0o600)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: The page size of a new database file, bytes.
PAGE_SIZE = 8192


def _connect(
    path: Path,
    synchronous: Synchronous,
    busy_timeout_ms: int,
    *,
    reader: bool,
    autocheckpoint: int | None = None,
) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        isolation_level=None,  # we issue BEGIN/COMMIT/SAVEPOINT ourselves
        timeout=busy_timeout_ms / 1000,
        check_same_thread=not reader,  # the reader is shared under a lock
    )
    try:
        register_functions(conn)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not reader:
            # Takes effect only in a new, empty file (before WAL mode writes its
            # header): a report row of ~2.5 KB fits once in a 4 KiB page and
            # three times in 8 KiB (docs/store.md, "Compact storage").
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            # The group-commit writer runs each job of a batch after the first in a savepoint; a job's
            # original pages (its sub-journal) past 64 KiB spilled to a temporary file in
            # /var/tmp: a file created, unlinked and about 24 writes per message. In memory
            # they are a copy each, dropped when the job's savepoint is released
            # (docs/benchmarks.md, "The daemon's kernel time").
            conn.execute("PRAGMA temp_store = MEMORY")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError("the store could not switch to WAL mode")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        if autocheckpoint is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint)}")
        if reader:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


#: The prior look-up's statement (parameters: patient id, authority, the accession to leave out,
#: the receive time before which, the limit): the newest row of each accession.
_PRIOR_STUDIES_SQL = (
    "SELECT accession, study_date, modality, body_region, procedure_code FROM (SELECT max(id) AS id,"
    " accession, study_date, modality, body_region, procedure_code, cancelled FROM reports"
    " WHERE patient_id = ? AND patient_authority = ? AND accession NOT IN ('', ?)"
    " AND stage IS NOT NULL AND received < ? GROUP BY accession)"
    " WHERE cancelled = 0 ORDER BY id DESC LIMIT ?"
)


class PriorReader:
    """A read-only connection to a SQLite store's file, for prior look-ups only.

    A pipeline worker process reads its reports' prior studies through one
    itself (the same query as :meth:`SQLiteStore.prior_studies`), instead of
    asking the daemon over its pipe: the daemon's process, whose one
    interpreter lock carries the network, the journal and the store writer,
    then spends no CPU on them (docs/hardening.md, "Worker processes"). The
    connection is ``query_only``; WAL lets it read beside the daemon's writer.
    One thread uses it.

    Args:
        path: the store's database file (it must exist: the daemon opened it).

    Raises:
        StoreError: the file is missing or cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError("no store file to read prior studies from")
        try:
            self._conn = _connect(self.path, "FULL", busy_timeout_ms, reader=True)
        except (sqlite3.Error, StoreError) as exc:
            raise store_error("opening the store for prior look-ups", exc) from None

    def _read(self, what: str, sql: str, params: Sequence[object] = ()) -> list[Any]:
        error: StoreError
        try:
            return self._conn.execute(sql, params).fetchall()
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed connection
            error = store_error(what, exc)
        raise error  # outside the except block: sqlite's text is not even __context__

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]:
        """As :meth:`SQLiteStore.prior_studies`.

        Raises:
            StoreError: the store cannot be read.
            ValueError: ``patient_id`` is empty or ``before`` is naive.
        """
        return read_prior_studies(
            self._read, _PRIOR_STUDIES_SQL, patient_id, patient_authority, before, exclude_accession, limit, _ts
        )

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class SQLiteSession:
    """The writer thread's :class:`~listener.store.writer.Session` on one SQLite connection.

    The connection is in autocommit mode (``isolation_level=None``): these
    statements are the only transaction control. ``BEGIN IMMEDIATE`` takes the
    write lock at once; ``COMMIT`` returns after the WAL's fsync under
    synchronous=FULL.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.handle = conn

    @property
    def in_transaction(self) -> bool:
        """True inside a transaction SQLite still holds open."""
        return self.handle.in_transaction

    def begin(self) -> None:
        """BEGIN IMMEDIATE."""
        self.handle.execute("BEGIN IMMEDIATE")

    def savepoint(self) -> None:
        """SAVEPOINT job."""
        self.handle.execute("SAVEPOINT job")

    def release(self) -> None:
        """RELEASE job."""
        self.handle.execute("RELEASE job")

    def rollback_to(self) -> None:
        """ROLLBACK TO job, then RELEASE it."""
        self.handle.execute("ROLLBACK TO job")
        self.handle.execute("RELEASE job")

    def commit(self) -> None:
        """COMMIT."""
        self.handle.execute("COMMIT")

    def rollback(self) -> None:
        """ROLLBACK."""
        self.handle.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection."""
        self.handle.close()


class _Checkpointer:
    """A thread that runs PASSIVE checkpoints on its own connection when asked.

    Errors are ignored: a checkpoint that fails (busy, disk) is retried at the
    next request, and the writer's own backstop checkpoint still runs.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._wanted = threading.Event()
        self._stop = False
        self._pending = False
        #: Checkpoints run (read freely: an int under the GIL); for tests.
        self.runs = 0
        self._thread = threading.Thread(target=self._run, name="overread-store-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a checkpoint soon (cheap; called on the writer thread)."""
        self._pending = True
        self._wanted.set()

    def close(self) -> None:
        """Run the checkpoint still asked for, if any, then stop the thread."""
        self._stop = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._pending:
                    self._pending = False
                    try:
                        if conn is None:
                            conn = self._connect()
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.runs += 1
                    except (sqlite3.Error, StoreError):
                        pass
                if self._stop:
                    return
        finally:
            if conn is not None:
                conn.close()


# -------------------------------------------------------------------- the store


#: The accessions of a window's versions with another report row, by code point (SQLite's
#: :meth:`SQLiteStore.window_versions`; PostgreSQL reads both sets in one statement).
_MULTI_VERSION_SQL = (
    "SELECT DISTINCT r.accession FROM reports r WHERE r.received >= ? AND r.received < ?"
    f" AND r.stage IS NOT NULL AND r.accession != '' AND EXISTS ({OTHER_ROW}) ORDER BY r.accession"
)


def _lone_versions_sql(windows: int) -> str:
    """The lone versions of a window counted by each of ``windows`` (its bounds are the first
    parameters, then the receive window's): every other row of the accession, a version or
    not, leaves it to :data:`_MULTI_VERSION_SQL`. No window: a statement with no row."""
    values = ", ".join(f"({i}, ?, ?)" for i in range(windows)) or "(0, NULL, NULL)"
    return (
        f"WITH w (i, s, u) AS (VALUES {values})"
        " SELECT w.i, r.summary, r.prelim_minutes, count(*), min(r.accession)"
        " FROM reports r JOIN w ON r.clinical_at >= w.s AND r.clinical_at < w.u"
        " WHERE r.received >= ? AND r.received < ? AND r.stage IS NOT NULL AND r.accession != ''"
        f" AND NOT EXISTS ({OTHER_ROW}) GROUP BY w.i, r.summary, r.prelim_minutes"
    )


class SQLiteStore(MessageListing, StoreHealth):
    """The embedded :class:`~listener.store.base.Store`.

    Args:
        path: the database file (see :meth:`in_state_dir` for the usual place).
        synchronous: ``FULL`` (default, durable on power loss), ``EXTRA`` or ``NORMAL``.
        busy_timeout_ms: how long to wait for another process's write lock.
        max_batch: most saves committed in one group transaction.
        on_commit: hook called with each commit's job count (see GroupCommitWriter).

    Raises:
        StoreError: the file cannot be created, opened or migrated.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_commit: Callable[[int], object] | None = None,
        migrate_schema: bool = True,
    ) -> None:
        if synchronous not in ("FULL", "EXTRA", "NORMAL"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.path = Path(path)
        try:
            create_private_file(self.path)
        except OSError as exc:
            raise store_error("creating the store file", exc) from None

        def connect() -> SQLiteSession:
            return SQLiteSession(
                _connect(self.path, synchronous, busy_timeout_ms, reader=False, autocheckpoint=WRITER_AUTOCHECKPOINT)
            )

        self._checkpointer = _Checkpointer(lambda: _connect(self.path, synchronous, busy_timeout_ms, reader=False))
        jobs_since_checkpoint = 0

        def committed(jobs: int) -> None:
            # Runs on the writer thread after each COMMIT.
            nonlocal jobs_since_checkpoint
            jobs_since_checkpoint += jobs
            if jobs_since_checkpoint >= CHECKPOINT_EVERY:
                jobs_since_checkpoint = 0
                self._checkpointer.request()
            if on_commit is not None:
                on_commit(jobs)

        #: The schema steps this open ran on an existing store, oldest first
        #: (empty for a new file or a current one); the daemon logs each as
        #: ``store_migrated``.
        self.migrations_run: tuple[Migration, ...] = ()

        def setup(conn: sqlite3.Connection) -> None:
            if not migrate_schema:
                version = schema_version(conn)
                if version > SCHEMA_VERSION:
                    raise StoreError(newer_schema_text(version, SCHEMA_VERSION))
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"store schema version {version} is older than this program's {SCHEMA_VERSION}:"
                        " stop the daemon and run `overread store migrate` (docs/operations.md, Upgrade)"
                    )
                return
            before = migrate(conn)
            if before > 0:
                self.migrations_run = tuple(pending_migrations(before))

        try:
            self._writer: GroupCommitWriter[sqlite3.Connection] = GroupCommitWriter(
                connect, setup=setup, max_batch=max_batch, on_commit=committed
            )
        except StoreError as exc:
            self._checkpointer.close()
            # Name the file: "store schema version 3 is newer..." alone does not say which.
            raise StoreError(f"{self.path}: {exc}") from None
        except BaseException:
            self._checkpointer.close()
            raise
        self._read_lock = threading.Lock()
        #: Health (docs/hardening.md): the last save's and the last write
        #: probe's error text ("" when they succeeded), and failed saves so far.
        self.last_save_error = ""
        self.last_probe_error = ""
        self.save_failures = 0
        try:
            self._reader = _connect(self.path, synchronous, busy_timeout_ms, reader=True)
        except (sqlite3.Error, StoreError) as exc:
            self._writer.close()
            self._checkpointer.close()
            raise store_error("opening the store", exc) from None
        self._reports = ReportQueries(self.path)

    @classmethod
    def in_state_dir(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_commit: Callable[[int], object] | None = None,
        migrate_schema: bool = True,
    ) -> SQLiteStore:
        """Open ``<state_dir>/overread.db``, creating the directory (0700) if needed."""
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise store_error("creating the state directory", exc) from None
        return cls(
            Path(state_dir) / DB_FILENAME,
            synchronous=synchronous,
            busy_timeout_ms=busy_timeout_ms,
            max_batch=max_batch,
            on_commit=on_commit,
            migrate_schema=migrate_schema,
        )

    @property
    def writer(self) -> GroupCommitWriter[sqlite3.Connection]:
        """The group-commit writer (its ``commits``/``jobs_committed`` feed metrics)."""
        return self._writer

    # ---------------------------------------------------------------- helpers

    def _read(self, what: str, sql: str, params: Sequence[object] = ()) -> list[Any]:
        error: StoreError
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except (sqlite3.Error, ValueError) as exc:  # ValueError: closed connection
                error = store_error(what, exc)
        raise error  # outside the except block: sqlite's text is not even __context__

    def _read_with(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run several reads on the shared reader connection, under its lock."""
        error: StoreError
        with self._read_lock:
            try:
                return work(self._reader)
            except (sqlite3.Error, ValueError) as exc:
                error = store_error(what, exc)
        raise error

    def _write(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._writer.execute(work, what).result()

    @property
    def reports(self) -> ReportQueries:
        """The searches over stored reports, on their own read-only connection."""
        return self._reports

    # --------------------------------------------------------------- messages

    def find_duplicate(self, sender_application: str, sender_facility: str, control_id: str) -> SaveResult | None:
        """Return the stored answer for the key, as a duplicate, or None.

        Raises:
            StoreError: the store cannot be read.
        """
        rows = self._read(
            "duplicate lookup",
            "SELECT id, ack, ack_code, state, processing FROM messages"
            " WHERE sender_application = ? AND sender_facility = ? AND control_id = ?",
            (sender_application, sender_facility, control_id),
        )
        if not rows:
            return None
        pk, ack, ack_code, state, processing = rows[0]
        return SaveResult(int(pk), True, bytes(ack), str(ack_code), str(state), int(processing))

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        """Queue ``record``; the future resolves when it is durably committed.

        The future gives ``duplicate=True`` and the stored answer if the key was
        already stored (nothing is written), or fails with StoreError.

        Raises:
            StoreError: the store is closed.
        """
        future = self._writer.execute(lambda conn: _insert_record(conn, record), "save")
        future.add_done_callback(self._note_save)
        return future

    def probe(self, now: datetime) -> None:
        """A real write through the writer (one row rewritten, committed durably).

        Raises:
            StoreError: the write failed (disk full, read-only, I/O error...).
        """
        self._probe_with(
            lambda: self._write(
                "health probe",
                lambda conn: conn.execute("INSERT OR REPLACE INTO health_probe (id, at) VALUES (1, ?)", (_ts(now),)),
            )
        )

    # health_reason() is StoreHealth's (listener/store/writer.py), on these two hooks.
    def _writer_alive(self) -> bool:
        return self._writer.alive()

    def _health_read(self) -> None:
        self._read("health check", "SELECT 1")

    def save(self, record: MessageRecord) -> SaveResult:
        """Save ``record`` durably, blocking until committed (see :meth:`submit`)."""
        return self.submit(record).result()

    # messages() is MessageListing's (listener/store/rows.py): one query for both backends.
    _MARK = "?"
    _PAGE_ROWS = _PAGE

    def _listing_stamp(self, moment: datetime) -> object:
        return _ts(moment)

    def _listing_rows(self, sql: str, params: Sequence[object]) -> Sequence[Sequence[Any]]:
        return self._read("listing messages", sql, params)

    def _listing_summary(self, row: Sequence[Any]) -> MessageSummary:
        return ops.summary(row)

    def buckets_of(self, message_pks: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """Each given message's current reports' buckets (see :meth:`Store.buckets_of`): one
        statement per :data:`_KEYS_PER_QUERY` messages, read from the ``reports_message_bucket``
        index alone."""
        wanted = sorted(set(message_pks))
        if not wanted:
            return {}

        def read(conn: sqlite3.Connection) -> dict[int, tuple[str, ...]]:
            found: dict[int, list[str]] = {}
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                chunk = wanted[start : start + _KEYS_PER_QUERY]
                rows = conn.execute(
                    "SELECT DISTINCT message_id, bucket FROM reports"
                    f" WHERE message_id IN ({','.join('?' * len(chunk))}) AND bucket != ''"
                    " ORDER BY message_id, bucket",
                    chunk,
                )
                for pk, bucket in rows:
                    found.setdefault(int(pk), []).append(str(bucket))
            return {pk: tuple(buckets) for pk, buckets in found.items()}

        return self._read_with("reading messages' buckets", read)

    def newest_message_pk(self) -> int:
        """The largest message_pk stored (0 when none): a bulk operation's pin."""
        rows = self._read("reading the newest message", "SELECT coalesce(max(id), 0) FROM messages")
        return int(rows[0][0])

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]:
        """A patient's earlier studies, newest stored first (see :meth:`Store.prior_studies`).

        The inner query reads the patient's rows from the ``reports_patient``
        index alone, never the table: that index holds what a look-up needs of
        each report (docs/store.md, "Prior look-up columns"), so no report JSON
        is read. Rows of processed messages (a version summary's ``stage`` is
        set) received before ``before`` are grouped by accession in index
        order, each group giving its newest row (highest id: commit order;
        SQLite takes the other columns from the row ``max(id)`` chose); the
        outer one drops the cancelled ones and keeps the ``limit`` newest.
        Work is bounded by the patient's own index entries, a few dozen bytes
        each (docs/benchmarks.md, "Prior look-ups from columns").

        Raises:
            StoreError: the store cannot be read.
            ValueError: ``patient_id`` is empty or ``before`` is naive.
        """
        return read_prior_studies(
            self._read, _PRIOR_STUDIES_SQL, patient_id, patient_authority, before, exclude_accession, limit, _ts
        )

    def report_history(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[HistoryEntry, ...]:
        """Every stored report of an accession, in storage order (see :meth:`Store.report_history`).

        Reads through the ``reports_accession`` index: work is bounded by the
        accession's own rows.

        Raises:
            StoreError: the store cannot be read.
        """
        if not accession or limit <= 0:
            return ()
        rows = self._read(
            "reading an accession's history",
            "SELECT m.id, r.seq, m.control_id, m.received, m.transport, m.feed, r.report_json,"
            " r.findings_json, r.bucket, m.raw IS NOT NULL"
            " FROM reports r JOIN messages m ON m.id = r.message_id"
            " WHERE r.accession = ? AND m.state = 'processed' ORDER BY m.id, r.seq LIMIT ?",
            (accession, limit),
        )
        return tuple(history_entry(row, _dt) for row in rows)

    def report_histories(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[HistoryEntry, ...]]:
        """Many accessions' histories (see :meth:`Store.report_histories`).

        One statement per :data:`_KEYS_PER_QUERY` accessions, each through the
        ``reports_accession`` index, in (accession, message, seq) order; the
        first ``limit`` rows of each accession are kept and only those are
        decompressed (a ``row_number()`` window, as on PostgreSQL, costs about
        a third more here: it numbers every row in a temporary table first).

        Raises:
            StoreError: the store cannot be read.
        """
        wanted = sorted({a for a in accessions if a})
        if not wanted or limit <= 0:
            return {}

        def read(conn: sqlite3.Connection) -> dict[str, tuple[HistoryEntry, ...]]:
            found: dict[str, list[HistoryEntry]] = {}
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                chunk = wanted[start : start + _KEYS_PER_QUERY]
                rows = conn.execute(
                    "SELECT r.accession, m.id, r.seq, m.control_id, m.received, m.transport, m.feed,"
                    " r.report_json, r.findings_json, r.bucket, m.raw IS NOT NULL"
                    " FROM reports r JOIN messages m ON m.id = r.message_id"
                    f" WHERE r.accession IN ({','.join('?' * len(chunk))}) AND m.state = 'processed'"
                    " ORDER BY r.accession, m.id, r.seq",
                    chunk,
                )
                for accession, *row in rows:
                    kept = found.setdefault(str(accession), [])
                    if len(kept) < limit:
                        kept.append(history_entry(row, _dt))
            return {a: tuple(rows) for a, rows in found.items()}

        return self._read_with("reading accessions' history", read)

    def accessions_received(self, since: datetime, until: datetime) -> tuple[str, ...]:
        """The accessions with a report of a processed message received in ``[since, until)``
        (see :meth:`Store.accessions_received`).

        Reads the window's messages through the ``messages_received`` index and
        their reports through the (message_id, seq) key: work is bounded by the
        window's rows.

        Raises:
            StoreError: the store cannot be read.
            ValueError: a naive time.
        """
        require_aware(since, "since")
        require_aware(until, "until")
        if until <= since:
            return ()
        rows = self._read(
            "reading the accessions of a window",
            "SELECT DISTINCT r.accession FROM messages m JOIN reports r ON r.message_id = m.id"
            " WHERE m.received >= ? AND m.received < ? AND m.state = 'processed' AND r.accession != ''"
            " ORDER BY r.accession",
            (_ts(since), _ts(until)),
        )
        return tuple(str(accession) for (accession,) in rows)

    def window_versions(
        self, since: datetime, until: datetime, windows: Sequence[tuple[datetime, datetime]]
    ) -> WindowVersions:
        """The window's versions split into those that may pair and the lone ones, counted (see
        :meth:`Store.window_versions`).

        Two statements in one read transaction (one snapshot): the accessions
        with another row, then the lone versions' counts, each reading the
        ``reports_versions`` index over the window and, for each of its rows,
        the ``reports_accession`` index: no report row is read. A probe of that
        index is as cheap here as a probe of a temporary one, so PostgreSQL's
        single statement (:func:`~listener.store.rows.window_versions_sql`)
        saves nothing on SQLite: it measured 10 to 40% more CPU when a quarter
        of the accessions pair (docs/benchmarks.md, "Console pages").

        Raises:
            StoreError: the store cannot be read.
            ValueError: a naive time.
        """
        if not open_windows(since, until, windows):
            return WindowVersions((), ())
        received = (_ts(since), _ts(until))
        bounds = [_ts(t) for window in windows for t in window]

        def read(conn: sqlite3.Connection) -> WindowVersions:
            conn.execute("BEGIN")
            try:
                multi = tuple(str(a) for (a,) in conn.execute(_MULTI_VERSION_SQL, received))
                lone = lone_rows(conn.execute(_lone_versions_sql(len(windows)), (*bounds, *received)).fetchall())
            finally:
                conn.execute("COMMIT")
            return WindowVersions(multi, lone if windows else ())

        return self._read_with("reading the versions of a window", read)

    def traffic(self, since: datetime, until: datetime, *, step: str) -> tuple[TrafficBin, ...]:
        """Messages received in ``[since, until)`` counted by UTC bin and kind (see :meth:`Store.traffic`).

        A stored time is fixed-width UTC text, so its first 13 characters name
        its hour. The ``messages_traffic`` index is ordered by exactly that
        hour, then the kind: the window's hours are one range of it, read in
        group order, so SQLite counts each group as it passes (no sort of the
        window's rows). Days add up their hours' counts.

        Raises:
            StoreError: the store cannot be read.
            ValueError: a naive time or an unknown step.
        """
        moment = _bin_of(since, until, step)
        if until <= since:
            return ()
        sql = traffic_sql(_HOUR, _WINDOW)
        if step == "day":
            sql = by_day(sql, "substr(bin, 1, 10)", TRAFFIC_COLUMNS)
        start, end = _ts(since), _ts(until)
        return traffic_bins(self._read("counting traffic", sql, (start, end, start, end)), moment)

    def bucket_mix(self, since: datetime, until: datetime, *, step: str) -> tuple[BucketBin, ...]:
        """The current reports of messages received in ``[since, until)`` by UTC bin and bucket
        (see :meth:`Store.bucket_mix`; its errors, and StoreError), through ``reports_message_bucket``."""
        moment = _bin_of(since, until, step)
        if until <= since:
            return ()
        sql = bucket_mix_sql(_HOUR, _WINDOW)
        if step == "day":
            sql = by_day(sql, "substr(bin, 1, 10)", ("bucket",))
        start, end = _ts(since), _ts(until)
        return bucket_bins(self._read("counting buckets", sql, (start, end, start, end)), moment)

    def cached_comparisons(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached results of the given keys (see :meth:`Store.cached_comparisons`); by primary key, in chunks."""
        wanted = list(dict.fromkeys(keys))

        def read(conn: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                chunk = wanted[start : start + _KEYS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                for key, result in conn.execute(
                    f"SELECT key, result_json FROM comparisons WHERE key IN ({marks})", chunk
                ):
                    found[str(key)] = str(result)
            return found

        return self._read_with("reading cached comparisons", read) if wanted else {}

    def cache_comparisons(self, items: Sequence[CachedComparison]) -> int:
        """Write compared pairs' results to the cache in one transaction (see :meth:`Store.cache_comparisons`)."""
        batch = [(c.key, c.accession, _ts(c.computed_at), c.result_json) for c in items]
        if not batch:
            return 0

        def write(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "INSERT OR REPLACE INTO comparisons (key, accession, computed_at, result_json) VALUES (?,?,?,?)", batch
            )
            return len(batch)

        return self._write("caching comparisons", write)

    def drop_comparisons(self) -> int:
        """Delete every cached comparison (see :meth:`Store.drop_comparisons`)."""
        return self._write("dropping cached comparisons", lambda conn: conn.execute("DELETE FROM comparisons").rowcount)

    def record_scores(self, scores: Sequence[ScoreRecord]) -> int:
        """Store explicit scores in one transaction, skipping those already stored; return how many were new."""
        batch = tuple(scores)
        if not batch:
            return 0
        return self._write("recording scores", lambda conn: ops.insert_scores(conn, batch, None))

    def scores(self, accession: str, *, limit: int = HISTORY_LIMIT) -> tuple[StoredScore, ...]:
        """An accession's explicit scores in the order they were recorded (see :meth:`Store.scores`)."""
        if not accession or limit <= 0:
            return ()
        return self._read_with("reading an accession's scores", lambda conn: ops.scores_of(conn, accession, limit))

    def scores_of_accessions(
        self, accessions: Sequence[str], *, limit: int = HISTORY_LIMIT
    ) -> dict[str, tuple[StoredScore, ...]]:
        """Many accessions' scores (see :meth:`Store.scores_of_accessions`): one statement per
        :data:`_KEYS_PER_QUERY` accessions through the ``scores`` unique index (accession first)."""
        wanted = sorted({a for a in accessions if a})
        if not wanted or limit <= 0:
            return {}

        def read(conn: sqlite3.Connection) -> dict[str, tuple[StoredScore, ...]]:
            found: dict[str, tuple[StoredScore, ...]] = {}
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                found.update(ops.scores_of_many(conn, wanted[start : start + _KEYS_PER_QUERY], limit))
            return found

        return self._read_with("reading accessions' scores", read)

    def message_raw(self, message_pk: int) -> bytes | None:
        """Return a message's raw bytes, or None if purged, not kept or unknown."""
        rows = self._read("reading a message", "SELECT raw FROM messages WHERE id = ?", (message_pk,))
        return unpack_raw(rows[0][0]) if rows else None

    def purge_raw(self, older_than: datetime) -> int:
        """Set ``raw`` to NULL for messages received before ``older_than``.

        Metadata, the stored answer and the reports stay. Works in chunks, each
        its own job, so saves are never held behind one long transaction.

        Returns:
            How many messages lost their raw bytes.
        """
        require_aware(older_than, "older_than")
        cutoff = _ts(older_than)

        def chunk(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE messages SET raw = NULL WHERE id IN (SELECT id FROM messages"
                " WHERE raw IS NOT NULL AND received < ? LIMIT ?)",
                (cutoff, _PAGE),
            )
            # Earlier processings keep a body only when it differed; it ages out with them.
            conn.execute("UPDATE processings SET raw = NULL WHERE raw IS NOT NULL AND processed < ?", (cutoff,))
            return cur.rowcount

        total = 0
        while True:
            count = self._write("purging raw bodies", chunk)
            total += count
            if count < _PAGE:
                return total

    # ----------------------------------------------------------------- outbox

    def outbox_due(self, destination: str, now: datetime, limit: int = 100) -> list[OutboxRow]:
        """Return the rows of ``destination`` to send now, oldest first.

        A row is returned only if it is pending, due (``next_attempt_at <= now``)
        and the oldest pending row of its accession: a later row never overtakes
        an earlier one, even while the earlier one waits for its retry time. So
        at most one row per accession is returned. Dead rows do not block.

        This is a read, not a lease (it ignores leases): workers claim rows with
        :meth:`outbox_claim` instead.
        """
        require_aware(now, "now")
        rows = self._read(
            "reading the outbox",
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox o"
            " WHERE o.destination = ? AND o.state = 'pending' AND o.next_attempt_at <= ?"
            " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.destination = o.destination"
            "   AND p.accession = o.accession AND p.state = 'pending' AND p.id < o.id)"
            " ORDER BY o.id LIMIT ?",
            (destination, _ts(now), limit),
        )
        return [_outbox_row(row) for row in rows]

    def outbox_claim(
        self, destination: str, holder: str, now: datetime, lease_until: datetime, limit: int = 1
    ) -> list[OutboxClaim]:
        """Lease the rows :meth:`outbox_due` would return, minus those leased to others, to ``holder``.

        Runs on the writer thread, in its transaction: the read and the lease
        are one step, so two claims never get the same row (docs/outbound.md,
        "Leases"). A row whose lease of another holder had expired is taken
        over, and that is recorded as its ``lease_taken_over`` event.
        """
        require_aware(now, "now")
        require_aware(lease_until, "lease_until")
        if not holder:
            raise ValueError("a claim needs a holder")

        def claim(conn: sqlite3.Connection) -> list[OutboxClaim]:
            rows = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox o"
                " WHERE o.destination = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2"
                " AND (o.lease_expires IS NULL OR o.lease_expires <= ?2)"
                " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.destination = o.destination"
                "   AND p.accession = o.accession AND p.state = 'pending' AND p.id < o.id)"
                " ORDER BY o.id LIMIT ?3",
                (destination, _ts(now), limit),
            ).fetchall()
            claims = []
            for raw in rows:
                row = _outbox_row(raw)
                conn.execute(
                    "UPDATE outbox SET lease_holder = ?, lease_expires = ? WHERE id = ?",
                    (holder, _ts(lease_until), row.id),
                )
                previous = row.lease_holder if row.lease_holder != holder else ""
                if previous:
                    ops.add_event(conn, row.id, now, "lease_taken_over", f"from {previous}")
                claimed = dataclasses.replace(row, lease_holder=holder, lease_expires=lease_until)
                claims.append(OutboxClaim(claimed, previous))
            return claims

        return self._write("claiming outbox rows", claim)

    def outbox_renew(self, row_id: int, holder: str, lease_until: datetime) -> bool:
        """Extend ``holder``'s lease on a pending row; False when it is not pending or not ``holder``'s."""
        require_aware(lease_until, "lease_until")
        return self._write(
            "renewing a lease",
            lambda conn: (
                conn.execute(
                    "UPDATE outbox SET lease_expires = ? WHERE id = ? AND state = 'pending' AND lease_holder = ?",
                    (_ts(lease_until), row_id, holder),
                ).rowcount
                == 1
            ),
        )

    def outbox_release(self, holder: str, destination: str | None = None) -> int:
        """Drop ``holder``'s leases on pending rows (of one destination, or all); return how many."""
        return self._write(
            "releasing leases",
            lambda conn: (
                conn.execute(
                    "UPDATE outbox SET lease_holder = NULL, lease_expires = NULL"
                    " WHERE lease_holder = ?1 AND state = 'pending' AND (?2 IS NULL OR destination = ?2)",
                    (holder, destination),
                ).rowcount
            ),
        )

    def outbox_delivered(self, row_id: int, now: datetime, *, holder: str | None = None) -> bool:
        """Mark a pending row delivered (counting the attempt); False if not pending (or not ``holder``'s)."""
        require_aware(now, "now")
        return self._update_pending(
            "marking delivered",
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,"
            " delivered_at = ?1, updated = ?1, lease_holder = NULL, lease_expires = NULL"
            " WHERE id = ?2 AND state = 'pending' AND (?3 IS NULL OR lease_holder = ?3)",
            (_ts(now), row_id, holder),
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
        return self._update_pending(
            "recording a failure",
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?1, last_error = ?2,"
            " updated = ?3, lease_holder = NULL, lease_expires = NULL"
            " WHERE id = ?4 AND state = 'pending' AND (?5 IS NULL OR lease_holder = ?5)",
            (_ts(next_attempt_at), error_text[:TEXT_MAX], _ts(now), row_id, holder),
            row_id,
            now,
            "failed",
            f"{error_text[:TEXT_MAX]}; next attempt {_ts(next_attempt_at)}",
        )

    def outbox_dead(self, row_id: int, now: datetime, error_text: str, *, holder: str | None = None) -> bool:
        """Count a final failed attempt, move the row to dead letter, drop the lease."""
        require_aware(now, "now")
        return self._update_pending(
            "dead-lettering",
            "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?1,"
            " updated = ?2, lease_holder = NULL, lease_expires = NULL"
            " WHERE id = ?3 AND state = 'pending' AND (?4 IS NULL OR lease_holder = ?4)",
            (error_text[:TEXT_MAX], _ts(now), row_id, holder),
            row_id,
            now,
            "dead",
            error_text[:TEXT_MAX],
        )

    def _update_pending(
        self, what: str, sql: str, params: Sequence[object], row_id: int, now: datetime, event: str, detail: str
    ) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            if conn.execute(sql, params).rowcount != 1:
                return False
            ops.add_event(conn, row_id, now, event, detail)
            return True

        return self._write(what, update)

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
        rows = self._read(
            "listing the outbox",
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox o"
            " WHERE (?1 IS NULL OR o.state = ?1) AND (?2 IS NULL OR o.destination = ?2)"
            " ORDER BY o.id LIMIT ?3",
            (state, destination, -1 if limit is None else limit),
        )
        return [_outbox_row(row) for row in rows]

    def outbox_retry(self, ids: Sequence[int] | None, now: datetime, *, force: bool = False) -> tuple[int, ...]:
        """Make dead rows pending again, due ``now``, with their attempts reset.

        A dead row is superseded when a later row of its (destination, accession)
        was delivered: sending it now would replace the RIS's newer state with an
        older one, so it stays dead unless ``force``. A revived row is again the
        oldest pending row of its accession, so it goes before later pending rows.

        Args:
            ids: the rows to revive, or None for every dead row.

        Returns:
            The ids revived (ids that are not dead, unknown or superseded are skipped).
        """
        require_aware(now, "now")
        id_list = None if ids is None else json.dumps([int(i) for i in ids])

        def retry(conn: sqlite3.Connection) -> tuple[int, ...]:
            revived = [
                row[0]
                for row in conn.execute(
                    "SELECT o.id FROM outbox o WHERE o.state = 'dead'"
                    " AND (?1 IS NULL OR o.id IN (SELECT value FROM json_each(?1)))"
                    " AND (?2 OR NOT EXISTS (SELECT 1 FROM outbox l"
                    "   WHERE l.destination = o.destination AND l.accession = o.accession"
                    "   AND l.id > o.id AND l.state = 'delivered'))"
                    " ORDER BY o.id",
                    (id_list, int(force)),
                )
            ]
            conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?1,"
                " updated = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
                (_ts(now), json.dumps(revived)),
            )
            for row_id in revived:
                ops.add_event(conn, row_id, now, "retried", "forced" if force else "")
            return tuple(revived)

        return self._write("retrying the outbox", retry)

    def outbox_purge(
        self,
        *,
        delivered_before: datetime | None = None,
        dead_ids: Sequence[int] = (),
        destination: str | None = None,
    ) -> int:
        """Delete delivered rows delivered before a time, and the given dead rows.

        Pending rows are never deleted. Purge delivered rows only once the dead
        rows of the same accessions are settled: the superseded check of
        :meth:`outbox_retry` looks for later delivered rows.

        Args:
            delivered_before: delete delivered rows delivered before this time.
            dead_ids: dead rows to delete (other ids are left alone).
            destination: only delivered rows of this destination (None: all).

        Returns:
            How many rows were deleted.
        """
        if delivered_before is not None:
            require_aware(delivered_before, "delivered_before")
        before = _ts(delivered_before) if delivered_before is not None else None
        dead = json.dumps([int(i) for i in dead_ids])

        def purge(conn: sqlite3.Connection) -> int:
            count = 0
            if before is not None:
                count += conn.execute(
                    "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < ?1"
                    " AND (?2 IS NULL OR destination = ?2)",
                    (before, destination),
                ).rowcount
            count += conn.execute(
                "DELETE FROM outbox WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?))",
                (dead,),
            ).rowcount
            return count

        return self._write("purging the outbox", purge)

    def outbox_stats(self, now: datetime) -> OutboxStats:
        """Return depth by destination and state, and the oldest pending row's age."""
        require_aware(now, "now")
        rows = self._read(
            "reading outbox statistics",
            "SELECT destination, state, count(*), min(created) FROM outbox"
            " GROUP BY destination, state ORDER BY destination, state",
        )
        depth = tuple(
            OutboxDepth(dest, cast(OutboxState, state), count, now - _dt(oldest)) for dest, state, count, oldest in rows
        )
        pending = [d.oldest_age for d in depth if d.state == "pending"]
        return OutboxStats(depth, max(pending) if pending else None)

    # ------------------------------------------------------------- operators

    def message_detail(self, message_pk: int) -> MessageDetail | None:
        """Everything stored about one message, or None when unknown."""
        return self._read_with("reading a message", lambda conn: ops.message_detail(conn, message_pk))

    def replace_processing(
        self,
        message_pk: int,
        record: MessageRecord,
        *,
        now: datetime,
        superseded_by: str,
        expected_processing: int | None,
    ) -> SaveResult:
        """Store ``record`` as a new processing of a stored message, keeping the current one numbered.

        Raises:
            StoreError: unknown message, or processed again since ``expected_processing`` was read.
        """
        require_aware(now, "now")
        return self._write(
            "reprocessing",
            lambda conn: ops.replace_processing(
                conn, message_pk, record, now=now, superseded_by=superseded_by, expected_processing=expected_processing
            ),
        )

    def record_audit(
        self, *, at: datetime, actor: str, via: str, action: str, target: dict[str, Any], rows: int, detail: str = ""
    ) -> int:
        """Append one operator action to the audit log (durable when this returns); return its id."""
        require_aware(at, "at")
        return self._write(
            "recording an audit entry",
            lambda conn: ops.record_audit(
                conn, at=at, actor=actor, via=via, action=action, target=target, rows=rows, detail=detail
            ),
        )

    def audit(
        self, *, since: datetime | None = None, action: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Audit entries, oldest first."""
        if since is not None:
            require_aware(since, "since")
        return self._read_with(
            "reading the audit log", lambda conn: ops.audit_entries(conn, since=since, action=action, limit=limit)
        )

    def outbox_resend(
        self, ids: Sequence[int], now: datetime, *, force: bool = False, note: str = ""
    ) -> list[tuple[int, int]]:
        """Queue delivered rows again (new pending rows, same payload); return (old id, new id) pairs."""
        require_aware(now, "now")
        return self._write("resending", lambda conn: ops.outbox_resend(conn, ids, now, force=force, note=note))

    def outbox_kick(self, destination: str | None, now: datetime, note: str = "") -> int:
        """Make waiting pending rows due now and ask the worker(s) to reconnect; return the pending rows."""
        require_aware(now, "now")
        return self._write("kicking the outbox", lambda conn: ops.outbox_kick(conn, destination, now, note))

    def outbox_rows_of(self, *, accession: str, destination: str | None = None) -> list[OutboxRow]:
        """An accession's outbox rows (optionally of one destination), by id."""
        return [
            _outbox_row(r)
            for r in self._read(
                "listing the outbox",
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox o WHERE o.accession = ?1"
                " AND (?2 IS NULL OR o.destination = ?2) ORDER BY o.id",
                (accession, destination),
            )
        ]

    def destination_states(self, destination: str | None = None) -> list[DestinationState]:
        """Each destination's recorded connection state (failures, last error, kick request)."""
        return self._read_with("reading destination state", lambda conn: ops.destination_states(conn, destination))

    def destination_connect_failed(
        self, destination: str, now: datetime, failures: int, error_text: str, next_connect_at: datetime
    ) -> None:
        """Record a failed connection attempt (outbound worker)."""
        require_aware(now, "now")
        self._write(
            "recording a connection failure",
            lambda conn: ops.destination_connect_failed(conn, destination, now, failures, error_text, next_connect_at),
        )

    def destination_connected(self, destination: str, now: datetime) -> None:
        """Record a successful connection after failures (outbound worker)."""
        require_aware(now, "now")
        self._write("recording a connection", lambda conn: ops.destination_connected(conn, destination, now))

    # -------------------------------------------------------------- lifecycle

    def health(self) -> bool:
        """Return True when the writer runs, the file can be read, and the last save and probe succeeded."""
        return not self.health_reason()

    def close(self) -> None:
        """Commit every queued write, stop the writer, close the connections."""
        self._writer.close()
        self._checkpointer.close()
        self._reports.close()
        with self._read_lock:
            self._reader.close()


_OUTBOX_COLUMNS = ops.OUTBOX_COLUMNS
_outbox_row = ops.outbox_row


def _replace_rejected(conn: sqlite3.Connection, record: MessageRecord) -> SaveResult | None:
    """The accepted resend of a rejected message stored under another key (``record.replaces``).

    Returns None when there is nothing to replace (the caller inserts as usual).
    """
    row = conn.execute(
        "SELECT id, state FROM messages WHERE sender_application = ? AND sender_facility = ? AND control_id = ?",
        (record.sender_application, record.sender_facility, record.replaces),
    ).fetchone()
    if row is None or row[1] != "rejected" or not ops.never_accepted(conn, int(row[0])):
        return None
    taken = conn.execute(
        "SELECT id, ack, ack_code, state, processing FROM messages"
        " WHERE sender_application = ? AND sender_facility = ? AND control_id = ?",
        (record.sender_application, record.sender_facility, record.control_id),
    ).fetchone()
    if taken is not None:
        # Its accepted key is stored already (a race, or another route): that answer stands.
        pk, ack, ack_code, state, processing = taken
        return SaveResult(int(pk), True, bytes(ack), str(ack_code), str(state), int(processing))
    return ops.replace_processing(
        conn, int(row[0]), record, now=record.received, superseded_by="resend", expected_processing=None
    )


def _insert_record(conn: sqlite3.Connection, record: MessageRecord) -> SaveResult:
    """Write one message with its reports and outbox rows (runs on the writer thread)."""
    received = _ts(record.received)
    if record.replaces and record.replaces != record.control_id:
        replaced = _replace_rejected(conn, record)
        if replaced is not None:
            return replaced
    cur = conn.execute(
        "INSERT INTO messages (sender_application, sender_facility, control_id, feed, received,"
        " transport, state, ack_code, error_code, ack, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (sender_application, sender_facility, control_id) DO NOTHING",
        (
            record.sender_application,
            record.sender_facility,
            record.control_id,
            record.feed,
            received,
            record.transport,
            record.state,
            record.ack_code,
            record.error_code,
            record.ack,
            pack_raw(record.raw, record.packed_raw),
        ),
    )
    if cur.rowcount == 0:
        # The key is stored (an earlier run, perhaps earlier in this very batch).
        pk, ack, ack_code, state, error_code, processing = conn.execute(
            "SELECT id, ack, ack_code, state, error_code, processing FROM messages"
            " WHERE sender_application = ? AND sender_facility = ? AND control_id = ?",
            (record.sender_application, record.sender_facility, record.control_id),
        ).fetchone()
        # Rejected again for the same reason (whatever the bytes: an engine that
        # resends on every NACK must not grow the store): the stored answer.
        same_outcome = (state, ack_code, error_code) == (record.state, record.ack_code, record.error_code)
        if (
            state != "rejected"
            or record.state == "quarantined"
            or same_outcome
            or not ops.never_accepted(conn, int(pk))
        ):
            # Accepted before (or rejected again for the same reason): write
            # nothing, answer what was answered the first time.
            return SaveResult(int(pk), True, bytes(ack), str(ack_code), str(state), int(processing))
        # A message we rejected was never accepted: its resend is processed
        # again and replaces the rejection (docs/operations.md, "Reprocessing").
        return ops.replace_processing(
            conn, int(pk), record, now=record.received, superseded_by="resend", expected_processing=None
        )
    pk = cur.lastrowid
    assert pk is not None
    ops.insert_children(conn, pk, record, received, received)
    return SaveResult(pk, False, record.ack, record.ack_code, record.state)
