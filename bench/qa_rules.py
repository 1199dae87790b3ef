"""CPU per QA rule: which rules the QA stage spends its time in.

Run by hand: ``.venv/bin/python bench/qa_rules.py [--clean N] [--repeat R] [--top K]``.

Inputs: every HL7 report of the corpus and of samples/hl7 plus the first
``--clean`` (default 500) clean corpus report texts (tests/qa/evaluate.py's
``report_for``). Each report is run the way ``run_rules`` runs it, in rule-id
order with one fresh ``Analysis``, but each rule call is timed on this
thread's CPU clock. Every report gets a new ``TextCache`` (every production
message is a new text), so the first rule to ask for a section's sentences or
mentions pays for them, as it does in the daemon.

Prints, per rule, the mean and the p99 microseconds per report, sorted by
mean, and the whole engine's median and p99 per report.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.qa_equivalence import NOW, hl7_files  # noqa: E402
from listener.hl7v2.decode import decode_message  # noqa: E402
from listener.model import Report  # noqa: E402
from listener.qa.engine import Analysis, QaContext, RuleInput, run_rules  # noqa: E402
from listener.qa.registry import registry  # noqa: E402
from listener.text import TextCache  # noqa: E402
from tests.qa.evaluate import context_for, load_docs, report_for  # noqa: E402
from tests.unit.qa.factory import pipeline  # noqa: E402


def reports(clean: int) -> list[tuple[Report, QaContext]]:
    """The HL7 reports, then ``clean`` clean corpus reports (seeded order of load_docs)."""
    pipe = pipeline()
    out: list[tuple[Report, QaContext]] = []
    for path in hl7_files():
        try:
            decoded = decode_message(path.read_bytes(), pipe.mappings, received_at=NOW, procedures=pipe.procedures)
        except Exception:  # noqa: BLE001 - a message that does not decode has no report to time
            continue
        out.extend((r, QaContext(now=NOW)) for r in decoded.reports)
    docs = load_docs()
    step = max(1, len(docs) // clean) if clean else 1
    for doc in docs[::step][:clean]:
        out.append((report_for(doc), context_for(doc)))
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=int, default=500, help="clean corpus reports (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the inputs (default 3)")
    parser.add_argument("--top", type=int, default=0, help="print only the K costliest rules")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="keep the text cache warm for the per-rule times (each rule's own cost, without the"
        " sentence/mention analysis that the first rule asking for it pays)",
    )
    args = parser.parse_args(argv)
    qa = pipeline().qa
    assert qa is not None
    names = {spec.function: rule_id for rule_id, spec in registry().items()}
    inputs = reports(args.clean)
    for report, ctx in inputs[:5]:  # warm: regex compilation, lazy tables
        run_rules(report, qa, ctx)
    per_rule: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    engine: list[float] = []
    clock = time.thread_time
    for _ in range(args.repeat):
        for report, ctx in inputs:
            t0 = clock()
            run_rules(report, qa, ctx)
            engine.append((clock() - t0) * 1e6)
            cache = TextCache()
            if args.warm:
                run_rules(report, qa, dataclasses.replace(ctx, text_cache=cache))
            analysis = Analysis(report, qa.terms, cache)
            total = 0.0
            for rule_id, function, settings in qa.plan:
                data = RuleInput(report, analysis, qa.terms, qa.procedures, qa.directory, ctx, settings, rule_id)
                t0 = clock()
                for _finding in function(data):
                    pass
                took = (clock() - t0) * 1e6
                per_rule[names[function]].append(took)
                total += took
            totals.append(total)
    memo = "warm for the per-rule times" if args.warm else "new for each report"
    print(f"reports: {len(inputs)} x {args.repeat} passes (text cache {memo})")
    print(
        f"engine (run_rules) per report: median {statistics.median(engine):.1f} us, "
        f"p99 {quantile(engine, 0.99):.1f} us, mean {statistics.fmean(engine):.1f} us"
    )
    print(
        f"sum of rule times per report:  median {statistics.median(totals):.1f} us, p99 {quantile(totals, 0.99):.1f} us"
    )
    print()
    print(f"{'rule':48s} {'mean us':>9s} {'p99 us':>9s}")
    ranked = sorted(per_rule.items(), key=lambda kv: -statistics.fmean(kv[1]))
    for rule_id, values in ranked[: args.top or None]:
        print(f"{rule_id:48s} {statistics.fmean(values):9.1f} {quantile(values, 0.99):9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
