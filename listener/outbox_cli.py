"""``overread outbox list|retry|purge``: operate the outbound queue from a shell.

Layer: CLI (I/O for users). It opens the store in the state directory, which
may be in use by a running daemon (SQLite WAL: the daemon's worker sees revived
rows at its next poll, within seconds).

Exit status: 0 done; 1 some of the given ids were not changed (unknown, not
dead, or superseded by a later delivered decision); 2 usage error or no store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from listener.errors import StoreError
from listener.store.base import OUTBOX_STATES, OutboxRow, Store

__all__ = ["add_outbox_parser", "cmd_outbox", "row_dict"]

_EXIT_OK = 0
_EXIT_PARTIAL = 1
_EXIT_ERROR = 2


def add_outbox_parser(sub: Any) -> None:
    """Add ``outbox`` and its ``list``, ``retry`` and ``purge`` commands to ``sub``."""
    outbox = sub.add_parser("outbox", help="list, retry or purge routing messages waiting for the RIS")
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="list|retry|purge")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="F", help="daemon config file (its state_dir is used)")
        p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var)")

    ls = actions.add_parser("list", help="list outbox rows (oldest first)")
    common(ls)
    ls.add_argument("--state", choices=OUTBOX_STATES, help="only rows in this state")
    ls.add_argument("--destination", metavar="NAME", help="only rows for this destination")
    ls.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    ls.add_argument("--format", choices=("text", "json"), default="text")

    retry = actions.add_parser("retry", help="send dead-lettered rows again (attempts reset, due now)")
    common(retry)
    retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead rows to revive")
    retry.add_argument("--all-dead", action="store_true", help="revive every dead row")
    retry.add_argument("--force", action="store_true",
                       help="also revive rows a later delivered decision for the same accession supersedes")

    purge = actions.add_parser("purge", help="delete delivered rows before a time and/or the given dead rows")
    common(purge)
    purge.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead rows to delete")
    purge.add_argument("--delivered-before", metavar="TIME",
                       help="delete rows delivered before this ISO 8601 time (or a number of days ago, e.g. 30d)")


def cmd_outbox(args: argparse.Namespace, state_dir: Path, out: TextIO, *, now: datetime | None = None) -> int:
    """Run one ``outbox`` command against the store in ``state_dir``."""
    from listener.store.sqlite import DB_FILENAME, SQLiteStore

    now = now or datetime.now(timezone.utc)
    if args.outbox_command == "retry" and bool(args.ids) == bool(args.all_dead):
        sys.stderr.write("overread outbox retry: give dead row ids or --all-dead (not both)\n")
        return _EXIT_ERROR
    before: datetime | None = None
    if args.outbox_command == "purge":
        if not args.ids and not args.delivered_before:
            sys.stderr.write("overread outbox purge: give --delivered-before and/or dead row ids\n")
            return _EXIT_ERROR
        if args.delivered_before:
            try:
                before = parse_time(args.delivered_before, now)
            except ValueError:
                sys.stderr.write("overread outbox purge: --delivered-before must be ISO 8601 (with offset) or Nd\n")
                return _EXIT_ERROR
    if not (Path(state_dir) / DB_FILENAME).is_file():
        sys.stderr.write(f"overread outbox: no store in {state_dir}\n")
        return _EXIT_ERROR
    try:
        store = SQLiteStore.in_state_dir(state_dir)
    except StoreError as exc:
        sys.stderr.write(f"overread outbox: {exc}\n")
        return _EXIT_ERROR
    try:
        if args.outbox_command == "list":
            return _list(store, args, out)
        if args.outbox_command == "retry":
            revived = store.outbox_retry(None if args.all_dead else args.ids, now, force=args.force)
            out.write(json.dumps({"revived": list(revived)}) + "\n")
            skipped = sorted(set(args.ids) - set(revived))
            if skipped:
                sys.stderr.write(f"overread outbox retry: not revived (unknown, not dead or superseded): {skipped}\n")
                return _EXIT_PARTIAL
            return _EXIT_OK
        dead_ids = list(args.ids)
        if dead_ids:
            dead = {r.id for r in store.outbox_list("dead")}
            not_dead = sorted(set(dead_ids) - dead)
        else:
            not_dead = []
        count = store.outbox_purge(delivered_before=before, dead_ids=dead_ids)
        out.write(json.dumps({"purged": count}) + "\n")
        if not_dead:
            sys.stderr.write(f"overread outbox purge: not dead rows, kept: {not_dead}\n")
            return _EXIT_PARTIAL
        return _EXIT_OK
    except StoreError as exc:
        sys.stderr.write(f"overread outbox: {exc}\n")
        return _EXIT_ERROR
    finally:
        store.close()


def parse_time(text: str, now: datetime) -> datetime:
    """An aware datetime from ISO 8601 text with an offset, or ``Nd`` days before ``now``.

    Raises:
        ValueError: neither form, or a naive time.
    """
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return now - timedelta(days=int(text[:-1]))
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("naive time")
    return value


def row_dict(row: OutboxRow) -> dict[str, Any]:
    """One row as the JSON object ``overread outbox list --format json`` prints (no payload)."""
    return {
        "id": row.id,
        "destination": row.destination,
        "accession": row.accession,
        "control_id": row.control_id,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at.isoformat(),
        "last_error": row.last_error,
        "created": row.created.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


def _list(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    rows = store.outbox_list(args.state, destination=args.destination, limit=args.limit)
    if args.format == "json":
        for row in rows:
            out.write(json.dumps(row_dict(row), ensure_ascii=False) + "\n")
        return _EXIT_OK
    out.write(f"{'ID':>6}  {'DESTINATION':<14} {'STATE':<9} {'TRIES':>5}  {'NEXT ATTEMPT / DELIVERED':<26} {'CONTROL ID':<20}  LAST ERROR\n")
    for row in rows:
        when = row.delivered_at if row.delivered_at is not None else row.next_attempt_at
        out.write(
            f"{row.id:>6}  {row.destination:<14} {row.state:<9} {row.attempts:>5}  "
            f"{when.isoformat(timespec='seconds'):<26} {row.control_id:<20}  {row.last_error}\n"
        )
    return _EXIT_OK
