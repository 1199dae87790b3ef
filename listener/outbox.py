"""The outbound queue's decisions: backoff schedule, ACK reading, verdicts, rows.

Pure: no I/O, no clock, no randomness of its own, no logging. Times and the
jitter draw are arguments, so every schedule is reproducible in a test. The
Twisted worker (``listener.server.outbound``) does the sending and the store
updates; this module says *what* to do:

* :func:`next_attempt_at` / :func:`backoff_delay`: exponential backoff with
  "equal jitter", capped (a delay is between half and all of
  ``min(max, base * 2**(n-1))``, so it never exceeds the cap and never collapses
  to zero);
* :func:`read_ack`: MSA-1, MSA-2 and the first ERR-3 code of an answer;
* :func:`judge`: delivered, retry or dead letter for one attempt's result;
* :func:`outbox_items`: the routing messages to store with a message (one per
  routed report and destination), with stable decision and control ids; for a
  FHIR destination the payload is a transaction Bundle (Task + DetectedIssues).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from listener.destinations import DestinationSettings, RetrySettings
from listener.fhir.encode import push_bundle
from listener.hl7v2.encode import build_routing_message, should_send
from listener.hl7v2.segments import read_header, strip_envelope
from listener.pipeline import ReportOutcome
from listener.store.base import OutboxItem

__all__ = [
    "DELIVERED_CODES",
    "AckAnswer",
    "Verdict",
    "backoff_delay",
    "control_id_for",
    "decision_id_for",
    "judge",
    "next_attempt_at",
    "outbox_items",
    "read_ack",
]

#: Answers that mean the RIS has taken the message (original and enhanced mode).
DELIVERED_CODES = frozenset({"AA", "CA"})
#: Answers that mean "do not send this again unchanged".
REJECT_CODES = frozenset({"AR", "CR"})

Verdict = Literal["delivered", "retry", "dead"]

# 2**64 seconds is far past any cap; stops float overflow for absurd attempt counts.
_MAX_EXPONENT = 64
_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
#: MSA-1 as :func:`read_ack` takes it: two letters (AA, AE, AR, CA, CE, CR; others are retried).
_ACK_CODE = re.compile(r"[A-Z]{2}")
#: ERR-3's code as :func:`read_ack` takes it (table 0357 codes, or a site's own).
_ERROR_CODE = re.compile(r"[0-9A-Za-z]{1,10}")
_CONTROL_ID_LENGTH = 20  # MSH-10 is ST(20) in 2.3.1 and 2.5.1


def backoff_delay(attempts: int, policy: RetrySettings, rand: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt.

    Args:
        attempts: failed attempts so far, counting the one just made (1 or more;
            0 and below are treated as 1).
        policy: ``backoff_base_seconds`` (the first delay's ceiling) and
            ``backoff_max_seconds`` (the cap).
        rand: a draw from [0, 1) (``random.random()``); 0 gives the shortest
            delay, values near 1 the longest.

    Returns:
        ``ceiling * (1 + rand) / 2`` where ``ceiling = min(max, base * 2**(attempts-1))``:
        between half the ceiling and the ceiling (equal jitter).

    Raises:
        ValueError: ``rand`` is outside [0, 1].
    """
    if not 0.0 <= rand <= 1.0:
        raise ValueError("rand must be in [0, 1]")
    exponent = min(max(attempts, 1) - 1, _MAX_EXPONENT)
    ceiling = min(policy.backoff_max_seconds, policy.backoff_base_seconds * (2.0**exponent))
    # Strategy: equal jitter keeps half the exponential step (so a down RIS is
    # not hammered) and spreads the other half (so rows that failed together,
    # and several daemons, do not retry in lock-step).
    return ceiling * (1.0 + rand) / 2.0


def next_attempt_at(attempts: int, last_at: datetime, policy: RetrySettings, rand: float) -> datetime:
    """When the next attempt is due after the ``attempts``-th failure at ``last_at``.

    Args:
        attempts: failed attempts so far, counting the one just made.
        last_at: when that attempt failed (aware).
        policy: the destination's retry settings.
        rand: a draw from [0, 1) for the jitter.

    Returns:
        ``last_at + backoff_delay(attempts, policy, rand)``.

    Raises:
        ValueError: ``last_at`` is naive or ``rand`` is outside [0, 1].
    """
    if last_at.tzinfo is None or last_at.utcoffset() is None:
        raise ValueError("last_at must be timezone-aware")
    return last_at + timedelta(seconds=backoff_delay(attempts, policy, rand))


@dataclass(frozen=True, slots=True)
class AckAnswer:
    """What an answer says: MSA-1, MSA-2 and the first ERR-3 code ("" if none)."""

    code: str
    control_id: str
    error_code: str = ""


def read_ack(payload: bytes) -> AckAnswer | None:
    """Read MSA-1/MSA-2 (and ERR-3.1) from an answer, with its own separators.

    Returns:
        The answer, or None when there is no MSH or no MSA whose MSA-1 is two
        letters (an acknowledgment code). Never raises. An ERR-3 code that is
        not 1 to 10 letters and digits is left out. What the RIS sent is kept
        and logged only through these checks: an MSA-1 of 100 KB, or an ERR-3
        holding a terminal escape or a patient's name, never reaches the
        row's last error, the log or an operator's terminal (docs/outbound.md).
    """
    header = read_header(payload)
    if header is None:
        return None
    seps = header.separators
    text = strip_envelope(payload).decode("latin-1")
    code = control_id = error_code = ""
    for segment in _SEGMENT_SPLIT.split(text):
        fields = segment.split(seps.field)
        if fields[0] == "MSA" and not code:
            code = fields[1].strip().upper() if len(fields) > 1 else ""
            control_id = fields[2].strip() if len(fields) > 2 else ""
        elif fields[0] == "ERR" and not error_code and len(fields) > 3:
            error_code = fields[3].split(seps.component)[0].strip()
            if not _ERROR_CODE.fullmatch(error_code):
                error_code = ""
    if not _ACK_CODE.fullmatch(code):
        return None
    return AckAnswer(code, control_id, error_code)


def judge(result: str, attempts: int, policy: RetrySettings) -> Verdict:
    """Decide what one attempt's result means for its row.

    Args:
        result: the MSA-1 code (AA, CA, AE, CE, AR, CR, ...) or a failure name
            (``ack_timeout``, ``connection_lost``, ``unreadable_ack``).
        attempts: attempts made on the row, counting this one.
        policy: ``max_attempts`` and ``on_reject``.

    Returns:
        ``delivered`` for AA/CA; ``dead`` for AR/CR with ``on_reject:
        dead_letter`` or once ``attempts`` reaches ``max_attempts``; else ``retry``.
    """
    if result in DELIVERED_CODES:
        return "delivered"
    if result in REJECT_CODES and policy.on_reject == "dead_letter":
        return "dead"
    return "dead" if attempts >= policy.max_attempts else "retry"


def decision_id_for(
    sender_application: str, sender_facility: str, control_id: str, seq: int, processing: int = 1
) -> str:
    """A stable id for the routing decision about the ``seq``-th report of a message.

    Derived from the message's identity (the same key the store deduplicates
    on), so it names the decision in ZRT-6 and the NW placer number the same way
    on every replay. A later processing of the message (``overread reprocess``,
    docs/operations.md) makes new decisions: its number joins the key, so their
    MSH-10s differ from the first ones' and a RIS that deduplicates on MSH-10
    still applies them.
    """
    parts = [sender_application, sender_facility, control_id, str(seq)]
    if processing > 1:
        parts.append(f"p{processing}")
    key = "\x1f".join(parts)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16].upper()


def control_id_for(decision_id: str, destination: str) -> str:
    """Our MSH-10 for one decision sent to one destination (20 hex characters).

    Stable, so every retry of the row carries the same MSH-10 and a RIS that
    deduplicates on it applies the decision once.
    """
    digest = hashlib.sha256(f"{decision_id}\x1f{destination}".encode()).hexdigest()
    return digest[:_CONTROL_ID_LENGTH].upper()


def outbox_items(
    reports: Sequence[ReportOutcome],
    destinations: Sequence[DestinationSettings],
    *,
    now: datetime,
    sender_application: str,
    sender_facility: str,
    control_id: str,
    processing: int = 1,
    only: frozenset[int] | None = None,
) -> tuple[OutboxItem, ...]:
    """The routing messages to store with one accepted message.

    One item per report that has a route, per destination that wants it
    (:func:`~listener.hl7v2.encode.should_send`), in report order, so an
    accession's decisions are queued in the order they were made.

    Args:
        reports: the pipeline's report outcomes.
        destinations: the configured destinations (disabled ones send nothing).
        now: the message time (MSH-7 of the routing message).
        sender_application, sender_facility, control_id: the received
            message's key, from which the decision ids are derived.
        processing: the processing number (1 on arrival).
        only: the report positions to send (None: every routed report);
            a reprocess sends only the decisions that changed.

    Raises:
        ValueError: a route the encoder cannot write (a programming error).
    """
    items = []
    for seq, result in enumerate(reports):
        route = result.route
        if route is None or (only is not None and seq not in only):
            continue
        decision_id = decision_id_for(sender_application, sender_facility, control_id, seq, processing)
        for dest in destinations:
            if not should_send(route, dest):
                continue
            out_id = control_id_for(decision_id, dest.name)
            if dest.fhir is not None:
                # A FHIR server: a transaction Bundle (Task + DetectedIssues), sent by listener.server.fhir_push.
                bundle = push_bundle(
                    result.report,
                    route,
                    result.findings,
                    decision_id=decision_id,
                    authored_on=now,
                    version=dest.fhir.version,
                )
                payload = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            else:
                payload = build_routing_message(
                    result.report, route, result.findings, dest, now=now, control_id=out_id, decision_id=decision_id
                )
            items.append(OutboxItem(dest.name, result.report.accession, out_id, payload))
    return tuple(items)
