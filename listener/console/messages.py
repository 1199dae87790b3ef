"""The message browser and the operator actions (docs/console.md, "Message browser", "Operator actions").

Layer: page functions; they run on a thread and read (and, for the actions, write) the store.

* ``/console/messages``: a search form over :meth:`Store.messages`, newest first (its
  ``before``/``after`` cursors page to older and newer results; ``order=oldest`` lists oldest
  first); the buckets column is one :meth:`Store.buckets_of` read; searching by patient id
  needs ``phi``.
* ``/console/messages/<message_pk>``: what ``overread show`` prints, from the same
  :func:`listener.views.detail_dict` document (without ``phi``: no raw body, report text,
  patient identifiers or routing message payloads; patients are shown by their keyed hash).
* ``/console/actions/...``: reprocess (a dry-run preview first), resend, retry, kick: POST forms
  needing ``operator``, done by :mod:`listener.operator_actions` exactly as the CLI does them
  (same checks, texts and audit entries; the actor is the console client).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from listener.cli_common import parse_time
from listener.console.markup import highlight, hl7_segments, message_version, pretty_json
from listener.console.web import Ctx, Reply, safe_next
from listener.destinations import DestinationSettings
from listener.fhir.decode import FhirClient
from listener.logs import keyed_hash
from listener.model import BUCKETS
from listener.operator_actions import (
    Actor,
    change_lines,
    kick_destination,
    kick_summary,
    reprocess_targets,
    resend_rows,
    retry_rows,
    unknown_destination,
)
from listener.pipeline import Pipeline
from listener.reprocess import Change
from listener.sites import LiveFigures
from listener.store.base import MESSAGE_STATES, TRANSPORTS, MessageSummary, OutboxRow, Store
from listener.views import attempts_text, detail_dict, last_error_text, peer_error_text, write_detail_text

__all__ = ["ACK_CODES", "ORDERS", "PAGE_SIZE", "MessageServices", "actions_page", "messages_page"]

#: Messages on one page of search results.
PAGE_SIZE = 50
#: The answers a message can have been given (HL7 v2 MSA-1; FHIR answers are stored alike).
ACK_CODES = ("AA", "AE", "AR", "CA", "CE", "CR")
#: The search form's fields, in the order shown; ``patient_id`` and ``authority`` need ``phi``.
SEARCH_FIELDS = (
    "accession",
    "patient_id",
    "authority",
    "control_id",
    "sender",
    "state",
    "ack_code",
    "transport",
    "bucket",
    "since",
    "until",
)
#: The orders a search lists in (``order=``): newest first (the default) or oldest first.
ORDERS = ("newest", "oldest")
#: With no filter at all, the search shows the messages received in this window.
DEFAULT_SINCE = "24h"
#: The longest id a form may name (a message_pk or an outbox row id).
_ID_DIGITS = 18


@dataclass(frozen=True, slots=True)
class MessageServices:
    """What the pages use of the daemon (``deps.services``, built in listener/server/http.py).

    Attributes:
        pipeline: the live Pipeline (reloaded by SIGHUP).
        destinations: the live enabled destinations' settings.
        live_figures: the cached live discrepancy figures routing reads (None: readers.yaml).
        clients: the configured HTTP clients' FHIR settings by name (a reprocessed FHIR
            message is decoded with its sender's).
        hash_key: the installation key of the keyed hashes the logs carry (``overread hash``).
        secret: signs the result note a POST hands to the page it redirects to.
    """

    store: Store
    pipeline: Callable[[], Pipeline]
    destinations: Callable[[], Sequence[DestinationSettings]]
    live_figures: Callable[[], LiveFigures | None]
    clients: Callable[[], Mapping[str, FhirClient]]
    hash_key: bytes
    secret: bytes


def _problem(status: int, title: str, text: str) -> Reply:
    return Reply("problem.html.j2", {"title": title, "text": text}, status=status)


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= _ID_DIGITS else None


# ---------------------------------------------------------------------- search


def _search_errors(ctx: Ctx, query: dict[str, str]) -> list[str]:
    errors = []
    if query["authority"] and not query["patient_id"]:
        errors.append("The authority narrows a patient id: give both.")
    if query["state"] and query["state"] not in MESSAGE_STATES:
        errors.append(f"State must be one of {', '.join(MESSAGE_STATES)}.")
    if query["transport"] and query["transport"] not in TRANSPORTS:
        errors.append(f"Transport must be one of {', '.join(TRANSPORTS)}.")
    if query["ack_code"] and query["ack_code"] not in ACK_CODES:
        errors.append(f"ACK code must be one of {', '.join(ACK_CODES)}.")
    if query["bucket"] and query["bucket"] not in BUCKETS:
        errors.append(f"Bucket must be one of {', '.join(BUCKETS)}.")
    return errors


def _window(query: dict[str, str], now: datetime, errors: list[str]) -> dict[str, datetime]:
    window = {}
    for name in ("since", "until"):
        if query[name]:
            try:
                window[name] = parse_time(query[name], now)
            except (ValueError, OverflowError):
                errors.append(
                    f"{name.capitalize()}: {query[name]!r} is not an ISO 8601 time with an offset"
                    " (2026-12-01T00:00:00Z), nor Nd or Nh (7d, 24h)."
                )
    return window


def messages_page(ctx: Ctx, services: MessageServices) -> Reply:
    """``/console/messages`` (the search) or ``/console/messages/<message_pk>`` (one message)."""
    if len(ctx.rest) > 1:
        return _problem(404, "Not found", "There is no such console page.")
    if ctx.rest:
        return _message_page(ctx, services, ctx.rest[0])
    store = services.store
    query = {name: ctx.param(name) for name in SEARCH_FIELDS}
    if not any(query.values()):
        query["since"] = DEFAULT_SINCE
    context: dict[str, Any] = {
        "query": query,
        "states": MESSAGE_STATES,
        "transports": TRANSPORTS,
        "ack_codes": ACK_CODES,
        "buckets": BUCKETS,
        "rows": [],
        "order": "newest",
        "orders": ORDERS,
        "newer_page": "",
        "older_page": "",
        "errors": [],
        "searched": False,
    }
    if (query["patient_id"] or query["authority"]) and not ctx.caller.phi:
        context["errors"] = [
            f"Client {ctx.caller.name} may not search by patient id: that needs the phi permission (its allow: list)."
        ]
        query["patient_id"] = query["authority"] = ""
        return Reply("messages.html.j2", context, status=403)
    errors = _search_errors(ctx, query)
    window = _window(query, ctx.now, errors)
    order = ctx.param("order") or "newest"
    if order not in ORDERS:
        errors.append(f"Order must be one of {', '.join(ORDERS)}.")
    cursors = _cursors(ctx, errors)
    if errors:
        context["errors"] = errors
        return Reply("messages.html.j2", context, status=400)
    after, before = cursors
    if order == "oldest" and before is not None:
        context["errors"] = ["Oldest first pages on with after= only."]
        return Reply("messages.html.j2", context, status=400)

    def search(*, newest_first: bool, after: int | None, before: int | None) -> list[MessageSummary]:
        return list(
            store.messages(
                after=after,
                before=before,
                newest_first=newest_first,
                limit=PAGE_SIZE + 1,
                state=query["state"] or None,
                ack_code=query["ack_code"] or None,
                sender_application=query["sender"] or None,
                control_id=query["control_id"] or None,
                transport=query["transport"] or None,
                accession=query["accession"] or None,
                patient_id=query["patient_id"] or None,
                patient_authority=query["authority"] or None,
                bucket=query["bucket"] or None,
                since=window.get("since"),
                until=window.get("until"),
            )
        )

    kept = {k: v for k, v in query.items() if v}
    if order == "oldest":
        kept["order"] = "oldest"
    pager = _Pager(kept)
    if order == "oldest":
        found = search(newest_first=False, after=after, before=None)
        page = found[:PAGE_SIZE]
        if len(found) > PAGE_SIZE:
            context["newer_page"] = pager.link("after", page[-1].message_pk)
    elif after is not None:
        # "Newer": the PAGE_SIZE messages just above the cursor (read upwards), shown newest first.
        found = search(newest_first=False, after=after, before=None)
        page = found[:PAGE_SIZE][::-1]
        if len(found) > PAGE_SIZE:
            context["newer_page"] = pager.link("after", page[0].message_pk)
        context["older_page"] = pager.link("before", page[-1].message_pk if page else after + 1)
    else:
        found = search(newest_first=True, after=None, before=before)
        page = found[:PAGE_SIZE]
        if len(found) > PAGE_SIZE:
            context["older_page"] = pager.link("before", page[-1].message_pk)
        if before is not None:
            context["newer_page"] = pager.link("after", page[0].message_pk if page else before - 1)
    buckets = store.buckets_of([m.message_pk for m in page])
    context["searched"] = True
    context["order"] = order
    context["after"] = after
    context["before"] = before
    context["rows"] = [{"m": m, "buckets": buckets.get(m.message_pk, ())} for m in page]
    return Reply("messages.html.j2", context)


@dataclass(frozen=True, slots=True)
class _Pager:
    """Builds the links to the next pages: the search's own fields and one cursor."""

    kept: dict[str, str]

    def link(self, cursor: str, message_pk: int) -> str:
        return "/console/messages?" + urlencode({**self.kept, cursor: str(message_pk)})


def _cursors(ctx: Ctx, errors: list[str]) -> tuple[int | None, int | None]:
    """The page cursors ``after`` and ``before`` (message numbers; at most one of them)."""
    found: list[int | None] = []
    for name in ("after", "before"):
        text = ctx.param(name)
        value = _number(text) if text else None
        if text and value is None:
            errors.append(f"The page cursor ({name}) must be a message number.")
        found.append(value)
    after, before = found
    if after is not None and before is not None:
        errors.append("Give one page cursor (after or before), not both.")
    return after, before


# ----------------------------------------------------------------- one message


def _note_signature(secret: bytes, audit_id: str, note: str) -> str:
    return hmac.new(secret, f"{audit_id}\n{note}".encode(), hashlib.sha256).hexdigest()[:32]


def action_result(ctx: Ctx, secret: bytes) -> dict[str, Any] | None:
    """The result a POST handed over in the redirect (None when absent or not signed by us)."""
    note = ctx.params.get("note", "")
    audit_id = ctx.params.get("audit", "")
    if not note:
        return None
    if not hmac.compare_digest(ctx.params.get("sig", ""), _note_signature(secret, audit_id, note)):
        return None
    return {"audit": audit_id if audit_id != "0" else "", "lines": note.splitlines()}


def _done(secret: bytes, back: str, audit_id: int, lines: Sequence[str]) -> Reply:
    """The 303 to ``back`` carrying the result lines (signed, so only we can put a note there)."""
    note = "\n".join(lines)
    query = urlencode({"audit": str(audit_id), "note": note, "sig": _note_signature(secret, str(audit_id), note)})
    path = safe_next(back)
    return Reply(status=303, location=f"{path}{'&' if '?' in path else '?'}{query}#result")


def _patient_hash(report_json: str, key: bytes) -> str:
    patient = json.loads(report_json).get("patient") or {}
    value = str(patient.get("id") or "")
    return keyed_hash(value, key) if value and key else ""


def _report_view(item: dict[str, Any], patient_h: str, phi: bool) -> dict[str, Any]:
    report = item["report"]
    spans = []
    findings = []
    for finding in item["findings"]:
        rule = str(finding.get("rule", ""))
        evidence = finding.get("evidence", [])
        findings.append({**finding, "category": rule.partition(".")[0], "evidence": evidence})
        for ev in evidence:
            if isinstance(ev.get("start"), int) and isinstance(ev.get("end"), int):
                spans.append((ev["start"], ev["end"], rule))
    text = report.get("text") if phi else None
    return {
        **item,
        "findings": findings,
        "patient_h": patient_h,
        "marked": highlight(str(text), spans) if text is not None else None,
    }


#: Versions of an accession the message page lists (``overread history`` shows them all).
VERSIONS_SHOWN = 20


def _versions(store: Store, accessions: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per accession, its stored reports (``overread history``'s rows without the comparison):
    received, message, control id, report status, bucket and finding count, oldest first."""
    found = store.report_histories(accessions, limit=VERSIONS_SHOWN) if accessions else {}
    return {
        accession: [
            {
                "message_pk": e.message_pk,
                "seq": e.seq,
                "control_id": e.control_id,
                "received": e.received,
                "transport": e.transport,
                "status": str(json.loads(e.report_json).get("status", "")),
                "bucket": e.bucket,
                "findings": len(json.loads(e.findings_json)),
            }
            for e in entries
        ]
        for accession, entries in found.items()
    }


def _latest_delivered(rows: Sequence[OutboxRow]) -> list[int]:
    """The latest delivered row per (destination, accession): what "resend all routes" resends."""
    latest: dict[tuple[str, str], int] = {}
    for row in sorted(rows, key=lambda r: r.id):
        if row.state == "delivered":
            latest[(row.destination, row.accession)] = row.id
    return sorted(latest.values())


def _message_page(ctx: Ctx, services: MessageServices, text: str) -> Reply:
    pk = _number(text)
    if pk is None:
        return _problem(404, "Not found", "A message is named by its message number (message_pk).")
    detail = services.store.message_detail(pk)
    if detail is None:
        return _problem(404, "Not found", f"There is no message {pk}.")
    phi = ctx.caller.phi
    data = detail_dict(detail, with_raw=phi)
    plain = io.StringIO()
    write_detail_text(plain, data)
    raw = data["raw"]
    body: str | None
    if raw is None:
        body = None
    elif data["transport"] == "mllp":
        body = hl7_segments(raw)
    else:
        body = pretty_json(raw)
    ack = data["ack"] or ""
    payloads = {}
    if phi:
        for row, _ in detail.outbox:
            payload = row.payload.decode("utf-8", "replace")
            payloads[row.id] = hl7_segments(payload, message_version(payload))
    reports = [
        _report_view(item, _patient_hash(row.report_json, services.hash_key), phi)
        for item, row in zip(data["reports"], detail.reports, strict=True)
    ]
    rows = [row for row, _ in detail.outbox]
    # The same texts as ``overread show``: a delivered row's error is from before its delivery,
    # the RIS's ERR-3 code is named, a retried row's earlier attempts are counted (docs/console.md).
    shown = {
        row["id"]: {
            "attempts": attempts_text(row["attempts"], row["attempts_before_retry"]),
            "last_error": last_error_text(row["state"], row["last_error"]),
            "details": [peer_error_text(e["detail"]) for e in row["events"]],
        }
        for row in data["outbox"]
    }
    accessions = sorted({r["accession"] for r in data["reports"] if r["accession"]})
    context = {
        "m": data,
        "pk": pk,
        "body": body,
        "ack": hl7_segments(ack) if data["transport"] == "mllp" else pretty_json(ack),
        "reports": reports,
        "payloads": payloads,
        "shown": shown,
        "plain": plain.getvalue(),
        "accessions": accessions,
        "versions": _versions(services.store, accessions),
        "delivered": _latest_delivered(rows),
        "dead": [r.id for r in rows if r.state == "dead"],
        "result": action_result(ctx, services.secret),
        "operator": ctx.caller.may("operator"),
        "back": f"/console/messages/{pk}",
    }
    return Reply("message.html.j2", context)


# -------------------------------------------------------------------- actions


def _actor(ctx: Ctx) -> Actor:
    return Actor(ctx.caller.name, "console")


def actions_page(ctx: Ctx, services: MessageServices) -> Reply:
    """``/console/actions/<reprocess|resend|retry|kick>``: the operator actions (needs ``operator``)."""
    action = ctx.rest[0] if ctx.rest else ""
    if action == "reprocess":
        return _reprocess(ctx, services)
    if ctx.method != "POST":
        return _problem(405, "Method not allowed", "Actions are done with their buttons (POST).")
    back = ctx.form.get("back", "/console/")
    if action == "resend":
        return _resend(ctx, services, back)
    if action == "retry":
        return _retry(ctx, services, back)
    if action == "kick":
        return _kick(ctx, services, back)
    return _problem(404, "Not found", "There is no such action.")


def _named_rows(
    ctx: Ctx, services: MessageServices, verb: str, pick: Callable[[list[OutboxRow]], list[int]]
) -> list[int] | Reply:
    """The rows a resend or retry names: the form's ``row`` (one id) or ``message`` (those of its
    rows ``pick`` chooses); or the page refusing the form."""
    row_text, message_text = ctx.form.get("row", "").strip(), ctx.form.get("message", "").strip()
    if bool(row_text) == bool(message_text):
        return _problem(400, f"Nothing to {verb}", "Give one outbox row or one message (not both).")
    if row_text:
        row = _number(row_text)
        if row is None:
            return _problem(400, f"Nothing to {verb}", "The row is named by its id (a number).")
        return [row]
    pk = _number(message_text)
    detail = services.store.message_detail(pk) if pk is not None else None
    if detail is None:
        return _problem(404, "Not found", f"There is no message {message_text}.")
    ids = pick([row for row, _ in detail.outbox])
    if not ids:
        kind = "delivered" if verb == "resend" else "dead"
        return _problem(409, f"Nothing to {verb}", f"Message {pk} has no {kind} routing message.")
    return ids


def _resend(ctx: Ctx, services: MessageServices, back: str) -> Reply:
    ids = _named_rows(ctx, services, "resend", _latest_delivered)
    if isinstance(ids, Reply):
        return ids
    result = resend_rows(services.store, _actor(ctx), ctx.now, ids=ids, force=ctx.form.get("force") == "1")
    lines = result.summary() + [k.line("resent") for k in result.kept]
    return _done(services.secret, back, result.audit_id, lines)


def _retry(ctx: Ctx, services: MessageServices, back: str) -> Reply:
    ids = _named_rows(ctx, services, "retry", lambda rows: [r.id for r in rows if r.state == "dead"])
    if isinstance(ids, Reply):
        return ids
    result = retry_rows(services.store, _actor(ctx), ctx.now, ids=ids, force=ctx.form.get("force") == "1")
    lines = [result.summary()] + [k.line("revived") for k in result.kept]
    return _done(services.secret, back, result.audit_id, lines)


def _kick(ctx: Ctx, services: MessageServices, back: str) -> Reply:
    destination = ctx.form.get("destination", "").strip() or None
    if destination is not None:
        unknown = unknown_destination(services.store, destination, [d.name for d in services.destinations()])
        if unknown:
            return _problem(400, "Unknown destination", unknown)
    count, audit_id = kick_destination(services.store, _actor(ctx), ctx.now, destination)
    return _done(services.secret, back, audit_id, [kick_summary(destination, count)])


def _reprocess(ctx: Ctx, services: MessageServices) -> Reply:
    """GET: the dry-run preview with the confirming form; POST: reprocess, then back to the message."""
    pk = _number(ctx.rest[1]) if len(ctx.rest) == 2 else None
    if pk is None:
        return _problem(404, "Not found", "Reprocess names one message: /console/actions/reprocess/<message_pk>.")
    dry_run = ctx.method != "POST"
    if not dry_run and services.store.message_detail(pk) is None:
        return _problem(404, "Not found", f"There is no message {pk}.")
    resend_routes = (ctx.form if not dry_run else ctx.params).get("resend_routes") == "1"
    changes: list[Change] = []
    problems: list[str] = []
    run = reprocess_targets(
        services.store,
        [(pk, None)],
        _actor(ctx),
        ctx.now,
        pipeline=services.pipeline(),
        destinations=tuple(services.destinations()),
        clients=services.clients(),
        dry_run=dry_run,
        resend_routes=resend_routes,
        live_figures=services.live_figures(),
        audit_filter=None,
        on_change=changes.append,
        on_problem=problems.append,
    )
    lines = [line for change in changes for line in change_lines(change, dry_run)] + problems
    if dry_run:
        if not changes and problems:
            return _problem(404, "Not found", problems[0])
        context = {
            "pk": pk,
            "lines": lines,
            "changed": any(c.changed for c in changes),
            "skipped": any(c.skipped for c in changes),
            "resend_routes": resend_routes,
        }
        return Reply("reprocess.html.j2", context)
    verb = "reprocessed"
    lines.append(f"{verb} {run.shown} message{'s' if run.shown != 1 else ''}")
    return _done(services.secret, f"/console/messages/{pk}", run.audit_id, lines)
