"""Build the routing message we send back to the RIS (ORM^O01 or OMI^O23).

Pure: no I/O, no clock, no logging. The time, our control id (MSH-10) and the
decision id are arguments; the result is message bytes (segments each ended by
CR, no MLLP framing, see ``mllp.frame``).

The message is a status change on the existing order (ORC-1 ``SC``, ORC-5
``IP``) that says where the report goes. The decision is written to the
carriers a destination asks for (``DestinationSettings.message.carriers``):

========  ==================================================================
carrier   where the decision goes
========  ==================================================================
orc25     ORC-25 (order status modifier): OVERREAD / RETURN / FINAL / RELEASE
          (2.5.1 only: ORC-25 does not exist in 2.3.1)
obx       one OBX per item: ROUTE, POOL, each REASON, each QAFINDING (the
          finding's severity and evidence offsets in an NTE right after it)
nte       one NTE summary line after the OBR
zrt       a ``ZRT`` segment at the end of the message (bucket | pool |
          priority | reasons | policy version | decision id | report status |
          policy bucket | deadline | corrections)
========  ==================================================================

ORC-16 (the primary reason) and the priority (ORC-7.6, OBR-27.6, and TQ1-9 in
OMI) are always written. With ``child_order`` a second order group follows for
OVERREAD and FINAL: ORC-1 ``NW`` with a new placer number
(:func:`child_placer_number`) and the original order as parent (ORC-8, OBR-29),
for a RIS that queues overreads as orders.

Every value is escaped for the delimiters, has its line breaks written as
``\\.br\\`` (text) or spaces (identifiers), loses other control characters, and
is capped (see ``escape.escape_value``). Identifiers are capped generously
(199 characters) because cutting an order number or MRN would make the RIS
match the wrong order; free texts have tighter caps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from listener.destinations import CHARSETS, DestinationSettings, MessageSettings
from listener.hl7v2.escape import escape_value
from listener.hl7v2.segments import Separators
from listener.model import Finding, Report, ResultStatus, Route

__all__ = [
    "BUCKET_CODES",
    "BUCKET_TEXTS",
    "LOCAL_CODING_SYSTEM",
    "PRIORITY_CODES",
    "QA_CODING_SYSTEM",
    "build_routing_message",
    "child_placer_number",
    "result_status_code",
    "should_send",
]

#: ORC-25 / ZRT-1 code for each routing bucket (docs/outbound.md).
BUCKET_CODES = {
    "always_final": "FINAL",
    "selective_overread": "OVERREAD",
    "process_check": "RETURN",
    "release": "RELEASE",
}
#: Display text written next to each code.
BUCKET_TEXTS = {
    "FINAL": "Internal final read",
    "OVERREAD": "Selective overread",
    "RETURN": "Return to author",
    "RELEASE": "Release",
}
#: Table 0485 / TQ.6 priority letters.
PRIORITY_CODES = {"stat": "S", "asap": "A", "routine": "R"}
#: Local coding system (table 0396 "99zzz") of our OBX-3 codes and bucket codes.
LOCAL_CODING_SYSTEM = "99OVR"
#: Local coding system of QA rule ids (``category.name``) in QAFINDING rows.
QA_CODING_SYSTEM = "99OVRQA"
#: Buckets that need another read, and so get an NW child order when asked.
CHILD_ORDER_BUCKETS = frozenset({"always_final", "selective_overread"})

# Table 0123 result status for each model status (when the raw value is unknown).
_STATUS_LETTERS = {
    ResultStatus.PRELIMINARY: "P",
    ResultStatus.FINAL: "F",
    ResultStatus.CORRECTED: "C",
    ResultStatus.AMENDED: "C",
    ResultStatus.CANCELLED: "X",
    ResultStatus.PARTIAL: "A",
    ResultStatus.UNKNOWN: "",
}

# Caps, in characters before escaping.
_ID_MAX = 199  # identifiers: never cut short enough to change which order matches
_CODE_MAX = 20  # status / short codes
_TEXT_MAX = 199  # CE text, ST values
_VERSION_MAX = 60
_SUMMARY_MAX = 2000
_MAX_ROWS = 50  # reasons and QA findings written as OBX rows / ZRT repetitions
_SEPS = Separators()


@dataclass(frozen=True, slots=True)
class _Order:
    """What differs between the SC group (existing order) and the NW child group."""

    control: str
    placer: str
    filler: str
    status: str
    parent: str
    set_id: str
    result_status: str


def should_send(route: Route, settings: DestinationSettings) -> bool:
    """Whether a routing message for ``route`` goes to this destination at all.

    False for a disabled destination, and for RELEASE decisions when the
    destination has ``send_release: false`` (the builder is then not called).
    """
    if not settings.enabled:
        return False
    return route.bucket != "release" or settings.message.send_release


def child_placer_number(accession: str, decision_id: str) -> str:
    """The placer order number of the NW child order: ``<accession>-<8 hex>``.

    Deterministic (a replay of the same decision gives the same number, so the
    RIS can deduplicate) and at most 22 characters (the v2.5.1 length of
    ORC-2): the accession is cut to 13 characters, the hash covers all of it.
    """
    digest = hashlib.sha256(f"{accession}\x1f{decision_id}".encode()).hexdigest()[:8].upper()
    return f"{accession.strip()[:13]}-{digest}"


def result_status_code(report: Report) -> str:
    """OBR-25 as received (``status_raw``), else the table 0123 letter of ``status``."""
    return report.status_raw.strip() or _STATUS_LETTERS[report.status]


def build_routing_message(
    report: Report,
    route: Route,
    findings: Sequence[Finding],
    destination: DestinationSettings,
    *,
    now: datetime,
    control_id: str,
    decision_id: str,
) -> bytes:
    """Build the routing message for one decision.

    Args:
        report: the report the decision is about (its order, patient, procedure).
        route: the routing decision.
        findings: the QA findings (each becomes a QAFINDING row; at most 50).
        destination: the RIS's settings (message type, version, carriers...).
        now: the time of the message, timezone-aware (MSH-7, ORC-9, OBX-14).
        control_id: our unique MSH-10 (the RIS deduplicates on it).
        decision_id: the decision's id (ZRT-6, and the NW placer number).

    Returns:
        The message bytes in the destination's character set.

    Raises:
        ValueError: an unknown bucket, a naive ``now``, or an empty
            ``control_id`` or ``decision_id`` (programming errors).
    """
    if route.bucket not in BUCKET_CODES:
        raise ValueError("route.bucket must be one of " + ", ".join(BUCKET_CODES))
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not _id(control_id) or not _id(decision_id):
        raise ValueError("control_id and decision_id must not be empty")

    settings = destination.message
    omi = settings.message_type == "OMI^O23" and bool(report.accession.strip())
    carriers = settings.carriers
    if settings.version == "2.3.1":
        carriers = carriers - {"orc25"}
    bucket = BUCKET_CODES[route.bucket]
    priority = PRIORITY_CODES.get(route.priority.lower(), "")
    ts = _timestamp(now)

    segments = [_msh(report, settings, omi, ts, control_id), _pid(report)]
    existing = _Order(
        control="SC",
        placer=report.placer_order,
        filler=report.filler_order,
        status="IP",
        parent="",
        set_id="1",
        result_status=result_status_code(report),
    )
    segments += _order_group(report, route, existing, bucket, priority, ts, omi, carriers)
    if "nte" in carriers:
        segments.append(
            _seg(
                "NTE",
                {1: "1", 2: "O", 3: _text(_summary(route, findings, bucket, priority, decision_id), _SUMMARY_MAX)},
            )
        )
    if "obx" in carriers:
        segments += _obx_rows(route, findings, bucket, ts, settings.version)
    if omi:
        segments.append(_ipc(report, report.placer_order or report.accession, report.filler_order or report.accession))

    if settings.child_order and route.bucket in CHILD_ORDER_BUCKETS and report.accession.strip():
        placer = child_placer_number(report.accession, decision_id)
        child = _Order(
            control="NW",
            placer=_comps(_id(placer), _id(settings.sending_application)),
            filler="",
            status="",
            parent=_comps(_id(report.placer_order), _id(report.filler_order)),
            set_id="2",
            result_status="",
        )
        segments += _order_group(report, route, child, bucket, priority, ts, omi, carriers, escaped=True)
        if omi:
            segments.append(_ipc(report, placer, placer))

    if "zrt" in carriers:
        segments.append(_zrt(report, route, bucket, priority, decision_id))

    # charset names are Python codecs; "?" stands for what the set cannot hold.
    return ("\r".join(segments) + "\r").encode(settings.charset, errors="replace")


# -- segments ------------------------------------------------------------------


def _msh(report: Report, settings: MessageSettings, omi: bool, ts: str, control_id: str) -> str:
    code, event = ("OMI", "O23") if omi else ("ORM", "O01")
    fields = {
        3: _id(settings.sending_application),
        4: _id(settings.sending_facility),
        5: _id(settings.receiving_application or report.sender.application),
        6: _id(settings.receiving_facility or report.sender.facility),
        7: ts,
        9: _comps(code, event, f"{code}_{event}"),
        10: _id(control_id),
        11: settings.processing_id,
        12: settings.version,
        18: CHARSETS[settings.charset],
    }
    # MSH-1 is the field separator itself: the segment starts "MSH|^~\&|" and
    # MSH-2 is the first field after it.
    return _seg("MSH", {n - 1: v for n, v in fields.items()} | {1: _SEPS.encoding_characters})


def _pid(report: Report) -> str:
    patient = report.patient
    birth = _date(patient.birth_date)
    return _seg(
        "PID",
        {
            1: "1",
            3: _comps(_id(patient.id), "", "", _id(patient.id_authority)),
            7: birth,
            8: _id(patient.sex, 1),
        },
    )


def _order_group(
    report: Report,
    route: Route,
    order: _Order,
    bucket: str,
    priority: str,
    ts: str,
    omi: bool,
    carriers: frozenset[str],
    *,
    escaped: bool = False,
) -> list[str]:
    """ORC, (TQ1 for OMI), OBR of one order group; ``escaped``: order ids are ready."""
    placer = order.placer if escaped else _id(order.placer)
    filler = order.filler if escaped else _id(order.filler)
    tq_priority = _comps("", "", "", "", "", priority) if priority else ""
    reason = route.reasons[0] if route.reasons else ""
    orc: dict[int, str] = {
        1: order.control,
        2: placer,
        3: filler,
        5: order.status,
        7: tq_priority,
        8: order.parent,
        9: ts,
        16: _comps(_id(reason), _text(reason, _TEXT_MAX), LOCAL_CODING_SYSTEM) if reason else "",
    }
    if "orc25" in carriers:
        orc[25] = _comps(bucket, BUCKET_TEXTS[bucket], LOCAL_CODING_SYSTEM)
    out = [_seg("ORC", orc)]
    if omi:
        out.append(_seg("TQ1", {1: "1", 9: _comps(priority, "", "HL70485") if priority else ""}))
    out.append(
        _seg(
            "OBR",
            {
                1: order.set_id,
                2: placer,
                3: filler,
                4: _procedure(report),
                18: _id(report.accession),
                25: _id(order.result_status, _CODE_MAX),
                27: tq_priority,
                29: order.parent,
                32: _reader(report),
            },
        )
    )
    return out


def _procedure(report: Report) -> str:
    """OBR-4: code^text^system; the sender's own code first when we derived a standard one."""
    proc = report.procedure
    text = _text(proc.text, _TEXT_MAX)
    if proc.local_code:
        return _comps(_id(proc.local_code), text, "", _id(proc.code), text, _id(proc.coding_system, _CODE_MAX))
    return _comps(_id(proc.code), text, _id(proc.coding_system, _CODE_MAX))


def _reader(report: Report) -> str:
    """OBR-32 (NDL): id&family&given in component 1. Names are kept as "given family"."""
    reader = report.reader
    if reader is None:
        return ""
    given, _, family = reader.name.strip().rpartition(" ")
    parts = [_sub(reader.id, _ID_MAX), _sub(family, _TEXT_MAX), _sub(given, _TEXT_MAX)]
    return _SEPS.subcomponent.join(parts).rstrip(_SEPS.subcomponent)


def _obx_rows(route: Route, findings: Sequence[Finding], bucket: str, ts: str, version: str) -> list[str]:
    """ROUTE, POOL, each REASON, each QAFINDING (+ its evidence NTE)."""
    rows: list[tuple[str, str, str, str, str | None]] = [
        ("CE", "ROUTE^Routing decision", "1", _comps(bucket, BUCKET_TEXTS[bucket], LOCAL_CODING_SYSTEM), None)
    ]
    if route.pool.strip():
        rows.append(("ST", "POOL^Reading pool", "1", _text(route.pool, _TEXT_MAX), None))
    for k, reason in enumerate(route.reasons[:_MAX_ROWS], start=1):
        rows.append(("ST", "REASON^Routing reason", str(k), _text(reason, _TEXT_MAX), None))
    for k, finding in enumerate(findings[:_MAX_ROWS], start=1):
        value = _comps(_id(finding.rule), _text(finding.message, _TEXT_MAX), QA_CODING_SYSTEM)
        rows.append(("CE", "QAFINDING^QA finding", str(k), value, _evidence(finding)))
    out: list[str] = []
    for n, (value_type, code, sub_id, value, note) in enumerate(rows, start=1):
        observation_id = f"{code}^{LOCAL_CODING_SYSTEM}"
        out.append(_seg("OBX", {1: str(n), 2: value_type, 3: observation_id, 4: sub_id, 5: value, 11: "F", 14: ts}))
        if note is not None:
            out.append(_seg("NTE", {1: "1", 2: "O", 3: _text(note, _SUMMARY_MAX)}))
    return out


def _evidence(finding: Finding) -> str:
    """``severity=error; evidence=impression:12-16, findings:40-44`` (offsets into the report text)."""
    spans = ", ".join(f"{ev.section}:{ev.start}-{ev.end}" for ev in finding.evidence)
    return f"severity={finding.severity.value}; evidence={spans}" if spans else f"severity={finding.severity.value}"


def _ipc(report: Report, requested_procedure: str, step: str) -> str:
    """IPC: accession, requested procedure id, study UID (not in the model: empty), step id, modality."""
    return _seg(
        "IPC",
        {
            1: _id(report.accession),
            2: _id(requested_procedure),
            3: "",
            4: _id(step),
            5: _comps(_id(report.modality, _CODE_MAX), "", "DCM") if report.modality else "",
        },
    )


def _zrt(report: Report, route: Route, bucket: str, priority: str, decision_id: str) -> str:
    rep = _SEPS.repetition
    return _seg(
        "ZRT",
        {
            1: bucket,
            2: _text(route.pool, _TEXT_MAX),
            3: priority,
            4: rep.join(_text(r, _TEXT_MAX) for r in route.reasons[:_MAX_ROWS]),
            5: _text(route.policy_version, _VERSION_MAX),
            6: _id(decision_id),
            7: _id(result_status_code(report), _CODE_MAX),
            8: route.bucket,
            9: _timestamp(route.deadline) if route.deadline is not None else "",
            10: rep.join(_id(c) for c in route.corrections[:_MAX_ROWS]),
        },
    )


def _summary(route: Route, findings: Sequence[Finding], bucket: str, priority: str, decision_id: str) -> str:
    errors = sum(1 for f in findings if f.severity.value == "error")
    parts = [f"Overread routing: {bucket} ({route.bucket})"]
    if route.pool:
        parts.append(f"pool {route.pool}")
    if priority:
        parts.append(f"priority {priority}")
    if route.reasons:
        parts.append("reasons " + ", ".join(route.reasons))
    if findings:
        parts.append(f"QA findings {len(findings)} ({errors} error)")
    if route.deadline is not None:
        parts.append(f"due {_timestamp(route.deadline)}")
    if route.policy_version:
        parts.append(f"policy {route.policy_version}")
    parts.append(f"decision {decision_id}")
    return "; ".join(parts)


# -- field helpers -----------------------------------------------------------------


def _seg(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: escaped value}; trailing empty fields dropped."""
    last = max((n for n, v in fields.items() if v), default=0)
    return _SEPS.field.join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def _comps(*parts: str) -> str:
    """Components (already escaped), trailing empty ones dropped."""
    return _SEPS.component.join(parts).rstrip(_SEPS.component)


def _id(value: str, cap: int = _ID_MAX) -> str:
    """An identifier or code: line breaks become spaces, surrounding blanks trimmed."""
    return escape_value(value.strip(), _SEPS, cap=cap, line_breaks=False).strip()


def _text(value: str, cap: int) -> str:
    """A text value: line breaks kept as ``\\.br\\``."""
    return escape_value(value, _SEPS, cap=cap)


def _sub(value: str, cap: int) -> str:
    return escape_value(value.strip(), _SEPS, cap=cap, line_breaks=False)


def _date(value: date | None) -> str:
    return f"{value:%Y%m%d}" if value is not None else ""


def _timestamp(value: datetime) -> str:
    """``YYYYMMDDHHMMSS+ZZZZ`` (no offset for a naive time)."""
    offset = value.utcoffset()
    if offset is None:
        return f"{value:%Y%m%d%H%M%S}"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{value:%Y%m%d%H%M%S}{sign}{hours:02d}{mins:02d}"
