"""Scorecards: per reader, group, site, modality or body region, what overreads found over a window.

Pure: it reads the graded chains it is given (:class:`AccessionOutcome`, filled
by the shell, :mod:`listener.outcome_data`) and the readers directory; no I/O,
no clock, no store. docs/outcomes.md, "Scorecards", defines every figure;
docs/cli.md ("scorecard") lists the JSON keys.

The subject of a graded pair is its ``before`` version: the reader whose read
a later version replaced (the preliminary's reader for ``prelim_to_final``).
A version belongs to the window when its clinical time (report time, else
receive time) is in ``[since, until)``; a pair counts when its ``before`` does,
wherever its ``after`` falls.

Rates: ``count / denominator`` with a Wilson 95% score interval; a rate over
fewer than ``min_reads`` is not given (None), and the row's ``note`` says so.
Percentiles: the median is the middle value (the mean of the two middle
values for an even count); p90 is the nearest rank, the ``ceil(0.9 n)``-th
smallest value.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from listener.outcomes.graded import AccessionOutcome, GradedPair, LoneReads
from listener.outcomes.history import Version, prelim_minutes
from listener.sites import Directory

__all__ = [
    "BY",
    "DISCREPANCY_KEYS",
    "DOCUMENT_VERSION",
    "Rate",
    "Scorecard",
    "ScorecardRow",
    "Spread",
    "percentile",
    "prelim_to_final",
    "render_csv",
    "render_text",
    "scorecard",
    "spread",
    "wilson",
]

#: What a scorecard groups by.
BY = ("reader", "group", "site", "modality", "body_region")
#: The discrepancy figures of a row: any grade other than 1, each grade, and "significant" (2b, 3b).
DISCREPANCY_KEYS = ("any", "2a", "2b", "3a", "3b", "significant")
#: The version of the JSON document's layout (docs/cli.md, "scorecard").
DOCUMENT_VERSION = 1
#: z for a two-sided 95% interval.
Z95 = 1.959963984540054
#: The key of a subject the data does not name.
NO_READER = "(no reader)"
NOT_IN_DIRECTORY = "(not in readers.yaml)"
NO_GROUP = "(no group)"
_MISSING = {"site": "(no site)", "modality": "(no modality)", "body_region": "(no body region)"}
_SIGNIFICANT = frozenset({"2b", "3b"})
_PRELIM, _FINAL = 0, 1
_CANCELLED = 4


def wilson(count: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``count`` successes in ``total`` trials (``total`` > 0)."""
    if total <= 0:
        raise ValueError("the Wilson interval needs at least one trial")
    p = count / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the ``ceil(q/100 * n)``-th smallest of ``values`` (non-empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` of ``of``; ``rate``, ``low`` and ``high`` None when ``of`` is below the minimum."""

    count: int
    of: int
    rate: float | None
    low: float | None = None
    high: float | None = None

    def to_json(self, interval: bool = True) -> dict[str, Any]:
        """``{"count", "of", "rate"}`` and, with ``interval``, ``"low"`` and ``"high"``."""
        out: dict[str, Any] = {"count": self.count, "of": self.of, "rate": _round(self.rate)}
        if interval:
            out["low"] = _round(self.low)
            out["high"] = _round(self.high)
        return out


@dataclass(frozen=True, slots=True)
class Spread:
    """Minutes: how many, median and p90 (None when there are none)."""

    count: int
    median: float | None
    p90: float | None

    def to_json(self) -> dict[str, Any]:
        """``{"count", "median", "p90"}``, minutes to one decimal."""
        return {
            "count": self.count,
            "median": None if self.median is None else round(self.median, 1),
            "p90": None if self.p90 is None else round(self.p90, 1),
        }


@dataclass(frozen=True, slots=True)
class ScorecardRow:
    """One subject's figures (docs/outcomes.md, "Scorecards").

    Attributes:
        key: the reader id, group name, site, modality or body region.
        group: the reader's group (reader rows only, else None).
        readers: the reader ids whose reads the row counts (group rows; else empty).
        reads: versions of the subject in the window, cancelled ones left out.
        prelims, finals: of those, preliminary (or partial) and final ones.
        overread: reads a later version replaced (the ``before`` of a pair).
        graded: overread reads whose pair has a grade (explicit, else proposed).
        discrepancies: by :data:`DISCREPANCY_KEYS`, a rate over ``graded``.
        too_few: ``graded`` is below the minimum: no discrepancy rate is given.
        note: why a figure is missing ("" when none is).
        differing: comparable pairs with at least one difference.
        interpretive_share: of ``differing``, the share with an interpretive
            difference; operational_share: the share whose differences are all
            operational (the two add up to 1). None when too few or none differ.
        operational_kinds: per operational difference kind, the pairs that have it.
        qa_defects: per QA finding category, reads whose stored findings have it (rate over reads).
        prelim_minutes: exam time to preliminary report time, of the subject's preliminaries.
        prelim_to_final_minutes: preliminary to final report time, of its ``prelim_to_final`` pairs.
        corrected: finals replaced by a corrected or amended version (rate over finals).
        addendum: reads replaced by a corrected or amended version that has an
            addendum section, or with one themselves when they replace no
            version (rate over reads). An addendum counts once, on the read it
            amends, not again on the version that carries it.
        disagreements: graded pairs whose explicit grade differs from the proposal.
    """

    key: str
    group: str | None
    readers: tuple[str, ...]
    reads: int
    prelims: int
    finals: int
    overread: int
    graded: int
    discrepancies: Mapping[str, Rate]
    too_few: bool
    note: str
    differing: int
    interpretive_share: float | None
    operational_share: float | None
    operational_kinds: Mapping[str, int]
    qa_defects: Mapping[str, Rate]
    prelim_minutes: Spread
    prelim_to_final_minutes: Spread
    corrected: Rate
    addendum: Rate
    disagreements: int

    def to_json(self) -> dict[str, Any]:
        """The row as the JSON document gives it (docs/cli.md, "scorecard")."""
        out: dict[str, Any] = {"key": self.key}
        if self.group is not None:
            out["group"] = self.group
        if self.readers:
            out["readers"] = list(self.readers)
        out.update(
            {
                "reads": self.reads,
                "prelims": self.prelims,
                "finals": self.finals,
                "overread": self.overread,
                "graded": self.graded,
                "discrepancies": {k: self.discrepancies[k].to_json() for k in DISCREPANCY_KEYS},
                "too_few": self.too_few,
                "note": self.note,
                "differing": self.differing,
                "interpretive_share": _round(self.interpretive_share),
                "operational_share": _round(self.operational_share),
                "operational_kinds": dict(self.operational_kinds),
                "qa_defects": {k: v.to_json(interval=False) for k, v in self.qa_defects.items()},
                "turnaround": {
                    "prelim_minutes": self.prelim_minutes.to_json(),
                    "prelim_to_final_minutes": self.prelim_to_final_minutes.to_json(),
                },
                "corrected": self.corrected.to_json(interval=False),
                "addendum": self.addendum.to_json(interval=False),
                "disagreements": self.disagreements,
            }
        )
        return out


@dataclass(frozen=True, slots=True)
class Scorecard:
    """The rows of one scorecard, most reads first, then by key."""

    by: str
    since: datetime
    until: datetime
    min_reads: int
    only: str | None
    rows: tuple[ScorecardRow, ...]

    def to_json(self) -> dict[str, Any]:
        """The document ``overread scorecard --format json`` prints and ``/api/scorecard`` serves."""
        return {
            "document_version": DOCUMENT_VERSION,
            "by": self.by,
            "only": self.only,
            "window": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "min_reads": self.min_reads,
            "rows": [r.to_json() for r in self.rows],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _rate(count: int, of: int, min_reads: int, interval: bool = True) -> Rate:
    if of < max(min_reads, 1):
        return Rate(count, of, None)
    if not interval:
        return Rate(count, of, count / of)
    low, high = wilson(count, of)
    return Rate(count, of, count / of, low, high)


def spread(values: Sequence[float]) -> Spread:
    """How many ``values`` (minutes), their median and p90."""
    if not values:
        return Spread(0, None, None)
    return Spread(len(values), _median(values), percentile(values, 90))


def _minutes(start: datetime, end: datetime) -> float | None:
    """Minutes from ``start`` to ``end``; None when negative (a clock or data error)."""
    minutes = (end - start).total_seconds() / 60
    return minutes if minutes >= 0 else None


def _to_final_minutes(graded: GradedPair, before: Version, after: Version) -> float | None:
    """Minutes from a preliminary to its final (None: not a ``prelim_to_final`` pair, or negative)."""
    if graded.pair.kind != "prelim_to_final":
        return None
    return _minutes(before.clinical_time, after.clinical_time)


def prelim_to_final(
    outcomes: Iterable[AccessionOutcome], *, since: datetime, until: datetime
) -> tuple[tuple[datetime, float], ...]:
    """Each preliminary of ``[since, until)`` (by clinical time) that a final replaced: its clinical
    time and the minutes to the final, as the scorecard's ``prelim_to_final_minutes`` counts them;
    sorted by time."""
    out = []
    for outcome in outcomes:
        replaced_by = {g.pair.before: g for g in outcome.graded}
        for v in outcome.chain.versions:
            graded = replaced_by.get(v.position)
            if graded is None or v.stage == _CANCELLED or not since <= v.clinical_time < until:
                continue
            minutes = _to_final_minutes(graded, v, outcome.after(graded))
            if minutes is not None:
                out.append((v.clinical_time, minutes))
    out.sort()
    return tuple(out)


def _reader_group(reader_id: str, directory: Directory) -> str:
    if not reader_id:
        return NOT_IN_DIRECTORY
    info = directory.readers.get(reader_id.upper())
    if info is None:
        return NOT_IN_DIRECTORY
    return info.group or NO_GROUP


def _key_function(by: str, directory: Directory) -> Callable[[Version | LoneReads], str]:
    def reader(v: Version | LoneReads) -> str:
        return v.reader_id or NO_READER

    def group(v: Version | LoneReads) -> str:
        return _reader_group(v.reader_id, directory)

    def field_of(v: Version | LoneReads) -> str:
        return str(getattr(v, by)) or _MISSING[by]

    return {"reader": reader, "group": group}.get(by, field_of)


@dataclass(slots=True)
class _Tally:
    """What one subject's rows are computed from (mutable while collecting)."""

    reads: int = 0
    prelims: int = 0
    finals: int = 0
    overread: int = 0
    readers: set[str] = field(default_factory=set)
    graded: list[GradedPair] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    prelim_minutes: list[float] = field(default_factory=list)
    to_final_minutes: list[float] = field(default_factory=list)
    corrected: int = 0
    addendum: int = 0


def _note(graded: int, min_reads: int) -> str:
    if graded >= min_reads:
        return ""
    count = "no graded reads" if graded == 0 else f"{graded} graded read{'s' if graded != 1 else ''}"
    return f"{count}: too few for a rate (needs {min_reads})"


def _row(key: str, by: str, tally: _Tally, directory: Directory, min_reads: int) -> ScorecardRow:
    graded = len(tally.graded)
    too_few = graded < min_reads
    grades = [g.grade for g in tally.graded]
    counts = {
        "any": sum(1 for g in grades if g != "1"),
        "significant": sum(1 for g in grades if g in _SIGNIFICANT),
        **{k: sum(1 for g in grades if g == k) for k in ("2a", "2b", "3a", "3b")},
    }
    differing = [g for g in tally.graded if g.comparable and (g.interpretive or g.operational)]
    interpretive = sum(1 for g in differing if g.interpretive)
    shares_given = not too_few and bool(differing)
    kinds: dict[str, int] = {}
    for g in differing:
        for kind in g.operational_kinds:
            kinds[kind] = kinds.get(kind, 0) + 1
    return ScorecardRow(
        key=key,
        group=_reader_group(key if key != NO_READER else "", directory) if by == "reader" else None,
        readers=tuple(sorted(tally.readers)) if by == "group" else (),
        reads=tally.reads,
        prelims=tally.prelims,
        finals=tally.finals,
        overread=tally.overread,
        graded=graded,
        discrepancies={k: _rate(counts[k], graded, min_reads) for k in DISCREPANCY_KEYS},
        too_few=too_few,
        note=_note(graded, min_reads),
        differing=len(differing),
        interpretive_share=interpretive / len(differing) if shares_given else None,
        operational_share=(len(differing) - interpretive) / len(differing) if shares_given else None,
        operational_kinds=dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
        qa_defects={
            c: _rate(n, tally.reads, min_reads, interval=False)
            for c, n in sorted(tally.categories.items(), key=lambda kv: (-kv[1], kv[0]))
        },
        prelim_minutes=spread(tally.prelim_minutes),
        prelim_to_final_minutes=spread(tally.to_final_minutes),
        corrected=_rate(tally.corrected, tally.finals, min_reads, interval=False),
        addendum=_rate(tally.addendum, tally.reads, min_reads, interval=False),
        disagreements=sum(1 for g in tally.graded if g.disagreement),
    )


def scorecard(
    outcomes: Iterable[AccessionOutcome],
    *,
    by: str,
    directory: Directory,
    since: datetime,
    until: datetime,
    min_reads: int = 30,
    only: str | None = None,
    lone: Iterable[LoneReads] = (),
) -> Scorecard:
    """The scorecard of ``outcomes`` and ``lone`` grouped ``by`` a :data:`BY` field over ``[since, until)``.

    ``lone`` counts versions of accessions with no other version, already
    limited to those whose clinical time is in ``[since, until)``
    (:meth:`listener.outcome_data.Collected.lone_in`); ``outcomes`` holds the
    other accessions' chains.

    ``only`` keeps the one row whose key equals it (case ignored). Rows: most
    reads first, then by key.

    Raises:
        ValueError: ``by`` is not in :data:`BY`, or ``min_reads`` is below 1.
    """
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    if min_reads < 1:
        raise ValueError("min_reads must be 1 or more")
    key_of = _key_function(by, directory)
    tallies: dict[str, _Tally] = {}
    for outcome in outcomes:
        versions = outcome.chain.versions
        replaced_by = {g.pair.before: g for g in outcome.graded}
        amending = {g.pair.after for g in outcome.graded if g.pair.kind == "correction"}
        for v in versions:
            if v.stage == _CANCELLED or not since <= v.clinical_time < until:
                continue
            tally = tallies.setdefault(key_of(v), _Tally())
            tally.reads += 1
            tally.readers.add(v.reader_id or NO_READER)
            for category in v.categories:
                tally.categories[category] = tally.categories.get(category, 0) + 1
            if v.stage == _PRELIM:
                tally.prelims += 1
                minutes = prelim_minutes(v.stage, v.observation_time, v.clinical_time)
                if minutes is not None:
                    tally.prelim_minutes.append(minutes)
            elif v.stage == _FINAL:
                tally.finals += 1
            graded = replaced_by.get(v.position)
            after = versions[graded.pair.after] if graded is not None else None
            own = v.addendum and v.position not in amending
            if own or (graded is not None and graded.pair.kind == "correction" and after and after.addendum):
                tally.addendum += 1
            if graded is None or after is None:
                continue
            tally.overread += 1
            if graded.grade is not None:
                tally.graded.append(graded)
            minutes = _to_final_minutes(graded, v, after)
            if minutes is not None:
                tally.to_final_minutes.append(minutes)
            if graded.pair.kind == "correction" and v.stage == _FINAL:
                tally.corrected += 1
    for reads in lone:
        if reads.stage == _CANCELLED:
            continue
        # A lone version is never replaced nor amending: counted as a version with no pair above.
        tally = tallies.setdefault(key_of(reads), _Tally())
        n = reads.count
        tally.reads += n
        tally.readers.add(reads.reader_id or NO_READER)
        for category in reads.summary.categories:
            tally.categories[category] = tally.categories.get(category, 0) + n
        if reads.stage == _PRELIM:
            tally.prelims += n
            if reads.prelim_minutes is not None:
                tally.prelim_minutes.extend([reads.prelim_minutes] * n)
        elif reads.stage == _FINAL:
            tally.finals += n
        if reads.summary.addendum:
            tally.addendum += n
    rows = [_row(key, by, tally, directory, min_reads) for key, tally in tallies.items()]
    if only is not None:
        wanted = only.casefold()
        rows = [r for r in rows if r.key.casefold() == wanted]
    rows.sort(key=lambda r: (-r.reads, r.key))
    return Scorecard(by, since, until, min_reads, only, tuple(rows))


# ------------------------------------------------------------------ renderers


def _percent(rate: Rate) -> str:
    if rate.rate is None:
        return f"{rate.count}/{rate.of} -"
    text = f"{rate.count}/{rate.of} {100 * rate.rate:.1f}%"
    if rate.low is not None and rate.high is not None:
        text += f" [{100 * rate.low:.1f}-{100 * rate.high:.1f}]"
    return text


def _minutes_text(spread: Spread) -> str:
    if spread.median is None or spread.p90 is None:
        return "-"
    return f"{spread.median:.0f}/{spread.p90:.0f} (n={spread.count})"


def _share(row: ScorecardRow) -> str:
    if row.interpretive_share is None or row.operational_share is None:
        return "-"
    return f"{100 * row.interpretive_share:.0f}%/{100 * row.operational_share:.0f}%"


def render_text(card: Scorecard) -> str:
    """``overread scorecard --format text``: an aligned table, a legend, then the QA defects per row."""
    head = (
        f"scorecard by {card.by}, {card.since.isoformat()} to {card.until.isoformat()}"
        f" ({len(card.rows)} row{'s' if len(card.rows) != 1 else ''})\n"
    )
    legend = (
        "rates: count/denominator and percent, [95% Wilson interval]; '-' where the denominator is below"
        f" {card.min_reads} (too few for a rate); shares: interpretive/operational among pairs that differ;"
        " turnaround: median/p90 minutes\n"
    )
    if not card.rows:
        return head + "no reads in the window" + (f" for {card.only!r}" if card.only else "") + "\n"
    columns = [card.by, *(["group"] if card.by == "reader" else [])]
    columns += ["reads", "overread", "graded", "discrepancy (any)", "significant (2b/3b)", "interp/oper"]
    columns += ["prelim min", "prelim->final min", "corrected", "addendum", "disagree", "note"]
    table = [columns]
    for r in card.rows:
        line = [r.key, *([r.group or ""] if card.by == "reader" else [])]
        line += [str(r.reads), str(r.overread), str(r.graded)]
        line += [_percent(r.discrepancies["any"]), _percent(r.discrepancies["significant"]), _share(r)]
        line += [_minutes_text(r.prelim_minutes), _minutes_text(r.prelim_to_final_minutes)]
        line += [_percent(r.corrected), _percent(r.addendum), str(r.disagreements), r.note]
        table.append(line)
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    out = [head]
    for line in table:
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() + "\n")
    out.append(legend)
    defects = [r for r in card.rows if r.qa_defects]
    if defects:
        out.append("QA defects at submit time (reads with a finding of the category):\n")
        for r in defects:
            listed = ", ".join(f"{c} {_percent(rate)}" for c, rate in r.qa_defects.items())
            out.append(f"  {r.key}: {listed}\n")
    return "".join(out)


def _cell(value: float | int | str | bool | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    return str(value)


def render_csv(card: Scorecard) -> str:
    """``overread scorecard --format csv``: one line per row, flat columns (null as an empty cell).

    Columns: key, group, reads, prelims, finals, overread, graded, too_few,
    note, ``<d>_count``/``_rate``/``_low``/``_high`` for each discrepancy key,
    differing, interpretive_share, operational_share, the two turnarounds'
    ``_count``/``_median``/``_p90``, corrected and addendum ``_count``/``_rate``,
    disagreements, then ``qa_<category>_count``/``_rate`` for every category any
    row has (sorted).
    """
    categories = sorted({c for r in card.rows for c in r.qa_defects})
    header = ["key", "group", "reads", "prelims", "finals", "overread", "graded", "too_few", "note"]
    for k in DISCREPANCY_KEYS:
        header += [f"{k}_count", f"{k}_rate", f"{k}_low", f"{k}_high"]
    header += ["differing", "interpretive_share", "operational_share"]
    for name in ("prelim_minutes", "prelim_to_final_minutes"):
        header += [f"{name}_count", f"{name}_median", f"{name}_p90"]
    header += ["corrected_count", "corrected_rate", "addendum_count", "addendum_rate", "disagreements"]
    for c in categories:
        header += [f"qa_{c}_count", f"qa_{c}_rate"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in card.rows:
        values: list[float | int | str | bool | None] = [r.key, r.group or "", r.reads, r.prelims, r.finals]
        values += [r.overread, r.graded, r.too_few, r.note]
        for k in DISCREPANCY_KEYS:
            d = r.discrepancies[k]
            values += [d.count, d.rate, d.low, d.high]
        values += [r.differing, r.interpretive_share, r.operational_share]
        for s in (r.prelim_minutes, r.prelim_to_final_minutes):
            values += [s.count, s.median, s.p90]
        values += [r.corrected.count, r.corrected.rate, r.addendum.count, r.addendum.rate, r.disagreements]
        for c in categories:
            rate = r.qa_defects.get(c) or _rate(0, r.reads, card.min_reads, interval=False)
            values += [rate.count, rate.rate]
        writer.writerow([_cell(v) for v in values])
    return buffer.getvalue()
