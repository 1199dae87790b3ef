"""``overread outbox list|retry|purge`` against a real store in a temporary state directory.

Most tests run the command's entry point (``listener.cli.main``, what ``python -m
listener outbox ...`` runs) in process and read its stdout, stderr and exit status; one run
of each exit status (0, 1, 2 from the parser and 2 from the command) and the ``--config``
test run it as an operator does, in a subprocess; the rest call ``cmd_outbox`` with a fixed
clock for the time arithmetic of ``purge``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listener.cli import build_parser
from listener.cli_common import parse_time
from listener.outbox_cli import cmd_outbox
from listener.store import MessageRecord, OutboxItem, SQLiteStore
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _seed(state: Path, delivered_at: datetime = T0 + timedelta(minutes=1)) -> list[int]:
    """Rows R1 delivered, R2 dead (AR), R3 pending for "ris"; R4 dead for "legacy"; returns their ids."""
    store = SQLiteStore.in_state_dir(state)
    try:
        items = tuple(OutboxItem("ris", f"ACC{i}", f"R{i}", b"MSH|x") for i in (1, 2, 3))
        store.save(
            MessageRecord(
                control_id="M1",
                sender_application="A",
                sender_facility="F",
                feed="default",
                received=T0,
                raw=None,
                transport="mllp",
                state="processed",
                ack_code="AA",
                ack=b"",
                outbox=(*items, OutboxItem("legacy", "ACC4", "R4", b"MSH|x")),
            )
        )
        ids = [r.id for r in store.outbox_list()]
        store.outbox_delivered(ids[0], delivered_at)
        store.outbox_dead(ids[1], T0 + timedelta(minutes=1), "AR")
        store.outbox_dead(ids[3], T0 + timedelta(minutes=1), "AE (ERR-3 207)")
        return ids
    finally:
        store.close()


def _cli(state: Path, *argv: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """``overread outbox ARGV --state-dir STATE``: its exit status, stdout and stderr.

    In process (:func:`tests.conftest.run_cli`), or with ``process`` as an operator runs it, in a
    subprocess.
    """
    return run_cli("outbox", *argv, "--state-dir", str(state), process=process)


def _rows(state: Path, *argv: str) -> list[dict[str, object]]:
    result = _cli(state, "list", "--format", "json", *argv)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _run(state: Path, *argv: str) -> tuple[int, str]:
    """In process, with the clock at T0 + 2 days."""
    args = build_parser().parse_args(["outbox", *argv])
    out = io.StringIO()
    return cmd_outbox(args, state, out, now=T0 + timedelta(days=2)), out.getvalue()


# ------------------------------------------------------------------- list


def test_list_shows_the_lease_holder_and_expiry(tmp_path: Path) -> None:
    """A row a worker has claimed shows who holds it and until when, in the table and in the JSON."""
    ids = _seed(tmp_path)
    store = SQLiteStore.in_state_dir(tmp_path)
    try:
        (claim,) = store.outbox_claim("ris", "host-a:4242:0a1b2c3d", T0, T0 + timedelta(seconds=30))
    finally:
        store.close()
    assert claim.row.id == ids[2]
    (row,) = _rows(tmp_path, "--state", "pending")
    assert (row["lease_holder"], row["lease_expires"]) == ("host-a:4242:0a1b2c3d", "2026-03-02T09:00:30+00:00")
    lines = _cli(tmp_path, "list", "--state", "pending").stdout.splitlines()
    assert lines[1].split()[:4] == [str(ids[2]), "ris", "ACC3", "pending"]
    assert lines[2] == "        leased by host-a:4242:0a1b2c3d until 2026-03-02T09:00:30+00:00"
    assert lines[3] == "1 row (state pending): 1 pending"


def test_list_json_lines_and_filters(tmp_path: Path) -> None:
    """list --format json prints one object per row without the payload; --state, --destination and --limit filter."""
    ids = _seed(tmp_path)
    rows = _rows(tmp_path)
    assert [r["id"] for r in rows] == ids
    assert [r["state"] for r in rows] == ["delivered", "dead", "pending", "dead"]
    assert "payload" not in rows[0] and rows[1]["last_error"] == "AR"
    assert set(rows[0]) == {
        "id",
        "destination",
        "accession",
        "control_id",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created",
        "delivered_at",
        "message_pk",
        "resent_from",
        "lease_holder",
        "lease_expires",
        "connect_error",
    }
    assert (rows[2]["lease_holder"], rows[2]["lease_expires"]) == (None, None)
    assert [r["control_id"] for r in _rows(tmp_path, "--state", "dead")] == ["R2", "R4"]
    assert [r["control_id"] for r in _rows(tmp_path, "--state", "dead", "--destination", "legacy")] == ["R4"]
    assert [r["control_id"] for r in _rows(tmp_path, "--limit", "2")] == ["R1", "R2"]


def test_list_text_table_with_summary(tmp_path: Path) -> None:
    """The default text output is a table (id, destination, accession, state, tries, when, control id, error) and a count by state."""
    ids = _seed(tmp_path)
    result = _cli(tmp_path, "list", process=True)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "DESTINATION", "ACCESSION", "STATE", "TRIES"]
    assert lines[2].split()[:5] == [str(ids[1]), "ris", "ACC2", "dead", "1"] and lines[2].endswith("AR")
    assert lines[-1] == "4 rows: 1 pending, 1 delivered, 2 dead"
    empty = _cli(tmp_path, "list", "--state", "pending", "--destination", "legacy")
    assert (empty.returncode, empty.stdout) == (0, "no outbox rows (state pending, destination legacy)\n")


def test_a_row_delivered_after_a_refusal_says_the_error_came_before(tmp_path: Path) -> None:
    """The last refusal stays on a row a retry delivered: the table says it came before the delivery."""
    ids = _seed(tmp_path)
    store = SQLiteStore.in_state_dir(tmp_path)
    try:
        store.outbox_failed(ids[2], T0 + timedelta(minutes=2), T0 + timedelta(minutes=3), "AE (ERR-3 207)")
        store.outbox_delivered(ids[2], T0 + timedelta(minutes=3))
    finally:
        store.close()
    result = _cli(tmp_path, "list", "--state", "delivered")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert rows[str(ids[2])].endswith(
        "before delivery: AE (ERR-3 207 Application internal error: the receiver failed on its side; its own log says why)"
    )  # the RIS's ERR-3 code named (HL7 table 0357)
    assert rows[str(ids[0])].split()[-1] == "R1"  # delivered at once: no error
    assert (
        _rows(tmp_path, "--state", "delivered")[1]["last_error"] == "AE (ERR-3 207)"
    )  # JSON keeps the field as stored


def test_list_refuses_bad_options_naming_them(tmp_path: Path) -> None:
    """An unknown state, a limit below 1 and an unknown destination exit 2 with a message naming the value."""
    _seed(tmp_path)
    bad_state = _cli(tmp_path, "list", "--state", "stuck", process=True)
    assert bad_state.returncode == 2 and "'stuck'" in bad_state.stderr and "pending" in bad_state.stderr
    bad_limit = _cli(tmp_path, "list", "--limit", "0")
    assert bad_limit.returncode == 2 and "'0' must be 1 or more" in bad_limit.stderr
    unknown = _cli(tmp_path, "list", "--destination", "riss")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "unknown destination 'riss' (known: legacy, ris)" in unknown.stderr


def test_destination_known_from_the_config_but_without_rows(tmp_path: Path) -> None:
    """A destination configured in --config's destinations file but with no rows yet lists nothing, exit 0."""
    state = tmp_path / "state"
    _seed(state)
    (tmp_path / "destinations.yaml").write_text(
        "version: 1\ndestinations:\n  pacs:\n    endpoint: tcp:host=127.0.0.1:port=6661\n", encoding="utf-8"
    )
    (tmp_path / "overread.yaml").write_text(f"state_dir: {state}\ndestinations: destinations.yaml\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "listener",
            "outbox",
            "list",
            "--config",
            str(tmp_path / "overread.yaml"),
            "--destination",
            "pacs",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "no outbox rows (destination pacs)\n", "")


def test_no_store_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    """A state directory without a store exits 2 naming the directory, rather than creating a store."""
    for argv, process in (
        (("list",), True),
        (("retry", "--all-dead"), False),
        (("purge", "--delivered-before", "30d"), False),
    ):
        result = _cli(tmp_path / "missing", *argv, process=process)
        assert result.returncode == 2 and f"no store in {tmp_path / 'missing'}" in result.stderr
    assert not (tmp_path / "missing").exists()


# ------------------------------------------------------------------ retry


def test_retry_by_id_reports_each_row_left_alone(tmp_path: Path) -> None:
    """retry ID... revives the dead ones (attempts 0, due now) and names why each other id was not revived (exit 1)."""
    ids = _seed(tmp_path)
    result = _cli(tmp_path, "retry", str(ids[1]), str(ids[2]), "999", "--format", "json", process=True)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "revived": [ids[1]],
        "not_revived": [{"id": ids[2], "reason": "not dead (pending)"}, {"id": 999, "reason": "unknown id"}],
    }
    assert f"row {ids[2]} not revived: not dead (pending)" in result.stderr
    assert "row 999 not revived: unknown id" in result.stderr
    revived = next(r for r in _rows(tmp_path) if r["id"] == ids[1])
    assert (revived["state"], revived["attempts"]) == ("pending", 0)


def test_retry_all_dead_of_one_destination(tmp_path: Path) -> None:
    """retry --all-dead --destination NAME revives that destination's dead rows only; text output names them."""
    ids = _seed(tmp_path)
    result = _cli(tmp_path, "retry", "--all-dead", "--destination", "legacy")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"revived 1 row: {ids[3]} (sent again at the daemon's next poll, same MSH-10)\n"
    assert [r["state"] for r in _rows(tmp_path)] == ["delivered", "dead", "pending", "pending"]
    again = _cli(tmp_path, "retry", "--all-dead", "--destination", "legacy")
    assert (again.returncode, again.stdout) == (0, "nothing revived\n")


def test_retry_superseded_row_needs_force(tmp_path: Path) -> None:
    """A dead row whose accession has a later delivered decision stays dead (exit 1, reason given) unless --force."""
    state = tmp_path
    store = SQLiteStore.in_state_dir(state)
    try:
        store.save(
            MessageRecord(
                control_id="M1",
                sender_application="A",
                sender_facility="F",
                feed="default",
                received=T0,
                raw=None,
                transport="mllp",
                state="processed",
                ack_code="AA",
                ack=b"",
                outbox=(OutboxItem("ris", "ACC1", "OLD", b"MSH|x"), OutboxItem("ris", "ACC1", "NEW", b"MSH|x")),
            )
        )
        old, new = (r.id for r in store.outbox_list())
        store.outbox_dead(old, T0, "AR")
        store.outbox_delivered(new, T0)
    finally:
        store.close()
    result = _cli(state, "retry", "--all-dead")
    assert result.returncode == 1 and result.stdout == "nothing revived\n"
    assert f"row {old} not revived: superseded by a later delivered decision" in result.stderr
    forced = _cli(state, "retry", str(old), "--force")
    assert forced.returncode == 0 and forced.stdout.startswith(f"revived 1 row: {old}")


def test_retry_usage_errors(tmp_path: Path) -> None:
    """Neither ids nor --all-dead, both, or --destination with ids: exit 2 saying what to give."""
    ids = _seed(tmp_path)
    for argv, text in (
        ((), "give dead row ids or --all-dead (not both)"),
        (("--all-dead", str(ids[1])), "give dead row ids or --all-dead (not both)"),
        ((str(ids[1]), "--destination", "ris"), "--destination goes with --all-dead"),
        (("x1",), "invalid int value: 'x1'"),
    ):
        result = _cli(tmp_path, "retry", *argv)
        assert result.returncode == 2 and text in result.stderr, (argv, result.stderr)
    assert [r["state"] for r in _rows(tmp_path)] == ["delivered", "dead", "pending", "dead"]


# ------------------------------------------------------------------ purge


def test_purge_delivered_older_than_days_and_dead_ids(tmp_path: Path) -> None:
    """purge --delivered-before 30d deletes rows delivered over 30 days ago; named dead rows go; pending rows stay."""
    ids = _seed(tmp_path, delivered_at=datetime.now(UTC) - timedelta(days=31))
    result = _cli(tmp_path, "purge", "--delivered-before", "30d", str(ids[1]))
    assert (result.returncode, result.stdout, result.stderr) == (0, "purged 2 rows\n", "")
    assert [r["state"] for r in _rows(tmp_path)] == ["pending", "dead"]


def test_purge_keeps_recent_rows_and_other_destinations(tmp_path: Path) -> None:
    """Rows delivered within the window, or for another destination than --destination, are not purged."""
    _seed(tmp_path, delivered_at=datetime.now(UTC) - timedelta(days=5))
    recent = _cli(tmp_path, "purge", "--delivered-before", "30d", "--format", "json")
    assert recent.returncode == 0 and json.loads(recent.stdout) == {"purged": 0, "not_purged": []}
    other = _cli(tmp_path, "purge", "--delivered-before", "1d", "--destination", "legacy")
    assert (other.returncode, other.stdout) == (0, "purged 0 rows\n")
    mine = _cli(tmp_path, "purge", "--delivered-before", "1d", "--destination", "ris")
    assert (mine.returncode, mine.stdout) == (0, "purged 1 row\n")


def test_purge_never_deletes_pending_rows_given_by_id(tmp_path: Path) -> None:
    """An id of a pending or delivered row is kept and named (exit 1); only dead rows are deleted by id."""
    ids = _seed(tmp_path)
    result = _cli(tmp_path, "purge", str(ids[2]), str(ids[3]), "--format", "json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"purged": 1, "not_purged": [{"id": ids[2], "reason": "not dead (pending)"}]}
    assert f"row {ids[2]} kept: not dead (pending)" in result.stderr
    assert [r["state"] for r in _rows(tmp_path)] == ["delivered", "dead", "pending"]


def test_purge_usage_errors(tmp_path: Path) -> None:
    """purge needs --delivered-before or ids; a bad time is named; --destination needs --delivered-before."""
    ids = _seed(tmp_path)
    nothing = _cli(tmp_path, "purge")
    assert nothing.returncode == 2 and "give --delivered-before WHEN (e.g. 30d) and/or dead row ids" in nothing.stderr
    bad = _cli(tmp_path, "purge", "--delivered-before", "yesterday")
    assert bad.returncode == 2 and "--delivered-before 'yesterday' is neither ISO 8601" in bad.stderr
    naive = _cli(tmp_path, "purge", "--delivered-before", "2026-03-01T00:00:00")
    assert naive.returncode == 2 and "'2026-03-01T00:00:00'" in naive.stderr
    dest = _cli(tmp_path, "purge", str(ids[1]), "--destination", "ris")
    assert dest.returncode == 2 and "--destination goes with --delivered-before" in dest.stderr
    assert len(_rows(tmp_path)) == 4


def test_purge_at_a_fixed_time(tmp_path: Path) -> None:
    """With the clock at T0+2d, 1d and an ISO time before the delivery bracket the delivered row correctly."""
    _seed(tmp_path)
    assert _run(tmp_path, "purge", "--delivered-before", "2026-03-02T09:00:00Z") == (0, "purged 0 rows\n")
    assert _run(tmp_path, "purge", "--delivered-before", "1d") == (0, "purged 1 row\n")


def test_parse_time_forms() -> None:
    """ISO 8601 with an offset or Z, or Nd days ago; a naive time is refused."""
    now = T0
    assert parse_time("2026-03-01T00:00:00Z", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time("2026-03-01T01:00:00+01:00", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time("30d", now) == now - timedelta(days=30)
    assert parse_time("24h", now) == now - timedelta(hours=24)
    with pytest.raises(ValueError):
        parse_time("2026-03-01T00:00:00", now)
