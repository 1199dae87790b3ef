"""Daemon keys of the config file: defaults, values, and errors that name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.config import DEFAULT_MLLP_ENDPOINT, load_config, usable_cores
from listener.errors import ConfigError


def test_defaults_when_no_file() -> None:
    """Without a file the daemon listens on loopback 2575 and keeps its store in ./var."""
    config = load_config(None)
    assert config.mllp_endpoint == DEFAULT_MLLP_ENDPOINT == "tcp:2575:interface=127.0.0.1"
    assert config.state_dir == Path("var")
    assert config.synchronous == "FULL"


def test_values_are_read_and_paths_resolved_against_the_file(tmp_path: Path) -> None:
    """Every daemon key is read; state_dir is relative to the config file."""
    path = tmp_path / "overread.yaml"
    path.write_text(
        "state_dir: data\nmllp: systemd:domain=INET:name=mllp\nmax_frame_size: 2048\n"
        "idle_timeout: 12.5\nmax_connections: 7\nsynchronous: NORMAL\nraw_retention_days: 30\n"
    )
    config = load_config(path)
    assert config.state_dir == tmp_path / "data"
    assert config.mllp_endpoint == "systemd:domain=INET:name=mllp"
    assert (config.max_frame_size, config.idle_timeout, config.max_connections) == (2048, 12.5, 7)
    assert (config.synchronous, config.raw_retention_days) == ("NORMAL", 30)


def test_outcomes_keys(tmp_path: Path) -> None:
    """``outcomes:`` sets the live figures' refresh and window; 0 turns them off; defaults 300 s, 90 days."""
    assert (load_config(None).outcomes_refresh_seconds, load_config(None).outcomes_window_days) == (300.0, 90)
    path = tmp_path / "overread.yaml"
    path.write_text("outcomes:\n  refresh_seconds: 0\n  window_days: 30\n")
    config = load_config(path)
    assert (config.outcomes_refresh_seconds, config.outcomes_window_days) == (0, 30)


def test_workers_key(tmp_path: Path) -> None:
    """``workers``: ``auto`` (one per usable core) by default; a number is taken as is."""
    assert load_config(None).workers == usable_cores()
    assert usable_cores() >= 1
    path = tmp_path / "overread.yaml"
    for text, expected in (("workers: auto\n", usable_cores()), ("workers: 3\n", 3), ("workers: 0\n", 0)):
        path.write_text(text)
        assert load_config(path).workers == expected


@pytest.mark.parametrize("key", ["workers_inline", "worker_affinity"])
def test_worker_process_switches(tmp_path: Path, key: str) -> None:
    """``workers_inline`` (``false``: every HL7 v2 message goes to a worker process) and ``worker_affinity``
    (``false``: the worker processes are bound to no CPU): on by default, ``true`` or ``false`` in the file."""
    assert getattr(load_config(None), key) is True
    path = tmp_path / "overread.yaml"
    for value, expected in (("false", False), ("true", True)):
        path.write_text(f"workers: 2\n{key}: {value}\n")
        assert getattr(load_config(path), key) is expected


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("mllp: tcp:2575\nmax_connections: 0\n", 2),
        ("state_dir: var\nworkers: -1\n", 2),
        ("workers: 2.5\n", 1),
        ("workers: all\n", 1),
        ("workers: 2\nworkers_inline: sometimes\n", 2),
        ("workers: 2\nworker_affinity: 1\n", 2),
        ("synchronous: OFF\n", 1),
        ("state_dir: var\nmllp: nonsense\n", 2),
        ("max_frame_size: 10.5\n", 1),
        ("unknown_key: 1\n", 1),
        ("state_dir: var\noutcomes:\n  refresh_seconds: 0.5\n", 3),
        ("outcomes:\n  window_days: 30.5\n", 2),
        ("outcomes:\n  window_days: 0\n", 2),
        ("outcomes:\n  refresh: 60\n", 2),
    ],
)
def test_bad_values_name_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    """A bad daemon value is a ConfigError naming the file and the line."""
    path = tmp_path / "overread.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert info.value.line == line


DOCS = Path(__file__).resolve().parents[3] / "docs"


def _section(document: str, heading: str) -> str:
    """The text of ``docs/<document>`` from ``heading`` to the next heading of its level."""
    text = (DOCS / document).read_text("utf-8")
    start = text.index(f"\n{heading}\n")
    level = heading.split(" ", 1)[0]
    end = text.find(f"\n{level} ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_config_reference_table_lists_every_key() -> None:
    """Every key the config file accepts has a row in the configuration reference's table
    (docs/configuration.md, "The keys"), and every row names a real key (the reference
    cannot drift from the loader)."""
    import re

    from listener.config import _CONFIG_KEYS

    rows = [line for line in _section("configuration.md", "## The keys").splitlines() if line.startswith("| `")]
    table_start = next(i for i, line in enumerate(rows) if line.startswith("| `mappings`"))
    documented: set[str] = set()
    for line in rows[table_start:]:
        first_cell = line.split("|")[1]
        names = re.findall(r"`([a-z_]+)`", first_cell)
        if not names or not set(names) <= _CONFIG_KEYS:
            break
        documented.update(names)
    assert documented == set(_CONFIG_KEYS)


def test_log_reference_documents_every_log_event() -> None:
    """Every event name in the log vocabulary appears in the logging reference
    (docs/monitoring.md, "Logs")."""
    from listener.logs import EVENTS

    section = _section("monitoring.md", "## Logs")
    missing = sorted(e for e in EVENTS if f"`{e}`" not in section)
    assert not missing


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("foo:bar", "types: tcp, tcp6, ssl, unix, systemd"),
        ("tcp:abc", "needs a port number"),
        ("tcp:99999", "needs a port number"),
        ("tcp:2575:interfce=127.0.0.1", "unknown option 'interfce'"),
        ("tcp:2575:backlog=many", "backlog must be a whole number"),
        ("systemd:name=mllp", "needs domain= and name="),
        ("unix:", "needs a socket path"),
    ],
)
def test_malformed_endpoints_are_refused_at_load(tmp_path: Path, endpoint: str, problem: str) -> None:
    """A malformed mllp/http endpoint is a ConfigError naming file, line and what is expected,
    not a listen failure after start-up."""
    path = tmp_path / "overread.yaml"
    path.write_text(f"state_dir: var\nmllp: '{endpoint}'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 2 and problem in str(info.value)
    path.write_text(f"http: '{endpoint}'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 1 and problem in str(info.value)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:2575:interface=127.0.0.1",
        "tcp:port=0",
        "tcp6:2575:interface=\\:\\:1",
        "unix:/run/overread/mllp.sock",
        "systemd:domain=INET:name=mllp",
        "ssl:2576:interface=0.0.0.0:backlog=50",
    ],
)
def test_usable_endpoints_load(tmp_path: Path, endpoint: str) -> None:
    """The endpoint forms docs/configuration.md documents load unchanged."""
    path = tmp_path / "overread.yaml"
    path.write_text(f"http: off\nmllp: '{endpoint}'\n")
    if endpoint.startswith("ssl:"):
        pytest.raises(ConfigError, load_config, path)  # ssl: also needs the TLS files
        return
    assert load_config(path).mllp_endpoint == endpoint
