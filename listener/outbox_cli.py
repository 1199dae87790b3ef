"""``overread outbox list|retry|purge|resend|kick``: operate the outbound queue from a shell.

Layer: CLI (I/O for users). It opens the store in the state directory, which
may be in use by a running daemon (SQLite WAL: the daemon's worker sees revived
rows at its next poll, within seconds).

Every change (retry, purge, resend, kick) is recorded in the audit log
(``overread audit``) with the OS user who made it. See docs/operations.md,
"Resending and unsticking the outbox".

Conventions (docs/cli.md, docs/outbound.md): ``--config F`` (its ``state_dir`` and destinations)
and ``--state-dir DIR`` (wins over the config); ``--format text`` (default, for
people) or ``--format json`` (``list``: JSON Lines, one object per row;
``retry``/``purge``: one object). Errors go to stderr as ``overread outbox
COMMAND: what is wrong``.

Exit status: 0 done; 1 some of the rows asked for were not changed (unknown,
not dead, or superseded by a later delivered decision), the others were;
2 usage error, unknown destination, or no store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from listener.cli_common import os_actor, parse_time
from listener.errors import ConfigError, StoreError
from listener.operator_actions import (
    Actor,
    kick_destination,
    kick_summary,
    not_dead,
    resend_rows,
    retry_rows,
    unknown_destination,
)
from listener.store import StoreSettings
from listener.store.base import OUTBOX_STATES, DestinationState, Store
from listener.views import last_error_text, row_dict

__all__ = ["add_outbox_parser", "cmd_outbox"]

_EXIT_OK = 0
_EXIT_PARTIAL = 1
_EXIT_ERROR = 2

_EPILOG = (
    "exit status: 0 done; 1 some rows asked for were not changed (the others were); "
    "2 usage error, unknown destination or no store"
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def add_outbox_parser(sub: Any) -> None:
    """Add ``outbox`` and its ``list``, ``retry`` and ``purge`` commands to ``sub``."""
    outbox = sub.add_parser(
        "outbox", help="list, retry, resend, kick or purge routing messages for the RIS", epilog=_EPILOG
    )
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="list|retry|resend|kick|purge")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="F", help="daemon config file (its state_dir and destinations are used)")
        p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")
        p.add_argument(
            "--format",
            choices=("text", "json"),
            default="text",
            help="text for people (default) or json (list: one object per line)",
        )

    ls = actions.add_parser("list", help="list outbox rows (oldest first)", epilog=_EPILOG)
    common(ls)
    ls.add_argument("--state", choices=OUTBOX_STATES, help="only rows in this state")
    ls.add_argument("--destination", metavar="NAME", help="only rows for this destination")
    ls.add_argument("--limit", type=_positive_int, metavar="N", help="at most N rows")

    retry = actions.add_parser(
        "retry",
        epilog=_EPILOG,
        help="send dead-lettered rows again (attempts reset to 0, due now; same MSH-10)",
    )
    common(retry)
    retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead rows to revive (ids from `outbox list`)")
    retry.add_argument("--all-dead", action="store_true", help="revive every dead row (of --destination, if given)")
    retry.add_argument("--destination", metavar="NAME", help="with --all-dead: only this destination's dead rows")
    retry.add_argument(
        "--force",
        action="store_true",
        help="also revive rows a later delivered decision for the same accession supersedes",
    )

    resend = actions.add_parser(
        "resend",
        epilog=_EPILOG,
        help="queue delivered routing messages again (the RIS took them and lost them); same bytes and MSH-10",
    )
    common(resend)
    resend.add_argument("ids", nargs="*", type=int, metavar="ID", help="delivered rows to send again")
    resend.add_argument(
        "--accession", metavar="A", help="the latest delivered row of this accession (per destination) instead of ids"
    )
    resend.add_argument("--destination", metavar="NAME", help="with --accession: only this destination")
    resend.add_argument(
        "--force", action="store_true", help="also when a later decision for the same accession is pending or delivered"
    )

    kick = actions.add_parser(
        "kick",
        epilog=_EPILOG,
        help="make a destination in backoff try now: waiting rows become due and the worker reconnects",
    )
    common(kick)
    kick.add_argument("destination", nargs="?", metavar="DESTINATION", help="one destination (default: all)")

    purge = actions.add_parser(
        "purge",
        epilog=_EPILOG,
        help="delete delivered rows delivered before a time, and/or the given dead rows (pending rows never)",
    )
    common(purge)
    purge.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead rows to delete")
    purge.add_argument(
        "--delivered-before",
        metavar="WHEN",
        help="delete rows delivered before this time: ISO 8601 with an offset "
        "(2026-03-01T00:00:00Z) or a number of days ago (30d)",
    )
    purge.add_argument("--destination", metavar="NAME", help="with --delivered-before: only this destination's rows")


def cmd_outbox(
    args: argparse.Namespace,
    settings: StoreSettings | Path,
    out: TextIO,
    *,
    now: datetime | None = None,
    destinations_file: Path | None = None,
) -> int:
    """Run one ``outbox`` command against the store the configuration names.

    Args:
        args: the parsed command line.
        settings: the configuration (its store settings), or a state directory.
        out: where results go (stdout).
        now: the time (aware UTC; default: now).
        destinations_file: the config's destinations file: a ``--destination``
            that neither it nor the outbox knows is refused.
    """
    from listener.store import open_store

    command = args.outbox_command
    prog = f"overread outbox {command}"
    now = now or datetime.now(UTC)
    problem = _usage_problem(args)
    if problem:
        sys.stderr.write(f"{prog}: {problem}\n")
        return _EXIT_ERROR
    before: datetime | None = None
    if command == "purge" and args.delivered_before:
        try:
            before = parse_time(args.delivered_before, now)
        except ValueError:
            sys.stderr.write(
                f"{prog}: --delivered-before {args.delivered_before!r} is neither ISO 8601 with an offset"
                " (2026-03-01T00:00:00Z) nor a number of days (30d)\n"
            )
            return _EXIT_ERROR
    try:
        store = open_store(settings, create=False)
    except StoreError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return _EXIT_ERROR
    try:
        destination = getattr(args, "destination", None)
        if destination is not None:
            unknown = _unknown_destination(store, destination, destinations_file)
            if unknown:
                sys.stderr.write(f"{prog}: {unknown}\n")
                return _EXIT_ERROR
        if command == "list":
            return _list(store, args, out)
        if command == "retry":
            return _retry(store, args, out, now)
        if command == "resend":
            return _resend(store, args, out, now)
        if command == "kick":
            return _kick(store, args, out, now)
        return _purge(store, args, out, before, now)
    except StoreError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return _EXIT_ERROR
    finally:
        store.close()


def _usage_problem(args: argparse.Namespace) -> str:
    """What is wrong with a combination of options ("" when nothing)."""
    if args.outbox_command == "retry":
        if bool(args.ids) == bool(args.all_dead):
            return "give dead row ids or --all-dead (not both)"
        if args.destination is not None and not args.all_dead:
            return "--destination goes with --all-dead (ids already name their rows)"
    if args.outbox_command == "resend":
        if bool(args.ids) == bool(args.accession):
            return "give delivered row ids or --accession (not both)"
        if args.destination is not None and not args.accession:
            return "--destination goes with --accession (ids already name their rows)"
    if args.outbox_command == "purge":
        if not args.ids and not args.delivered_before:
            return "give --delivered-before WHEN (e.g. 30d) and/or dead row ids"
        if args.destination is not None and not args.delivered_before:
            return "--destination goes with --delivered-before (ids already name their rows)"
    return ""


def _unknown_destination(store: Store, name: str, destinations_file: Path | None) -> str:
    """An error text when ``name`` is neither configured nor in the outbox ("" when known)."""
    configured: list[str] = []
    if destinations_file is not None:
        from listener.destinations import load_destinations

        try:
            configured = [d.name for d in load_destinations(destinations_file)]
        except ConfigError:
            configured = []  # the daemon reports a broken file; the outbox is still usable
    return unknown_destination(store, name, configured)


def _connection_note(state: DestinationState) -> str:
    """One line on a destination's connection trouble ("" when it is connected)."""
    if not state.connect_failures:
        return ""
    since = state.last_connect_error_at.isoformat(timespec="seconds") if state.last_connect_error_at else "?"
    nxt = state.next_connect_at.isoformat(timespec="seconds") if state.next_connect_at else "?"
    kicked = (
        f"; kick requested {state.kick_requested_at.isoformat(timespec='seconds')}" if state.kick_requested_at else ""
    )
    return (
        f"destination {state.destination}: cannot connect ({state.connect_failures} failed attempt"
        f"{'s' if state.connect_failures != 1 else ''}, last at {since}: {state.last_connect_error});"
        f" next attempt {nxt}{kicked}"
    )


def _list(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    rows = store.outbox_list(args.state, destination=args.destination, limit=args.limit)
    states = {d.destination: d for d in store.destination_states(args.destination)}
    if args.format == "json":
        for row in rows:
            state = states.get(row.destination)
            out.write(
                json.dumps(
                    {
                        **row_dict(row),
                        "connect_error": (
                            state.last_connect_error if state is not None and state.connect_failures else ""
                        ),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        return _EXIT_OK
    notes = [note for note in (_connection_note(d) for d in states.values()) if note]
    if not rows:
        out.write("no outbox rows" + _filters(args) + "\n")
        for note in notes:
            out.write(note + "\n")
        return _EXIT_OK
    out.write(
        f"{'ID':>6}  {'DESTINATION':<14} {'ACCESSION':<16} {'STATE':<9} {'TRIES':>5}  "
        f"{'NEXT ATTEMPT / DELIVERED':<25}  {'CONTROL ID':<20}  LAST ERROR\n"
    )
    for row in rows:
        when = {"delivered": row.delivered_at, "pending": row.next_attempt_at}.get(row.state)
        shown = when.astimezone(UTC).isoformat(timespec="seconds") if when is not None else "-"
        line = (
            f"{row.id:>6}  {row.destination:<14} {row.accession:<16} {row.state:<9} {row.attempts:>5}  "
            f"{shown:<25}  {row.control_id:<20}  {last_error_text(row.state, row.last_error)}"
        )
        out.write(line.rstrip() + "\n")
        if row.lease_holder and row.lease_expires is not None:
            # A worker (of this daemon or another on the same store) has it in flight (docs/outbound.md, "Leases").
            until = row.lease_expires.astimezone(UTC).isoformat(timespec="seconds")
            out.write(f"{'':>8}leased by {row.lease_holder} until {until}\n")
    counts: Counter[str] = Counter(row.state for row in rows)
    summary = ", ".join(f"{counts[state]} {state}" for state in OUTBOX_STATES if counts[state])
    out.write(f"{len(rows)} row{'s' if len(rows) != 1 else ''}{_filters(args)}: {summary}\n")
    for note in notes:
        out.write(note + "\n")
    return _EXIT_OK


def _filters(args: argparse.Namespace) -> str:
    parts = [f"{key} {value}" for key, value in (("state", args.state), ("destination", args.destination)) if value]
    return f" ({', '.join(parts)})" if parts else ""


def _actor() -> Actor:
    return Actor(os_actor(), "cli")


def _retry(store: Store, args: argparse.Namespace, out: TextIO, now: datetime) -> int:
    result = retry_rows(
        store, _actor(), now, ids=args.ids, all_dead=args.all_dead, destination=args.destination, force=args.force
    )
    revived, kept = result.revived, result.kept
    if args.format == "json":
        out.write(json.dumps({"revived": list(revived), "not_revived": [k.as_dict() for k in kept]}) + "\n")
    else:
        out.write(result.summary() + "\n")
    for item in kept:
        sys.stderr.write(f"overread outbox retry: {item.line('revived')}\n")
    return _EXIT_PARTIAL if kept else _EXIT_OK


def _resend(store: Store, args: argparse.Namespace, out: TextIO, now: datetime) -> int:
    result = resend_rows(
        store, _actor(), now, ids=args.ids, accession=args.accession, destination=args.destination, force=args.force
    )
    if result.nothing_delivered:
        sys.stderr.write(f"overread outbox resend: {result.nothing_delivered}\n")
        return _EXIT_PARTIAL
    pairs, kept = result.pairs, result.kept
    if args.format == "json":
        out.write(
            json.dumps(
                {
                    "resent": [{"id": old, "new_id": new} for old, new in pairs],
                    "not_resent": [k.as_dict() for k in kept],
                }
            )
            + "\n"
        )
    else:
        out.write("".join(line + "\n" for line in result.summary()))
    for item in kept:
        sys.stderr.write(f"overread outbox resend: {item.line('resent')}\n")
    return _EXIT_PARTIAL if kept else _EXIT_OK


def _kick(store: Store, args: argparse.Namespace, out: TextIO, now: datetime) -> int:
    count, _ = kick_destination(store, _actor(), now, args.destination)
    if args.format == "json":
        out.write(json.dumps({"destination": args.destination, "pending": count}) + "\n")
    else:
        out.write(kick_summary(args.destination, count) + "\n")
    return _EXIT_OK


def _purge(store: Store, args: argparse.Namespace, out: TextIO, before: datetime | None, now: datetime) -> int:
    rows = {r.id: r for r in store.outbox_list()}
    dead_ids = list(dict.fromkeys(args.ids))
    kept = not_dead(rows, dead_ids)
    count = store.outbox_purge(delivered_before=before, dead_ids=dead_ids, destination=args.destination)
    store.record_audit(
        at=now,
        actor=os_actor(),
        via="cli",
        action="outbox purge",
        target={"dead_ids": dead_ids, "delivered_before": args.delivered_before, "destination": args.destination},
        rows=count,
    )
    if args.format == "json":
        out.write(json.dumps({"purged": count, "not_purged": [k.as_dict() for k in kept]}) + "\n")
    else:
        out.write(f"purged {count} row{'s' if count != 1 else ''}\n")
    for item in kept:
        sys.stderr.write(f"overread outbox purge: row {item.id} kept: {item.reason}\n")
    return _EXIT_PARTIAL if kept else _EXIT_OK
