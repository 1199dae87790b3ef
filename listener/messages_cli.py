"""``overread messages``: list stored messages for operators and tests (docs/cli.md).

Layer: CLI (I/O for users). It reads the store in the state directory, which
may be in use by a running daemon (SQLite WAL: readers never wait for it).

Conventions as ``overread outbox``: ``--config F`` (its ``state_dir``) and
``--state-dir DIR`` (wins); ``--format json`` (default: JSON Lines, one object
per message, ``message_id``, ``sender``, ``received``, ``state``,
``ack_code`` and more) or ``--format text`` (a table for people). Filters are
exact values (``--state``, ``--ack-code``, ``--sender``, ``--facility``,
``--control-id``/``--message-id``, ``--transport``, and a report's
``--accession`` or ``--patient-id`` with ``--authority``, all on indexes) and a time window (``--since``/``--until``:
ISO 8601 with an offset, or ``Nd`` days ago); ``--after PK --limit N`` pages
(``message_pk`` of the last line is the next cursor); ``--newest-first`` lists
the largest ``message_pk`` first and pages back with ``--before PK``. Nothing printed comes
from a message body: patient data stays in the store.

Exit status: 0 listed (even nothing); 2 usage error or no store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from listener.cli_common import parse_window
from listener.config import Config
from listener.errors import StoreError
from listener.hl7v2.keys import shown_key
from listener.store.base import MESSAGE_STATES, TRANSPORTS, MessageSummary
from listener.views import message_dict

__all__ = ["add_messages_parser", "cmd_messages"]

_EXIT_OK = 0
_EXIT_ERROR = 2


def add_messages_parser(sub: Any) -> None:
    """Add ``messages`` and its options to the top-level subparsers."""
    messages = sub.add_parser(
        "messages",
        help="list stored messages",
        description="List stored messages (no message bodies), oldest first (or newest first).",
        epilog="exit status: 0 listed (possibly nothing); 2 usage error or no store",
    )
    messages.add_argument("--config", metavar="F", help="daemon config file (its state_dir is used)")
    messages.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var)")
    messages.add_argument("--format", choices=("json", "text"), default="json")
    messages.add_argument("--state", choices=MESSAGE_STATES, help="only messages in this state")
    messages.add_argument(
        "--ack-code", choices=("AA", "AE", "AR", "CA", "CE", "CR"), help="only messages answered with this code"
    )
    messages.add_argument("--sender", metavar="APP", help="only messages from this sending application (MSH-3)")
    messages.add_argument("--facility", metavar="FAC", help="only messages from this sending facility (MSH-4)")
    messages.add_argument(
        "--control-id",
        "--message-id",
        dest="control_id",
        metavar="ID",
        help="only messages with this MSH-10 (or FHIR control id)",
    )
    messages.add_argument("--accession", metavar="A", help="only messages with a report of this accession number")
    messages.add_argument("--patient-id", metavar="ID", help="only messages with a report of this patient id (PID-3)")
    messages.add_argument("--authority", metavar="AUTH", help="with --patient-id: only this assigning authority")
    messages.add_argument("--transport", choices=TRANSPORTS, help="only messages received over mllp or http")
    messages.add_argument(
        "--since", metavar="TIME", help="received at or after TIME (ISO 8601 with offset, or Nd days ago)"
    )
    messages.add_argument("--until", metavar="TIME", help="received before TIME (same forms)")
    messages.add_argument("--after", type=int, metavar="PK", help="only messages after this message_pk (paging cursor)")
    messages.add_argument(
        "--before", type=int, metavar="PK", help="only messages before this message_pk (paging cursor)"
    )
    messages.add_argument(
        "--newest-first", action="store_true", help="largest message_pk first (page back with --before)"
    )
    messages.add_argument("--limit", type=int, metavar="N", help="print at most N messages")


def _text_line(msg: MessageSummary) -> str:
    sender = shown_key(msg.sender_application) + (f"/{shown_key(msg.sender_facility)}" if msg.sender_facility else "")
    received = msg.received.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"{msg.message_pk:>8}  {received}  {msg.transport:<4}  {msg.state:<9}  {msg.ack_code:<3} "
        f"{msg.error_code or '-':<4} {msg.report_count:>3}  {sender}  {shown_key(msg.control_id)}"
    )


def cmd_messages(args: argparse.Namespace, config: Config, out: TextIO, err: TextIO | None = None) -> int:
    """Print the stored messages that pass the filters; return the exit status (errors to ``err``, default stderr)."""
    from listener.store import open_store

    def fail(text: str) -> int:
        (err or sys.stderr).write(f"overread messages: {text}\n")
        return _EXIT_ERROR

    window = parse_window(args, datetime.now(UTC))
    if isinstance(window, str):
        return fail(window)
    if args.authority is not None and args.patient_id is None:
        return fail("--authority narrows --patient-id: give both")
    for name in ("after", "before", "limit"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            return fail(f"--{name} must not be negative")
    try:
        store = open_store(config, create=False)
    except StoreError as exc:
        return fail(str(exc))
    try:
        rows = store.messages(
            after=args.after,
            before=args.before,
            newest_first=args.newest_first,
            limit=args.limit,
            state=args.state,
            ack_code=args.ack_code,
            sender_application=args.sender,
            sender_facility=args.facility,
            control_id=args.control_id,
            transport=args.transport,
            accession=args.accession,
            patient_id=args.patient_id,
            patient_authority=args.authority,
            since=window.get("since"),
            until=window.get("until"),
        )
        if args.format == "text":
            out.write(
                f"{'PK':>8}  {'RECEIVED (UTC)':<20}  {'VIA':<4}  {'STATE':<9}  ACK ERR  REP  SENDER  MESSAGE ID\n"
            )
        for msg in rows:
            if args.format == "text":
                out.write(_text_line(msg) + "\n")
            else:
                out.write(json.dumps(message_dict(msg), ensure_ascii=False) + "\n")
    except StoreError as exc:
        return fail(str(exc))
    finally:
        store.close()
    return _EXIT_OK
