"""`overread messages`: JSON Lines per docs/cli.md, filters, paging, text table, errors."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

import listener
from listener.cli import main
from listener.store import SQLiteStore
from tests.unit.store.records import T0, record


@pytest.fixture(name="state_dir")
def fixture_state_dir(tmp_path: Path) -> Path:
    """A state directory holding four messages from two senders, two of them rejected."""
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    store.save(record("M1", received=T0))
    store.save(record("M2", app="PACS", facility="", received=T0 + timedelta(minutes=1)))
    store.save(record("M3", ack_code="AE", state="rejected", received=T0 + timedelta(minutes=2)))
    store.save(record("M4", ack_code="AR", state="rejected", raw=None, received=T0 + timedelta(minutes=3)))
    store.close()
    return tmp_path / "state"


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["messages", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_json_lines_carry_the_design_fields(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each line has message_id, sender, received, state and ack_code (docs/cli.md), plus the
    cursor, error code, feed, transport and counts; oldest first."""
    rows = _json(capsys, "--state-dir", str(state_dir))
    assert [r["message_id"] for r in rows] == ["M1", "M2", "M3", "M4"]
    assert rows[1]["sender"] == {"application": "PACS", "facility": ""}
    assert rows[0]["received"] == T0.isoformat()
    assert (rows[3]["state"], rows[3]["ack_code"], rows[3]["raw_kept"]) == ("rejected", "AR", False)
    assert set(rows[0]) >= {
        "message_id",
        "sender",
        "received",
        "state",
        "ack_code",
        "error_code",
        "feed",
        "transport",
        "report_count",
        "raw_kept",
        "message_pk",
    }


def test_filters_and_paging(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--state, --ack-code, --sender/--facility, --control-id, --since/--until and --after/--limit
    select exactly the matching messages."""
    base = ["--state-dir", str(state_dir)]

    def ids(*argv: str) -> list[object]:
        return [r["message_id"] for r in _json(capsys, *base, *argv)]

    assert ids("--state", "rejected") == ["M3", "M4"]
    assert ids("--ack-code", "AE") == ["M3"]
    assert ids("--sender", "PACS") == ["M2"]
    assert ids("--sender", "RIS", "--facility", "HOSP", "--state", "processed") == ["M1"]
    assert ids("--control-id", "M4") == ["M4"]
    assert ids("--transport", "http") == []
    since = (T0 + timedelta(minutes=1)).isoformat()
    until = (T0 + timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    assert ids("--since", since, "--until", until) == ["M2", "M3"]
    first = _json(capsys, *base, "--limit", "2")
    assert [r["message_id"] for r in first] == ["M1", "M2"]
    assert ids("--after", str(first[-1]["message_pk"]), "--limit", "2") == ["M3", "M4"]


def test_newest_first_pages_back_with_before(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--newest-first lists the largest message_pk first; --before PK pages on to older ones."""
    base = ["--state-dir", str(state_dir)]
    first = _json(capsys, *base, "--newest-first", "--limit", "2")
    assert [r["message_id"] for r in first] == ["M4", "M3"]
    rest = _json(capsys, *base, "--newest-first", "--before", str(first[-1]["message_pk"]))
    assert [r["message_id"] for r in rest] == ["M2", "M1"]
    older = _json(capsys, *base, "--before", str(first[-1]["message_pk"]), "--state", "processed")
    assert [r["message_id"] for r in older] == ["M1", "M2"]


def test_text_table(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--format text prints a header and one line per message with state, code and sender."""
    assert main(["messages", "--state-dir", str(state_dir), "--format", "text", "--state", "rejected"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["PK", "RECEIVED"]
    assert len(lines) == 3
    assert "rejected" in lines[1] and " AE " in lines[1] and "RIS/HOSP" in lines[1] and lines[1].endswith("M3")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is not an ISO 8601 time"),
        (["--until", "2026-11-20T07:30:00"], "--until: '2026-11-20T07:30:00' is not an ISO 8601 time with an offset"),
        (["--limit", "-1"], "--limit must not be negative"),
        (["--before", "-1"], "--before must not be negative"),
    ],
)
def test_bad_options_name_the_option(
    state_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    """A malformed option exits 2 with a message naming the option and what was expected."""
    assert main(["messages", "--state-dir", str(state_dir), *argv]) == 2
    assert expected in capsys.readouterr().err


def test_no_store_is_an_error_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A state directory without a store exits 2 naming the directory, and creates no store."""
    assert main(["messages", "--state-dir", str(tmp_path / "none")]) == 2
    assert "no store in" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def _others_may_read(path: Path) -> bool:
    """Whether a user with no group in common may read ``path`` (every parent searchable)."""
    if not os.stat(path).st_mode & 0o004:
        return False
    return all(os.stat(parent).st_mode & 0o001 for parent in path.parents)


@pytest.mark.parametrize("locked", ["directory", "database"])
def test_a_user_without_access_to_the_store_is_told_whose_command_it_is(
    state_dir: Path, capsys: pytest.CaptureFixture[str], locked: str
) -> None:
    """A store another user owns (the installed daemon's): exit 2 and what to do, never a traceback.

    As root the command runs with ``nobody``'s effective ids (root may open anything); otherwise
    as this user with the modes taken away. ``directory``: the state directory cannot be entered;
    ``database``: it can, but the database file cannot be written (SQLite writes beside it even
    to read).
    """
    as_root = os.geteuid() == 0
    if as_root and not _others_may_read(Path(listener.__file__)):
        # ``nobody`` must read the program's own files to get as far as the store: a checkout
        # in a private directory (mktemp -d, as .ci/fresh-clone makes) does not let it.
        pytest.skip("as root this test runs as nobody, who cannot read this checkout's files")
    assert main(["messages", "--state-dir", str(state_dir)]) == 0  # readable by its owner
    capsys.readouterr()
    if locked == "directory":
        os.chmod(state_dir, 0o700 if as_root else 0o000)
    else:
        os.chmod(state_dir / "overread.db", 0o644 if as_root else 0o444)
        os.chmod(state_dir, 0o755 if as_root else 0o555)
    os.chmod(state_dir.parent, 0o755)
    try:
        if as_root:
            os.setegid(65534)
            os.seteuid(65534)
        try:
            code = main(["messages", "--state-dir", str(state_dir)])
        finally:
            if as_root:
                os.seteuid(0)
                os.setegid(0)
    finally:
        os.chmod(state_dir, 0o700)
        os.chmod(state_dir / "overread.db", 0o600)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "permission denied on the store in" in err and "sudo -u overread" in err
