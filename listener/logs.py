"""Logging: structlog configuration and the PHI-free event vocabulary.

Layer: process set-up (called once, from ``cli``). Promise: whatever any part of
the daemon or its libraries logs, only the keys and event names listed here reach
the output, and an exception is rendered as its type and frames only, never its
message or locals, because ``str()`` of a parser error can quote a patient value.

Three doors lead into a log line and each is guarded:

* structlog calls (our own code): an allowlist processor runs just before the
  renderer and drops every key that is not in :data:`KEYS`; an event name not in
  :data:`EVENTS` is replaced by ``event_unlisted``.
* the stdlib ``logging`` module (third-party libraries): the root handler turns
  each record into a ``library_logged`` event with the logger name and level only,
  never the formatted message; python-hl7's and hl7apy's loggers, which log whole
  field values, are silenced outright.
* Twisted's logging system: :func:`twisted_observer` turns an event into
  ``twisted_logged`` with the namespace, level and, for a failure, the exception
  type and frames; never ``log_format``, ``log_text`` or the formatted event.

Patient identifiers are correlated with :func:`keyed_hash` (HMAC-SHA256 under a
per-installation key from :func:`load_or_create_hash_key`), logged as
``accession_h`` and ``patient_h``.
"""

from __future__ import annotations

import datetime
import enum
import hmac
import ipaddress
import json
import logging
import os
import pathlib
import secrets
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger
from twisted.logger import ILogObserver

__all__ = [
    "EVENTS",
    "HASH_KEY_FILE",
    "JOURNAL_PRIORITIES",
    "KEYS",
    "UNLISTED_EVENT",
    "MAX_FIELD_CHARS",
    "allowlist",
    "allowlist_bounded",
    "bound_sizes",
    "configure_logging",
    "get_logger",
    "keyed_hash",
    "load_or_create_hash_key",
    "stream_is_journal",
    "twisted_observer",
]

# --- Vocabulary -------------------------------------------------------------

#: Every event name the daemon may emit: ``<noun>_<past verb>`` (docs/monitoring.md lists them).
EVENTS: frozenset[str] = frozenset(
    {
        # connections (server/mllp.py, server/http.py)
        "connection_opened",
        "connection_closed",
        "connection_timed_out",
        "connection_refused",
        "tls_handshake_failed",
        "tls_peer_rejected",
        # framing
        "frame_rejected",
        "frame_discarded_bytes",
        # messages
        "message_duplicate",
        "message_rejected",
        "message_processed",
        "message_quarantined",
        "message_interrupted",
        "pipeline_overrun",
        # worker processes (server/runner.py, docs/hardening.md)
        "pipeline_worker_died",
        "pipeline_worker_failed",
        "prior_lookup_failed",
        # live peer-review figures for routing (server/live_rates.py)
        "live_figures_refreshed",
        "live_figures_failed",
        # outbound queue
        "outbox_delivered",
        "outbox_retry_scheduled",
        "outbox_dead_lettered",
        "outbox_kicked",
        "outbox_lease_taken_over",
        "outbox_lease_lost",
        "outbox_leases_released",
        # configuration and lifecycle
        "config_loaded",
        "config_invalid",
        "policy_reloaded",
        "daemon_started",
        "instance_started",
        "daemon_stopping",
        "daemon_stopped",
        "listening",
        "signal_received",
        "watchdog_started",
        # store
        "store_opened",
        "store_migrated",
        "store_closed",
        "store_unavailable",
        "raw_bodies_purged",
        "store_probe_failed",
        # HTTP (FHIR, health, metrics)
        "http_request",
        # the web console (docs/console.md, "Security")
        "console_login",
        "console_login_refused",
        "console_logout",
        "console_csrf_refused",
        "console_failed",
        "console_overread_refresh_failed",
        "console_whatif_started",
        "console_whatif_finished",
        "console_whatif_stale_removed",
        # produced by this module
        "event_unlisted",
        "exception_unhandled",
        "library_logged",
        "twisted_logged",
    }
)

#: Every key that may appear in a rendered line. Anything else is dropped.
KEYS: frozenset[str] = frozenset(
    {
        # structlog and bridges
        "event",
        "level",
        "timestamp",
        "logger",
        "exception",
        # connection context (bound in connectionMade)
        "peer",
        "conn",
        "tls_subject",
        # who ended a connection: "daemon" or "peer" (connection_closed; its reason says why)
        "closed_by",
        # message context: header fields that name systems, not people
        "control_id",
        "sender_app",
        "sender_facility",
        "feed",
        "message_type",
        "hl7_version",
        "ack_mode",
        # keyed hashes of patient identifiers (see keyed_hash)
        "accession_h",
        "patient_h",
        # outcome
        "ack_code",
        "bucket",
        "pool",
        "finding_count",
        "error_code",
        "error_type",
        "location",
        "duration_ms",
        "policy_version",
        "qa_version",
        "routing_version",
        "mapping_version",
        "state",
        "qa",
        "transport",
        "processing",
        # sizes and limits
        "bytes",
        "limit",
        "count",
        # outbound
        "destination",
        "attempts",
        "next_attempt_at",
        # the daemon's instance id (host:pid:random) and the one whose outbox lease it took over
        "instance",
        "previous_instance",
        # endpoints, files, HTTP
        "endpoint",
        "path",
        # an HTTP request's route template, never its path as sent (listener/server/http_routes.py)
        "route",
        # the store's description: a file, or a PostgreSQL URL without its password (docs/store.md)
        "store",
        "line",
        "status",
        "method",
        # lifecycle
        "reason",
        # what is wrong with a configuration file (our own words: config_invalid)
        "detail",
        "signal",
        "interval_s",
        # worker processes started (daemon_started; 0: the pipeline runs on threads)
        "workers",
        "version",
        "pid",
    }
)

#: Replaces an event name that is not in :data:`EVENTS`. The name itself is not
#: kept: an f-string event (``log.info(f"bad {value}")``) would carry data.
UNLISTED_EVENT = "event_unlisted"

#: File in the state directory holding the key for :func:`keyed_hash`.
HASH_KEY_FILE = "hash.key"
HASH_KEY_BYTES = 32
HASH_HEX_CHARS = 16

# python-hl7 0.4.x names its loggers after ``__file__`` (a path, not a dotted
# name), so the package name alone does not reach them; they are looked up from
# the modules themselves in _silence_field_loggers.
_FIELD_LOGGING_MODULES = ("hl7.util", "hl7.containers")
_FIELD_LOGGING_NAMES = ("hl7", "hl7apy")

# Exception-dict keys that carry text taken from the exception object rather
# than from the code: the message, notes, and a SyntaxError's offending line.
_EXCEPTION_TEXT_KEYS = ("exc_value", "exc_notes")
_SYNTAX_ERROR_TEXT_KEYS = ("line", "msg")

_SCALARS = (str, int, float, bool, type(None))
#: The exact types of _SCALARS: a field of one of them passes :func:`allowlist` and
#: :func:`bound_sizes` by one set look-up (most fields of a line; a subclass takes the long way).
_SCALAR_TYPES = frozenset(_SCALARS)

# Private key carrying a Twisted Failure from the observer to _ExceptionStep.
# Not in KEYS, so it could never be rendered even if that step were skipped.
_FAILURE_KEY = "_failure"

# --- Keyed hashes -----------------------------------------------------------


def keyed_hash(value: str, key: bytes) -> str:
    """Return a short keyed hash of *value* for log correlation.

    Two log lines about the same accession or patient carry the same hash, but
    without the installation's key the hash cannot be reversed by hashing
    candidate MRNs (a plain SHA-256 could).

    Args:
        value: the identifier to hash (accession number, patient id).
        key: the installation key, from :func:`load_or_create_hash_key`.

    Returns:
        The first 16 hex characters (64 bits) of HMAC-SHA256(key, value).

    Raises:
        ValueError: if *key* is empty.
    """
    if not key:
        raise ValueError("keyed_hash needs a non-empty key")
    # One-shot HMAC (no hmac object per call): the same digest, twice per message on the reactor
    # thread; a few per cent fewer instructions (docs/benchmarks.md, "The daemon's main process,
    # third pass").
    return hmac.digest(key, value.encode("utf-8"), "sha256").hex()[:HASH_HEX_CHARS]


def load_or_create_hash_key(state_dir: pathlib.Path) -> bytes:
    """Return the installation's hash key, creating it on first use.

    The key lives in ``<state_dir>/hash.key`` (32 random bytes, mode 0600) and is
    reused across restarts so hashes correlate over time. Creation is atomic: the
    key is written to a private temporary file and hard-linked into place, so a
    concurrent starter either wins or reads the winner's complete key.

    Args:
        state_dir: the daemon's state directory; created (0700) if missing.

    Returns:
        The 32-byte key.

    Raises:
        ValueError: if an existing key file does not hold exactly 32 bytes.
        OSError: if the directory or file cannot be read or written.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / HASH_KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass

    tmp = state_dir / f".{HASH_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # whatever the umask was
            fh.write(secrets.token_bytes(HASH_KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        else:
            _fsync_dir(state_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: pathlib.Path) -> bytes:
    key = path.read_bytes()
    if len(key) != HASH_KEY_BYTES:
        # Name the file and the size only; never echo key material.
        raise ValueError(f"{path}: expected {HASH_KEY_BYTES} bytes, found {len(key)}")
    return key


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- Processors ---------------------------------------------------------------


def _scrub_stacks(stacks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Remove exception-supplied text from ExceptionDictTransformer output."""
    for stack in stacks:
        for key in _EXCEPTION_TEXT_KEYS:
            stack.pop(key, None)
        syntax_error = stack.get("syntax_error")
        if isinstance(syntax_error, dict):
            for key in _SYNTAX_ERROR_TEXT_KEYS:
                syntax_error.pop(key, None)
        for frame in stack.get("frames", ()):
            frame.pop("locals", None)  # belt and braces: show_locals is False
        for group in stack.get("exceptions", ()):  # exception groups nest lists
            _scrub_stacks(group)
    return stacks


class _MessageFreeTransformer:
    """ExceptionDictTransformer(show_locals=False) minus the exception text.

    Keeps each exception's type, its frames (file, line, function), the cause
    chain and exception groups; drops ``exc_value`` (the message), notes, and a
    SyntaxError's source line.
    """

    def __init__(self) -> None:
        self._inner = ExceptionDictTransformer(show_locals=False)

    def __call__(self, exc_info: ExcInfo) -> list[dict[str, Any]]:
        return _scrub_stacks(self._inner(exc_info))


def _stacks_text(stacks: list[dict[str, Any]]) -> str:
    lines = []
    for stack in stacks:
        lines.append("Traceback (most recent call last; message withheld):")
        for frame in stack.get("frames", ()):
            lines.append(f'  File "{frame["filename"]}", line {frame["lineno"]}, in {frame["name"]}')
        lines.append(str(stack["exc_type"]))
    return "\n".join(lines)


def _format_exception_text(exc_info: ExcInfo) -> str:
    """Render an exception for the console: frames and type, no message."""
    return _stacks_text(_MessageFreeTransformer()(exc_info))


def _stacks_from_failure(failure: Any) -> list[dict[str, Any]]:
    """Build message-free stack dicts from a Twisted Failure.

    A Failure that went through a Deferred has been cleaned: its traceback
    object is a stand-in that structlog does not accept (it would fall back to
    ``sys.exc_info()``, i.e. to some other exception). ``Failure.frames`` holds
    (function, file, line, locals, globals) tuples in both states; only the
    first three are used.
    """
    exc_type = getattr(failure, "type", None)
    type_name = getattr(exc_type, "__name__", "Exception")
    frames = [
        {"filename": str(f[1]), "lineno": int(f[2]), "name": str(f[0])} for f in getattr(failure, "frames", ()) or ()
    ]
    return [{"exc_type": type_name, "is_cause": False, "frames": frames}]


class _ExceptionStep:
    """ExceptionRenderer plus Twisted Failures, both without message text."""

    def __init__(self, *, as_text: bool) -> None:
        self._as_text = as_text
        self._renderer = ExceptionRenderer(_format_exception_text if as_text else _MessageFreeTransformer())

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        failure = event_dict.pop(_FAILURE_KEY, None)
        if failure is None:
            return self._renderer(logger, method, event_dict)
        event_dict.pop("exc_info", None)
        stacks = _stacks_from_failure(failure)
        event_dict["exception"] = _stacks_text(stacks) if self._as_text else stacks
        return event_dict


def _console_exception_formatter(sio: TextIO, exc_info: ExcInfo) -> None:
    # Only reached if exc_info slipped past ExceptionRenderer; same safe text.
    sio.write("\n" + _format_exception_text(exc_info))


def _safe_value(value: Any) -> Any:
    """Scalars pass; a few value types become their canonical string; the rest
    become their type name, so a stray object's repr cannot carry data."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, enum.Enum) and isinstance(value.value, _SCALARS):
        return value.value
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, (pathlib.PurePath, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    return f"<{type(value).__name__}>"


#: json's C encoder factory (None without the C accelerator).
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)


def _json_line(event_dict: EventDict, **_dumps_kw: Any) -> str:
    """``json.dumps(event_dict, default=_safe_value, separators=(",", ":"))``, the same text.

    ``json.dumps`` with arguments builds a ``JSONEncoder`` and its C encoder for every line; this
    builds only the C encoder (a fresh one: its circular-reference markers are per line). One
    line per message on the reactor thread (docs/benchmarks.md, "The daemon's main process, third
    pass"). The renderer's own keyword arguments are ignored: these are fixed here.
    """
    if _C_MAKE_ENCODER is None:  # a Python without the C accelerator
        return json.dumps(event_dict, default=_safe_value, separators=(",", ":"))
    # The arguments JSONEncoder(default=_safe_value, separators=(",", ":")).iterencode passes.
    encode = _C_MAKE_ENCODER({}, _safe_value, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return "".join(encode(event_dict, 0))


def allowlist(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Keep only vocabulary keys; replace an unlisted event name.

    Runs just before the renderer. Unknown keys are dropped, never renamed or
    summarised. An event name outside :data:`EVENTS` becomes ``event_unlisted``:
    the line still shows that something happened (with its level, logger and
    allowed keys), but a free-text or f-string event cannot leak a value.
    """
    return _allowed(event_dict, bound=False)


def _allowed(event_dict: EventDict, *, bound: bool) -> EventDict:
    """:func:`allowlist`'s fields; with ``bound``, capped as :func:`bound_sizes` caps them."""
    # event, level and timestamp lead the line for human readers of journald.
    out: EventDict = {"event": event_dict.get("event")}
    scalar = _SCALAR_TYPES
    for key, value in event_dict.items():
        if key not in KEYS:
            continue
        if key == "exception":
            # Already scrubbed by the exception step.
            out[key] = _bounded(value, MAX_EXCEPTION_CHARS) if bound else value
        elif key != "event":
            kind = type(value)
            if kind not in scalar:
                value = _safe_value(value)
                kind = type(value)
            if bound and not (kind in scalar and (kind is not str or len(value) <= MAX_FIELD_CHARS)):
                value = _bounded(value, MAX_FIELD_CHARS)
            out[key] = value
    if out.get("event") not in EVENTS:
        out["event"] = UNLISTED_EVENT
    return out


#: Longest string a log line carries in one field; the rest is cut and said so.
#: Our fields are ids, hashes, paths and codes (tens of characters); a longer
#: one is a value some peer chose (a path, a sender name), and a 4 MB one must
#: not become a 4 MB journal line.
MAX_FIELD_CHARS = 256
#: The exception field (a whole traceback as text on a console) gets more room.
MAX_EXCEPTION_CHARS = 8192
#: Most items kept from a list (an exception's frames: a RecursionError has a
#: thousand): the first and last halves stay, as in a truncated traceback.
MAX_LIST_ITEMS = 40
# Nesting kept inside a field (exception stacks are three levels deep).
_MAX_NESTING = 6


def _truncated(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[truncated {len(text) - limit} chars]"


def _bounded(value: Any, limit: int, nesting: int = 0) -> Any:
    if isinstance(value, str):
        return _truncated(value, limit)
    if nesting >= _MAX_NESTING and isinstance(value, (dict, list, tuple)):
        return f"<{type(value).__name__}: nested too deep>"
    if isinstance(value, dict):
        return {k: _bounded(v, limit, nesting + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = list(value)
        if len(items) > MAX_LIST_ITEMS:
            head = MAX_LIST_ITEMS // 2
            tail = MAX_LIST_ITEMS - head
            omitted = len(items) - MAX_LIST_ITEMS
            items = [*items[:head], f"...[{omitted} items omitted]", *items[-tail:]]
        return [_bounded(v, limit, nesting + 1) for v in items]
    return value


def bound_sizes(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Cap every field: strings at :data:`MAX_FIELD_CHARS` (the exception at
    :data:`MAX_EXCEPTION_CHARS`), lists at :data:`MAX_LIST_ITEMS`, nesting too.

    Runs after the allowlist, just before the renderer, so whatever reaches a
    line is bounded: a line is at most a few KB plus one traceback. A cut is
    visible (``...[truncated N chars]``, ``...[N items omitted]``), never silent.
    """
    for key, value in event_dict.items():
        kind = type(value)
        if kind is str:
            if len(value) > MAX_FIELD_CHARS and key != "exception":
                event_dict[key] = _truncated(value, MAX_FIELD_CHARS)
            elif len(value) > MAX_EXCEPTION_CHARS:
                event_dict[key] = _truncated(value, MAX_EXCEPTION_CHARS)
        elif kind not in _SCALAR_TYPES:
            event_dict[key] = _bounded(value, MAX_EXCEPTION_CHARS if key == "exception" else MAX_FIELD_CHARS)
    return event_dict


def allowlist_bounded(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """``bound_sizes(allowlist(event_dict))`` in one pass over the fields: the same line.

    The renderers' chains use it: a line per message on the daemon's reactor thread
    (docs/benchmarks.md, "The daemon's main process, third pass"). An exact scalar field within
    its cap passes by two checks; any other goes through :func:`_bounded`, which caps it as
    :func:`bound_sizes` does (the event name is always one of ours, so never over its cap).
    """
    return _allowed(event_dict, bound=True)


# --- Bridges --------------------------------------------------------------------


class _StructlogHandler(logging.Handler):
    """Root stdlib handler: a record becomes ``library_logged`` with the logger
    name, level and the exception (type and frames) only.

    ``record.getMessage()`` is never called: libraries format field values into
    their messages (python-hl7's ``unescape`` warns with whole field contents).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger()
            exc = record.exc_info if record.exc_info and record.exc_info[0] else None
            kw: dict[str, Any] = {"logger": record.name}
            if exc is not None:
                kw["exc_info"] = exc
            log.log(record.levelno, "library_logged", **kw)
        except Exception:  # noqa: BLE001 - a log call must never raise
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        # The default prints the record (message and args) to stderr, which
        # journald captures: say only that something went wrong.
        if logging.raiseExceptions and sys.stderr is not None:
            sys.stderr.write("overread: a stdlib log record could not be bridged\n")


def _silence_field_loggers() -> None:
    """Silence loggers known to log HL7 field values."""
    names: list[str] = list(_FIELD_LOGGING_NAMES)
    for module_name in _FIELD_LOGGING_MODULES:
        try:
            module = __import__(module_name, fromlist=["_"])
        except ImportError:  # pragma: no cover - hl7 is a dependency
            continue
        module_logger = getattr(module, "logger", None)
        if isinstance(module_logger, logging.Logger):
            names.append(module_logger.name)
        module_file = getattr(module, "__file__", None)
        if module_file:
            names.append(module_file)
    for name in names:
        lg = logging.getLogger(name)
        lg.setLevel(logging.CRITICAL + 1)
        lg.propagate = False
        lg.handlers[:] = [logging.NullHandler()]


def _route_stdlib_logging(level: int) -> None:
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(_StructlogHandler())
    root.setLevel(max(level, logging.WARNING))  # library INFO is noise
    # warnings.warn() texts go through logging (and so lose their text) instead
    # of straight to stderr.
    logging.captureWarnings(True)
    _silence_field_loggers()


def _install_excepthooks() -> None:
    """Uncaught exceptions are logged (type and frames), not printed to stderr."""

    def hook(
        exc_type: type[BaseException],
        exc_value: BaseException,
        tb: types.TracebackType | None,
    ) -> None:
        try:
            structlog.get_logger().critical("exception_unhandled", exc_info=(exc_type, exc_value, tb))
        except Exception:  # noqa: BLE001
            # Python would print the original traceback, message included,
            # if the hook raised: say only what type it was.
            sys.stderr.write(f"overread: unhandled {exc_type.__name__}\n")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None:
            return
        hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook


_TWISTED_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40, "critical": 50}


def twisted_observer(min_level: int = logging.WARNING) -> ILogObserver:
    """Return a Twisted log observer that forwards events to structlog.

    Install it with::

        globalLogBeginner.beginLoggingTo([twisted_observer()], redirectStandardIO=False)

    Each Twisted event at or above *min_level* becomes a ``twisted_logged`` line
    with ``logger`` (the event's ``log_namespace``) and ``level``; an event
    carrying a ``log_failure`` adds the exception's type and frames. The event's
    text (``log_format``, ``log_text``, ``message``, formatted fields) is never
    used: Twisted formats arguments into it, and those can be message content.

    Args:
        min_level: stdlib level number below which events are ignored (Twisted's
            info-level chatter about factories and ports is dropped by default).

    Returns:
        An ``ILogObserver`` (a callable taking the event mapping).
    """

    def observe(event: Mapping[str, Any]) -> None:
        level_obj = event.get("log_level")
        level = _TWISTED_LEVELS.get(getattr(level_obj, "name", ""), logging.INFO)
        failure = event.get("log_failure")
        if failure is not None:
            level = max(level, logging.ERROR)
        if level < min_level:
            return
        kw: dict[str, Any] = {"logger": str(event.get("log_namespace", "twisted"))}
        if failure is not None:
            kw[_FAILURE_KEY] = failure
        try:
            structlog.get_logger().log(level, "twisted_logged", **kw)
        except Exception:  # noqa: BLE001, S110 - an observer must never raise, and has nowhere to log
            pass

    # Twisted's publisher only needs a callable; the cast states the contract
    # without importing zope.interface (untyped) for directlyProvides.
    return cast(ILogObserver, observe)


# --- journald priority ---------------------------------------------------------

#: sd-daemon(3) priority prefixes: journald (``SyslogLevelPrefix=yes``, the
#: default) strips ``<N>`` from the start of a stdout line and files the line
#: at that priority, so ``journalctl -p err`` finds our error lines.
JOURNAL_PRIORITIES = {"critical": 2, "error": 3, "exception": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``stream`` is the journald stream systemd connected us to.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for a unit whose stdout or
    stderr goes to the journal; the stream is it when its fstat matches (a
    child whose output was redirected elsewhere inherits the variable, but
    not the match).
    """
    value = environ.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


class _JournalPriority:
    """Wraps the renderer: ``<3>`` (and so on, by level) before each rendered line."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> Any:
        level = str(event_dict.get("level") or method)
        line = self._renderer(logger, method, event_dict)
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
        return f"<{JOURNAL_PRIORITIES.get(level, 6)}>{text}"


# --- Configuration ------------------------------------------------------------


def configure_logging(
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    cache: bool = True,
    level: int = logging.INFO,
    journal: bool | None = None,
) -> None:
    """Configure structlog, the stdlib bridge and the exception hooks.

    The processor chain follows structlog's performance guide (native filtering
    bound logger, plain dict context, a write-to-file logger factory) with three
    additions: exceptions are rendered without message or locals, the
    :func:`allowlist` drops unlisted keys, and :func:`bound_sizes` caps what is
    left, just before the renderer. ``contextvars`` are not
    merged: Twisted callbacks share one thread's context, so we bind explicitly.

    Args:
        fmt: ``"json"`` (one JSON object per line, for journald), ``"console"``
            (human-readable), or ``"auto"``: console when *stream* is a TTY,
            else JSON.
        stream: where lines go; defaults to ``sys.stdout`` at call time.
        cache: turn on ``cache_logger_on_first_use``; tests pass False so they
            can reconfigure.
        level: minimum level for structlog and for the stdlib bridge (which never
            goes below WARNING).
        journal: prefix each line with its sd-daemon priority (``<3>`` for
            errors); None: when *stream* is systemd's journal stream
            (:func:`stream_is_journal`).

    Raises:
        ValueError: for an unknown *fmt*.
    """
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}: expected auto, json or console")
    out: TextIO = stream if stream is not None else sys.stdout
    if fmt == "auto":
        isatty = getattr(out, "isatty", None)
        fmt = "console" if callable(isatty) and isatty() else "json"

    processors: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [
            _ExceptionStep(as_text=False),
            allowlist_bounded,
            # The allowlist already normalised values; default= is a last guard
            # so no object's repr() is ever written.
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
    else:
        processors += [
            _ExceptionStep(as_text=True),
            allowlist_bounded,
            structlog.dev.ConsoleRenderer(
                colors=bool(getattr(out, "isatty", lambda: False)()),
                exception_formatter=_console_exception_formatter,
            ),
        ]

    if journal is None:
        journal = stream_is_journal(out)
    if journal:
        processors[-1] = _JournalPriority(processors[-1])

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
    _route_stdlib_logging(level)
    _install_excepthooks()


def get_logger(name: str, **initial: Any) -> Any:
    """Return a structlog logger bound with ``logger=name`` (and *initial* keys).

    Binding is lazy, so module-level loggers pick up the configuration made
    later by :func:`configure_logging`.
    """
    return structlog.get_logger().bind(logger=name, **initial)
