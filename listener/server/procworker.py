"""One pipeline worker process: decode, QA and routing of HL7 v2 and FHIR messages, off the daemon's interpreter lock.

Layer: a child process of the daemon, started by
:class:`listener.server.runner.ProcessRunner` as
``python -m listener.server.procworker FD`` with one end of a socket pair
as ``FD``. It holds no journal, no network port, writes no log and never
writes the store (it reads its reports' prior studies from the store itself: a
SQLite store's file read-only, a PostgreSQL store through a session of its own):
it receives pickled requests, runs the pure pipeline and sends pickled
results back (docs/hardening.md, "Worker processes"). The daemon keeps the
I/O, the journal, the store and the ACKs.

Requests and replies (tuples, first item the kind):

* ``("config", generation, Config, store file, Recording)``: build the pipeline from the config's
  files; replies ``("ready", versions)`` or ``("config_error", type name)``.
  ``store file`` is the SQLite store's database (a path) or None (PostgreSQL: the process reads
  the config's ``store`` itself);
  :class:`~listener.intake.Recording` is how the daemon records a message (its
  destinations, whether it keeps raw bytes, the log hashes' key).
* ``("hl7", raw, received_at, packed live figures, budget, hurry)``: run
  :func:`listener.pipeline.process` with a budget of ``budget`` seconds
  (``hurry``: stop QA at once); replies ``("done", versions, (record, log
  fields, tally))``, what :func:`listener.intake.mllp_checked` makes of the
  outcome (the daemon's thread makes the same with ``workers: 0``), or
  ``("error", type name)`` when that failed. The record carries the ACK (dated
  and numbered by this process), the routing messages, the raw bytes' stored
  form (:func:`listener.store.compact.pack_raw`'s) and the report records, each
  with its stored forms (:func:`listener.store.rows.stored_forms`: the
  compressed columns, the version summary; the SQLite forms of its JSON when
  the config's store is SQLite), so the daemon's writer thread only inserts
  (docs/store.md, "Compact storage") and its reactor only commits, logs,
  counts and answers (docs/hardening.md, "Worker processes").
* ``("fhir", body, received_at, packed live figures, budget, hurry, media type, FhirClient)``:
  the same for a FHIR body with :func:`listener.pipeline.process_fhir`; the
  reply's value is what the HTTP intake's thread would give
  (:func:`listener.intake.fhir_records`: outcome, report records with the
  server ids, the server ids), the records carrying their stored forms.

While either runs, the pipeline's prior look-up reads the store itself: the
SQLite store's file through this process's own
:class:`~listener.store.sqlite.PriorReader`, or the config's PostgreSQL store
through its own session (:class:`~listener.store.postgresql.PriorReader`,
opened at the first look-up), so the daemon's process spends no CPU on it
(docs/hardening.md, "Worker processes"). When that read fails (or could not be
opened), it asks the daemon: :func:`ask` sends
the report's :func:`~listener.server.priors.prior_key` (not the whole
report) marked by its first byte, :data:`ASK`, so the daemon tells a look-up
from the task's reply before it unpickles anything (:func:`asked`); the answer
is ``("priors", priors or None)``; the daemon logs a look-up
that fails there too.

``versions`` is (QA, routing, mapping) version of the pipeline used: the
daemon checks it against the pipeline it meant, so a policy file that
changed between the daemon's reload and this process's never decides a
message unnoticed.

Both sides pickle with :func:`dumps` (:func:`send`): the frozen dataclasses of
a result are rebuilt by calling their class with their field values, a third
cheaper both ways than the dataclass default (``__getstate__`` and
``__setstate__``, which look the fields up again for every object).

After each config the process freezes its objects (``gc.freeze()``): a full
collection then skips the pipeline's tables and patterns (about 21,000 objects,
12 ms of CPU on the loaded development machine) instead of walking them in the
middle of a message.

SIGUSR1 stops QA of the running message at its next check (the daemon's
shutdown), and of every message after it at once. SIGINT, SIGHUP and SIGTERM are ignored: they are the daemon's. The
process dies with the thread that started it (Linux ``PR_SET_PDEATHSIG``) and
exits when the daemon closes the socket.
"""

from __future__ import annotations

import copyreg
import ctypes
import dataclasses
import gc
import io
import pickle
import signal
import socket
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from functools import partial
from multiprocessing.connection import Connection
from operator import attrgetter
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from listener.assemble import build_pipeline
from listener.config import Config
from listener.errors import StoreError
from listener.hl7v2.segments import MessageHeader, Separators, read_header
from listener.intake import Recording, Tally, ack_builder, fhir_records, mllp_checked, report_records
from listener.logs import keyed_hash
from listener.model import (
    Evidence,
    Finding,
    Patient,
    PeerReview,
    Procedure,
    Reader,
    Report,
    Route,
    Section,
    Sender,
    Times,
)
from listener.pipeline import (
    Interrupt,
    Outcome,
    Pipeline,
    ReportOutcome,
    process,
    process_fhir,
    version_fields,
    versions_of,
)
from listener.qa.engine import Prior
from listener.server.priors import PriorKey, PriorLookup, prior_key
from listener.sites import LiveFigures, ReaderHistory
from listener.store import postgres_prior_reader
from listener.store.base import MessageRecord, OutboxItem, ReportRecord, ScoreRecord, StoredForms
from listener.store.compact import pack_raw
from listener.store.pgurl import is_postgresql_url
from listener.store.rows import with_forms
from listener.store.sqlite import PriorReader

if TYPE_CHECKING:  # psycopg is optional: made by postgres_prior_reader
    from listener.store.postgresql import PriorReader as PgPriorReader

__all__ = ["dumps", "main", "pack_figures", "send", "serve", "unpack_figures"]

#: The frozen dataclasses that cross the pipe (a result, a prior look-up's answer).
_BY_VALUES: tuple[type, ...] = (
    Outcome,
    ReportOutcome,
    MessageHeader,
    Separators,
    Report,
    Sender,
    Patient,
    Procedure,
    Reader,
    PeerReview,
    Section,
    Times,
    Finding,
    Evidence,
    Route,
    ReportRecord,
    StoredForms,
    OutboxItem,
    Tally,
    Prior,
    ReaderHistory,
)

#: Frozen dataclasses whose ``__post_init__`` only checks its values: rebuilt from them, they pass again.
_CHECKED_BY_VALUES: tuple[type, ...] = (MessageRecord, ScoreRecord)


def _by_values(cls: type, checks_only: bool = False) -> Any:
    """A reducer that pickles an instance of ``cls`` as ``cls(*field values)``.

    A field outside ``__init__`` and outside equality (``MessageHeader``'s key, read on demand)
    is left out: the rebuilt instance reads it again when asked. A class with a ``__post_init__``
    is refused (it could change the values) unless ``checks_only`` says it only checks them.
    """
    every = dataclasses.fields(cls)
    fields = [f for f in every if f.init]
    names = tuple(f.name for f in fields)
    post_init = getattr(cls, "__post_init__", None) is not None and not checks_only
    if any(not f.init and f.compare for f in every) or post_init:
        raise TypeError(f"{cls.__name__} cannot be rebuilt from its field values")
    if len(names) == 1:
        name = names[0]
        return lambda obj: (cls, (getattr(obj, name),))
    values = attrgetter(*names)
    return lambda obj: (cls, values(obj))


#: The pickler's dispatch table: copyreg's, plus the reducers of _BY_VALUES.
_DISPATCH = {
    **copyreg.dispatch_table,
    **{cls: _by_values(cls) for cls in _BY_VALUES},
    **{cls: _by_values(cls, checks_only=True) for cls in _CHECKED_BY_VALUES},
}


def dumps(obj: object) -> bytes:
    """``obj`` pickled for the pipe (plain ``pickle.loads`` reads it)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(obj)
    return buf.getvalue()


def loads(data: bytes | memoryview) -> Any:
    """What :func:`dumps` pickled (what ``conn.recv()`` would return for it)."""
    return pickle.loads(data)  # noqa: S301 - our own worker's or daemon's bytes, over their private socket pair


def send(conn: Connection, obj: object) -> None:
    """``conn.send(obj)``, pickled by :func:`dumps` (``conn.recv()`` reads it)."""
    conn.send_bytes(dumps(obj))


#: The first byte of a worker's prior look-up request. Every other message a worker sends is a
#: pickle, whose first byte is pickle's PROTO opcode (0x80), so the daemon knows a task's reply
#: from a look-up by one byte, before it unpickles the reply (docs/hardening.md, "Worker processes").
ASK = b"?"


def ask(conn: Connection, key: PriorKey) -> None:
    """Ask the daemon for the prior studies of ``key`` (its answer: ``("priors", priors or None)``)."""
    conn.send_bytes(ASK + dumps(key))


def asked(data: bytes) -> PriorKey | None:
    """The key of a worker's look-up request (:func:`ask`); None when ``data`` is another message."""
    if data[:1] != ASK:
        return None
    key: PriorKey = loads(memoryview(data)[1:])
    return key


#: LiveFigures as plain data (its mappings are read-only proxies, which pickle refuses).
PackedFigures = tuple[dict[str, ReaderHistory], dict[str, ReaderHistory], str]


def pack_figures(figures: LiveFigures | None) -> PackedFigures | None:
    """``figures`` in a form a pipe can carry."""
    if figures is None:
        return None
    return dict(figures.readers), dict(figures.groups), figures.source


def unpack_figures(packed: PackedFigures | None) -> LiveFigures | None:
    """The LiveFigures :func:`pack_figures` packed."""
    if packed is None:
        return None
    readers, groups, source = packed
    return LiveFigures(MappingProxyType(readers), MappingProxyType(groups), source)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the closed socket still ends an idle worker
        pass


def serve(conn: Connection) -> int:
    """Answer requests on ``conn`` until the daemon closes it."""
    pipeline: Pipeline | None = None
    packed = False
    running: list[Interrupt] = []
    recording: Recording | None = None
    # This process's ACKs: dated by its clock, numbered by its control ids; MSH-7 and MSH-10 are
    # ours, everything else in them is what the daemon's own builder would write.
    ack = ack_builder(lambda: datetime.now(UTC))
    #: Requests the daemon sent ahead (its next message) while this process waited for a look-up's answer.
    ahead: deque[Any] = deque()
    #: Set by SIGUSR1 (the daemon's shutdown): every message from then on stops QA at once.
    hurried_all = False

    def hurry(_signum: int, _frame: FrameType | None) -> None:
        nonlocal hurried_all
        hurried_all = True
        for interrupt in running:
            interrupt.request()

    if threading.current_thread() is threading.main_thread():
        # (A test may serve on another thread, where no handler can be installed.)
        signal.signal(signal.SIGUSR1, hurry)

    #: This process's own look-ups in the SQLite store's file or the PostgreSQL store (None: the daemon's).
    reader: PriorReader | PgPriorReader | None = None
    #: What ``reader`` reads: the SQLite file's path or the PostgreSQL URL.
    reading = ""
    lookup: PriorLookup | None = None
    lookup_failed = False

    def read_failed(_error_type: str) -> None:
        nonlocal lookup_failed
        lookup_failed = True

    def ask_priors(report: Report) -> tuple[Prior, ...] | None:
        nonlocal lookup_failed
        key = prior_key(report)
        if lookup is not None:
            lookup_failed = False
            found = lookup.lookup(key)
            if not lookup_failed:
                return found
        ask(conn, key)
        reply = conn.recv()
        while reply[0] != "priors":
            # The daemon's next message, sent ahead while this one runs: it waits its turn here.
            ahead.append(reply)
            reply = conn.recv()
        priors: tuple[Prior, ...] | None = reply[1]
        return priors

    def open_reader(path: str | None, config: Config) -> None:
        """Read priors from ``path`` (a SQLite store's file) or the config's PostgreSQL store, else ask the daemon."""
        nonlocal reader, reading, lookup
        source = path or (config.store_url if is_postgresql_url(config.store_url) else "")
        if reader is not None and source != reading:
            reader.close()
            reader, reading, lookup = None, "", None
        if source and reader is None:
            try:
                reader = PriorReader(path) if path else postgres_prior_reader(config)
            except StoreError:
                return  # the daemon answers this process's look-ups
            reading = source
            lookup = PriorLookup(reader, failed=read_failed)

    while True:
        try:
            request = ahead.popleft() if ahead else conn.recv()
        except (EOFError, OSError):
            return 0
        kind = request[0]
        if kind == "config":
            # The pipeline lives until the next config: out of the collector's generations, as the
            # daemon's start-up objects are (docs/hardening.md, "Worker processes"). The previous
            # one's objects go back into them first, so a reload frees what it replaced.
            pipeline = None
            recording = request[4]
            open_reader(request[3], request[2])
            gc.unfreeze()
            try:
                pipeline = build_pipeline(request[2])
                # PostgreSQL compresses its JSON columns itself (docs/store.md, "Compact storage").
                packed = not request[2].store_url
            except Exception as exc:  # noqa: BLE001 - the daemon runs such messages itself
                pipeline = None
                conn.send(("config_error", type(exc).__name__))
                continue
            finally:
                gc.collect()
                gc.freeze()
            conn.send(("ready", versions_of(pipeline)))
        elif kind in ("hl7", "fhir") and pipeline is not None:
            _, raw, received_at, figures, budget, hurried, *options = request
            interrupt = Interrupt()
            interrupt.start(time.monotonic, budget)
            if hurried or hurried_all:
                interrupt.request()
            running[:] = [interrupt]
            common: dict[str, Any] = {
                "received_at": received_at,
                "priors_for": ask_priors,
                "interrupt": interrupt,
                "live_figures": unpack_figures(figures),
            }
            if kind == "hl7":
                outcome = process(raw, pipeline, **common)
            else:
                media_type, client = options
                outcome = process_fhir(raw, pipeline, media_type=media_type, client=client, **common)
            running.clear()
            value: tuple[Any, ...]
            try:
                if kind == "hl7":
                    header = read_header(raw)
                    if header is None or recording is None:
                        # Neither happens: the daemon sends only messages with a header, and a
                        # recording with every config (the pipeline is None until one came).
                        raise ValueError("no MSH or no recording")
                    value = mllp_checked(
                        raw,
                        header,
                        outcome,
                        with_forms(report_records(outcome), packed=packed),
                        ack=ack,
                        recording=recording,
                        received=received_at,
                        versions=version_fields(pipeline),
                        hashed=partial(keyed_hash, key=recording.hash_key),
                        packed_raw=pack_raw(raw) if recording.keep_raw else None,
                    )
                else:
                    _, records, server_ids = fhir_records(outcome)
                    value = (outcome, with_forms(records, packed=packed), server_ids)
            except Exception as exc:  # noqa: BLE001 - the daemon stores an internal error, by type
                conn.send(("error", type(exc).__name__))
                continue
            send(conn, ("done", versions_of(pipeline), value))
        else:
            conn.send(("error", "NoPipeline"))


def main(argv: list[str]) -> int:
    """``python -m listener.server.procworker FD``."""
    _die_with_parent()
    # The daemon handles these and ends its workers itself: a terminal's Ctrl-C reaches the whole
    # process group, and `systemctl stop` sends SIGTERM to the unit's whole control group
    # (KillMode=control-group). A worker killed by it while the daemon drains would count a crash
    # against the message it was checking (docs/hardening.md, "Worker processes").
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    conn = Connection(sock.detach())
    return serve(conn)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
