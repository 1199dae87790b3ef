"""Policy what-if: stored reports replayed through a baseline and a candidate routing policy.

Pure: no I/O, no clock, no logging. The shell (:mod:`listener.simulate_cli`)
reads the stored reports, their recorded findings and the graded prelim/final
pairs from the store and hands them in; this module routes each report under
both policies with :func:`listener.routing.decide_route` (the daemon's own
decision code) and sums up. docs/simulate.md defines every figure.

- :func:`report_from_json` and :func:`findings_from_json` rebuild the Report
  and the Findings the daemon stored (``report_json`` keeps the text and
  sections, ``findings_json`` the QA findings): the QA findings are taken from
  the store, not recomputed (docs/simulate.md, "Findings").
- :func:`build_workload` validates policies/workload.yaml (minutes per
  modality, daytime reading hours); errors name file and line.
- :func:`simulate` routes the cases and returns a :class:`Simulation`;
  :meth:`Simulation.to_json` and :func:`render_table` print it.

Deterministic: every list is sorted, every share rounded, and no time of
"now" enters the result; the same cases and policies give the same bytes.
Patient data never enters the result: accessions, control ids, reader ids,
sites, modalities, groups and keyed hashes only.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from listener.model import (
    BUCKETS,
    Evidence,
    Finding,
    Patient,
    PeerReview,
    Procedure,
    Reader,
    Report,
    ResultStatus,
    Section,
    SectionKind,
    Sender,
    Severity,
    TextKind,
    Times,
)
from listener.routing.conditions import Condition, CriticalFinding, HedgeDensity
from listener.routing.facts import Facts, RoutingContext
from listener.routing.policy import RoutingPolicy, Rule
from listener.sites import ReaderHistory
from listener.text import TextCache
from listener.yamlconf import YamlMap

__all__ = [
    "DISCREPANCY_GRADES",
    "DOCUMENT_VERSION",
    "SECOND_READ_BUCKETS",
    "Case",
    "GradedCase",
    "PolicyFigures",
    "Simulation",
    "Workload",
    "build_workload",
    "bucket_plan",
    "decide_bucket",
    "findings_from_json",
    "render_table",
    "report_from_json",
    "simulate",
    "stored_case",
]

#: Cases one run-wide text cache serves before it starts afresh (bounded memory; simulate()).
_CACHE_SPAN = 4096

#: The layout of :meth:`Simulation.to_json`; a change that breaks readers gets a new number.
DOCUMENT_VERSION = 1
#: Buckets in which a second radiologist reads the report (docs/routing.md): the overread workload.
SECOND_READ_BUCKETS = ("always_final", "selective_overread")
#: RADPEER grades that are discrepancies (grade 1 is agreement), mildest first.
DISCREPANCY_GRADES = ("2a", "2b", "3a", "3b")
#: Dimensions the bucket counts are broken down by.
DIMENSIONS = ("site", "modality", "group")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MODALITY_RE = re.compile(r"^[A-Z][A-Z0-9]*$")
_WORKLOAD_KEYS = frozenset({"version", "default_minutes", "modalities", "reading_hours"})
_HOURS_KEYS = frozenset({"from", "to", "days"})
#: Where a case without a site, a modality or a reader group is counted.
NONE_KEY = "(none)"


# --------------------------------------------------------------------------
# stored JSON -> model values


def _dt(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _map(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def report_from_json(doc: Mapping[str, Any]) -> Report:
    """The Report the daemon stored as ``report_json`` (written with patient and text included).

    Section texts are cut from the full text by their stored offsets, as the
    decoder made them. A field the JSON lacks takes the model's default.

    Raises:
        ValueError: a status, section kind or time that is not valid.
    """
    sender = _map(doc.get("sender"))
    procedure = _map(doc.get("procedure"))
    patient = _map(doc.get("patient"))
    times = _map(doc.get("times"))
    reader_doc = doc.get("reader")
    text = str(doc.get("text") or "")
    sections = []
    for s in doc.get("sections") or ():
        start, end = int(s["start"]), int(s["end"])
        sections.append(Section(SectionKind(s["kind"]), str(s.get("heading") or ""), start, end, text[start:end]))
    reader = None
    if isinstance(reader_doc, dict):
        reader = Reader(
            id=str(reader_doc.get("id") or ""),
            name=str(reader_doc.get("name") or ""),
            type=str(reader_doc.get("type") or "unknown"),
            location=str(reader_doc.get("location") or ""),
        )
    peer = doc.get("peer_review")
    born = patient.get("birth_date")
    return Report(
        message_id=str(doc.get("message_id") or ""),
        message_type=str(doc.get("message_type") or ""),
        version=str(doc.get("version") or ""),
        sender=Sender(
            str(sender.get("application") or ""),
            str(sender.get("facility") or ""),
            str(sender.get("feed") or "default"),
        ),
        accession=str(doc.get("accession") or ""),
        patient=Patient(
            id=str(patient.get("id") or ""),
            id_authority=str(patient.get("id_authority") or ""),
            sex=str(patient.get("sex") or ""),
            birth_date=date.fromisoformat(born) if isinstance(born, str) and born else None,
        ),
        procedure=Procedure(
            code=str(procedure.get("code") or ""),
            coding_system=str(procedure.get("coding_system") or ""),
            text=str(procedure.get("text") or ""),
            modifiers=tuple(str(m) for m in procedure.get("modifiers") or ()),
            local_code=str(procedure.get("local_code") or ""),
        ),
        status=ResultStatus(str(doc.get("status") or "final")),
        times=Times(
            observation=_dt(times.get("observation")),
            report=_dt(times.get("report")),
            received=_dt(times.get("received")),
            message=_dt(times.get("message")),
        ),
        text=text,
        sections=tuple(sections),
        status_raw=str(doc.get("status_raw") or ""),
        placer_order=str(doc.get("placer_order") or ""),
        filler_order=str(doc.get("filler_order") or ""),
        modality=str(doc.get("modality") or ""),
        body_region=str(doc.get("body_region") or ""),
        order_laterality=str(doc.get("order_laterality") or ""),
        priority=str(doc.get("priority") or "routine"),
        reader=reader,
        site=str(doc.get("site") or ""),
        financial_class=str(doc.get("financial_class") or ""),
        reason=str(doc.get("reason") or ""),
        diagnosis_codes=tuple(str(c) for c in doc.get("diagnosis_codes") or ()),
        comparison_text=str(doc.get("comparison_text") or ""),
        text_kind=TextKind(str(doc.get("text_kind") or TextKind.TEXT.value)),
        obr_index=int(doc.get("obr_index") or 1),
        charset=str(doc.get("charset") or ""),
        abnormal_flags=tuple(str(f) for f in doc.get("abnormal_flags") or ()),
        warnings=tuple(str(w) for w in doc.get("warnings") or ()),
        peer_review=None
        if not isinstance(peer, dict)
        else PeerReview(str(peer.get("grade") or ""), str(peer.get("scorer") or ""), _dt(peer.get("scored_at"))),
    )


def findings_from_json(items: Iterable[Mapping[str, Any]]) -> tuple[Finding, ...]:
    """The Findings the daemon stored as ``findings_json`` (a list of ``finding_dict`` objects)."""
    return tuple(
        Finding(
            rule=str(f.get("rule") or ""),
            severity=Severity(str(f.get("severity") or "info")),
            message=str(f.get("message") or ""),
            evidence=tuple(
                Evidence(str(e.get("section") or ""), int(e.get("start", 0)), int(e.get("end", 0)), str(e.get("text")))
                for e in f.get("evidence") or ()
            ),
            suggestion=str(f.get("suggestion") or ""),
        )
        for f in items
    )


# --------------------------------------------------------------------------
# workload policy


@dataclass(frozen=True, slots=True)
class Workload:
    """policies/workload.yaml: minutes a second read takes, and the daytime reading hours.

    Attributes:
        minutes: modality -> estimated radiologist minutes of one second read.
        default_minutes: minutes of a modality not listed.
        day_start, day_end: the daytime reading hours, site-local wall clock
            (``day_end`` excluded).
        days: weekdays with reading hours, 0 Monday .. 6 Sunday.
    """

    label: str
    minutes: Mapping[str, float]
    default_minutes: float
    day_start: time
    day_end: time
    days: frozenset[int]

    def minutes_for(self, modality: str) -> float:
        """Minutes of one second read of ``modality``."""
        return self.minutes.get(modality.upper(), self.default_minutes)

    def wait(self, arrival: datetime) -> timedelta:
        """How long a read arriving at ``arrival`` (site-local wall clock) waits for reading hours.

        Zero inside the hours; otherwise the time to the next start of the
        hours (the same day's, or that of the next reading day).
        """
        start = self.next_start(arrival)
        return start - arrival if start is not None else timedelta(0)

    def next_start(self, arrival: datetime) -> datetime | None:
        """The start of the reading hours a read arriving at ``arrival`` waits for (None: none)."""
        local = arrival.replace(tzinfo=None)
        if local.weekday() in self.days and self.day_start <= local.time() < self.day_end:
            return None
        day = local.date() if local.time() < self.day_start else local.date() + timedelta(days=1)
        for _ in range(8):
            if day.weekday() in self.days:
                return datetime.combine(day, self.day_start)
            day += timedelta(days=1)
        return None  # pragma: no cover - build_workload requires at least one day


def _clock(node: YamlMap, key: str) -> time:
    value = node.get(key)
    if not isinstance(value, str) or not _TIME_RE.match(value):
        raise node.error(key, f'reading_hours.{key}: a quoted "HH:MM" time (24 h), got {value!r}')
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def build_workload(doc: YamlMap) -> Workload:
    """Validate a parsed policies/workload.yaml.

    Raises:
        ConfigError: naming the file, line and key of the first problem.
    """
    doc.reject_unknown(_WORKLOAD_KEYS)
    default = doc.get_number("default_minutes", 10.0, minimum=0)
    modalities = doc.get_map("modalities")
    minutes: dict[str, float] = {}
    for name in modalities:
        if not _MODALITY_RE.match(str(name)):
            raise modalities.error(name, f"modalities: {name!r} is not a modality code like CT")
        minutes[str(name)] = modalities.get_number(name, minimum=0)
    hours = doc.get_map("reading_hours")
    hours.reject_unknown(_HOURS_KEYS, "reading_hours")
    start = _clock(hours, "from") if "from" in hours else time(8, 0)
    end = _clock(hours, "to") if "to" in hours else time(17, 0)
    if end <= start:
        raise hours.error("to", "reading_hours.to must be later than reading_hours.from (same day)")
    days: set[int] = set(range(5))
    if "days" in hours:
        listed = hours.get_list("days")
        days = set()
        for i, day in enumerate(listed.strings()):
            if day.lower() not in _DAYS:
                raise listed.error(i, f"reading_hours.days: {day!r} is not one of {', '.join(_DAYS)}")
            days.add(_DAYS.index(day.lower()))
        if not days:
            raise hours.error("days", "reading_hours.days: at least one day")
    return Workload(
        label=doc.get_str("version", "unversioned"),
        minutes=minutes,
        default_minutes=default,
        day_start=start,
        day_end=end,
        days=frozenset(days),
    )


# --------------------------------------------------------------------------
# inputs


@dataclass(frozen=True, slots=True)
class Case:
    """One stored report to replay.

    Attributes:
        message_pk, seq: which stored report it is (message and position).
        control_id: the message's MSH-10 (or FHIR control id).
        received: when its message was received (aware): the decision time
            of the replay and the read's arrival for the turnaround figures.
        report, findings: as stored (:func:`report_from_json`, :func:`findings_from_json`).
        in_window: received inside the simulated window; a version outside
            it is replayed only for the discrepancy list (its accession has
            a version inside).
        patient_hash: the keyed hash of the patient id ("" when no key).
    """

    message_pk: int
    seq: int
    control_id: str
    received: datetime
    report: Report
    findings: tuple[Finding, ...]
    in_window: bool = True
    patient_hash: str = ""


@dataclass(frozen=True, slots=True)
class GradedCase:
    """A graded pair of versions: the ``before`` version was replaced by a later read.

    Attributes:
        before: (message_pk, seq) of the version whose read was graded.
        grade: its RADPEER grade (explicit, else proposed).
        kind: the pair's kind (``prelim_to_final``, ``correction``, ``final_again``).
    """

    accession: str
    before: tuple[int, int]
    grade: str
    kind: str


# --------------------------------------------------------------------------
# figures


@dataclass(frozen=True, slots=True)
class PolicyFigures:
    """What one policy does with the cases (docs/simulate.md defines each figure)."""

    name: str
    version: str
    source: str
    buckets: Mapping[str, int]
    by: Mapping[str, Mapping[str, Mapping[str, int]]]
    reads: int
    minutes: float
    queued: int
    wait_minutes: float
    peak_queue: int
    sent: Mapping[str, int]
    unseen: Mapping[str, int]

    @property
    def total(self) -> int:
        """Cases in the window."""
        return sum(self.buckets.values())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready figures: sorted keys, shares rounded to four decimals, minutes to one."""
        total = self.total
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "reports": total,
            "buckets": {b: _count_share(self.buckets[b], total) for b in BUCKETS},
            "by": {
                dim: {
                    key: {b: _count_share(counts.get(b, 0), sum(counts.values())) for b in BUCKETS}
                    for key, counts in sorted(self.by[dim].items())
                }
                for dim in DIMENSIONS
            },
            "workload": {"reads": self.reads, "minutes": round(self.minutes, 1)},
            "turnaround": {
                "queued": self.queued,
                "wait_minutes": round(self.wait_minutes, 1),
                "mean_wait_minutes": round(self.wait_minutes / self.queued, 1) if self.queued else 0.0,
                "peak_queue": self.peak_queue,
            },
            "discrepancies": {g: {"sent": self.sent[g], "unseen": self.unseen[g]} for g in DISCREPANCY_GRADES},
        }


def _count_share(count: int, total: int) -> dict[str, Any]:
    return {"count": count, "share": round(count / total, 4) if total else 0.0}


@dataclass(frozen=True, slots=True)
class Simulation:
    """Both policies' figures over one window, and every graded discrepancy case."""

    since: datetime
    until: datetime
    workload: Workload
    baseline: PolicyFigures
    candidate: PolicyFigures
    cases: tuple[dict[str, Any], ...] = field(default=())
    history_source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``overread simulate --format json`` document (docs/simulate.md)."""
        base, cand = self.baseline.to_json(), self.candidate.to_json()
        return {
            "document_version": DOCUMENT_VERSION,
            "window": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "workload_policy": {
                "version": self.workload.label,
                "default_minutes": self.workload.default_minutes,
                "minutes": dict(sorted(self.workload.minutes.items())),
                "reading_hours": {
                    "from": self.workload.day_start.strftime("%H:%M"),
                    "to": self.workload.day_end.strftime("%H:%M"),
                    "days": [_DAYS[d] for d in sorted(self.workload.days)],
                },
            },
            "history_source": self.history_source,
            "baseline": base,
            "candidate": cand,
            "delta": _delta(base, cand),
            "discrepancy_cases": list(self.cases),
        }


def _delta(base: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
    """Candidate minus baseline for the headline figures."""
    return {
        "buckets": {b: cand["buckets"][b]["count"] - base["buckets"][b]["count"] for b in BUCKETS},
        "workload": {
            "reads": cand["workload"]["reads"] - base["workload"]["reads"],
            "minutes": round(cand["workload"]["minutes"] - base["workload"]["minutes"], 1),
        },
        "turnaround": {
            k: round(cand["turnaround"][k] - base["turnaround"][k], 1)
            if isinstance(base["turnaround"][k], float)
            else cand["turnaround"][k] - base["turnaround"][k]
            for k in ("queued", "wait_minutes", "mean_wait_minutes", "peak_queue")
        },
        "discrepancies": {
            g: {
                "sent": cand["discrepancies"][g]["sent"] - base["discrepancies"][g]["sent"],
                "unseen": cand["discrepancies"][g]["unseen"] - base["discrepancies"][g]["unseen"],
            }
            for g in DISCREPANCY_GRADES
        },
    }


# --------------------------------------------------------------------------
# simulating

#: The finding the pipeline adds when QA ran out of time (listener.pipeline.QA_TIMEOUT).
_QA_TIMEOUT = "qa.timeout"
#: Conditions that read the report text (the costly ones): checked after the others.
_TEXT_CONDITIONS = (CriticalFinding, HedgeDensity)

Plan = tuple[tuple[str, tuple[Condition, ...]], ...]


def bucket_plan(policy: RoutingPolicy) -> Plan:
    """The policy's enabled rules as (bucket, conditions), highest-precedence bucket first, each rule's
    text conditions last.

    Within a bucket the rules without a text condition come first (file
    order otherwise): any matched rule of a bucket gives that bucket, so a
    cheap rule that matches spares the text analysis.
    """
    rank = {b: i for i, b in enumerate(BUCKETS)}

    def reads_text(rule: Rule) -> bool:
        return any(isinstance(c, _TEXT_CONDITIONS) for c in rule.conditions)

    rules = sorted((r for r in policy.rules if r.enabled), key=lambda r: (rank[r.bucket], reads_text(r)))
    return tuple((r.bucket, tuple(sorted(r.conditions, key=lambda c: isinstance(c, _TEXT_CONDITIONS)))) for r in rules)


def decide_bucket(facts: Facts, policy: RoutingPolicy, plan: Plan) -> str:
    """The bucket :func:`listener.routing.decide_route` gives, without the explanation.

    ``decide_route`` checks every condition of every rule, because its
    explanation says why each one did or did not match; the bucket only
    needs the highest-precedence matched rule. So the rules are tried in
    precedence order (``plan``, :func:`bucket_plan`), each one's conditions
    stop at the first that fails, and the first rule that matches decides.
    A report whose QA did not finish goes where the policy's ``unchecked``
    says, as in ``decide_route``. tests/unit/test_simulate.py checks the
    two agree on every sample under the shipped and sample policies.
    """
    if any(f.rule == _QA_TIMEOUT for f in facts.findings):
        return policy.unchecked_bucket
    for bucket, conditions in plan:
        if all(c.check(facts)[0] for c in conditions):
            return bucket
    return "release"


@dataclass(slots=True)
class _Tally:
    buckets: Counter[str] = field(default_factory=Counter)
    by: dict[str, dict[str, Counter[str]]] = field(
        default_factory=lambda: {d: defaultdict(Counter) for d in DIMENSIONS}
    )
    reads: int = 0
    minutes: float = 0.0
    queued: int = 0
    wait: timedelta = timedelta(0)
    starts: Counter[datetime] = field(default_factory=Counter)


def _local(value: datetime, zone: tzinfo) -> datetime:
    """Site-local wall clock of an aware time (a naive one is already the sender's wall clock)."""
    return value if value.tzinfo is None else value.astimezone(zone)


def simulate(
    cases: Sequence[Case],
    graded: Sequence[GradedCase],
    *,
    baseline: tuple[str, RoutingPolicy],
    candidate: tuple[str, RoutingPolicy],
    workload: Workload,
    since: datetime,
    until: datetime,
    reader_history: Mapping[str, ReaderHistory] | None = None,
    group_history: Mapping[str, ReaderHistory] | None = None,
    history_source: str = "",
) -> Simulation:
    """Route every case under both policies and sum up.

    Args:
        cases: the stored reports (every version of the window's accessions).
        graded: the graded pairs of those accessions (any grade; grade 1 and
            ungraded pairs are not discrepancies and are skipped).
        baseline, candidate: (a name for the output, the policy).
        workload: minutes per modality and reading hours.
        since, until: the window (for the output; ``Case.in_window`` says which cases count).
        reader_history, group_history: peer-review figures both policies'
            ``*_discrepancy_rate`` conditions read (empty: readers.yaml's).
        history_source: where those figures come from, in words.

    Returns:
        The figures of both policies and the discrepancy cases, sorted.
    """
    policies = (baseline[1], candidate[1])
    tallies = (_Tally(), _Tally())
    decided: dict[tuple[int, int], tuple[str, str]] = {}
    context_args: dict[str, Any] = {
        "reader_history": reader_history or {},
        "group_history": group_history or {},
        "history_source": history_source,
    }
    directory = baseline[1].directory
    hashes: dict[tuple[int, int], Case] = {}
    plans = tuple(bucket_plan(p) for p in policies)
    # Both policies loaded against the same directory and vocabularies see the same facts:
    # one Facts per report then serves both (its text measures are computed once).
    shared = all(
        policies[0].directory is p.directory
        and policies[0].terms is p.terms
        and policies[0].default_timezone == p.default_timezone
        for p in policies
    )
    # One text cache for the whole run: its keys hold the text itself and the
    # vocabularies' digest (listener/text/cache.py), so a report whose text
    # another report of the run already has (a final that repeats its
    # preliminary, a resent message) reuses that text's sentences and mentions
    # instead of scanning again; the results are the same by construction
    # (docs/simulate.md, "Speed"). The cache lives and dies with this call, and
    # starts afresh every _CACHE_SPAN cases so memory stays bounded (about 3 KB
    # a text): the repeats it serves (a final hours after its preliminary) are
    # near each other in the run's time order.
    text_cache = TextCache()
    for index, case in enumerate(cases):
        if index and index % _CACHE_SPAN == 0:
            text_cache = TextCache()
        report = case.report
        context = RoutingContext(now=case.received, text_cache=text_cache, **context_args)
        facts: Facts | None = None
        routes_list = []
        for policy, plan in zip(policies, plans, strict=True):
            if facts is None or not shared:
                facts = Facts(report, case.findings, context, policy.directory, policy.terms, policy.default_timezone)
            routes_list.append(decide_bucket(facts, policy, plan))
        routes = tuple(routes_list)
        key = (case.message_pk, case.seq)
        decided[key] = (routes[0], routes[1])
        hashes[key] = case
        if not case.in_window:
            continue
        site = directory.site_for(report)
        info = directory.reader_info(report.reader)
        keys = {
            "site": (site.code if site is not None else report.site.upper()) or NONE_KEY,
            "modality": report.modality or NONE_KEY,
            "group": (info.group if info is not None else "") or NONE_KEY,
        }
        for policy, tally, bucket in zip(policies, tallies, routes, strict=True):
            tally.buckets[bucket] += 1
            for dim in DIMENSIONS:
                tally.by[dim][keys[dim]][bucket] += 1
            if bucket not in SECOND_READ_BUCKETS:
                continue
            tally.reads += 1
            tally.minutes += workload.minutes_for(report.modality)
            zone = site.timezone if site is not None else policy.default_timezone
            arrival = _local(case.received, zone)
            start = workload.next_start(arrival)
            if start is not None:
                tally.queued += 1
                tally.wait += start - arrival.replace(tzinfo=None)
                tally.starts[start] += 1
    sent: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    unseen: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    listed: list[dict[str, Any]] = []
    for g in graded:
        if g.grade not in DISCREPANCY_GRADES or g.before not in decided:
            continue
        buckets = decided[g.before]
        for i, bucket in enumerate(buckets):
            (sent if bucket in SECOND_READ_BUCKETS else unseen)[i][g.grade] += 1
        case = hashes[g.before]
        reader = case.report.reader.id.upper() if case.report.reader is not None else ""
        listed.append(
            {
                "accession": g.accession,
                "grade": g.grade,
                "pair": g.kind,
                "control_id": case.control_id,
                "reader": reader,
                "patient_hash": case.patient_hash,
                "baseline": buckets[0],
                "candidate": buckets[1],
                "candidate_sends": buckets[1] in SECOND_READ_BUCKETS,
                "baseline_sends": buckets[0] in SECOND_READ_BUCKETS,
            }
        )
    listed.sort(key=lambda d: (-DISCREPANCY_GRADES.index(d["grade"]), d["accession"], d["control_id"]))
    figures = tuple(
        PolicyFigures(
            name=name,
            version=policy.version,
            source=policy.source,
            buckets={b: tally.buckets[b] for b in BUCKETS},
            by={dim: {k: dict(v) for k, v in tally.by[dim].items()} for dim in DIMENSIONS},
            reads=tally.reads,
            minutes=tally.minutes,
            queued=tally.queued,
            wait_minutes=tally.wait.total_seconds() / 60,
            peak_queue=max(tally.starts.values(), default=0),
            sent={g: sent[i][g] for g in DISCREPANCY_GRADES},
            unseen={g: unseen[i][g] for g in DISCREPANCY_GRADES},
        )
        for i, ((name, policy), tally) in enumerate(zip((baseline, candidate), tallies, strict=True))
    )
    return Simulation(since, until, workload, figures[0], figures[1], tuple(listed), history_source)


# --------------------------------------------------------------------------
# the table


def render_table(doc: Mapping[str, Any]) -> str:
    """The side-by-side table (baseline | candidate | delta) of a :meth:`Simulation.to_json` document."""
    base, cand = doc["baseline"], doc["candidate"]
    rows: list[tuple[str, str, str, str]] = [("", base["name"], cand["name"], "delta")]

    def num(label: str, b: float, c: float, digits: int = 0) -> None:
        fmt = f"{{:.{digits}f}}" if digits else "{:d}"
        delta = c - b
        sign = "+" if delta > 0 else ""
        rows.append((label, fmt.format(b), fmt.format(c), sign + fmt.format(round(delta, digits) if digits else delta)))

    def section(title: str) -> None:
        rows.append((title, "", "", ""))

    section("reports in window")
    num("  reports", base["reports"], cand["reports"])
    section("buckets (count, share)")
    for b in BUCKETS:
        bb, cb = base["buckets"][b], cand["buckets"][b]
        delta = cb["count"] - bb["count"]
        rows.append(
            (
                f"  {b}",
                f"{bb['count']} ({bb['share'] * 100:.1f}%)",
                f"{cb['count']} ({cb['share'] * 100:.1f}%)",
                f"{'+' if delta > 0 else ''}{delta}",
            )
        )
    section("overread workload")
    num("  second reads", base["workload"]["reads"], cand["workload"]["reads"])
    num("  radiologist minutes", base["workload"]["minutes"], cand["workload"]["minutes"], 1)
    section("daytime queue (second reads arriving outside reading hours)")
    num("  reads waiting", base["turnaround"]["queued"], cand["turnaround"]["queued"])
    num("  total wait, minutes", base["turnaround"]["wait_minutes"], cand["turnaround"]["wait_minutes"], 1)
    num("  mean wait, minutes", base["turnaround"]["mean_wait_minutes"], cand["turnaround"]["mean_wait_minutes"], 1)
    num("  largest queue at a start", base["turnaround"]["peak_queue"], cand["turnaround"]["peak_queue"])
    section("recorded discrepancies: sent to a second read / released unseen")
    for g in DISCREPANCY_GRADES:
        bd, cd = base["discrepancies"][g], cand["discrepancies"][g]
        num(f"  grade {g} sent", bd["sent"], cd["sent"])
        num(f"  grade {g} unseen", bd["unseen"], cd["unseen"])
    for dim in DIMENSIONS:
        section(f"second reads by {dim}")
        keys = sorted(set(base["by"][dim]) | set(cand["by"][dim]))
        for key in keys:
            counts = [
                sum(side["by"][dim].get(key, {}).get(b, {}).get("count", 0) for b in SECOND_READ_BUCKETS)
                for side in (base, cand)
            ]
            num(f"  {key}", counts[0], counts[1])
    # Section titles (no figures) stand on their own line and do not widen the label column.
    widths = [max(len(r[i]) for r in rows if r[1] or r[2] or r[3]) for i in range(4)]
    lines = [
        f"window {doc['window']['since']} to {doc['window']['until']}",
        f"baseline  {base['name']}: {base['version']} ({base['source']})",
        f"candidate {cand['name']}: {cand['version']} ({cand['source']})",
        "",
    ]
    for r in rows:
        if not (r[1] or r[2] or r[3]):
            lines.append(r[0])
            continue
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}".rstrip())
    cases = [
        c for c in doc["discrepancy_cases"] if c["baseline_sends"] != c["candidate_sends"] or not c["candidate_sends"]
    ]
    lines.append("")
    lines.append(f"discrepancy cases the candidate releases unseen or treats differently ({len(cases)}):")
    for c in cases:
        lines.append(
            f"  {c['grade']:<2}  {c['accession']}  {c['pair']}  message {c['control_id']}  reader {c['reader'] or '-'}"
            f"  patient {c['patient_hash'] or '-'}  baseline {c['baseline']}  candidate {c['candidate']}"
        )
    return "\n".join(lines) + "\n"


def stored_case(
    *,
    message_pk: int,
    seq: int,
    control_id: str,
    received: datetime,
    report_json: str,
    findings_json: str,
    in_window: bool,
    hasher: Callable[[str], str] | None = None,
) -> Case:
    """A :class:`Case` from a stored report row's JSON texts (``hasher``: the keyed hash of the patient id)."""
    report = report_from_json(json.loads(report_json))
    patient = report.patient.id
    return Case(
        message_pk=message_pk,
        seq=seq,
        control_id=control_id,
        received=received,
        report=report,
        findings=findings_from_json(json.loads(findings_json) or ()),
        in_window=in_window,
        patient_hash=hasher(patient) if hasher is not None and patient else "",
    )
