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

from listener.assemble import build_pipeline
from listener.cli_common import os_actor, parse_window
from listener.config import Config
from listener.errors import StoreError
from listener.store.base import MESSAGE_STATES, TRANSPORTS, Store
from listener.views import audit_dict, detail_dict, iso_utc

__all__ = ["add_operate_parsers", "cmd_audit", "cmd_hash", "cmd_reprocess", "cmd_show"]

_EXIT_OK = 0
_EXIT_PARTIAL = 1
_EXIT_ERROR = 2

#: Messages a filtered reprocess touches unless ``--limit`` says otherwise.
DEFAULT_REPROCESS_LIMIT = 100


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
        "earlier processing. MESSAGE is a message_pk (a number) or an MSH-10 / FHIR control id.",
        epilog="exit status: 0 shown; 1 not found or ambiguous; 2 usage error or no store",
    )
    _store_options(show)
    show.add_argument(
        "message", metavar="MESSAGE", help="message_pk (pk:N when it could be a control id) or control id"
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
    if not found:
        return None, f"no message with control id {text!r}" + (f" from {sender!r}" if sender else "")
    if len(found) > 1:
        which = ", ".join(f"{m.message_pk} ({m.sender_application}/{m.sender_facility})" for m in found)
        return None, f"control id {text!r} names several messages: {which}; give a message_pk or --sender"
    return found[0].message_pk, ""


def _segments(text: str) -> str:
    return "\n".join(line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line)


def _write_report_text(out: TextIO, item: dict[str, Any], indent: str = "") -> None:
    report = item["report"]
    proc = report.get("procedure") or {}
    reader = report.get("reader") or {}
    out.write(
        f"{indent}report {item['seq'] + 1}: accession {item['accession'] or '-'}  status {report.get('status', '')}"
        f"  modality {report.get('modality') or '-'}\n"
    )
    out.write(
        f"{indent}  procedure {proc.get('code') or '-'} {proc.get('coding_system') or ''} {proc.get('text') or ''}".rstrip()
        + (f"  modifiers {','.join(proc['modifiers'])}" if proc.get("modifiers") else "")
        + "\n"
    )
    if reader:
        out.write(
            f"{indent}  reader {reader.get('id') or '-'} {reader.get('name') or ''} ({reader.get('type') or '-'})\n"
        )
    patient = report.get("patient")
    if patient:
        out.write(
            f"{indent}  patient {patient.get('id') or '-'}"
            + (f" ({patient['id_authority']})" if patient.get("id_authority") else "")
            + "\n"
        )
    sections = [s.get("kind", "") for s in report.get("sections", [])]
    if sections:
        out.write(f"{indent}  sections {', '.join(sections)}\n")
    route = item["route"]
    if route:
        out.write(
            f"{indent}  route {route.get('bucket')}  pool {route.get('pool') or '-'}  priority {route.get('priority')}"
            f"  policy {route.get('policy_version') or '-'}\n"
        )
        for line in route.get("explanation") or route.get("reasons") or []:
            out.write(f"{indent}    why: {line}\n")
        for line in route.get("corrections") or []:
            out.write(f"{indent}    correct: {line}\n")
    findings = item["findings"]
    out.write(f"{indent}  findings ({len(findings)})\n")
    for f in findings:
        out.write(f"{indent}    {f.get('severity')} {f.get('rule')}: {f.get('message')}\n")
        for ev in f.get("evidence", []):
            out.write(
                f"{indent}      evidence {ev.get('section')} [{ev.get('start')}-{ev.get('end')}]"
                + (f" {ev.get('text')!r}" if ev.get("text") else "")
                + "\n"
            )
        if f.get("suggestion"):
            out.write(f"{indent}      suggestion: {f['suggestion']}\n")
    if report.get("text") is not None:
        out.write(f"{indent}  text:\n")
        for line in str(report["text"]).splitlines():
            out.write(f"{indent}    | {line}\n")


def write_detail_text(out: TextIO, data: dict[str, Any]) -> None:
    """``overread show --format text``: the detail document for people."""
    sender = data["sender"]["application"] + (f"/{data['sender']['facility']}" if data["sender"]["facility"] else "")
    out.write(
        f"message {data['message_pk']}  control id {data['message_id']}  from {sender}  via {data['transport']}"
        f"  feed {data['feed']}\n"
    )
    out.write(f"received {data['received']}  processing {data['processing']} (at {data['processed']})\n")
    out.write(
        f"state {data['state']}  answered {data['ack_code']}"
        + (f" error {data['error_code']}" if data["error_code"] else "")
        + "\n"
    )
    out.write("\n== our answer ==\n" + _segments(data["ack"] or "") + "\n")
    if data["raw"] is not None:
        out.write(f"\n== raw body ({data['raw_bytes']} bytes) ==\n")
        out.write((_segments(data["raw"]) if data["transport"] == "mllp" else data["raw"]) + "\n")
    elif data["raw_bytes"] is None:
        out.write("\n== raw body: not kept (purged by retention, or keep_raw is off) ==\n")
    out.write(f"\n== reports ({len(data['reports'])}) ==\n")
    for item in data["reports"]:
        _write_report_text(out, item)
    out.write(f"\n== routing messages ({len(data['outbox'])}) ==\n")
    for row in data["outbox"]:
        extra = f"  resend of row {row['resent_from']}" if row.get("resent_from") else ""
        out.write(
            f"row {row['id']} -> {row['destination']}  accession {row['accession']}  {row['state']}"
            f"  attempts {row['attempts']}  MSH-10 {row['control_id']}{extra}\n"
        )
        if row["last_error"]:
            out.write(f"    last error: {row['last_error']}\n")
        for e in row["events"]:
            out.write(f"    {e['at']}  {e['event']}" + (f": {e['detail']}" if e["detail"] else "") + "\n")
    out.write(f"\n== earlier processings ({len(data['processings'])}) ==\n")
    for p in data["processings"]:
        out.write(
            f"processing {p['number']} at {p['processed']}: {p['state']} {p['ack_code']}"
            + (f" error {p['error_code']}" if p["error_code"] else "")
            + f"  feed {p['feed']}; replaced {p['superseded']} by {p['superseded_by']}\n"
        )
        for item in p["reports"]:
            route = item["route"] or {}
            out.write(
                f"    report {item['seq'] + 1}: accession {item['accession'] or '-'}  route {route.get('bucket', '-')}"
                f"  findings {len(item['findings'])}\n"
            )


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
    from listener.reprocess import reprocess_message

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
    actor = os_actor()
    problems = 0
    done: list[int] = []
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
        shown = 0
        try:
            for pk, selected_at in targets:
                detail = store.message_detail(pk)
                if detail is None:
                    sys.stderr.write(f"overread reprocess: no message {pk}\n")
                    problems += 1
                    continue
                if selected_at is not None and detail.summary.processing != selected_at:
                    sys.stderr.write(
                        f"overread reprocess: message {pk} was processed again since it was selected; left alone\n"
                    )
                    problems += 1
                    continue
                try:
                    change = reprocess_message(
                        store,
                        detail,
                        pipeline=pipeline,
                        destinations=destinations,
                        clients=clients,
                        now=now,
                        actor=actor,
                        dry_run=args.dry_run,
                        resend_routes=args.resend_routes,
                        live_figures=figures,
                    )
                except StoreError as exc:
                    sys.stderr.write(f"overread reprocess: message {pk}: {exc}\n")
                    problems += 1
                    continue
                if change.skipped:
                    problems += 1
                else:
                    shown += 1
                    if not args.dry_run:
                        done.append(pk)
                _write_change(out, change, args.format, args.dry_run)
        finally:
            # Recorded whatever happened after: what was written is in the audit log.
            if not args.dry_run and targets:
                target: dict[str, Any] = {"messages": done}
                if not args.messages:
                    target["filter"] = {
                        k: getattr(args, k)
                        for k in ("state", "sender", "transport", "since", "until")
                        if getattr(args, k) is not None
                    }
                store.record_audit(
                    at=now,
                    actor=actor,
                    via="cli",
                    action="reprocess",
                    target=target,
                    rows=len(done),
                    detail="resend-routes" if args.resend_routes else "",
                )
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


def _write_change(out: TextIO, change: Any, fmt: str, dry_run: bool) -> None:
    if fmt == "json":
        out.write(json.dumps({**change.as_dict(), "dry_run": dry_run}, ensure_ascii=False) + "\n")
        return
    head = f"message {change.message_pk} ({change.control_id}, {change.transport})"
    if change.skipped:
        out.write(f"{head}: skipped: {change.skipped}\n")
        return
    b, a = change.before, change.after
    out.write(
        f"{head}: {b.state} {b.ack_code}{' ' + b.error_code if b.error_code else ''}"
        f" -> {a.state} {a.ack_code}{' ' + a.error_code if a.error_code else ''}"
        + (f"  (processing {change.processing})" if change.processing else "")
        + "\n"
    )
    for n in range(max(len(b.reports), len(a.reports))):
        old = b.reports[n] if n < len(b.reports) else None
        new = a.reports[n] if n < len(a.reports) else None
        either = new or old
        acc = either[0] if either else ""
        old_text = f"{old[1] or '-'} ({len(old[4])} findings)" if old else "none"
        new_text = f"{new[1] or '-'} ({len(new[4])} findings)" if new else "none"
        mark = " *" if n in change.changed_reports else ""
        out.write(f"    report {n + 1} {acc or '-'}: {old_text} -> {new_text}{mark}\n")
        if old and new and old[4] != new[4]:
            gone = sorted(set(old[4]) - set(new[4]))
            added = sorted(set(new[4]) - set(old[4]))
            if gone:
                out.write(f"      findings gone: {', '.join(gone)}\n")
            if added:
                out.write(f"      findings new: {', '.join(added)}\n")
    if not dry_run:
        out.write(f"    {change.queued} routing message{'s' if change.queued != 1 else ''} queued\n")


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
