"""The operator actions shared by the CLI and the web console: retry, resend, kick, reprocess.

Layer: application logic over the store interface; no printing, no Twisted. ``overread outbox
retry|resend|kick`` and ``overread reprocess`` (listener/outbox_cli.py, listener/operate_cli.py)
and the console's operator actions (listener/console/messages.py) call these, so both validate
alike, say the same thing about a row left alone, and record the same audit entry: the same
action name and target, with the actor and channel (``via``: ``cli`` or ``console``) of the
caller (docs/operations.md, "Audit"; docs/console.md, "Operator actions").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from listener.destinations import DestinationSettings
from listener.errors import StoreError
from listener.fhir.decode import FhirClient
from listener.pipeline import Pipeline
from listener.reprocess import Change, reprocess_message
from listener.sites import LiveFigures
from listener.store.base import OutboxRow, Store

__all__ = [
    "DEFAULT_REPROCESS_LIMIT",
    "Actor",
    "Kept",
    "ReprocessRun",
    "ResendResult",
    "RetryResult",
    "change_lines",
    "kick_destination",
    "kick_summary",
    "not_dead",
    "reprocess_targets",
    "resend_rows",
    "retry_rows",
    "unknown_destination",
]

#: Messages a filtered reprocess touches unless a limit says otherwise.
DEFAULT_REPROCESS_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, for the audit log: an OS user (``via="cli"``) or a console client (``via="console"``)."""

    name: str
    via: str


@dataclass(frozen=True, slots=True)
class Kept:
    """A row asked for and left alone, with why."""

    id: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON object the CLI prints (``{"id": N, "reason": "..."}``)."""
        return {"id": self.id, "reason": self.reason}

    def line(self, verb: str) -> str:
        """``row 7 not resent: why`` (``verb``: resent, revived, ...)."""
        return f"row {self.id} not {verb}: {self.reason}"


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a retry did: the revived row ids, the rows left alone, the audit entry's id."""

    revived: tuple[int, ...]
    kept: tuple[Kept, ...]
    audit_id: int

    def summary(self) -> str:
        """What was revived, for people."""
        if not self.revived:
            return "nothing revived"
        count = len(self.revived)
        return (
            f"revived {count} row{'s' if count != 1 else ''}: {', '.join(map(str, self.revived))}"
            " (sent again at the daemon's next poll, same MSH-10)"
        )


@dataclass(frozen=True, slots=True)
class ResendResult:
    """What a resend did: (old id, new id) pairs, the rows left alone, the audit entry's id.

    ``nothing_delivered`` is the refusal of a resend by accession that found no delivered row
    (then nothing is audited and ``audit_id`` is 0).
    """

    pairs: tuple[tuple[int, int], ...]
    kept: tuple[Kept, ...]
    audit_id: int
    nothing_delivered: str = ""

    def summary(self) -> list[str]:
        """What was queued again, for people (one line per row)."""
        if not self.pairs:
            return ["nothing resent"]
        return [
            f"row {old} queued again as row {new} (sent at the daemon's next poll, same MSH-10)"
            for old, new in self.pairs
        ]


def _not_revived(rows: Mapping[int, OutboxRow], ids: Sequence[int]) -> tuple[Kept, ...]:
    """Why each of ``ids`` was not revived: unknown, in another state, or superseded."""
    kept = []
    for row_id in ids:
        row = rows.get(row_id)
        if row is None:
            reason = "unknown id"
        elif row.state != "dead":
            reason = f"not dead ({row.state})"
        else:
            reason = "superseded by a later delivered decision for the same accession (--force sends it anyway)"
        kept.append(Kept(row_id, reason))
    return tuple(kept)


def not_dead(rows: Mapping[int, OutboxRow], ids: Sequence[int]) -> tuple[Kept, ...]:
    """The rows of ``ids`` that are unknown or not dead, with why (``outbox purge`` keeps them)."""
    return _not_revived(rows, [i for i in ids if i not in rows or rows[i].state != "dead"])


def retry_rows(
    store: Store,
    actor: Actor,
    now: datetime,
    *,
    ids: Sequence[int] = (),
    all_dead: bool = False,
    destination: str | None = None,
    force: bool = False,
) -> RetryResult:
    """Revive dead rows (``ids``, or every dead row of ``destination``/all with ``all_dead``); audited."""
    before = {r.id: r for r in store.outbox_list()}
    if all_dead:
        wanted = [r.id for r in before.values() if r.state == "dead" and destination in (None, r.destination)]
    else:
        wanted = list(dict.fromkeys(ids))
    revived = store.outbox_retry(wanted, now, force=force) if wanted else ()
    kept = _not_revived(before, [i for i in wanted if i not in set(revived)])
    audit_id = store.record_audit(
        at=now,
        actor=actor.name,
        via=actor.via,
        action="outbox retry",
        target={"ids": list(revived), "asked": "all-dead" if all_dead else list(wanted), "destination": destination},
        rows=len(revived),
        detail="force" if force else "",
    )
    return RetryResult(tuple(revived), kept, audit_id)


def resend_rows(
    store: Store,
    actor: Actor,
    now: datetime,
    *,
    ids: Sequence[int] = (),
    accession: str | None = None,
    destination: str | None = None,
    force: bool = False,
) -> ResendResult:
    """Queue delivered rows again as new rows (``ids``, or the latest delivered row of ``accession``
    per destination); audited."""
    if accession:
        latest: dict[str, OutboxRow] = {}
        for row in store.outbox_rows_of(accession=accession, destination=destination):
            if row.state == "delivered":
                latest[row.destination] = row
        wanted = [row.id for row in latest.values()]
        if not wanted:
            why = f"no delivered row for accession {accession!r}" + (f" to {destination!r}" if destination else "")
            return ResendResult((), (), 0, why)
    else:
        wanted = list(dict.fromkeys(ids))
    before = {r.id: r for r in store.outbox_list()}
    pairs = store.outbox_resend(wanted, now, force=force, note=" (forced)" if force else "")
    sent = {old for old, _ in pairs}
    kept = []
    for row_id in wanted:
        if row_id in sent:
            continue
        found = before.get(row_id)
        reason = (
            "unknown id"
            if found is None
            else f"not delivered ({found.state}; use retry for dead rows)"
            if found.state != "delivered"
            else "a later decision for the same accession is pending or delivered (--force sends it anyway)"
        )
        kept.append(Kept(row_id, reason))
    audit_id = store.record_audit(
        at=now,
        actor=actor.name,
        via=actor.via,
        action="outbox resend",
        target={"ids": wanted, "accession": accession, "new_ids": [n for _, n in pairs]},
        rows=len(pairs),
        detail="force" if force else "",
    )
    return ResendResult(tuple(pairs), tuple(kept), audit_id)


def unknown_destination(store: Store, name: str, configured: Iterable[str]) -> str:
    """An error text when ``name`` is neither a configured destination nor in the outbox ("" when known)."""
    in_outbox = {r.destination for r in store.outbox_list()}
    names = set(configured)
    if name in in_outbox or name in names:
        return ""
    known = ", ".join(sorted(in_outbox | names)) or "none"
    return f"unknown destination {name!r} (known: {known})"


def kick_destination(store: Store, actor: Actor, now: datetime, destination: str | None) -> tuple[int, int]:
    """Make ``destination`` (None: all) try now; audited. Returns (pending rows, audit id)."""
    count = store.outbox_kick(destination, now)
    audit_id = store.record_audit(
        at=now, actor=actor.name, via=actor.via, action="outbox kick", target={"destination": destination}, rows=count
    )
    return count, audit_id


def kick_summary(destination: str | None, count: int) -> str:
    """What a kick did, for people."""
    which = f"destination {destination}" if destination else "every destination"
    return (
        f"kicked {which}: {count} pending row{'s' if count != 1 else ''} to send;"
        " the daemon reconnects at its next poll (within seconds)"
    )


@dataclass(slots=True)
class ReprocessRun:
    """What a reprocess run did: messages shown (reprocessed, or previewed in a dry run), the
    message_pks written, the problems (each already reported), the audit entry's id (0: none)."""

    shown: int = 0
    done: list[int] = field(default_factory=list)
    problems: int = 0
    audit_id: int = 0


def reprocess_targets(
    store: Store,
    targets: Sequence[tuple[int, int | None]],
    actor: Actor,
    now: datetime,
    *,
    pipeline: Pipeline,
    destinations: Sequence[DestinationSettings],
    clients: Mapping[str, FhirClient],
    dry_run: bool,
    resend_routes: bool,
    live_figures: LiveFigures | None,
    audit_filter: Mapping[str, Any] | None,
    on_change: Callable[[Change], None],
    on_problem: Callable[[str], object],
) -> ReprocessRun:
    """Reprocess each of ``targets`` (message_pk, the processing it was selected at or None when
    named); report each Change and problem as it happens; audit the run unless ``dry_run``.

    ``audit_filter``: the filter that selected the targets (recorded in the audit target), None when
    they were named.
    """
    run = ReprocessRun()
    try:
        for pk, selected_at in targets:
            detail = store.message_detail(pk)
            if detail is None:
                on_problem(f"no message {pk}")
                run.problems += 1
                continue
            if selected_at is not None and detail.summary.processing != selected_at:
                on_problem(f"message {pk} was processed again since it was selected; left alone")
                run.problems += 1
                continue
            try:
                change = reprocess_message(
                    store,
                    detail,
                    pipeline=pipeline,
                    destinations=destinations,
                    clients=clients,
                    now=now,
                    actor=actor.name,
                    dry_run=dry_run,
                    resend_routes=resend_routes,
                    live_figures=live_figures,
                )
            except StoreError as exc:
                on_problem(f"message {pk}: {exc}")
                run.problems += 1
                continue
            if change.skipped:
                run.problems += 1
            else:
                run.shown += 1
                if not dry_run:
                    run.done.append(pk)
            on_change(change)
    finally:
        # Recorded whatever happened after: what was written is in the audit log.
        if not dry_run and targets:
            target: dict[str, Any] = {"messages": run.done}
            if audit_filter is not None:
                target["filter"] = dict(audit_filter)
            run.audit_id = store.record_audit(
                at=now,
                actor=actor.name,
                via=actor.via,
                action="reprocess",
                target=target,
                rows=len(run.done),
                detail="resend-routes" if resend_routes else "",
            )
    return run


def change_lines(change: Change, dry_run: bool) -> list[str]:
    """One reprocessed message for people: before -> after per report, findings gone and new."""
    head = f"message {change.message_pk} ({change.control_id}, {change.transport})"
    if change.skipped:
        return [f"{head}: skipped: {change.skipped}"]
    b, a = change.before, change.after
    assert a is not None
    lines = [
        f"{head}: {b.state} {b.ack_code}{' ' + b.error_code if b.error_code else ''}"
        f" -> {a.state} {a.ack_code}{' ' + a.error_code if a.error_code else ''}"
        + (f"  (processing {change.processing})" if change.processing else "")
    ]
    for n in range(max(len(b.reports), len(a.reports))):
        old = b.reports[n] if n < len(b.reports) else None
        new = a.reports[n] if n < len(a.reports) else None
        either = new or old
        acc = either[0] if either else ""
        old_text = f"{old[1] or '-'} ({len(old[4])} findings)" if old else "none"
        new_text = f"{new[1] or '-'} ({len(new[4])} findings)" if new else "none"
        mark = " *" if n in change.changed_reports else ""
        lines.append(f"    report {n + 1} {acc or '-'}: {old_text} -> {new_text}{mark}")
        if old and new and old[4] != new[4]:
            gone = sorted(set(old[4]) - set(new[4]))
            added = sorted(set(new[4]) - set(old[4]))
            if gone:
                lines.append(f"      findings gone: {', '.join(gone)}")
            if added:
                lines.append(f"      findings new: {', '.join(added)}")
    if not dry_run:
        lines.append(f"    {change.queued} routing message{'s' if change.queued != 1 else ''} queued")
    return lines
