"""QA engine evaluation: detection per category, clean false positives, ms/report.

Run by hand; prints figures. Reads ../shared/corpus at run time (never copied):

    .venv/bin/python bench/qa.py                  # up to 300 cases per injection, all clean reports
    .venv/bin/python bench/qa.py --misses 5       # plus up to 5 missed cases per category
    .venv/bin/python bench/qa.py --per-injection 50 --clean 500   # quicker

The labeled set is built by tests/qa/inject.py (selection rules and injection
specs over the real corpus texts; fixed seed) and measured by
tests/qa/evaluate.py with the repository's own QA configuration. A detection
counts only when the injected copy has a finding of the expected category
(warning or error) that its base does not have. Timing is the engine alone
(``run_rules``: text analysis + every enabled rule), one process, one core.

Targets (issue 4): detection >= 95% overall and >= 90% per category; <= 3% of
clean reports with an error, <= 10% with any warning; median <= 2 ms and
p99 <= 10 ms per report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.qa.evaluate import Evaluation, evaluate, load_docs  # noqa: E402
from tests.qa.inject import SEED, case_stats  # noqa: E402


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
        ok = "ok" if result.rate >= 0.90 else "BELOW 90%"
        print(f"| {category} | {result.n} | {result.detected} | {result.rate:.1%} | {ok} |")
    ok = "ok" if ev.overall >= 0.95 else "BELOW 95%"
    print(f"| **overall** | {ev.n} | {ev.detected} | {ev.overall:.1%} | {ok} |")
    print()
    if ev.prepared:
        print("prepared bases: " + ", ".join(f"{k} {v}" for k, v in sorted(ev.prepared.items())))
    print(f"injected copies identical to their base: {ev.unchanged}")
    print()
    print(f"clean reports: {ev.clean_n}")
    print(f"  with any warning or error: {ev.clean_any} ({ev.clean_any_rate:.1%}; target <= 10%)")
    print(f"  with an error:             {ev.clean_errors} ({ev.clean_error_rate:.1%}; target <= 3%)")
    if ev.clean_rules:
        print("  by rule (reports it fired on, warning/error):")
        for rule_id, count in ev.clean_rules.most_common():
            sev = ev.clean_rule_severity.get(rule_id, "?")
            examples = ", ".join(ev.clean_examples.get(rule_id, [])[:3])
            print(f"    {rule_id:48s} {sev:7s} {count:5d} ({count / ev.clean_n:.1%})  e.g. {examples}")
    print()
    print(
        f"ms/report (engine only, {len(ev.ms)} runs): median {ev.ms_median:.3f}, "
        f"p99 {ev.ms_quantile(0.99):.3f}, max {max(ev.ms, default=0.0):.3f}  (targets 2 / 10)"
    )
    if misses:
        print()
        for category in sorted(ev.categories):
            result = ev.categories[category]
            for case, findings in result.misses[:misses]:
                got = ", ".join(sorted({f"{f.rule}:{f.severity.value}" for f in findings})) or "none"
                print(f"MISS {category} {case.id} [{case.variant}] findings: {got}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the evaluation, print it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-injection", type=int, default=300, help="cases per injection kind (default 300)")
    parser.add_argument("--clean", type=int, default=None, help="clean reports to measure (default: all)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--misses", type=int, default=0, help="list up to N missed cases per category")
    args = parser.parse_args(argv)
    docs = load_docs()
    ev = evaluate(docs, per_injection=args.per_injection, clean_limit=args.clean, seed=args.seed)
    print(f"corpus documents: {len(docs)}; seed {args.seed}")
    _ = case_stats  # (the per-injection n is in the table)
    print_evaluation(ev, misses=args.misses)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
