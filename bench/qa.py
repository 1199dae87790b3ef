"""QA engine evaluation: detection per category, clean false positives, ms/report.

Run by hand; prints figures. Reads ../shared/corpus at run time (never copied):

    .venv/bin/python bench/qa.py                  # up to 300 cases per injection, all clean reports
    .venv/bin/python bench/qa.py --misses 5       # plus up to 5 missed cases per category
    .venv/bin/python bench/qa.py --per-injection 50 --clean 500   # quicker
    .venv/bin/python bench/qa.py --injector independent           # only the second injector
    .venv/bin/python bench/qa.py --false-alarms                   # per-modality hits on MTSamples
    .venv/bin/python bench/qa.py --injector independent --misses-doc docs/qa-evaluation-misses.md

Two labeled sets are measured (``--injector own|independent|both``, default
both): tests/qa/inject.py, written with the rules, and tests/qa/independent.py,
written from the defect definitions of issues 4 and 14 without reading the
rules (docs/qa-evaluation.md). Each injector selects real corpus reports and
injects one defect per copy (fixed seed); tests/qa/evaluate.py measures them
with the repository's own QA configuration. A detection
counts only when the injected copy has a finding of the expected category
(warning or error) that its base does not have. Timing is the engine alone
(``run_rules``: text analysis + every enabled rule), one process, one core.

Targets (issue 14, for both injectors): detection >= 97% overall and >= 93%
per category; <= 1.5% of clean reports with an error, <= 5% with any warning;
median <= 1 ms and p99 <= 5 ms per report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from listener.model import Finding, Severity  # noqa: E402
from tests.qa.evaluate import WARNING_OR_ERROR, CaseBuilder, Evaluation, evaluate, load_docs, run_doc  # noqa: E402
from tests.qa.independent import SEED as INDEPENDENT_SEED  # noqa: E402
from tests.qa.independent import build_independent_cases  # noqa: E402
from tests.qa.inject import SEED, Case, Doc, build_cases, case_stats  # noqa: E402
from tests.unit.qa.factory import pipeline  # noqa: E402

INJECTORS: dict[str, CaseBuilder] = {"own": build_cases, "independent": build_independent_cases}
SEEDS = {"own": SEED, "independent": INDEPENDENT_SEED}

#: Modality groups of the false-alarm table (issue 14): Doc.modality -> row label.
MODALITY_GROUPS = {
    "CT": "CT",
    "MR": "MR",
    "US": "US",
    "MG": "mammography",
    "NM": "nuclear",
    "PT": "nuclear",
    "FL": "fluoroscopy",
    "XR": "radiograph",
}
GROUP_ORDER = ("CT", "MR", "US", "mammography", "nuclear", "fluoroscopy", "radiograph", "unclassified")


def print_evaluation(ev: Evaluation, *, misses: int = 0) -> None:
    """The table, clean false positives, timing and (optionally) missed cases."""
    print(f"enabled rules: {len(ev.rules)}")
    print()
    print("| category | injection | n | detected | rate |")
    print("| --- | --- | ---: | ---: | ---: |")
    for category in sorted(ev.categories):
        result = ev.categories[category]
        for injection, (n, hit) in sorted(result.by_injection.items()):
            print(f"| {category} | {injection} | {n} | {hit} | {hit / n:.1%} |")
    print()
    print("| category | n | detected | rate | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for category in sorted(ev.categories):
        result = ev.categories[category]
        ok = "ok" if result.rate >= 0.93 else "BELOW 93%"
        print(f"| {category} | {result.n} | {result.detected} | {result.rate:.1%} | {ok} |")
    ok = "ok" if ev.overall >= 0.97 else "BELOW 97%"
    print(f"| **overall** | {ev.n} | {ev.detected} | {ev.overall:.1%} | {ok} |")
    print()
    if ev.prepared:
        print("prepared bases: " + ", ".join(f"{k} {v}" for k, v in sorted(ev.prepared.items())))
    print(f"injected copies identical to their base: {ev.unchanged}")
    print()
    print(f"clean reports: {ev.clean_n}")
    print(f"  with any warning or error: {ev.clean_any} ({ev.clean_any_rate:.1%}; target <= 5%)")
    print(f"  with an error:             {ev.clean_errors} ({ev.clean_error_rate:.1%}; target <= 1.5%)")
    if ev.clean_rules:
        print("  by rule (reports it fired on, warning/error):")
        for rule_id, count in ev.clean_rules.most_common():
            sev = ev.clean_rule_severity.get(rule_id, "?")
            examples = ", ".join(ev.clean_examples.get(rule_id, [])[:3])
            print(f"    {rule_id:48s} {sev:7s} {count:5d} ({count / ev.clean_n:.1%})  e.g. {examples}")
    print()
    print(
        f"ms/report (engine only, {len(ev.ms)} runs): median {ev.ms_median:.3f}, "
        f"p99 {ev.ms_quantile(0.99):.3f}, max {max(ev.ms, default=0.0):.3f}  (targets 1 / 5)"
    )
    if misses:
        print()
        for category in sorted(ev.categories):
            result = ev.categories[category]
            for case, findings in result.misses[:misses]:
                got = ", ".join(sorted({f"{f.rule}:{f.severity.value}" for f in findings})) or "none"
                print(f"MISS {category} {case.id} [{case.variant}] findings: {got}")


#: One line per injection: what a missed copy of it is, from the case's ``variant`` (the injector's
#: own words and the finding's name, never the report's text).
DEFECT_LINES: dict[str, str] = {
    "finding_left_out": "impression sentence naming {1} deleted",
    "impression_only_finding": 'impression-only finding added ("{0}...")',
    "contrast_mismatch": "contrast changed ({0} {1})",
    "region_code_mismatch": "code of another {0} billed ({1})",
    "view_count_mismatch": "views documented vs code changed ({0} {1})",
    "communication_missing": "critical {1} without a complete communication ({0})",
    "impression_hedged": 'impression rewritten hedged ("{0}..." over {1})',
    "comparison_after_exam": "comparison dated after the exam ({0})",
    "comparison_removed": "comparison section deleted",
    "birads_dropped": "BI-RADS category removed",
    "dictation_cut": "report cut mid-sentence ({0} {1})",
    "impression_removed": "impression removed ({0})",
    "placeholder_left": "template blank left in the {0} ({1})",
    "sex_organ_mismatch": "sex and organ disagree ({0} {1})",
    "impression_denies_affirmed": 'impression item denying {1} added ("{0}...")',
    "negation_dropped": "denial of {1} dropped ({0})",
    "normal_impression": 'impression replaced by a normal one ("{0}...") over {1}',
    "plural_denied": 'plural or bilateral {1} denied in the impression ("{0}...")',
    "impression_side_swap": "side swapped in the {0} before {1}",
    "located_side_added": "located finding put on the other side in the impression ({0})",
    "order_side_swap": "order's side swapped ({0})",
}


def defect_line(case: Case) -> str:
    """A one-line description of the case's injected defect (injection template over its variant)."""
    head, _, tail = case.variant.partition(":")
    template = DEFECT_LINES.get(case.injection, case.injection + " ({0} {1})")
    return " ".join(template.format(head.strip(), tail.strip()).replace("|", "/").split())


def write_misses_doc(ev: Evaluation, path: Path, *, seed: int, commit: str) -> None:
    """Write the per-case list of ``ev``'s misses as markdown (docs/qa-evaluation-misses.md's case tables).

    The reasons per miss kind are read by hand from this list; the file keeps
    them above the generated part (everything from the ``## Cases`` heading
    on is replaced; a file without that heading gets a short header).
    """
    total = sum(len(r.misses) for r in ev.categories.values())
    lines = [
        "## Cases",
        "",
        f"Generated by `bench/qa.py --injector independent --misses-doc {path.as_posix()}` on `{commit}`, seed {seed}: "
        f"{total:,} misses out of {ev.n:,} cases. Each row gives the corpus report the copy was made from, "
        "a one-line description of the injected defect (the injector's words and the finding's name, never "
        "the report's text), and the findings the copy got: warning and error first, then info. Only findings "
        "new in the copy count as a detection, so a finding its base already had is listed but did not count.",
        "",
    ]
    for category in sorted(ev.categories):
        result = ev.categories[category]
        by_injection: dict[str, list[tuple[Case, list[Finding]]]] = {}
        for case, findings in result.misses:
            by_injection.setdefault(case.injection, []).append((case, findings))
        for injection in sorted(by_injection):
            rows = by_injection[injection]
            lines += [f"### {category} / {injection} ({len(rows)} missed)", ""]
            lines += ["| case (corpus id) | injected defect | the copy's findings (warning/error; info) |"]
            lines += ["| --- | --- | --- |"]
            for case, findings in rows:
                loud = sorted({f"{f.rule}:{f.severity.value}" for f in findings if f.severity in WARNING_OR_ERROR})
                quiet = sorted({f.rule for f in findings if f.severity not in WARNING_OR_ERROR})
                got = ", ".join(loud) or "none"
                if quiet:
                    got += "; info: " + ", ".join(quiet)
                lines.append(f"| {case.base.id} | {defect_line(case)} | {got} |")
            lines.append("")
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    head = old.split("\n## Cases\n", 1)[0].rstrip("\n") if "\n## Cases\n" in old else ""
    if not head:
        head = "# Misses of the independent QA evaluation"
    path.write_text(head + "\n\n" + "\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def print_false_alarms(docs: Sequence[Doc]) -> None:
    """Per-modality table of warning/error findings on the clean MTSamples reports, then every hit.

    Each hit line is sample id, rule id, severity and the finding's message (messages
    carry no patient data); the reports themselves are read by hand in a terminal,
    never printed here.
    """
    qa = pipeline().qa
    assert qa is not None
    rows: dict[str, list[int]] = {group: [0, 0, 0] for group in GROUP_ORDER}
    hits: list[tuple[str, str, str, str, str]] = []
    rule_counts: Counter[str] = Counter()
    for doc in docs:
        if doc.source != "mtsamples":
            continue
        group = MODALITY_GROUPS.get(doc.modality, "unclassified")
        loud = [f for f in run_doc(doc, qa).findings if f.severity in WARNING_OR_ERROR]
        row = rows[group]
        row[0] += 1
        row[1] += any(f.severity is Severity.ERROR for f in loud)
        row[2] += bool(loud)
        for f in loud:
            hits.append((group, doc.id, f.rule, f.severity.value, f.message))
            rule_counts[f.rule] += 1
    print("| modality | reports | with an error | with any warning | hits |")
    print("| --- | ---: | ---: | ---: | ---: |")
    total = [0, 0, 0]
    for group in GROUP_ORDER:
        n, err, anyw = rows[group]
        if not n:
            continue
        total = [total[0] + n, total[1] + err, total[2] + anyw]
        count = sum(1 for h in hits if h[0] == group)
        print(f"| {group} | {n} | {err} ({err / n:.1%}) | {anyw} ({anyw / n:.1%}) | {count} |")
    n, err, anyw = total
    if n:
        print(f"| **all MTSamples** | {n} | {err} ({err / n:.1%}) | {anyw} ({anyw / n:.1%}) | {len(hits)} |")
    print()
    for group, doc_id, rule, severity, message in hits:
        print(f"HIT {group:12s} {doc_id:18s} {rule:44s} {severity:7s} {message}")
    if rule_counts:
        print()
        print("hits by rule: " + ", ".join(f"{r} {c}" for r, c in rule_counts.most_common()))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the evaluation, print it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-injection", type=int, default=300, help="cases per injection kind (default 300)")
    parser.add_argument("--clean", type=int, default=None, help="clean reports to measure (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: each injector's own SEED)")
    parser.add_argument("--misses", type=int, default=0, help="list up to N missed cases per category")
    parser.add_argument(
        "--injector",
        choices=("own", "independent", "both"),
        default="both",
        help="which labeled set to measure (default both)",
    )
    parser.add_argument(
        "--misses-doc",
        type=Path,
        default=None,
        help="write the independent evaluation's misses, one row per case, into this markdown file "
        "(docs/qa-evaluation-misses.md; the text above its '## Cases' heading is kept)",
    )
    parser.add_argument(
        "--false-alarms",
        action="store_true",
        help="print only the per-modality false-alarm table on the clean MTSamples reports, with every hit",
    )
    args = parser.parse_args(argv)
    docs = load_docs()
    print(f"corpus documents: {len(docs)}")
    if args.false_alarms:
        print_false_alarms(docs)
        return 0
    _ = case_stats  # (the per-injection n is in the table)
    names = ("own", "independent") if args.injector == "both" else (args.injector,)
    for name in names:
        seed = args.seed if args.seed is not None else SEEDS[name]
        ev = evaluate(docs, per_injection=args.per_injection, clean_limit=args.clean, seed=seed, build=INJECTORS[name])
        print()
        print(f"## injector: {name} (seed {seed})")
        print()
        print_evaluation(ev, misses=args.misses)
        if args.misses_doc is not None and name == "independent":
            write_misses_doc(ev, args.misses_doc, seed=seed, commit=_commit())
    return 0


def _commit() -> str:
    """The short commit of the repository the bench runs from ("unknown" outside git)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
