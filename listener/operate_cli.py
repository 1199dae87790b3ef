"""``overread show | hash | reprocess | audit``: an interface analyst's tools for one message.

Layer: CLI (I/O for users). Opens the store in the state directory, which may
be in use by a running daemon (SQLite WAL). Everything here is described in
docs/operations.md ("Finding one message", "Reprocessing", "Audit").

``show`` prints what the store holds about a message, raw body and report
text included: it is for people allowed to read patient data on this machine
(the store file is 0600 and the state directory 0700). Nothing here writes
patient data to a log.

Exit status: 0 done; 1 some messages were skipped or not found (the others
were done); 2 usage error or no store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from listener.cli_common import os_actor, parse_window
from listener.config import Config
from listener.errors import StoreError
from listener.hl7v2.keys import shown_key
from listener.operator_actions import DEFAULT_REPROCESS_LIMIT, Actor, change_lines, reprocess_targets
from listener.reprocess import Change
from listener.store.base import MESSAGE_STATES, TRANSPORTS, Store
from listener.views import audit_dict, detail_dict, iso_utc, write_detail_text

__all__ = ["add_operate_parsers", "cmd_audit", "cmd_hash", "cmd_reprocess", "cmd_show"]

_EXIT_OK = 0
_EXIT_PARTIAL = 1
_EXIT_ERROR = 2


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="daemon config file (its state_dir is used)")
    p.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var; wins over --config)")


def add_operate_parsers(sub: Any) -> None:
    """Add ``show``, ``hash``, ``reprocess`` and ``audit`` to the top-level subparsers."""
    show = sub.add_parser(
        "show",
        help="everything stored about one message",
        description="Print one stored message: raw body, our ACK, its reports, findings, route with its "
        "explanation, the routing messages it produced with their delivery history, and every "
        "earlier processing. MESSAGE is a message_pk (a number), an MSH-10 / FHIR control id, or the id "
        "in a FHIR POST's Location (the report's id).",
        epilog="exit status: 0 shown; 1 not found or ambiguous; 2 usage error or no store",
    )
    _store_options(show)
    show.add_argument(
        "message",
        metavar="MESSAGE",
        help="message_pk (pk:N when it could be a control id), control id, or the id in a FHIR Location",
    )
    show.add_argument("--sender", metavar="APP", help="with a control id: the sending application (MSH-3)")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.add_argument("--no-raw", action="store_true", help="leave the raw body and report text out")

    hashp = sub.add_parser(
        "hash",
        help="the keyed hash of an accession or patient id, as logged (accession_h, patient_h)",
        description="Print the keyed hash the daemon logs for each VALUE (an accession number or a patient id), "
        "so a log line can be matched to a message. Uses the installation key in the state directory.",
        epilog="exit status: 0 printed; 2 no key in the state directory",
    )
    _store_options(hashp)
    hashp.add_argument("values", nargs="+", metavar="VALUE", help="accession number or patient id")

    rep = sub.add_parser(
        "reprocess",
        help="run stored messages through the current configuration again",
        description="Process stored messages again from their raw bytes with the current mappings and policies. "
        "The earlier processing is kept (numbered); routing messages are queued only for decisions "
        "that changed (or all, with --resend-routes). A filtered run pins the newest message when it "
        "starts, so messages arriving meanwhile are never touched.",
        epilog="exit status: 0 done; 1 some messages skipped or not found; 2 usage error or no store",
    )
    _store_options(rep)
    rep.add_argument("messages", nargs="*", metavar="MESSAGE", help="message_pk (pk:N) or control id")
    rep.add_argument("--state", choices=MESSAGE_STATES, help="filter: messages in this state")
    rep.add_argument("--sender", metavar="APP", help="filter: from this sending application (MSH-3)")
    rep.add_argument("--transport", choices=TRANSPORTS, help="filter: received over mllp or http")
    rep.add_argument("--since", metavar="TIME", help="filter: received at or after TIME (ISO 8601 with offset, or Nd)")
    rep.add_argument("--until", metavar="TIME", help="filter: received before TIME")
    rep.add_argument(
        "--limit",
        type=int,
        metavar="N",
        default=None,
        help=f"with a filter: at most N messages (default {DEFAULT_REPROCESS_LIMIT})",
    )
    rep.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    rep.add_argument(
        "--resend-routes",
        action="store_true",
        help="queue every routed report's routing message, not only changed decisions",
    )
    rep.add_argument("--format", choices=("text", "json"), default="text")

    audit = sub.add_parser(
        "audit",
        help="list operator actions (reprocess, resend, retry, purge, kick)",
        epilog="exit status: 0 listed; 2 usage error or no store",
    )
    _store_options(audit)
    audit.add_argument("--since", metavar="TIME", help="from TIME on (ISO 8601 with offset, or Nd)")
    audit.add_argument("--action", metavar="NAME", help="only this action (e.g. reprocess, 'outbox resend')")
    audit.add_argument("--limit", type=int, metavar="N", help="at most N entries")
    audit.add_argument("--format", choices=("text", "json"), default="text")


# --------------------------------------------------------------------- helpers


def _fail(prog: str, text: str, err: TextIO | None = None) -> int:
    (err or sys.stderr).write(f"overread {prog}: {text}\n")
    return _EXIT_ERROR


def _open(prog: str, config: Config) -> Store | str:
    from listener.store import open_store

    try:
        return open_store(config, create=False)
    except StoreError as exc:
        return str(exc)


def resolve_message(store: Store, text: str, sender: str | None = None) -> tuple[int | None, str]:
    """A message_pk from ``pk:N``, a control id, or a plain number: (pk, "") or (None, why not).

    A plain number is a message_pk unless it is also a stored control id (numeric MSH-10s
    are common): then it is ambiguous and ``pk:N`` or ``--sender`` must say which.
    """
    if text.startswith("pk:"):
        number = text[3:]
        if number.isascii() and number.isdigit() and len(number) <= 18:
            return int(number), ""
        return None, f"{text!r}: pk: takes a message_pk (a number)"
    found = list(store.messages(control_id=text, sender_application=sender, limit=20))
    if text.isascii() and text.isdigit() and len(text) <= 18 and sender is None:
        if not found:
            return int(text), ""
        if store.message_detail(int(text)) is not None:
            return None, (
                f"{text!r} is both a message_pk and a control id: write pk:{text} for the message_pk,"
                " or give --sender for the control id"
            )
    if not found and sender is None:
        # A FHIR POST's Location names the report by an id the server chose, not by the
        # message's control id (docs/http-api.md): find the message that carried it.
        pk = store.reports.message_of(text)
        if pk is not None:
            return pk, ""
    if not found:
        return None, (
            f"no message with control id {text!r}"
            + (f" from {sender!r}" if sender else "")
            + " (nor a report with that FHIR id, the id in a POST's Location);"
            " search by accession: overread messages --accession ACC"
        )
    if len(found) > 1:
        which = ", ".join(
            f"{m.message_pk} ({shown_key(m.sender_application)}/{shown_key(m.sender_facility)})" for m in found
        )
        return None, f"control id {text!r} names several messages: {which}; give a message_pk or --sender"
    return found[0].message_pk, ""


# -------------------------------------------------------------------- commands


def cmd_show(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """Print one stored message."""
    store = _open("show", config)
    if isinstance(store, str):
        return _fail("show", store)
    try:
        pk, why = resolve_message(store, args.message, args.sender)
        if pk is None:
            sys.stderr.write(f"overread show: {why}\n")
            return _EXIT_PARTIAL
        detail = store.message_detail(pk)
        if detail is None:
            sys.stderr.write(f"overread show: no message {pk} in {config.state_dir}\n")
            return _EXIT_PARTIAL
        data = detail_dict(detail, with_raw=not args.no_raw)
        if args.format == "json":
            out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        else:
            write_detail_text(out, data)
        return _EXIT_OK
    except StoreError as exc:
        return _fail("show", str(exc))
    finally:
        store.close()


def cmd_hash(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """Print ``VALUE<TAB>hash`` for each value, with the installation's key."""
    from listener.logs import HASH_KEY_FILE, keyed_hash

    path = Path(config.state_dir) / HASH_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return _fail("hash", f"no hash key in {config.state_dir} (the daemon creates it on first start)")
    except OSError as exc:
        return _fail("hash", f"cannot read {path} ({exc.strerror})")
    if not key:
        return _fail("hash", f"{path} is empty")
    for value in args.values:
        out.write(f"{value}\t{keyed_hash(value, key)}\n")
    return _EXIT_OK


def cmd_reprocess(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """Reprocess the named messages, or those a filter selects (bounded, pinned)."""
    from listener.destinations import load_destinations

    now = datetime.now(UTC)
    filtering = any(getattr(args, n) is not None for n in ("state", "sender", "transport", "since", "until"))
    if bool(args.messages) == filtering:
        return _fail(
            "reprocess", "give MESSAGE ids or a filter (--state, --sender, --transport, --since, --until), not both"
        )
    if args.limit is not None and (args.limit < 1 or args.messages):
        return _fail("reprocess", "--limit N (1 or more) goes with a filter")
    window = parse_window(args, now)
    if isinstance(window, str):
        return _fail("reprocess", window)
    if getattr(args, "config", None) is None:
        # The daemon runs with its own config file; without it, this is not what it would do.
        sys.stderr.write(
            "overread reprocess: no --config given: using the built-in mappings and policies and no destinations\n"
        )
    from listener.assemble import build_pipeline

    pipeline = build_pipeline(config)
    destinations = tuple(load_destinations(config.destinations_file)) if config.destinations_file else ()
    from listener.server.http import clients_from_config

    clients = {c.fhir.name: c.fhir for c in clients_from_config(config.http_clients).values()}
    store = _open("reprocess", config)
    if isinstance(store, str):
        return _fail("reprocess", store)
    figures = None
    if config.outcomes_refresh_seconds > 0:
        # Route as the daemon would now: its live discrepancy figures, computed once (docs/routing.md).
        from listener.history import HistoryContext, outcome_rules_file
        from listener.live_figures import compute_live_figures
        from listener.outcomes import load_outcome_rules

        context = HistoryContext(pipeline, load_outcome_rules(outcome_rules_file(config)), clients)
        try:
            figures = compute_live_figures(store, context, until=now, window_days=config.outcomes_window_days)
        except StoreError as exc:
            store.close()
            return _fail("reprocess", f"cannot compute the live discrepancy figures: {exc}")
    actor = Actor(os_actor(), "cli")
    problems = 0
    try:
        # (message_pk, the processing it was selected at: None when named).
        targets: list[tuple[int, int | None]] = []
        more = 0
        if args.messages:
            for text in args.messages:
                pk, why = resolve_message(store, text)
                if pk is None:
                    sys.stderr.write(f"overread reprocess: {why}\n")
                    problems += 1
                else:
                    targets.append((pk, None))
        else:
            limit = args.limit or DEFAULT_REPROCESS_LIMIT
            # Pin the newest message now: what arrives while this runs is never touched.
            pin = store.newest_message_pk()
            for msg in store.messages(
                state=args.state,
                sender_application=args.sender,
                transport=args.transport,
                since=window.get("since"),
                until=window.get("until"),
            ):
                if msg.message_pk > pin:
                    break
                if msg.state == "quarantined" and args.state != "quarantined":
                    continue  # it crashed the daemon twice: only by name or --state quarantined
                if len(targets) < limit:
                    targets.append((msg.message_pk, msg.processing))
                else:
                    more += 1
        run = reprocess_targets(
            store,
            targets,
            actor,
            now,
            pipeline=pipeline,
            destinations=destinations,
            clients=clients,
            dry_run=args.dry_run,
            resend_routes=args.resend_routes,
            live_figures=figures,
            audit_filter=None
            if args.messages
            else {
                k: getattr(args, k)
                for k in ("state", "sender", "transport", "since", "until")
                if getattr(args, k) is not None
            },
            on_change=lambda change: _write_change(out, change, args.format, args.dry_run),
            on_problem=lambda text: sys.stderr.write(f"overread reprocess: {text}\n"),
        )
        problems += run.problems
        shown = run.shown
        if more:
            sys.stderr.write(
                f"overread reprocess: {more} more message{'s' if more != 1 else ''} match;"
                f" raise --limit (was {args.limit or DEFAULT_REPROCESS_LIMIT}) or narrow the filter\n"
            )
        if args.format == "text":
            verb = "would reprocess" if args.dry_run else "reprocessed"
            out.write(
                f"{verb} {shown} message{'s' if shown != 1 else ''}"
                + (f", {problems} skipped or not found" if problems else "")
                + "\n"
            )
    except StoreError as exc:
        return _fail("reprocess", str(exc))
    finally:
        store.close()
    return _EXIT_PARTIAL if problems else _EXIT_OK


def _write_change(out: TextIO, change: Change, fmt: str, dry_run: bool) -> None:
    if fmt == "json":
        out.write(json.dumps({**change.as_dict(), "dry_run": dry_run}, ensure_ascii=False) + "\n")
        return
    out.write("".join(line + "\n" for line in change_lines(change, dry_run)))


def cmd_audit(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """List the audit log."""
    now = datetime.now(UTC)
    window = parse_window(args, now)
    if isinstance(window, str):
        return _fail("audit", window)
    store = _open("audit", config)
    if isinstance(store, str):
        return _fail("audit", store)
    try:
        entries = store.audit(since=window.get("since"), action=args.action, limit=args.limit)
    except StoreError as exc:
        return _fail("audit", str(exc))
    finally:
        store.close()
    for e in entries:
        if args.format == "json":
            out.write(json.dumps(audit_dict(e)) + "\n")
        else:
            out.write(
                f"{e.id:>6}  {iso_utc(e.at)}  {e.actor} ({e.via})  {e.action}  rows {e.rows}  {e.target}"
                + (f"  {e.detail}" if e.detail else "")
                + "\n"
            )
    if args.format == "text" and not entries:
        out.write("no audit entries\n")
    return _EXIT_OK
