"""Run the comparator over the labeled pairs: agreement per edit, and time per pair.

A pair agrees when its proposed grade is in the expected class: a "b" grade
for a significant change, "1" for an equivalent version. Timing is
:func:`listener.outcomes.compare` alone (with the QA findings of both
versions computed beforehand, as the store keeps them), one process, one core.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from listener.model import Report, ResultStatus
from listener.outcomes import Comparison, OutcomeRules, compare, load_outcome_rules
from listener.qa.engine import run_rules
from tests.outcomes.pairs import EDITS, Pair
from tests.qa.evaluate import context_for, report_for
from tests.unit.qa.factory import pipeline


@dataclass
class Evaluation:
    """Per edit: pairs, agreements, grade counts; and the milliseconds per pair."""

    n: Counter[str] = field(default_factory=Counter)
    agreed: Counter[str] = field(default_factory=Counter)
    grades: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    misses: dict[str, list[tuple[Pair, Comparison]]] = field(default_factory=lambda: defaultdict(list))
    ms: list[float] = field(default_factory=list)
    ms_with_qa: list[float] = field(default_factory=list)

    def rate(self, edit: str) -> float:
        return self.agreed[edit] / self.n[edit] if self.n[edit] else 0.0

    def class_rate(self, expected: str) -> float:
        edits = [e for e, c in EDITS.items() if c == expected]
        n = sum(self.n[e] for e in edits)
        return sum(self.agreed[e] for e in edits) / n if n else 0.0

    def ms_quantile(self, q: float, with_qa: bool = False) -> float:
        data = sorted(self.ms_with_qa if with_qa else self.ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else 0.0


def reports_for(pair: Pair) -> tuple[Report, Report]:
    """The prelim (status P, external reader) and the final (status F) the daemon would hold."""
    prelim = report_for(replace(pair.base, text=pair.prelim))
    final = report_for(replace(pair.base, text=pair.final))
    return replace(prelim, status=ResultStatus.PRELIMINARY, status_raw="P"), replace(final, status_raw="F")


def agrees(pair: Pair, comparison: Comparison) -> bool:
    if pair.expected == "b":
        return comparison.grade.endswith("b")
    return comparison.grade == "1"


def evaluate(pairs: Sequence[Pair], *, rules: OutcomeRules | None = None, with_qa: bool = True) -> Evaluation:
    """Compare every pair; time compare() per pair (and compare() plus QA of both versions)."""
    rules = rules or load_outcome_rules()
    qa = pipeline().qa
    assert qa is not None
    terms = qa.terms
    ev = Evaluation()
    for pair in pairs:
        prelim, final = reports_for(pair)
        context = context_for(pair.base)
        t0 = time.perf_counter()
        findings = (run_rules(prelim, qa, context), run_rules(final, qa, context)) if with_qa else None
        t1 = time.perf_counter()
        comparison = compare(prelim, final, terms=terms, rules=rules, qa_findings=findings)
        t2 = time.perf_counter()
        ev.ms.append((t2 - t1) * 1000)
        ev.ms_with_qa.append((t2 - t0) * 1000)
        ev.n[pair.edit] += 1
        ev.grades[pair.edit][comparison.grade] += 1
        if agrees(pair, comparison):
            ev.agreed[pair.edit] += 1
        else:
            ev.misses[pair.edit].append((pair, comparison))
    return ev


def table(ev: Evaluation) -> list[str]:
    """The agreement table (markdown) and the class figures."""
    lines = ["| edit | expected | pairs | agree | rate | grades |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for edit, expected in EDITS.items():
        grades = ", ".join(f"{g}: {c}" for g, c in sorted(ev.grades[edit].items()))
        lines.append(f"| {edit} | {expected} | {ev.n[edit]} | {ev.agreed[edit]} | {ev.rate(edit):.1%} | {grades} |")
    lines.append("")
    lines.append(f"significant changes graded b: {ev.class_rate('b'):.1%} (target >= 90%)")
    lines.append(f"equivalent versions graded above 1: {1 - ev.class_rate('1'):.1%} (target <= 5%)")
    lines.append(
        f"compare() per pair: median {statistics.median(ev.ms):.2f} ms, p90 {ev.ms_quantile(0.9):.2f} ms (target median <= 2 ms)"
        if ev.ms
        else "no pairs"
    )
    if ev.ms_with_qa:
        lines.append(
            f"with QA of both versions: median {statistics.median(ev.ms_with_qa):.2f} ms, "
            f"p90 {ev.ms_quantile(0.9, True):.2f} ms"
        )
    return lines
