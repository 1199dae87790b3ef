"""An accession's report versions in clinical order, and which pairs to compare.

Pure: it reads the stored rows it is given (any object with the attributes
of :class:`StoredEntry`, e.g. the store's ``HistoryEntry``) and parses their
report JSON; no I/O, no clock, no store. docs/outcomes.md, "Report history".

Order: by stage (preliminary and partial, then final, then corrected and
amended, then anything else, cancelled last), then by the report's own time
(the report time the sender gave, else the receive time), then by receipt.
Arrival order never decides: a final received before its preliminary still
comes after it.

Pairs compared: the last preliminary before the first final (two
preliminaries are both listed, the later one is compared); each later final,
correction or amendment against the version it replaces (the version of
stage final or later just before it; the last preliminary when there is no
final).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from listener.hl7v2.keys import shown_key

__all__ = [
    "Pair",
    "ReadSummary",
    "StoredEntry",
    "Version",
    "VersionChain",
    "build_chain",
    "prelim_minutes",
    "stage_of",
    "summarize",
    "summary_from_text",
]

#: Stages by report status: the clinical order of versions.
_STAGES = {"preliminary": 0, "partial": 0, "final": 1, "corrected": 2, "amended": 2, "unknown": 3, "cancelled": 4}
_PRELIM, _FINAL, _CORRECTION = 0, 1, 2


class StoredEntry(Protocol):
    """What :func:`build_chain` reads of one stored report row."""

    @property
    def message_pk(self) -> int: ...

    @property
    def seq(self) -> int: ...

    @property
    def control_id(self) -> str: ...

    @property
    def received(self) -> datetime: ...

    @property
    def transport(self) -> str: ...

    @property
    def feed(self) -> str: ...

    @property
    def report_json(self) -> str: ...

    @property
    def findings_json(self) -> str: ...

    @property
    def bucket(self) -> str: ...

    @property
    def raw_kept(self) -> bool: ...


def stage_of(status: str) -> int:
    """0 preliminary or partial, 1 final, 2 corrected or amended, 3 unknown or other, 4 cancelled."""
    return _STAGES.get(status, 3)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A sender time without an offset is read as UTC: it only orders versions of one accession.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Version:
    """One report version of the accession (no patient data).

    Attributes:
        position: its place in the chain (0 first).
        status: the report status (``preliminary``, ``final``, ``corrected``...).
        report_time: the report's own time (None when the sender gave none).
        received: when its message was received.
        out_of_order: received before a version that comes earlier in the chain.
        exam: the procedure's code and text, the modality.
        findings: the QA rule ids the store kept for it.
        categories: the QA finding categories the store kept for it (sorted, distinct).
        site: the report's site field; body_region: the procedure's body region.
        observation_time: the exam's time (OBR-7, FHIR effective), the start of
            the prelim turnaround (None when the sender gave none).
        addendum: the report has an addendum section.
    """

    position: int
    message_pk: int
    seq: int
    control_id: str
    status: str
    report_time: datetime | None
    received: datetime
    transport: str
    feed: str
    reader_id: str
    reader_name: str
    reader_type: str
    procedure_code: str
    procedure_text: str
    modality: str
    bucket: str
    findings: tuple[str, ...]
    raw_kept: bool
    out_of_order: bool = False
    categories: tuple[str, ...] = ()
    site: str = ""
    body_region: str = ""
    observation_time: datetime | None = None
    addendum: bool = False

    @property
    def stage(self) -> int:
        """See :func:`stage_of`."""
        return stage_of(self.status)

    @property
    def clinical_time(self) -> datetime:
        """The report time, else the receive time."""
        return self.report_time or self.received

    def to_json(self) -> dict[str, Any]:
        """The version as ``overread history --format json`` prints it."""
        return {
            "position": self.position,
            "message_pk": self.message_pk,
            "report_seq": self.seq,
            "message_id": shown_key(self.control_id),
            "status": self.status,
            "report_time": self.report_time.isoformat() if self.report_time else None,
            "received": self.received.astimezone(UTC).isoformat(),
            "transport": self.transport,
            "feed": self.feed,
            "reader": {"id": self.reader_id, "name": self.reader_name, "type": self.reader_type},
            "exam": {"code": self.procedure_code, "text": self.procedure_text, "modality": self.modality},
            "bucket": self.bucket,
            "findings": list(self.findings),
            "raw_kept": self.raw_kept,
            "out_of_order": self.out_of_order,
        }


@dataclass(frozen=True, slots=True)
class Pair:
    """Two versions to compare: ``before`` is replaced by ``after`` (positions in the chain).

    Attributes:
        kind: ``prelim_to_final``, ``correction`` (a corrected or amended
            version) or ``final_again`` (another final).
    """

    kind: str
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class VersionChain:
    """An accession's versions in clinical order and the pairs to compare."""

    accession: str
    versions: tuple[Version, ...]
    pairs: tuple[Pair, ...]


@dataclass(frozen=True, slots=True)
class ReadSummary:
    """What scorecards read of one stored report, taken from its report and findings JSON.

    The store keeps it beside each report row (docs/store.md, "Version
    summaries"), so a window's reads are counted without decoding the JSON;
    :func:`build_chain` reads the same fields through :func:`summarize`.

    Attributes:
        status: the report status (``unknown`` when the report gives none).
        reader_id, site, modality, body_region: the report's fields ("" when absent).
        categories: the QA finding categories (sorted, distinct).
        addendum: the report has an addendum section.
        report_time: the report's own time; observation_time: the exam's time (None: not given).
    """

    status: str
    reader_id: str
    site: str
    modality: str
    body_region: str
    categories: tuple[str, ...]
    addendum: bool
    report_time: datetime | None
    observation_time: datetime | None

    @property
    def stage(self) -> int:
        """See :func:`stage_of`."""
        return stage_of(self.status)

    def to_text(self) -> str:
        """The fields reads are counted by (not the times), as the store keeps them: compact JSON."""
        return json.dumps(
            [
                self.status,
                self.reader_id,
                self.site,
                self.modality,
                self.body_region,
                list(self.categories),
                self.addendum,
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )


def summary_from_text(text: str, report_time: datetime | None, observation_time: datetime | None) -> ReadSummary:
    """The :class:`ReadSummary` whose :meth:`ReadSummary.to_text` is ``text``, with its times."""
    status, reader_id, site, modality, body_region, categories, addendum = json.loads(text)
    return ReadSummary(
        str(status),
        str(reader_id),
        str(site),
        str(modality),
        str(body_region),
        tuple(str(c) for c in categories),
        bool(addendum),
        report_time,
        observation_time,
    )


def _parsed(
    report_json: str, findings_json: str
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...], ReadSummary, dict[str, Any]]:
    """The report's reader, its procedure, the findings' rule ids, its :class:`ReadSummary`, and the
    report document itself ({} when the JSON is no object)."""
    try:
        doc = json.loads(report_json)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    get = doc.get
    reader, procedure, times, sections = get("reader"), get("procedure"), get("times"), get("sections")
    if not isinstance(reader, dict):
        reader = {}
    if not isinstance(procedure, dict):
        procedure = {}
    if not isinstance(times, dict):
        times = {}
    # Most stored reports have no findings: their text is "[]", which needs no parse.
    try:
        found = [] if findings_json == "[]" else json.loads(findings_json)
    except ValueError:
        found = []
    found = [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []
    rules = tuple(sorted({str(f.get("rule", "")) for f in found})) if found else ()
    categories = tuple(sorted({str(f.get("category") or "") for f in found} - {""})) if found else ()
    addendum = False
    if isinstance(sections, list):
        for section in sections:
            if isinstance(section, dict) and section.get("kind") == "addendum":
                addendum = True
                break
    summary = ReadSummary(
        status=str(get("status") or "unknown"),
        reader_id=str(reader.get("id") or ""),
        site=str(get("site") or ""),
        modality=str(get("modality") or ""),
        body_region=str(get("body_region") or ""),
        categories=categories,
        addendum=addendum,
        report_time=_time(times.get("report")),
        observation_time=_time(times.get("observation")),
    )
    return reader, procedure, rules, summary, doc


def prelim_minutes(stage: int, observation_time: datetime | None, clinical_time: datetime) -> float | None:
    """A preliminary's minutes from its observation time to its clinical time, as a scorecard's
    ``prelim_minutes`` counts them (None: another stage, no observation time, or negative)."""
    if stage != _PRELIM or observation_time is None:
        return None
    minutes = (clinical_time - observation_time).total_seconds() / 60
    return minutes if minutes >= 0 else None


def summarize(report_json: str, findings_json: str) -> ReadSummary:
    """What scorecards read of a stored report (its serialized Report and QA findings)."""
    return _parsed(report_json, findings_json)[3]


def summarize_document(report_json: str, findings_json: str) -> tuple[ReadSummary, dict[str, Any]]:
    """:func:`summarize` and the parsed report document ({} when it is no JSON object): the store reads
    both when it makes a report row's columns, from one parse (listener/store/rows.py)."""
    _, _, _, summary, doc = _parsed(report_json, findings_json)
    return summary, doc


def _version(entry: StoredEntry) -> Version:
    reader, procedure, rules, summary, _ = _parsed(entry.report_json, entry.findings_json)
    return Version(
        position=0,
        message_pk=entry.message_pk,
        seq=entry.seq,
        control_id=entry.control_id,
        status=summary.status,
        report_time=summary.report_time,
        received=entry.received,
        transport=entry.transport,
        feed=entry.feed,
        reader_id=summary.reader_id,
        reader_name=str(reader.get("name") or ""),
        reader_type=str(reader.get("type") or ""),
        procedure_code=str(procedure.get("code") or ""),
        procedure_text=str(procedure.get("text") or ""),
        modality=summary.modality,
        bucket=entry.bucket,
        findings=rules,
        raw_kept=entry.raw_kept,
        categories=summary.categories,
        site=summary.site,
        body_region=summary.body_region,
        observation_time=summary.observation_time,
        addendum=summary.addendum,
    )


def _order_key(v: Version) -> tuple[int, datetime, datetime, int, int]:
    return (v.stage, v.clinical_time, v.received, v.message_pk, v.seq)


def _pairs(versions: Sequence[Version]) -> tuple[Pair, ...]:
    prelims = [v for v in versions if v.stage == _PRELIM]
    out: list[Pair] = []
    replaced: Version | None = prelims[-1] if prelims else None
    seen_final = False
    for v in versions:
        if v.stage not in (_FINAL, _CORRECTION):
            continue
        if replaced is not None:
            if v.stage == _CORRECTION:
                kind = "correction"
            else:
                kind = "final_again" if seen_final else "prelim_to_final"
            out.append(Pair(kind, replaced.position, v.position))
        seen_final = seen_final or v.stage == _FINAL
        replaced = v
    return tuple(out)


def build_chain(accession: str, entries: Iterable[StoredEntry]) -> VersionChain:
    """The accession's versions in clinical order, each marked, and the pairs to compare."""
    ordered = [_version(e) for e in entries]
    if len(ordered) > 1:
        ordered.sort(key=_order_key)
    versions: list[Version] = []
    latest_received: datetime | None = None
    for position, v in enumerate(ordered):
        late = latest_received is not None and v.received < latest_received
        # A version is built at position 0, in order: only a later or late one is copied.
        versions.append(replace(v, position=position, out_of_order=late) if position or late else v)
        latest_received = v.received if latest_received is None else max(latest_received, v.received)
    # A pair needs two versions: a lone one has none.
    return VersionChain(accession, tuple(versions), _pairs(versions) if len(versions) > 1 else ())
