"""Overread outcomes evaluation: agreement of the proposed grade with the intended one, and ms per pair.

Run by hand; prints figures. Reads ../shared/corpus at run time (never copied):

    .venv/bin/python bench/outcomes.py                 # up to 300 pairs per edit
    .venv/bin/python bench/outcomes.py --per-edit 60   # quicker
    .venv/bin/python bench/outcomes.py --misses 3      # plus up to 3 disagreements per edit

Pairs are built by tests/outcomes/pairs.py (edits of real corpus reports, fixed
seed) and measured by tests/outcomes/evaluate.py with policies/outcomes.yaml.
Timing is ``compare()`` alone, the QA findings of both versions computed
beforehand (the store keeps them), one process, one core; the line "with QA"
adds running the QA engine on both versions.

Targets (issue 12): at least 90% of significant changes graded b; at most 5%
of equivalent versions graded above 1; median 2 ms per pair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.outcomes.evaluate import evaluate, table  # noqa: E402
from tests.outcomes.pairs import build_pairs  # noqa: E402
from tests.qa.evaluate import load_docs  # noqa: E402
from tests.qa.inject import SEED  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-edit", type=int, default=300, help="pairs per edit (default 300)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--misses", type=int, default=0, help="print up to N disagreements per edit")
    args = parser.parse_args(argv)
    pairs = build_pairs(load_docs(), per_edit=args.per_edit, seed=args.seed)
    ev = evaluate(pairs)
    print(f"pairs: {len(pairs)} (seed {args.seed})")
    print()
    print("\n".join(table(ev)))
    if args.misses:
        for edit, misses in ev.misses.items():
            print()
            print(f"## {edit}: {len(misses)} disagreement(s)")
            for pair, comparison in misses[: args.misses]:
                found = ", ".join(f"{d.kind}({d.concept}) {d.grade}" for d in comparison.differences) or "none"
                print(f"- {pair.id}: graded {comparison.grade}; {found}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
