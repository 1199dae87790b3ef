"""A digest of every QA finding over the corpus, to prove a change kept the output.

Run by hand on two commits and compare the printed digest (or the dumps):

    .venv/bin/python bench/qa_equivalence.py --dump /tmp/qa_before.jsonl
    ... change the rules ...
    .venv/bin/python bench/qa_equivalence.py --dump /tmp/qa_after.jsonl
    cmp /tmp/qa_before.jsonl /tmp/qa_after.jsonl   # or: diff, to see which input changed

Inputs (read at run time from ../shared/corpus, never copied):

* every HL7 message of the corpus and of samples/hl7, decoded with the
  repository's mappings and CPT table; each report is run through
  ``run_rules`` (a message that does not decode is recorded with its error
  class, so it still counts);
* every clean corpus report text as tests/qa/evaluate.py turns it into a
  Report (``report_for``/``context_for``);
* the labeled injected copies of tests/qa/inject.py (``--per-injection``,
  default 300), which exercise the rules that rarely fire on clean text.

To compare only the QA rules of two commits while the text layer keeps
moving, run both sides over one copy of the tree (the copy needs
../shared next to it) with listener/qa taken from the older commit:

    mkdir -p /tmp/qacmp/a /tmp/qacmp/b && ln -sfn /work/shared /tmp/qacmp/a/shared
    ln -sfn /work/shared /tmp/qacmp/b/shared
    for d in a b; do mkdir -p /tmp/qacmp/$d/main && tar --exclude=./.git --exclude=./.venv -cf - . | tar -x -C /tmp/qacmp/$d/main; done
    rm /tmp/qacmp/a/main/listener/qa/*.py && git archive OLD listener/qa | tar -x -C /tmp/qacmp/a/main
    for d in a b; do (cd /tmp/qacmp/$d/main && /work/main/.venv/bin/python bench/qa_equivalence.py --dump ../$d.jsonl); done
    cmp /tmp/qacmp/a/a.jsonl /tmp/qacmp/b/b.jsonl

For each input one JSON line holds the input's name and every finding's
rule, severity, message, suggestion and evidence (section, start, end,
text). The digest is the SHA-256 of all lines. The dump contains report
text excerpts: write it under /tmp, never into the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from listener.hl7v2.decode import decode_message  # noqa: E402
from listener.model import Finding, Report  # noqa: E402
from listener.qa.engine import QaContext, run_rules  # noqa: E402
from tests.qa.evaluate import CORPUS, context_for, load_docs, report_for  # noqa: E402
from tests.qa.inject import SEED, build_cases  # noqa: E402
from tests.unit.qa.factory import pipeline  # noqa: E402

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def hl7_files() -> list[Path]:
    """Every HL7 message of the corpus and of samples/hl7, in a fixed order."""
    files = sorted((CORPUS / "hl7").rglob("*.hl7")) + sorted((REPO / "samples" / "hl7").rglob("*.hl7"))
    return files


def inputs(per_injection: int, seed: int = SEED) -> Iterator[tuple[str, Report | None, QaContext | None, str]]:
    """(name, report, context, error) for every input, in a fixed order."""
    pipe = pipeline()
    for path in hl7_files():
        # Named from the checkout (samples/...) or from beside it (shared/corpus/...), never by the
        # checkout's own folder name: the digest is the same in any clone.
        if path.is_relative_to(REPO):
            name = str(path.relative_to(REPO))
        elif path.is_relative_to(REPO.parent):
            name = str(path.relative_to(REPO.parent))
        else:
            name = path.name
        try:
            decoded = decode_message(path.read_bytes(), pipe.mappings, received_at=NOW, procedures=pipe.procedures)
        except Exception as exc:  # noqa: BLE001 - recorded, not hidden
            yield name, None, None, type(exc).__name__
            continue
        for i, report in enumerate(decoded.reports):
            yield f"{name}#{i}", report, QaContext(now=NOW), ""
    docs = load_docs()
    for doc in docs:
        yield f"clean:{doc.id}", report_for(doc), context_for(doc), ""
    if per_injection:
        for case in build_cases(docs, per_injection=per_injection, seed=seed):
            yield f"case:{case.id}:base", report_for(case.base), context_for(case.base), ""
            yield f"case:{case.id}", report_for(case.injected), context_for(case.injected), ""


def finding_json(f: Finding) -> list[object]:
    return [
        f.rule,
        f.severity.value,
        f.message,
        f.suggestion,
        [[e.section, e.start, e.end, e.text] for e in f.evidence],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, help="write one JSON line per input here (under /tmp)")
    parser.add_argument("--per-injection", type=int, default=300, help="injected cases per kind (0: none)")
    args = parser.parse_args(argv)
    qa = pipeline().qa
    assert qa is not None
    digest = hashlib.sha256()
    counts: Counter[str] = Counter()
    n_inputs = n_findings = 0
    out = open(args.dump, "w", encoding="utf-8") if args.dump else None  # noqa: SIM115
    try:
        for name, report, context, error in inputs(args.per_injection):
            if report is None or context is None:
                line = json.dumps([name, "error", error])
            else:
                findings = run_rules(report, qa, context)
                n_findings += len(findings)
                counts.update(f.rule for f in findings)
                line = json.dumps([name, [finding_json(f) for f in findings]], ensure_ascii=False)
            n_inputs += 1
            digest.update(line.encode("utf-8") + b"\n")
            if out is not None:
                out.write(line + "\n")
    finally:
        if out is not None:
            out.close()
    print(f"inputs: {n_inputs}; findings: {n_findings}")
    for rule_id, count in sorted(counts.items()):
        print(f"  {rule_id:48s} {count:6d}")
    print(f"digest: {digest.hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
