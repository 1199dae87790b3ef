"""Group commit: one writer thread owns the write connection and batches transactions.

Layer: storage, threads, no Twisted and no logging. The writer knows no
database: it drives a :class:`Session` (begin, savepoint, commit, rollback)
that a backend implements (``sqlite.py``: :class:`~listener.store.sqlite.SQLiteSession`),
and hands each job the session's ``handle`` (SQLite: the connection). Callers get a
:class:`concurrent.futures.Future`; the server wraps it into a Deferred, so no
reactor thread ever waits for a disk.

Strategy: a synchronous=FULL commit costs one fsync (about a quarter of a
millisecond here, far more on some disks). While one batch is being committed,
new requests queue up; the thread then takes *every* queued request (up to
``max_batch``) and runs them in ONE transaction, each after the first inside its
own savepoint (the first one's writes are undone by rolling the transaction
back; the rest then run in a new one), so a failing request rolls back only its
own writes and fails only its own future. A request that fails only because of
another transaction (a deadlock or a serialization failure: :data:`TRANSIENT_SQLSTATES`)
sends the whole batch round again in a new transaction (docs/store.md, "Several
daemons on one database"). The futures are resolved only after :meth:`Session.commit` has
returned, i.e. after the fsync: a caller that sees a result may tell the
sender its message is safe. There is no artificial delay: under light load every request commits alone
(lowest latency), under heavy load batches grow by themselves.
"""

from __future__ import annotations

import abc
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from listener.errors import StoreError, database_error, database_error_code

T = TypeVar("T")
#: What a job works on: the backend's write connection (SQLite: ``sqlite3.Connection``).
H = TypeVar("H")
H_co = TypeVar("H_co", covariant=True)

#: Upper bound on the requests committed together; bounds a batch's latency.
DEFAULT_MAX_BATCH = 512

#: SQLSTATEs that end a transaction only because of what another ran at the same time: a deadlock
#: (``40P01``) or a serialization failure (``40001``). The batch is run again in a new transaction.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})

#: Times a batch is run in all when each run ends in a transient error (:data:`TRANSIENT_SQLSTATES`).
BATCH_ATTEMPTS = 3


def store_error(what: str, exc: BaseException) -> StoreError:
    """Build a StoreError for ``exc`` that names the operation, the error class and its code only.

    SQLite's and PostgreSQL's own texts can quote values (a trigger's message, a DETAIL line
    ``Key (accession)=(...) already exists``), so only the class and the result code name or
    SQLSTATE survive (``IntegrityError SQLITE_CONSTRAINT_CHECK``, ``UniqueViolation SQLSTATE
    23505``: :func:`listener.errors.database_error`).
    """
    if isinstance(exc, StoreError):
        return exc
    return StoreError(
        f"{what} failed ({database_error(exc)})", error_type=type(exc).__name__, error_code=database_error_code(exc)
    )


def _transient(exc: BaseException) -> bool:
    """True when ``exc`` ended the transaction only because of another one (:data:`TRANSIENT_SQLSTATES`)."""
    return database_error_code(exc) in TRANSIENT_SQLSTATES


class Session(Protocol[H_co]):
    """A backend's write connection, as the writer thread drives it.

    Used by the writer thread alone. Between transactions it is idle; the
    writer calls :meth:`begin`, then per job once an earlier job's writes are
    in the transaction :meth:`savepoint` and :meth:`release` or
    :meth:`rollback_to` (the first job that fails before any succeeded:
    :meth:`rollback`, then :meth:`begin` again for the rest), then
    :meth:`commit` or :meth:`rollback`. :meth:`commit` returns only once the
    transaction is durable. Any method may raise; the writer then fails the
    futures concerned with a :class:`StoreError` naming the exception's type.
    """

    @property
    def handle(self) -> H_co:
        """What jobs work on inside the transaction."""
        ...

    @property
    def in_transaction(self) -> bool:
        """True between :meth:`begin` and the end of the transaction (also False once the backend aborted it)."""
        ...

    def begin(self) -> None:
        """Start a write transaction (taking the write lock now)."""
        ...

    def savepoint(self) -> None:
        """Mark the start of one job's writes."""
        ...

    def release(self) -> None:
        """Keep the current job's writes (they commit with the transaction)."""
        ...

    def rollback_to(self) -> None:
        """Undo the current job's writes only and drop its savepoint."""
        ...

    def commit(self) -> None:
        """Commit the transaction durably."""
        ...

    def rollback(self) -> None:
        """Undo the whole transaction."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


@dataclass(slots=True)
class _Job(Generic[H, T]):
    work: Callable[[H], T]
    future: Future[T]
    what: str


class GroupCommitWriter(Generic[H]):
    """A writer thread that commits queued jobs in shared transactions.

    Args:
        connect: opens the write session; called on the writer thread, which
            alone uses it.
        setup: run once on the new session's handle before any job (migrations).
        max_batch: most jobs committed in one transaction.
        on_commit: called on the writer thread after each successful commit with
            the number of jobs it carried; for metrics, benchmarks and tests. It
            must not block; its exceptions are ignored.
        name: the thread's name.

    Raises:
        StoreError: the connection could not be opened or set up.
    """

    def __init__(
        self,
        connect: Callable[[], Session[H]],
        *,
        setup: Callable[[H], object] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_commit: Callable[[int], object] | None = None,
        name: str = "overread-store-writer",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._connect = connect
        self._setup = setup
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Job[H, Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        #: Transactions committed and jobs they carried (read freely: ints under the GIL).
        self.commits = 0
        self.jobs_committed = 0
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            self._closed = True
            raise

    # ------------------------------------------------------------------ callers

    def execute(self, work: Callable[[H], T], what: str = "write") -> Future[T]:
        """Queue ``work(handle)`` to run in the next transaction.

        ``work`` runs on the writer thread inside a savepoint; its result is the
        future's result once the transaction is durably committed. If it raises,
        its writes are rolled back and its future fails with a StoreError naming
        ``what``; the other jobs of the batch are unaffected.

        Raises:
            StoreError: the writer is closed.
        """
        job: _Job[H, T] = _Job(work, Future(), what)
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            self._queue.put(job)
        return job.future

    def alive(self) -> bool:
        """Return True while the writer accepts and runs jobs."""
        return not self._closed and self._thread.is_alive()

    def close(self) -> None:
        """Refuse new jobs, commit every job already queued, stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    # ------------------------------------------------------------ writer thread

    def _run(self, ready: Future[None]) -> None:
        try:
            session = self._connect()
        except BaseException as exc:  # noqa: BLE001 - reported through the future
            ready.set_exception(store_error("opening the store", exc))
            return
        try:
            if self._setup is not None:
                self._setup(session.handle)
        except BaseException as exc:  # noqa: BLE001
            session.close()
            ready.set_exception(store_error("preparing the store", exc))
            return
        ready.set_result(None)
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                # Strategy: take everything that queued up during the last commit.
                while len(batch) < self._max_batch:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                try:
                    self._run_batch(session, batch)
                except BaseException as exc:  # noqa: BLE001 - never leave a future hanging
                    self._abandon(session, batch, exc)
        finally:
            session.close()

    def _run_batch(self, session: Session[H], batch: list[_Job[H, Any]]) -> None:
        jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            if not self._run_jobs(session, jobs, last=attempt == BATCH_ATTEMPTS):
                return

    def _run_jobs(self, session: Session[H], jobs: list[_Job[H, Any]], last: bool) -> bool:
        """Run ``jobs`` in one transaction and resolve their futures; True when it must be run again.

        Again: a job failed with a transient error (:data:`TRANSIENT_SQLSTATES`: two daemons on one
        PostgreSQL database whose batches took the same two accessions' locks in opposite order,
        docs/store.md, "Several daemons on one database"). Only rolling the whole transaction back
        releases the locks its earlier jobs took, which the other transaction waits for; its
        futures are not resolved yet, so the batch runs again as if for the first time. ``last``:
        the last attempt, whose transient error fails that job as any error does.
        """
        try:
            session.begin()
        except Exception as exc:  # noqa: BLE001 - the backend's error, reported through every future
            for job in jobs:
                job.future.set_exception(store_error(job.what, exc))
            return False
        done: list[tuple[_Job[H, Any], Any]] = []
        failed: list[tuple[_Job[H, Any], StoreError]] = []
        for index, job in enumerate(jobs):
            # A savepoint only once the transaction holds an earlier job's writes: until then a
            # failing job is undone by rolling the whole transaction back, and the rest go on in
            # a new one. A job alone, and the first of a batch, costs no SAVEPOINT and RELEASE
            # (two statements, two trips through the GIL) and no sub-journal of its pages
            # (docs/benchmarks.md, "The daemon's kernel time").
            guarded = bool(done)
            if guarded:
                session.savepoint()
            try:
                value = job.work(session.handle)
            except BaseException as exc:  # noqa: BLE001 - isolated to this job's future
                if not last and _transient(exc):
                    self._rollback(session)
                    return True
                failed.append((job, store_error(job.what, exc)))
                if guarded:
                    if not self._rollback_savepoint(session):
                        # The backend rolled the whole transaction back (disk full,
                        # I/O error...): earlier jobs' writes are gone too.
                        self._fail_all(done + [(j, None) for j in jobs[index + 1 :]], failed, exc)
                        return False
                    continue
                self._rollback(session)
                rest = jobs[index + 1 :]
                if not rest:
                    self._fail_all([], failed, exc)
                    return False
                try:
                    session.begin()
                except Exception as again:  # noqa: BLE001 - the backend's error, reported through every future
                    self._fail_all([(j, None) for j in rest], failed, again)
                    return False
            else:
                if guarded:
                    session.release()
                done.append((job, value))
        try:
            session.commit()
        except BaseException as exc:  # noqa: BLE001
            self._rollback(session)
            if not last and _transient(exc):
                return True
            self._fail_all(done, failed, exc)
            return False
        self.commits += 1
        self.jobs_committed += len(jobs)
        if self._on_commit is not None:
            try:
                self._on_commit(len(jobs))
            except Exception:  # noqa: BLE001, S110 - a metrics hook must not break storage
                pass
        for job, error in failed:
            job.future.set_exception(error)
        for job, value in done:
            job.future.set_result(value)
        return False

    @staticmethod
    def _rollback(session: Session[H]) -> None:
        """Undo the open transaction, if any (a failing rollback leaves nothing to undo)."""
        if session.in_transaction:
            try:
                session.rollback()
            except Exception:  # noqa: BLE001, S110 - the jobs' futures carry the first error; closing follows
                pass

    @classmethod
    def _abandon(cls, session: Session[H], batch: list[_Job[H, Any]], exc: BaseException) -> None:
        cls._rollback(session)
        for job in batch:
            if not job.future.done():
                job.future.set_exception(store_error(job.what, exc))

    @staticmethod
    def _rollback_savepoint(session: Session[H]) -> bool:
        """Undo the current job; return False when the transaction itself is gone."""
        if not session.in_transaction:
            return False
        try:
            session.rollback_to()
        except Exception:  # noqa: BLE001 - the transaction cannot be trusted any more
            try:
                session.rollback()
            except Exception:  # noqa: BLE001, S110 - the jobs' futures carry the first error; closing follows
                pass
            return False
        return True

    @staticmethod
    def _fail_all(
        lost: list[tuple[_Job[H, Any], Any]],
        failed: list[tuple[_Job[H, Any], StoreError]],
        exc: BaseException,
    ) -> None:
        for job, error in failed:
            job.future.set_exception(error)
        for job, _ in lost:
            job.future.set_exception(store_error(job.what, exc))


class StoreHealth(abc.ABC):
    """The health both SQL stores report (docs/hardening.md, docs/monitoring.md ``/healthz``):
    the last save's and the last write probe's error text ("" after a success), the failed saves
    so far, and :meth:`health_reason`. A backend gives its writer and :meth:`_health_read`."""

    #: The last save's error text ("" when it succeeded).
    last_save_error = ""
    #: The last write probe's error text ("" when it succeeded).
    last_probe_error = ""
    #: Saves that failed since the store opened (``overread_store_save_failures_total``).
    save_failures = 0

    @abc.abstractmethod
    def _writer_alive(self) -> bool:
        """Whether the backend's writer accepts and runs jobs."""

    @abc.abstractmethod
    def _health_read(self) -> None:
        """One trivial read of the database (raises StoreError when it cannot be read)."""

    def _note_save(self, future: Future[Any]) -> None:
        # Runs on the writer thread: remember how the last save went (health).
        exc = future.exception()
        if exc is None:
            self.last_save_error = ""
        else:
            self.save_failures += 1
            # A StoreError's text is ours (store_error); anything else is named, never quoted.
            self.last_save_error = str(exc) if isinstance(exc, StoreError) else database_error(exc)

    def _probe_with(self, write: Callable[[], object]) -> None:
        """Run the backend's probe write, remembering how it went.

        Raises:
            StoreError: the write failed (disk full, read-only, I/O error...).
        """
        try:
            write()
        except StoreError as exc:
            self.last_probe_error = str(exc)
            raise
        self.last_probe_error = ""

    def health_reason(self) -> str:
        """Why the store is unhealthy ("" when healthy): the writer, a read, the last save or probe."""
        if not self._writer_alive():
            return "store writer stopped"
        if self.last_save_error:
            return f"last save failed: {self.last_save_error}"
        if self.last_probe_error:
            return f"write probe failed: {self.last_probe_error}"
        try:
            self._health_read()
        except StoreError as exc:
            return str(exc)
        return ""
