"""The conditions a routing rule can state, parsed from YAML and checked against Facts.

Pure: no I/O, no clock, no logging. Each condition is a frozen value with one
method, ``check(facts) -> (matched, why)``; ``why`` is a short sentence a
manager can read ("modality MR not in [CT]"), used by the explanation.

Parsing is where an impossible condition is refused (hour 25, a sample rate
above 1, a minimum age above the maximum, a modality nobody sends...), each
error naming file, line and key. See :data:`CONDITION_KEYS` for the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from listener.model import PRIORITIES, ResultStatus, SectionKind, Severity
from listener.procedures import MODALITIES
from listener.routing.facts import TIME_SOURCES, Facts
from listener.routing.sampling import draw
from listener.sites import Directory, ReaderHistory
from listener.text import Terms
from listener.yamlconf import YamlMap

__all__ = [
    "BODY_REGIONS",
    "CONDITION_KEYS",
    "Condition",
    "LoadEnv",
    "parse_conditions",
]

#: Body regions of mappings/procedures.yaml (the decoder sets Report.body_region from it).
BODY_REGIONS = (
    "head", "orbit", "face", "neck", "face_neck", "chest", "heart", "breast", "abdomen", "pelvis",
    "abdomen_pelvis", "retroperitoneum", "scrotum", "esophagus", "upper_gi", "colon",
    "spine_cervical", "spine_thoracic", "spine_lumbar", "upper_extremity", "upper_extremity_joint",
    "lower_extremity", "lower_extremity_joint", "extremity_veins", "axial_skeleton",
    "appendicular_skeleton", "skull_base_to_mid_thigh", "whole_body", "any",
)  # fmt: skip
READER_TYPES = ("internal", "external", "unknown")
STATUSES = tuple(s.value for s in ResultStatus)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_CODE_RE = re.compile(r"^[0-9A-Z]{5}$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Condition(Protocol):
    """One test on a report; every condition of a rule must hold for the rule to match."""

    @property
    def key(self) -> str:
        """The YAML key that states it."""
        ...

    def check(self, facts: Facts) -> tuple[bool, str]:
        """(matched, why) for this report."""
        ...


@dataclass(frozen=True, slots=True)
class LoadEnv:
    """What parsing may validate against: the directory and the vocabularies."""

    directory: Directory
    terms: Terms | None


# --------------------------------------------------------------------------
# "one of" conditions: a field of the report must be one of the listed values


def _reader_type(f: Facts) -> tuple[str, str]:
    kind, source = f.reader_type
    return kind, f" ({f.reader_id or 'no reader'}, {source})"


_FIELDS: Mapping[str, Callable[[Facts], tuple[str, str]]] = MappingProxyType(
    {
        "site": lambda f: (f.site_code, "" if f.site is not None else " (not in sites.yaml)"),
        "client": lambda f: (f.client, f" (site {f.site_code or 'unknown'})"),
        "modality": lambda f: (f.report.modality.upper(), ""),
        "body_region": lambda f: (f.report.body_region.lower(), ""),
        "procedure_code": lambda f: (f.report.procedure.code.upper(), ""),
        "priority": lambda f: (f.report.priority.lower(), ""),
        "status": lambda f: (f.report.status.value, ""),
        "reader_type": _reader_type,
        "reader": lambda f: (f.reader_id, ""),
    }
)


@dataclass(frozen=True, slots=True)
class OneOf:
    """``key: [values]``: the report's field is one of the values (case as normalised)."""

    key: str
    values: tuple[str, ...]
    # Fixed per policy, computed once instead of on every report.
    _folded: frozenset[str] = field(init=False, repr=False, compare=False)
    _listed: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_folded", frozenset(v.casefold() for v in self.values))
        object.__setattr__(self, "_listed", ", ".join(self.values))

    def check(self, facts: Facts) -> tuple[bool, str]:
        actual, note = _FIELDS[self.key](facts)
        ok = actual.casefold() in self._folded
        verb = "in" if ok else "not in"
        return ok, f"{self.key} {actual or '(none)'}{note} {verb} [{self._listed}]"


def _one_of(node: YamlMap, key: str, env: LoadEnv, where: str) -> OneOf:
    items = node.get_list(key)
    values = items.strings()
    if not values:
        raise node.error(key, f"{where}.{key}: list at least one value")
    known: tuple[str, ...] | None = None
    norm: Callable[[str], str] = str.upper
    if key == "modality":
        known = MODALITIES
    elif key == "body_region":
        known, norm = BODY_REGIONS, str.lower
    elif key == "priority":
        known, norm = PRIORITIES, str.lower
    elif key == "status":
        known, norm = STATUSES, str.lower
    elif key == "reader_type":
        known, norm = READER_TYPES, str.lower
    elif key == "site" and env.directory.sites:
        known = tuple(env.directory.sites)
    elif key == "reader" and env.directory.readers:
        known = tuple(env.directory.readers)
    elif key == "client":
        clients = tuple(sorted({s.client for s in env.directory.sites.values() if s.client}))
        known, norm = (clients or None), str
    out = []
    for i, raw in enumerate(values):
        value = norm(raw.strip())
        if key == "procedure_code" and not _CODE_RE.match(value):
            raise items.error(i, f"{where}.{key}: {raw!r} is not a 5-character procedure code like 70450")
        if known is not None and value.casefold() not in {k.casefold() for k in known}:
            raise items.error(i, f"{where}.{key}: unknown value {raw!r} (known: {', '.join(known)})")
        out.append(value)
    return OneOf(key, tuple(out))


# --------------------------------------------------------------------------
# patient age


@dataclass(frozen=True, slots=True)
class PatientAge:
    """``patient_age: {min: 0, max: 17}``: whole years on the exam date, bounds inclusive."""

    minimum: int | None
    maximum: int | None
    key: str = "patient_age"

    def check(self, facts: Facts) -> tuple[bool, str]:
        age = facts.age_years()
        bounds = (
            f"{self.minimum if self.minimum is not None else 0}-{self.maximum if self.maximum is not None else 'any'}"
        )
        if age is None:
            return False, f"patient_age unknown (no birth date), needs {bounds}"
        ok = (self.minimum is None or age >= self.minimum) and (self.maximum is None or age <= self.maximum)
        return ok, f"patient_age {age} {'within' if ok else 'outside'} {bounds} years"


def _whole(node: YamlMap, key: str, where: str, minimum: float = 0) -> int:
    value = node.get_number(key, minimum=minimum)
    if value != int(value):
        raise node.error(key, f"{where}.{key} must be a whole number")
    return int(value)


def _patient_age(node: YamlMap, key: str, env: LoadEnv, where: str) -> PatientAge:
    sub = node.get_map(key)
    here = f"{where}.{key}"
    sub.reject_unknown({"min", "max"}, here)
    low = _whole(sub, "min", here) if "min" in sub else None
    high = _whole(sub, "max", here) if "max" in sub else None
    if low is None and high is None:
        raise node.error(key, f"{here}: give min and/or max (whole years)")
    if high is not None and high > 130:
        raise sub.error("max", f"{here}.max: {high} years is not a possible age")
    if low is not None and high is not None and low > high:
        raise sub.error("min", f"{here}: min {low} is above max {high}: no patient can match")
    return PatientAge(low, high)


# --------------------------------------------------------------------------
# coverage window (site-local wall clock)


@dataclass(frozen=True, slots=True)
class CoverageWindow:
    """``coverage_window: {from: "22:00", to: "07:00"}`` in site-local time.

    ``from`` is inclusive and ``to`` exclusive; a window whose ``to`` is earlier
    than its ``from`` runs through midnight. ``days`` (optional) limits it to
    local weekdays of the time itself. ``time`` says which report time is read.
    """

    start: int  # minutes after local midnight
    end: int
    days: tuple[str, ...]
    time: str
    key: str = "coverage_window"
    _span: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        span = f"{_hhmm(self.start)}-{_hhmm(self.end)}" + (f" on {', '.join(self.days)}" if self.days else "")
        object.__setattr__(self, "_span", span)

    def check(self, facts: Facts) -> tuple[bool, str]:
        local, used = facts.event_time(self.time)
        _, zone_name = facts.timezone
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            inside = self.start <= minute < self.end
        else:
            inside = minute >= self.start or minute < self.end
        day = DAYS[local.weekday()]
        day_ok = not self.days or day in self.days
        ok = inside and day_ok
        span = self._span
        when = f"{used} time {local:%a %Y-%m-%d %H:%M} {zone_name}"
        return ok, f"coverage_window {when} {'inside' if ok else 'outside'} {span}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _clock(sub: YamlMap, key: str, here: str, *, allow_24: bool) -> int:
    value = sub.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320.
        raise sub.error(key, f'{here}.{key}: write the time in quotes, like "22:00"')
    text = sub.get_str(key)
    match = _TIME_RE.match(text.strip())
    if not match:
        raise sub.error(key, f"{here}.{key}: {text!r} is not a time like 22:00")
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute > 59 or hour > 24 or (hour == 24 and (minute or not allow_24)):
        raise sub.error(key, f"{here}.{key}: {text!r} is not a time of day (00:00 to 23:59)")
    return hour * 60 + minute


def _coverage_window(node: YamlMap, key: str, env: LoadEnv, where: str) -> CoverageWindow:
    sub = node.get_map(key)
    here = f"{where}.{key}"
    sub.reject_unknown({"from", "to", "days", "time"}, here)
    for part in ("from", "to"):
        if part not in sub:
            raise node.error(key, f"{here}: missing {part!r}")
    start = _clock(sub, "from", here, allow_24=False)
    end = _clock(sub, "to", here, allow_24=True)
    if start == end % (24 * 60):
        raise sub.error(
            "to", f"{here}: from and to are equal: the window is empty (or all day: leave the condition out)"
        )
    days: tuple[str, ...] = ()
    if "days" in sub:
        items = sub.get_list("days")
        out = []
        for i, raw in enumerate(items.strings()):
            day = raw.strip().lower()[:3]
            if day not in DAYS or not raw.strip().lower().startswith(day):
                raise items.error(i, f"{here}.days: {raw!r} is not a weekday ({', '.join(DAYS)})")
            out.append(day)
        days = tuple(out)
    time = sub.get_choice("time", TIME_SOURCES, "message")
    return CoverageWindow(start, end % (24 * 60) if end == 24 * 60 else end, days, time)


# --------------------------------------------------------------------------
# text triggers


@dataclass(frozen=True, slots=True)
class CriticalFinding:
    """``critical_finding: true`` or ``[concepts]``: a critical finding stated as present.

    Read from the report text with the QA vocabularies (policies/terms): negated,
    hedged, historical, hypothetical ("rule out") and family-history mentions
    do not count.
    """

    concepts: tuple[str, ...]  # empty: any critical concept
    key: str = "critical_finding"

    def check(self, facts: Facts) -> tuple[bool, str]:
        hits = [m for m in facts.affirmed_critical() if not self.concepts or m.concept in self.concepts]
        wanted = f"[{', '.join(self.concepts)}]" if self.concepts else "any critical concept"
        if hits:
            names = sorted({m.concept for m in hits})
            return True, f"critical_finding affirmed: {', '.join(names)} (wanted {wanted})"
        others = sorted({m.concept for m in facts.mentions() if m.critical})
        extra = f"; mentioned but not affirmed: {', '.join(others)}" if others else ""
        return False, f"critical_finding none affirmed (wanted {wanted}){extra}"


def _critical_finding(node: YamlMap, key: str, env: LoadEnv, where: str) -> CriticalFinding:
    value = node.get(key)
    here = f"{where}.{key}"
    if env.terms is None:
        raise node.error(key, f"{here}: needs the term vocabularies (policies/terms)")
    if isinstance(value, bool):
        if not value:
            raise node.error(key, f"{here}: false is not a condition; leave the key out")
        return CriticalFinding(())
    items = node.get_list(key)
    names = items.strings()
    if not names:
        raise node.error(key, f"{here}: true, or a list of critical concepts")
    for i, name in enumerate(names):
        concept = env.terms.concepts.get(name)
        if concept is None:
            raise items.error(i, f"{here}: unknown concept {name!r} (see policies/terms/critical_findings.yaml)")
        if not concept.critical:
            raise items.error(i, f"{here}: concept {name!r} is not marked critical")
    return CriticalFinding(names)


@dataclass(frozen=True, slots=True)
class HedgeDensity:
    """``hedge_density: {above: 0.5, section: impression}``: hedging phrases per sentence."""

    above: float
    section: SectionKind
    key: str = "hedge_density"

    def check(self, facts: Facts) -> tuple[bool, str]:
        hedges, sentences = facts.hedging(self.section)
        if not sentences:
            return False, f"hedge_density no {self.section.value} text"
        density = hedges / sentences
        ok = density > self.above
        relation = "above" if ok else "not above"
        return ok, (
            f"hedge_density {density:.2f} in {self.section.value} ({hedges} hedges / {sentences} sentences)"
            f" {relation} {self.above:g}"
        )


def _hedge_density(node: YamlMap, key: str, env: LoadEnv, where: str) -> HedgeDensity:
    sub = node.get_map(key)
    here = f"{where}.{key}"
    sub.reject_unknown({"above", "section"}, here)
    if env.terms is None:
        raise node.error(key, f"{here}: needs the term vocabularies (policies/terms)")
    above = sub.get_number("above", minimum=0)
    section = sub.get_choice("section", tuple(k.value for k in SectionKind), "impression")
    return HedgeDensity(above, SectionKind(section))


# --------------------------------------------------------------------------
# QA findings


@dataclass(frozen=True, slots=True)
class QaFinding:
    """``qa_finding: {min_severity: error, rules: [...], categories: [...]}``: a QA finding like that."""

    min_severity: Severity
    rules: tuple[str, ...]
    categories: tuple[str, ...]
    key: str = "qa_finding"

    def check(self, facts: Facts) -> tuple[bool, str]:
        hits = sorted(
            {
                f.rule
                for f in facts.findings
                if f.severity.rank >= self.min_severity.rank
                and (not self.rules or f.rule in self.rules)
                and (not self.categories or f.category in self.categories)
            }
        )
        scope = f"severity >= {self.min_severity.value}"
        if self.rules:
            scope += f", rules [{', '.join(self.rules)}]"
        if self.categories:
            scope += f", categories [{', '.join(self.categories)}]"
        if hits:
            return True, f"qa_finding {', '.join(hits)} ({scope})"
        return False, f"qa_finding none of {len(facts.findings)} finding(s) with {scope}"


def _qa_finding(node: YamlMap, key: str, env: LoadEnv, where: str) -> QaFinding:
    from listener.model import CATEGORIES

    sub = node.get_map(key)
    here = f"{where}.{key}"
    sub.reject_unknown({"min_severity", "rules", "categories"}, here)
    severity = Severity(sub.get_choice("min_severity", tuple(s.value for s in Severity), "error"))
    rules: tuple[str, ...] = ()
    if "rules" in sub:
        items = sub.get_list("rules")
        rules = items.strings()
        for i, rule_id in enumerate(rules):
            category, dot, name = rule_id.partition(".")
            if not dot or category not in CATEGORIES or not _NAME_RE.match(name):
                raise items.error(
                    i, f"{here}.rules: {rule_id!r} is not a rule id like laterality.impression_vs_findings"
                )
    categories: tuple[str, ...] = ()
    if "categories" in sub:
        items = sub.get_list("categories")
        categories = items.strings()
        for i, category in enumerate(categories):
            if category not in CATEGORIES:
                raise items.error(
                    i, f"{here}.categories: unknown category {category!r} (known: {', '.join(CATEGORIES)})"
                )
    return QaFinding(severity, rules, categories)


# --------------------------------------------------------------------------
# reader triggers


@dataclass(frozen=True, slots=True)
class ReaderLacksSubspecialty:
    """``reader_lacks_subspecialty: pediatric_neuroradiology``: the reader has none of these."""

    subspecialties: tuple[str, ...]
    key: str = "reader_lacks_subspecialty"

    def check(self, facts: Facts) -> tuple[bool, str]:
        has = [s for s in self.subspecialties if s in facts.subspecialties]
        who = facts.reader_id or "no reader"
        if has:
            return False, f"reader_lacks_subspecialty {who} has {', '.join(has)}"
        known = "" if facts.reader_info is not None else " (reader not in readers.yaml)"
        return True, f"reader_lacks_subspecialty {who} lacks {', '.join(self.subspecialties)}{known}"


def _lacks_subspecialty(node: YamlMap, key: str, env: LoadEnv, where: str) -> ReaderLacksSubspecialty:
    items = node.get_list(key)
    names = tuple(s.strip().lower() for s in items.strings())
    if not names:
        raise node.error(key, f"{where}.{key}: name at least one subspecialty")
    for i, name in enumerate(names):
        if not _NAME_RE.match(name):
            raise items.error(i, f"{where}.{key}: {name!r} is not a subspecialty name like neuroradiology")
    return ReaderLacksSubspecialty(names)


def _snapshot_label(history: ReaderHistory, summed: int = 0) -> str:
    of = f" (sum of {summed} readers)" if summed > 1 else ""
    return f"readers.yaml snapshot{of}" + (f" as of {history.as_of}" if history.as_of else "")


def _rate_check(
    key: str,
    who: str,
    above: float,
    min_reads: int,
    live: ReaderHistory | None,
    source: str,
    snapshot: ReaderHistory | None,
    snapshot_label: str,
) -> tuple[bool, str]:
    """The shared verdict of the discrepancy-rate conditions (docs/routing.md).

    Live figures with at least ``min_reads`` graded reads decide; otherwise
    the readers.yaml snapshot does, labelled as the fallback with the reason.
    """

    def verdict(history: ReaderHistory, reads: str, label: str) -> tuple[bool, str]:
        ok = history.rate > above
        return ok, (
            f"{key} {who} {history.rate:.1%} ({history.discrepancies}/{history.reads} {reads}, {label})"
            f" {'above' if ok else 'not above'} {above:.1%}"
        )

    if live is not None and live.reads >= min_reads:
        return verdict(live, "graded reads", source)
    if not source:
        why = "no live figures"
    elif live is None:
        why = f"no graded reads in {source}"
    else:
        why = f"{live.reads} graded reads in {source}, fewer than {min_reads}"
    if snapshot is None:
        return False, f"{key} {who}: {why}; no readers.yaml snapshot"
    label = f"{snapshot_label} (fallback: {why})"
    if snapshot.reads < min_reads:
        return False, f"{key} {who}: {snapshot.reads} reviewed reads, fewer than {min_reads} ({label})"
    return verdict(snapshot, "reviewed reads", label)


@dataclass(frozen=True, slots=True)
class ReaderDiscrepancyRate:
    """``reader_discrepancy_rate: {above: 0.05, min_reads: 50}``: the reader's significant-discrepancy rate.

    Live figures (graded reads over the daemon's window) decide when they
    reach ``min_reads``; else the reader's readers.yaml ``peer_review``
    snapshot, labelled as the fallback.
    """

    above: float
    min_reads: int
    key: str = "reader_discrepancy_rate"

    def check(self, facts: Facts) -> tuple[bool, str]:
        who = facts.reader_id
        if not who:
            return False, f"{self.key}: no reader on the report"
        snapshot = facts.snapshot_reader()
        label = _snapshot_label(snapshot) if snapshot is not None else ""
        return _rate_check(
            self.key, who, self.above, self.min_reads, facts.live_reader(), facts.live_source, snapshot, label
        )


@dataclass(frozen=True, slots=True)
class GroupDiscrepancyRate:
    """``group_discrepancy_rate: {above: 0.05, min_reads: 50}``: the rate of the reader's group.

    The group is the reader's ``group`` in readers.yaml. Live figures for the
    group decide when they reach ``min_reads``; else the sum of the group's
    readers' ``peer_review`` snapshots (``snapshots``, summed when the policy
    is built), labelled as the fallback.
    """

    above: float
    min_reads: int
    snapshots: Mapping[str, tuple[ReaderHistory, int]] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )
    key: str = "group_discrepancy_rate"

    def check(self, facts: Facts) -> tuple[bool, str]:
        group = facts.group
        if not group:
            why = "reader not in readers.yaml" if facts.reader_info is None else "no group in readers.yaml"
            return False, f"{self.key} {facts.reader_id or 'no reader'}: {why}"
        found = self.snapshots.get(group)
        snapshot, label = (found[0], _snapshot_label(*found)) if found is not None else (None, "")
        return _rate_check(
            self.key,
            f"{group} (reader {facts.reader_id})",
            self.above,
            self.min_reads,
            facts.live_group(),
            facts.live_source,
            snapshot,
            label,
        )


def _group_snapshots(directory: Directory) -> Mapping[str, tuple[ReaderHistory, int]]:
    """Group -> (its readers' snapshots summed, how many readers had one)."""
    parts: dict[str, list[ReaderHistory]] = {}
    for info in directory.readers.values():
        if info.group and info.history is not None:
            parts.setdefault(info.group, []).append(info.history)
    out: dict[str, tuple[ReaderHistory, int]] = {}
    for group, items in parts.items():
        dates = sorted({h.as_of for h in items if h.as_of})
        as_of = dates[0] if len(dates) == 1 else (f"{dates[0]} to {dates[-1]}" if dates else "")
        total = ReaderHistory(sum(h.reads for h in items), sum(h.discrepancies for h in items), as_of)
        out[group] = (total, len(items))
    return MappingProxyType(out)


def _rate_bounds(node: YamlMap, key: str, where: str) -> tuple[float, int]:
    sub = node.get_map(key)
    here = f"{where}.{key}"
    sub.reject_unknown({"above", "min_reads"}, here)
    above = sub.get_number("above", minimum=0)
    if above >= 1:
        raise sub.error("above", f"{here}.above: a rate is a fraction below 1 (0.05 = 5%)")
    return above, (_whole(sub, "min_reads", here, 1) if "min_reads" in sub else 30)


def _discrepancy_rate(node: YamlMap, key: str, env: LoadEnv, where: str) -> ReaderDiscrepancyRate:
    return ReaderDiscrepancyRate(*_rate_bounds(node, key, where))


def _group_discrepancy_rate(node: YamlMap, key: str, env: LoadEnv, where: str) -> GroupDiscrepancyRate:
    above, min_reads = _rate_bounds(node, key, where)
    return GroupDiscrepancyRate(above, min_reads, _group_snapshots(env.directory))


@dataclass(frozen=True, slots=True)
class Sample:
    """``sample: {rate: 0.05, salt: "2026"}``: a stable draw over (salt, reader, accession)."""

    rate: float
    salt: str
    key: str = "sample"

    def check(self, facts: Facts) -> tuple[bool, str]:
        accession = facts.report.accession or facts.report.message_id
        value = draw(self.salt, facts.reader_id, accession)
        ok = value < self.rate
        return (
            ok,
            f"sample draw {value:.4f} for reader {facts.reader_id or '(none)'} {'<' if ok else '>='} rate {self.rate:g}",
        )


def _sample(node: YamlMap, key: str, env: LoadEnv, where: str) -> Sample:
    sub = node.get_map(key)
    here = f"{where}.{key}"
    sub.reject_unknown({"rate", "salt"}, here)
    rate = sub.get_number("rate", minimum=0)
    if rate > 1:
        raise sub.error("rate", f"{here}.rate: {rate:g} is above 1 (0.05 = 5%)")
    if rate == 0:
        raise sub.error("rate", f"{here}.rate: 0 never matches; disable the rule instead")
    return Sample(rate, sub.get_str("salt", ""))


# --------------------------------------------------------------------------

_Parser = Callable[[YamlMap, str, LoadEnv, str], Any]
_PARSERS: Mapping[str, _Parser] = MappingProxyType(
    {
        **dict.fromkeys(_FIELDS, _one_of),
        "patient_age": _patient_age,
        "coverage_window": _coverage_window,
        "critical_finding": _critical_finding,
        "hedge_density": _hedge_density,
        "qa_finding": _qa_finding,
        "reader_lacks_subspecialty": _lacks_subspecialty,
        "reader_discrepancy_rate": _discrepancy_rate,
        "group_discrepancy_rate": _group_discrepancy_rate,
        "sample": _sample,
    }
)

#: Every key a rule's ``when:`` may use.
CONDITION_KEYS: tuple[str, ...] = tuple(_PARSERS)


def parse_conditions(node: YamlMap, env: LoadEnv, where: str) -> tuple[Condition, ...]:
    """Parse a rule's ``when:`` mapping; every key is validated (ConfigError with file:line).

    Args:
        node: the ``when:`` mapping.
        env: the directory and vocabularies to validate names against.
        where: the key path for messages, e.g. ``rules.overnight_neuro.when``.
    """
    node.reject_unknown(set(_PARSERS), where)
    out: list[Condition] = []
    for key in node:
        if node.get(key) is None:
            raise node.error(key, f"{where}.{key}: empty condition")
        out.append(_PARSERS[key](node, key, env, where))
    return tuple(out)
