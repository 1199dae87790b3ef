"""Tests for listener.logs: real configured logging into a StringIO.

Each test configures logging with ``cache=False`` so that reconfiguration takes
effect, and the ``restore_logging`` fixture (tests/conftest.py) puts structlog, the stdlib root logger and
the exception hooks back afterwards.
"""

from __future__ import annotations

import enum
import io
import json
import logging
import stat
import sys
import warnings
from pathlib import Path
from typing import Any

import hl7
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from listener import logs

CANARY = "ZZCANARY-SMITH^JOHN-MRN0042"


#: Undo configure_logging's global changes after each test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(name="out")
def _out() -> io.StringIO:
    """JSON logging configured to write into the returned buffer."""
    buf = io.StringIO()
    logs.configure_logging("json", stream=buf, cache=False)
    return buf


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def raise_with(message: str) -> None:
    secret_local = message  # noqa: F841 - a local that must never be shown
    raise ValueError(message)


def test_json_lines_parse(out: io.StringIO) -> None:
    """Each event is one JSON object per line with event, level and timestamp."""
    log = structlog.get_logger()
    log.info("daemon_started", version="0.1.0", pid=123)
    log.warning("connection_timed_out", peer="127.0.0.1:5000", conn=7)
    got = lines(out)
    assert [g["event"] for g in got] == ["daemon_started", "connection_timed_out"]
    assert got[0]["level"] == "info" and got[1]["level"] == "warning"
    assert got[0]["version"] == "0.1.0" and got[0]["pid"] == 123
    assert got[0]["timestamp"].endswith("Z")


def test_unknown_keys_dropped(out: io.StringIO) -> None:
    """Keys outside the vocabulary are dropped; allowed keys stay."""
    structlog.get_logger().info("message_processed", ack_code="AA", finding_count=2, patient_name="X", mrn="1")
    (got,) = lines(out)
    assert got["ack_code"] == "AA" and got["finding_count"] == 2
    assert "patient_name" not in got and "mrn" not in got


def test_unlisted_event_replaced(out: io.StringIO) -> None:
    """An event name outside EVENTS is replaced, so free text cannot leak."""
    structlog.get_logger().info(f"could not parse {CANARY}", control_id="C1")
    (got,) = lines(out)
    assert got["event"] == logs.UNLISTED_EVENT
    assert got["control_id"] == "C1"


def test_objects_become_type_names(out: io.StringIO) -> None:
    """An allowed key holding an arbitrary object shows its type, not its repr."""

    class Report:
        def __repr__(self) -> str:
            return CANARY

    structlog.get_logger().info("message_processed", reason=Report(), path=Path("/x"))
    (got,) = lines(out)
    assert got["reason"] == "<Report>" and got["path"] == "/x"


def test_exception_has_type_and_frames_only(out: io.StringIO) -> None:
    """A logged exception keeps its type and frames, not its message or locals."""
    try:
        raise_with(CANARY)
    except ValueError:
        structlog.get_logger().exception("message_rejected", error_type="ValueError")
    (got,) = lines(out)
    (stack,) = got["exception"]
    assert stack["exc_type"] == "ValueError"
    assert "exc_value" not in stack
    names = [frame["name"] for frame in stack["frames"]]
    assert names[-1] == "raise_with"
    assert all("locals" not in frame for frame in stack["frames"])
    assert CANARY not in out.getvalue()
    assert "secret_local" not in out.getvalue()


def test_exception_cause_chain_scrubbed(out: io.StringIO) -> None:
    """Chained exceptions (raise ... from) lose their messages too."""
    try:
        try:
            raise_with(CANARY)
        except ValueError as exc:
            raise KeyError(CANARY) from exc
    except KeyError:
        structlog.get_logger().exception("message_rejected")
    got = lines(out)[0]
    assert [s["exc_type"] for s in got["exception"]] == ["KeyError", "ValueError"]
    assert CANARY not in out.getvalue()


def test_patient_data_canary(out: io.StringIO) -> None:
    """A marker in disallowed keys, the event name and an exception message
    appears in no output line, from structlog, stdlib or Twisted."""
    log = structlog.get_logger().bind(peer="10.0.0.1:4000", conn=1)
    log.info("message_processed", patient=CANARY, text=CANARY, control_id="MSG1")
    log.info(CANARY)
    try:
        raise_with(CANARY)
    except ValueError:
        log.exception("message_rejected", error_type="ValueError", obx=CANARY)
        logging.getLogger("somelib").exception("failed on %s", CANARY)
    logging.getLogger("somelib").error("value %s", CANARY)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(CANARY, stacklevel=1)
    Logger(namespace="t", observer=logs.twisted_observer()).error("{x}", x=CANARY)
    text = out.getvalue()
    assert len(text.splitlines()) == 7
    assert CANARY not in text
    assert "MSG1" in text  # the line was written, only the data is gone


def test_stdlib_records_bridged_without_message(out: io.StringIO) -> None:
    """A stdlib record becomes library_logged with logger and level only."""
    logging.getLogger("thirdparty.module").warning("hello %s", CANARY)
    (got,) = lines(out)
    assert got == {
        "event": "library_logged",
        "logger": "thirdparty.module",
        "level": "warning",
        "timestamp": got["timestamp"],
    }


def test_stdlib_info_below_warning_dropped(out: io.StringIO) -> None:
    """Library INFO chatter is not forwarded."""
    logging.getLogger("thirdparty").info("noise")
    assert out.getvalue() == ""


def test_hl7_logger_suppressed(out: io.StringIO) -> None:
    """python-hl7's field-value warnings (unescape) produce no output at all."""
    # python-hl7 0.4.x names its loggers after __file__, not "hl7".
    hl7.util.logger.warning("bad escape in %s", CANARY)
    hl7.containers.logger.error("field %s", CANARY)
    logging.getLogger("hl7").error("x %s", CANARY)
    logging.getLogger("hl7apy.core").error("x %s", CANARY)
    msg = hl7.parse("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rOBX|1|TX|||" + CANARY + "\\Q\\")
    msg.unescape(str(msg.segment("OBX")[5]))
    assert out.getvalue() == ""


def test_twisted_bridge_drops_text(out: io.StringIO) -> None:
    """A Twisted event keeps namespace and level; its format and fields go."""
    tlog = Logger(namespace="listener.server.mllp", observer=logs.twisted_observer())
    tlog.warn("peer {peer} sent {data}", peer="x", data=CANARY)
    tlog.info("quiet {x}", x=CANARY)  # below the default WARNING threshold
    (got,) = lines(out)
    assert got["event"] == "twisted_logged"
    assert got["logger"] == "listener.server.mllp"
    assert got["level"] == "warning"
    assert CANARY not in out.getvalue()


def test_twisted_failure_type_and_frames(out: io.StringIO) -> None:
    """A (cleaned, as after a Deferred) Failure renders type and frames only."""
    try:
        raise_with(CANARY)
    except ValueError:
        failure = Failure()  # type: ignore[no-untyped-call]
    failure.cleanFailure()  # type: ignore[no-untyped-call]
    Logger(namespace="ns", observer=logs.twisted_observer()).failure(
        "Unhandled error {x}", failure=failure, x=CANARY, level=LogLevel.error
    )
    (got,) = lines(out)
    (stack,) = got["exception"]
    assert stack["exc_type"] == "ValueError"
    assert stack["frames"][-1]["name"] == "raise_with"
    assert got["level"] == "error"
    assert CANARY not in out.getvalue()


def test_excepthook_logs_type_only(out: io.StringIO) -> None:
    """An uncaught exception goes through the allowlist, not to stderr."""
    try:
        raise_with(CANARY)
    except ValueError:
        exc_type, exc, tb = sys.exc_info()
        assert exc_type is not None and exc is not None
        sys.excepthook(exc_type, exc, tb)
    (got,) = lines(out)
    assert got["event"] == "exception_unhandled"
    assert got["exception"][0]["exc_type"] == "ValueError"
    assert CANARY not in out.getvalue()


def test_console_format_withholds_message() -> None:
    """The console renderer shows the traceback frames and type, no message."""
    buf = io.StringIO()
    logs.configure_logging("console", stream=buf, cache=False)
    try:
        raise_with(CANARY)
    except ValueError:
        structlog.get_logger().exception("message_rejected", secret=CANARY)
    text = buf.getvalue()
    assert "message_rejected" in text
    assert "raise_with" in text and "ValueError" in text
    assert CANARY not in text


def test_auto_picks_json_when_not_a_tty() -> None:
    """fmt='auto' writes JSON to a non-TTY stream (journald)."""
    buf = io.StringIO()
    logs.configure_logging("auto", stream=buf, cache=False)
    structlog.get_logger().info("listening", endpoint="tcp:2575")
    assert json.loads(buf.getvalue())["endpoint"] == "tcp:2575"


def test_unknown_format_rejected() -> None:
    """A format other than auto/json/console is a ValueError."""
    with pytest.raises(ValueError, match="log format"):
        logs.configure_logging("xml", stream=io.StringIO(), cache=False)


def test_capture_logs_sees_bound_keys() -> None:
    """capture_logs (used by other modules' canary tests) still works with
    our configuration, showing events before the allowlist."""
    logs.configure_logging("json", stream=io.StringIO(), cache=False)
    with capture_logs() as captured:
        logs.get_logger("listener.server.mllp").info("connection_opened", conn=3)
    assert captured == [
        {"event": "connection_opened", "logger": "listener.server.mllp", "conn": 3, "log_level": "info"}
    ]


def test_vocabulary_shape() -> None:
    """Event names are snake_case and the keys carry no patient field names."""
    for name in logs.EVENTS | logs.KEYS:
        assert name == name.lower() and " " not in name
    for forbidden in ("patient", "name", "mrn", "dob", "birth_date", "text", "raw", "message"):
        assert forbidden not in logs.KEYS


def test_every_event_is_emitted() -> None:
    """Every name in the vocabulary appears as a string in the listener code outside the
    vocabulary itself: a name nothing emits leaves EVENTS (and docs/monitoring.md)."""
    import ast

    root = Path(logs.__file__).resolve().parent
    vocabulary = ast.parse((root / "logs.py").read_text(encoding="utf-8"))
    listed = {
        id(node)
        for assign in ast.walk(vocabulary)
        if isinstance(assign, ast.AnnAssign) and isinstance(assign.target, ast.Name) and assign.target.id == "EVENTS"
        for node in ast.walk(assign)
    }
    strings: set[str] = set()
    for path in root.rglob("*.py"):
        tree = (
            vocabulary
            if path.name == "logs.py" and path.parent == root
            else ast.parse(path.read_text(encoding="utf-8"))
        )
        strings.update(
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in listed
        )
    assert sorted(logs.EVENTS - strings) == []


def test_keyed_hash_stable_and_keyed() -> None:
    """Same key, same hash; another key, another hash; not a plain digest."""
    key, other = b"k" * 32, b"o" * 32
    h = logs.keyed_hash("ACC123", key)
    assert h == logs.keyed_hash("ACC123", key)
    assert len(h) == 16 and int(h, 16) >= 0
    assert h != logs.keyed_hash("ACC123", other)
    assert h != logs.keyed_hash("ACC124", key)
    import hashlib

    assert not hashlib.sha256(b"ACC123").hexdigest().startswith(h)
    with pytest.raises(ValueError):
        logs.keyed_hash("ACC123", b"")


def test_hash_key_created_0600_and_reused(tmp_path: Path) -> None:
    """The key file is created 0600 with 32 bytes and reused on the next start."""
    state = tmp_path / "state"
    key = logs.load_or_create_hash_key(state)
    path = state / logs.HASH_KEY_FILE
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert logs.load_or_create_hash_key(state) == key
    assert [p.name for p in state.iterdir()] == [logs.HASH_KEY_FILE]  # no temp left
    assert logs.keyed_hash("P1", key) == logs.keyed_hash("P1", logs.load_or_create_hash_key(state))


def test_hash_key_differs_per_installation(tmp_path: Path) -> None:
    """Two state directories get independent keys."""
    assert logs.load_or_create_hash_key(tmp_path / "a") != logs.load_or_create_hash_key(tmp_path / "b")


def test_corrupt_hash_key_refused(tmp_path: Path) -> None:
    """A key file of the wrong size is an error, never silently replaced
    (replacing it would break correlation with earlier logs)."""
    (tmp_path / logs.HASH_KEY_FILE).write_bytes(b"short")
    with pytest.raises(ValueError, match="expected 32 bytes"):
        logs.load_or_create_hash_key(tmp_path)


# --- size bounds ----------------------------------------------------------------


def test_long_string_field_is_truncated_with_a_marker(out: io.StringIO) -> None:
    """A field longer than MAX_FIELD_CHARS keeps its first MAX_FIELD_CHARS characters and says
    how many were cut; short fields are untouched."""
    limit = logs.MAX_FIELD_CHARS
    structlog.get_logger().warning("http_request", path="/" + "a" * 10_000, method="GET", peer="127.0.0.1:1")
    (got,) = lines(out)
    assert got["path"] == "/" + "a" * (limit - 1) + f"...[truncated {10_001 - limit} chars]"
    assert got["method"] == "GET" and got["peer"] == "127.0.0.1:1"
    exact = "b" * limit
    structlog.get_logger().warning("http_request", path=exact)
    assert lines(out)[-1]["path"] == exact


def test_a_huge_field_cannot_make_a_huge_line(out: io.StringIO) -> None:
    """Every allowed key at 1 MB each: the line stays a few KB."""
    huge = "x" * 1_000_000
    structlog.get_logger().error(
        "message_rejected", **{k: huge for k in logs.KEYS if k not in ("event", "level", "timestamp", "exception")}
    )
    assert len(out.getvalue()) < len(logs.KEYS) * (logs.MAX_FIELD_CHARS + 40) + 200


def test_deep_recursion_traceback_keeps_head_and_tail_frames(out: io.StringIO) -> None:
    """A RecursionError's thousand frames are cut to MAX_LIST_ITEMS (first and last halves) with a marker."""

    def recurse(n: int) -> int:
        return recurse(n + 1) + 1

    try:
        recurse(0)
    except RecursionError:
        structlog.get_logger().exception("exception_unhandled")
    (got,) = lines(out)
    frames = got["exception"][0]["frames"]
    assert len(frames) == logs.MAX_LIST_ITEMS + 1
    markers = [f for f in frames if isinstance(f, str)]
    assert len(markers) == 1 and markers[0].endswith("items omitted]")
    assert frames[0]["name"] == "test_deep_recursion_traceback_keeps_head_and_tail_frames"
    assert frames[-1]["name"] == "recurse"


def test_twisted_failure_frames_are_bounded(out: io.StringIO) -> None:
    """A Failure's frames (the Twisted door) are capped as well."""

    def recurse(n: int) -> int:
        return recurse(n + 1) + 1

    try:
        recurse(0)
    except RecursionError:
        failure = Failure()
    Logger(namespace="t", observer=logs.twisted_observer()).failure("boom", failure, level=LogLevel.error)
    (got,) = lines(out)
    assert len(got["exception"][0]["frames"]) <= logs.MAX_LIST_ITEMS + 1


def test_console_renderer_is_bounded_too() -> None:
    """The console chain caps fields the same way."""
    buf = io.StringIO()
    logs.configure_logging("console", stream=buf, cache=False)
    structlog.get_logger().warning("http_request", path="/" + "c" * 5000)
    text = buf.getvalue()
    assert "c" * logs.MAX_FIELD_CHARS not in text and "...[truncated" in text


def test_bound_sizes_caps_each_field_by_its_kind() -> None:
    """Strings at MAX_FIELD_CHARS, the exception at MAX_EXCEPTION_CHARS, list items too; other
    scalars pass as they are."""
    field, exc = logs.MAX_FIELD_CHARS, logs.MAX_EXCEPTION_CHARS
    got = logs.bound_sizes(
        None,
        "info",
        {
            "path": "p" * (field + 5),
            "exception": "e" * (field + 5),
            "count": 7,
            "ok": True,
            "items": ["i" * (field + 1)],
        },
    )
    assert got["path"] == "p" * field + "...[truncated 5 chars]"
    assert got["exception"] == "e" * (field + 5)
    assert (got["count"], got["ok"]) == (7, True)
    assert got["items"] == ["i" * field + "...[truncated 1 chars]"]
    long_exception = logs.bound_sizes(None, "info", {"exception": "e" * (exc + 3)})["exception"]
    assert long_exception == "e" * exc + "...[truncated 3 chars]"


def test_allowlist_gives_a_str_subclass_its_plain_value() -> None:
    """An enum that is also a str (not exactly a str) goes through the full check: its value."""

    class Kind(str, enum.Enum):
        A = "a"

    got = logs.allowlist(None, "info", {"event": "message_processed", "state": Kind.A, "count": 2})
    assert got == {"event": "message_processed", "state": Kind.A, "count": 2} and type(got["state"]) is Kind


def test_json_lines_are_json_dumps_text() -> None:
    """The renderer's serializer writes what ``json.dumps`` with the same arguments writes."""
    import datetime as dt
    import json
    import pathlib

    from listener.logs import _json_line, _safe_value

    lines = [
        {},
        {"event": "message_processed", "duration_ms": 75.288, "finding_count": 1, "ok": True, "none": None},
        {"event": "x", "text": 'caf\u00e9 \u2603 "q" \\ \n\t\x00', "nested": {"a": [1, 2.5, {"b": float("nan")}]}},
        {"event": "x", "when": dt.datetime(2026, 12, 7, 1, 2, 3), "path": pathlib.PurePosixPath("/x"), "obj": object()},
    ]
    for line in lines:
        assert _json_line(line, default=None) == json.dumps(line, default=_safe_value, separators=(",", ":"))


def test_keyed_hash_is_hmac_sha256_cut_to_16_hex() -> None:
    import hashlib
    import hmac

    key = bytes(range(32))
    for value in ("ACC1", "caf\u00e9", "\u2603" * 50):
        expected = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
        assert logs.keyed_hash(value, key) == expected


def test_allowlist_bounded_is_bound_sizes_of_allowlist() -> None:
    """The chains' one-pass processor gives what the two processors give in turn, field for field."""
    import datetime as dt
    import enum as en

    class Kind(str, en.Enum):
        A = "a"

    long = "x" * (logs.MAX_FIELD_CHARS + 5)
    lines: list[dict[str, Any]] = [
        {"event": "message_processed", "control_id": "C1", "duration_ms": 1.5, "finding_count": 2, "state": Kind.A},
        {"event": "not_an_event", "control_id": long, "peer": long[:10], "unknown_key": "v", "bytes": 10},
        {"event": long, "exception": "e" * (logs.MAX_EXCEPTION_CHARS + 3), "path": dt.datetime(2026, 1, 1)},
        {"event": "message_processed", "exception": [{"frames": list(range(100))}], "control_id": ["a"] * 60},
        {"control_id": {"nested": {"deeper": [long] * 3}}, "error_type": None, "count": True},
    ]
    for line in lines:
        expected = logs.bound_sizes(None, "info", logs.allowlist(None, "info", dict(line)))
        got = logs.allowlist_bounded(None, "info", dict(line))
        assert got == expected
        assert list(got) == list(expected)


# Values a log call may carry: text with non-ASCII, lone surrogates, NUL and line separators, at
# and around the caps; the scalars' edges; nested dicts, lists and tuples past the list cap and
# the nesting cap; and objects the allowlist turns into their type name.
_log_text = st.one_of(
    st.text(alphabet='a\u00e9\u2603\ud800\udfff\U0001f600\x00"\\\n\u2028', max_size=12),
    st.sampled_from([logs.MAX_FIELD_CHARS - 1, logs.MAX_FIELD_CHARS, logs.MAX_FIELD_CHARS + 1]).map(
        lambda n: "\u00e9" * n
    ),
    st.sampled_from([logs.MAX_EXCEPTION_CHARS, logs.MAX_EXCEPTION_CHARS + 1]).map(lambda n: "\ud800" * n),
)
_log_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _log_text,
)
_log_values = st.recursive(
    st.one_of(_log_scalars, st.sampled_from([b"bytes", 3 + 4j, Path("/x/\u00e9"), frozenset({1})])),
    lambda inner: st.one_of(
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.none()), inner, max_size=3),
        st.lists(inner, max_size=3),
        st.lists(inner, min_size=logs.MAX_LIST_ITEMS - 1, max_size=logs.MAX_LIST_ITEMS + 2),
        st.tuples(inner, inner),
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    event=st.one_of(st.sampled_from(sorted(logs.EVENTS)), _log_text, st.none(), st.integers()),
    fields=st.dictionaries(
        st.sampled_from([*sorted(logs.KEYS), "exception", "exception", "not_a_key"]), _log_values, max_size=6
    ),
)
def test_json_line_property_is_the_two_processors_and_json_dumps(event: object, fields: dict[str, Any]) -> None:
    """Property: the JSON chain's line (one-pass allowlist, C encoder) is, character for character, the
    line of the allowlist, then bound_sizes, then ``json.dumps`` with the renderer's arguments."""
    from listener.logs import _json_line, _safe_value

    line = {"event": event, **fields}
    try:
        expected: str | type[BaseException] = json.dumps(
            logs.bound_sizes(None, "info", logs.allowlist(None, "info", dict(line))),
            default=_safe_value,
            separators=(",", ":"),
        )
    except (TypeError, ValueError) as exc:  # a key json cannot write (inside an exception's dicts)
        expected = type(exc)
    try:
        got: str | type[BaseException] = _json_line(logs.allowlist_bounded(None, "info", dict(line)))
    except (TypeError, ValueError) as exc:
        got = type(exc)
    assert got == expected
