"""Run the QA engine over the labeled set and measure it (used by bench/qa.py and the tests).

Reports are built from the injector's plain documents with the rule-test
factory (sections as the decoder finds them) and run through the repository's
own pipeline configuration (``build_pipeline(load_config(None)).qa``): whatever rules
are registered and enabled at run time are what gets measured.

A detection counts only when the injected copy has a finding of the expected
category, severity warning or error, that its base does not have (findings
are compared as (rule, message) multisets; offsets move with the edit).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from listener.model import Finding, Patient, Report, Severity, Times
from listener.procedures import ProcedureTable
from listener.qa.engine import QaConfig, QaContext, run_rules
from listener.qa.registry import registry
from tests.qa.inject import SEED, Case, Doc, build_cases, load_corpus
from tests.unit.qa.factory import make_report, pipeline

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
WARNING_OR_ERROR = (Severity.WARNING, Severity.ERROR)


def code_lookup(table: ProcedureTable | None):  # type: ignore[no-untyped-def]
    """A CodeLookup over the CPT table: the plain diagnostic code for modality/region/contrast/views."""

    def code_for(modality: str, region: str, contrast: str, views: int | None) -> str:
        if table is None or not modality or not region:
            return ""
        for code, entry in sorted(table.entries.items()):
            if (entry.modality, entry.body_region, entry.contrast) != (modality, region, contrast):
                continue
            if entry.addon or entry.angiography or entry.screening or entry.limited or entry.consultation:
                continue
            if entry.laterality in ("unilateral", "bilateral") and entry.modality != "MG":
                continue
            if entry.mammo and entry.mammo != "diagnostic" or entry.tomosynthesis_addon_for:
                continue
            if views is not None and entry.views is not None:
                low, high = entry.views
                if views < low or (high is not None and views > high):
                    continue
            return code
        return ""

    return code_for


def report_for(doc: Doc) -> Report:
    """The Report the daemon would see for ``doc`` (sectioned text, code, sex, times)."""
    report = make_report(doc.text, procedure=doc.procedure_code, procedure_text=doc.procedure_text, sex=doc.sex)
    exam = doc.exam_at
    return replace(
        report,
        message_id=doc.id,
        modality=report.modality or doc.modality,
        body_region=report.body_region or doc.body_region,
        patient=Patient(id="EVAL", sex=doc.sex, birth_date=report.patient.birth_date),
        times=Times(observation=exam, report=exam + timedelta(hours=1), received=exam + timedelta(hours=1, minutes=1)),
    )


def context_for(doc: Doc) -> QaContext:
    """The clock at receipt; priors unknown (the store was not asked)."""
    return QaContext(now=doc.exam_at + timedelta(hours=1, minutes=1))


@dataclass
class Run:
    """Findings for one document and the engine's time on it."""

    findings: tuple[Finding, ...]
    ms: float


def run_doc(doc: Doc, qa: QaConfig) -> Run:
    """Build the report, then time only the engine."""
    report = report_for(doc)
    context = context_for(doc)
    start = time.perf_counter()
    findings = run_rules(report, qa, context)
    return Run(findings, (time.perf_counter() - start) * 1000.0)


def _keys(findings: Iterable[Finding]) -> Counter[tuple[str, str]]:
    return Counter((f.rule, f.message) for f in findings if f.severity in WARNING_OR_ERROR)


def new_findings(base: Sequence[Finding], injected: Sequence[Finding]) -> list[tuple[str, str]]:
    """(rule, message) of warning/error findings the injected copy has beyond its base."""
    return sorted((_keys(injected) - _keys(base)).elements())


@dataclass
class CategoryResult:
    """Detection figures for one category (and per injection kind inside it)."""

    n: int = 0
    detected: int = 0
    by_injection: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    misses: list[tuple[Case, list[Finding]]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.detected / self.n if self.n else 0.0


@dataclass
class Evaluation:
    """Everything bench/qa.py prints."""

    categories: dict[str, CategoryResult]
    clean_n: int
    clean_any: int  # clean reports with a warning or error
    clean_errors: int  # clean reports with an error
    clean_rules: Counter[str]  # rule id -> clean reports it fired on (warning/error)
    clean_rule_severity: dict[str, str]
    clean_examples: dict[str, list[str]]  # rule id -> doc ids
    ms: list[float]
    rules: tuple[str, ...]  # enabled rule ids at run time
    unchanged: int  # injected copies identical to their base (must be 0)
    prepared: Counter[str]

    @property
    def detected(self) -> int:
        return sum(c.detected for c in self.categories.values())

    @property
    def n(self) -> int:
        return sum(c.n for c in self.categories.values())

    @property
    def overall(self) -> float:
        return self.detected / self.n if self.n else 0.0

    @property
    def clean_any_rate(self) -> float:
        return self.clean_any / self.clean_n if self.clean_n else 0.0

    @property
    def clean_error_rate(self) -> float:
        return self.clean_errors / self.clean_n if self.clean_n else 0.0

    def ms_quantile(self, q: float) -> float:
        if not self.ms:
            return 0.0
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def ms_median(self) -> float:
        return statistics.median(self.ms) if self.ms else 0.0


def enabled_rules(qa: QaConfig) -> tuple[str, ...]:
    """Rule ids that are registered and enabled by the policy."""
    specs = registry()
    return tuple(sorted(r for r, s in qa.rules.items() if s.enabled and r in specs))


def categories_with_rules(qa: QaConfig) -> set[str]:
    """Categories that have at least one enabled rule at run time."""
    return {r.partition(".")[0] for r in enabled_rules(qa)}


def load_docs(corpus: Path = CORPUS) -> list[Doc]:
    """The clean corpus documents, with codes from the repository's CPT table."""
    return load_corpus(corpus, code_lookup(pipeline().procedures))


#: Builds the labeled set: (docs, per_injection=, seed=) -> cases (inject.build_cases or independent.build_independent_cases).
CaseBuilder = Callable[..., list[Case]]


def evaluate(
    docs: Sequence[Doc],
    *,
    per_injection: int = 300,
    clean_limit: int | None = None,
    seed: int = SEED,
    qa: QaConfig | None = None,
    build: CaseBuilder = build_cases,
) -> Evaluation:
    """Run the clean baseline and the labeled injections; return the figures.

    Args:
        docs: clean corpus documents (``load_docs``).
        per_injection: at most this many cases per injection kind.
        clean_limit: measure false positives on the first N documents of a seeded
            shuffle (None: all of them).
        seed: the sampling seed.
        qa: the QA configuration (default: the repository's).
        build: the injector's case builder (default: inject.py's; bench/qa.py also passes
            independent.py's, the second injector written without reading the rules).
    """
    config = qa or pipeline().qa
    assert config is not None
    cases = build(docs, per_injection=per_injection, seed=seed)

    clean = list(docs)
    if clean_limit is not None:
        import random

        random.Random(seed).shuffle(clean)
        clean = clean[:clean_limit]
    # Warm the caches (first report pays for regex compilation).
    for doc in clean[:5]:
        run_doc(doc, config)
    clean_rules: Counter[str] = Counter()
    severity: dict[str, str] = {}
    examples: dict[str, list[str]] = defaultdict(list)
    any_count = errors = 0
    ms: list[float] = []
    for doc in clean:
        run = run_doc(doc, config)
        ms.append(run.ms)
        loud = [f for f in run.findings if f.severity in WARNING_OR_ERROR]
        any_count += bool(loud)
        errors += any(f.severity is Severity.ERROR for f in loud)
        for rule_id in sorted({f.rule for f in loud}):
            clean_rules[rule_id] += 1
            if len(examples[rule_id]) < 5:
                examples[rule_id].append(doc.id)
        for f in loud:
            severity[f.rule] = f.severity.value

    results: dict[str, CategoryResult] = {}
    base_cache: dict[tuple[str, str, str, str, str], tuple[Finding, ...]] = {}
    unchanged = 0
    prepared: Counter[str] = Counter()
    for case in cases:
        result = results.setdefault(case.category, CategoryResult())
        if (case.injected.text, case.injected.sex, case.injected.procedure_code, case.injected.procedure_text) == (
            case.base.text,
            case.base.sex,
            case.base.procedure_code,
            case.base.procedure_text,
        ):
            unchanged += 1
        if case.prepared:
            prepared[case.injection] += 1
        key = (case.base.id, case.base.text, case.base.sex, case.base.procedure_code, case.base.procedure_text)
        if key not in base_cache:
            base_cache[key] = run_doc(case.base, config).findings
        injected = run_doc(case.injected, config)
        ms.append(injected.ms)
        new = new_findings(base_cache[key], injected.findings)
        hit = any(rule.partition(".")[0] == case.category for rule, _ in new)
        result.n += 1
        result.detected += hit
        counts = result.by_injection[case.injection]
        counts[0] += 1
        counts[1] += hit
        if not hit:
            result.misses.append((case, list(injected.findings)))
    return Evaluation(
        categories=results,
        clean_n=len(clean),
        clean_any=any_count,
        clean_errors=errors,
        clean_rules=clean_rules,
        clean_rule_severity=severity,
        clean_examples=dict(examples),
        ms=ms,
        rules=enabled_rules(config),
        unchanged=unchanged,
        prepared=prepared,
    )
