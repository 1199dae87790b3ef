"""``overread outbox list|retry|purge`` against a real store in a temporary state directory."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listener.cli import build_parser
from listener.outbox_cli import cmd_outbox, parse_time
from listener.store import MessageRecord, OutboxItem, SQLiteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _seed(state: Path) -> list[int]:
    """Three rows: R1 delivered, R2 dead, R3 pending; returns their ids."""
    store = SQLiteStore.in_state_dir(state)
    try:
        store.save(MessageRecord(
            control_id="M1", sender_application="A", sender_facility="F", feed="default", received=T0, raw=None,
            transport="mllp", state="processed", ack_code="AA", ack=b"",
            outbox=tuple(OutboxItem("ris", f"ACC{i}", f"R{i}", b"MSH|x") for i in (1, 2, 3)),
        ))
        ids = [r.id for r in store.outbox_list()]
        store.outbox_delivered(ids[0], T0 + timedelta(minutes=1))
        store.outbox_dead(ids[1], T0 + timedelta(minutes=1), "AR")
        return ids
    finally:
        store.close()


def _run(state: Path, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["outbox", *argv])
    out = io.StringIO()
    return cmd_outbox(args, state, out, now=T0 + timedelta(days=2)), out.getvalue()


def test_list_json_and_state_filter(tmp_path: Path) -> None:
    """list --format json prints one object per row (no payload); --state filters."""
    ids = _seed(tmp_path)
    code, out = _run(tmp_path, "list", "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == ids
    assert [r["state"] for r in rows] == ["delivered", "dead", "pending"]
    assert "payload" not in rows[0] and rows[1]["last_error"] == "AR"
    code, out = _run(tmp_path, "list", "--state", "dead", "--format", "json")
    assert [json.loads(line)["control_id"] for line in out.splitlines()] == ["R2"]
    code, out = _run(tmp_path, "list")
    assert code == 0 and out.splitlines()[0].split()[0] == "ID" and len(out.splitlines()) == 4


def test_retry_revives_dead_rows_and_reports_skipped_ids(tmp_path: Path) -> None:
    """retry ID revives a dead row; a non-dead id is reported and gives exit 1; --all-dead with ids is refused."""
    ids = _seed(tmp_path)
    code, out = _run(tmp_path, "retry", str(ids[1]), str(ids[2]))
    assert code == 1 and json.loads(out) == {"revived": [ids[1]]}
    assert _run(tmp_path, "retry", "--all-dead", str(ids[1]))[0] == 2
    code, out = _run(tmp_path, "retry", "--all-dead")
    assert code == 0 and json.loads(out) == {"revived": []}


def test_purge_delivered_before_and_dead_ids(tmp_path: Path) -> None:
    """purge --delivered-before 1d deletes the delivered row; a dead id is deleted; pending rows stay."""
    ids = _seed(tmp_path)
    code, out = _run(tmp_path, "purge", "--delivered-before", "1d", str(ids[1]))
    assert code == 0 and json.loads(out) == {"purged": 2}
    code, out = _run(tmp_path, "list", "--format", "json")
    assert [json.loads(line)["state"] for line in out.splitlines()] == ["pending"]
    assert _run(tmp_path, "purge")[0] == 2
    assert _run(tmp_path, "purge", "--delivered-before", "yesterday")[0] == 2


def test_parse_time_forms() -> None:
    """ISO 8601 with an offset or Z, or Nd days ago; a naive time is refused."""
    now = T0
    assert parse_time("2026-03-01T00:00:00Z", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time("30d", now) == now - timedelta(days=30)
    with pytest.raises(ValueError):
        parse_time("2026-03-01T00:00:00", now)


def test_no_store_is_an_error(tmp_path: Path) -> None:
    """A state directory without a store gives exit 2 rather than creating one."""
    assert _run(tmp_path / "missing", "list")[0] == 2
    assert not (tmp_path / "missing").exists()
