"""Benchmark ``overread simulate``: 100,000 stored reports replayed through two policies.

Run by hand: ``.venv/bin/python bench/simulate.py [--accessions 50000] [--dir DIR] [--keep] [--distinct-texts]``

Builds a SQLite store (in ``--dir``, default a temporary directory under
./var) of N accessions, each a preliminary and a final (2N reports), from
the sample HL7 bodies (samples/hl7) as bench/outcome_data.py builds them: one
final in 20 edited (a critical finding added, a finding added or a sentence
reworded, in turn), the others unchanged, so discrepancy rates are a few
percent, as in practice, and the reader-rate rule does not fire for everyone.
By default the copies share their template's text, so the run-wide text cache
of :func:`listener.simulate.simulate` analyses each distinct text once;
``--distinct-texts`` ends each accession's texts with its accession, so a text
repeats only from a prelim to its unchanged final, as on a real store. The prelims are 155 s apart (50,000 cover about 90 days, day and
night), each final 8 hours after its prelim.

The fast path: each distinct (sample, edit) prelim/final is decoded by the
pipeline once; every accession is a copy of one with its accession and
control ids replaced in the raw bytes and in the stored JSON. The comparisons
cache is filled the same way (each template pair compared once by
``collect``; its result written under every copy's own key), so the timed
run reads grades from the cache, as it does on a daemon whose live rates keep
the cache warm (docs/outcomes.md, "The comparisons cache").

Timed, pinned to one core (``os.sched_setaffinity``): the whole command
(``overread simulate --policy samples/policies/stricter.yaml --format json``,
policies loaded, store read, pairs graded from the cache, every report routed
under both policies, the document printed), then its parts. docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.outcome_data import FINAL_EDITS, T0, _samples, _versions  # noqa: E402
from listener.assemble import build_pipeline  # noqa: E402
from listener.cli import main as overread  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.outcome_data import HistoryContext, collect, comparison_key  # noqa: E402
from listener.outcomes import load_outcome_rules  # noqa: E402
from listener.store import MessageRecord, ReportRecord, SQLiteStore  # noqa: E402
from listener.store.base import CachedComparison, HistoryEntry  # noqa: E402
from tests.unit.store.records import processed  # noqa: E402

CANDIDATE = REPO / "samples/policies/stricter.yaml"
PRELIM_SPACING = timedelta(seconds=155)
FINAL_DELAY = timedelta(hours=8)
#: One accession in this many has a final that differs from its preliminary.
EDIT_EVERY = 20


def _distinct_text(report_json: str, tag: str) -> str:
    """The stored report with ``tag`` appended to its text, after every section (their offsets hold)."""
    doc = json.loads(report_json)
    doc["text"] = f"{doc.get('text') or ''}\n{tag}"
    return json.dumps(doc)


def _copy(
    rec: MessageRecord, old: str, new: str, control_id: str, received: object, *, distinct: bool = False
) -> MessageRecord:
    """``rec`` with accession ``old`` replaced by ``new`` everywhere it is stored, under a new control id.

    ``distinct``: the stored text also ends with ``new``, so no two accessions share a text (a
    prelim and its unchanged final still do), as on a real store (docs/benchmarks.md).
    """
    reports = tuple(
        replace(
            r,
            accession=new,
            report_json=_distinct_text(r.report_json.replace(old, new), new)
            if distinct
            else r.report_json.replace(old, new),
        )
        if isinstance(r, ReportRecord)
        else r
        for r in rec.reports
    )
    raw = rec.raw.replace(old.encode(), new.encode()) if rec.raw is not None else None
    return replace(rec, control_id=control_id, received=received, raw=raw, reports=reports)  # type: ignore[arg-type]


def _entry(rec: MessageRecord) -> HistoryEntry:
    """What :func:`comparison_key` reads of a stored report (transport, report and findings JSON)."""
    r = rec.reports[0]
    return HistoryEntry(0, 0, rec.control_id, rec.received, rec.transport, rec.feed, r.report_json, r.findings_json,
                        r.bucket, True)  # fmt: skip


def build(store: SQLiteStore, ctx: HistoryContext, n: int, *, distinct: bool = False) -> int:
    """Save N accessions (prelim and final) and their cached comparisons; return the reports stored.

    ``distinct``: each accession's texts end with its accession (:func:`_copy`).
    """
    pipeline = ctx.pipeline
    samples = _samples(pipeline)
    # templates[e]: the samples' prelim/final pairs with FINAL_EDITS[e] applied to the final.
    templates: list[list[tuple[str, tuple[MessageRecord, MessageRecord]]]] = [[] for _ in FINAL_EDITS]
    for e, edit in enumerate(FINAL_EDITS):
        for s, (raw, accession) in enumerate(samples):
            name = f"TPL{e}{s:03d}"
            prelim, final = _versions(raw, accession, name.encode(), edit)
            pair = (processed(pipeline, prelim, f"TP{e}-{s}", T0), processed(pipeline, final, f"TF{e}-{s}", T0))
            if all(len(r.reports) == 1 for r in pair):
                templates[e].append((name, pair))
    flat = [t for group in templates for t in group]
    # Each template pair compared once (its own accession, in a throwaway store), its result kept.
    results: dict[str, str] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-simulate-tpl-"))
    tpl_store = SQLiteStore.in_state_dir(scratch)
    try:
        for _, pair in flat:
            for rec in pair:
                tpl_store.save(rec)
        collect(tpl_store, ctx, since=T0, until=T0 + timedelta(days=1))
        for name, pair in flat:
            key = comparison_key(_entry(pair[0]), _entry(pair[1]), ctx)
            found = tpl_store.cached_comparisons([key])
            if key in found:
                results[name] = found[key]
    finally:
        tpl_store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    saved = 0
    pending = []
    cache: list[CachedComparison] = []
    for i in range(n):
        # One accession in EDIT_EVERY has an edited final (critical finding added, finding added,
        # reworded in turn); the rest are unchanged: discrepancy rates stay in the few percent.
        e = 1 + (i // EDIT_EVERY) % (len(FINAL_EDITS) - 1) if i % EDIT_EVERY == 0 else 0
        group = templates[e]
        name, (prelim, final) = group[(i // EDIT_EVERY if e else i) % len(group)]
        new = f"SIM{i:07d}"
        at = T0 + PRELIM_SPACING * i
        p = _copy(prelim, name, new, f"P{i}", at, distinct=distinct)
        f = _copy(final, name, new, f"F{i}", at + FINAL_DELAY, distinct=distinct)
        pending.extend((store.submit(p), store.submit(f)))
        saved += 2
        if name in results:
            key = comparison_key(_entry(p), _entry(f), ctx)
            cache.append(CachedComparison(key, new, T0, results[name].replace(name, new)))
        if len(pending) >= 2000:
            for fut in pending:
                fut.result()
            pending.clear()
            store.cache_comparisons(cache)
            cache.clear()
    for fut in pending:
        fut.result()
    store.cache_comparisons(cache)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accessions", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the store is built (default: under ./var)")
    parser.add_argument("--keep", action="store_true", help="keep the store (its path is printed)")
    parser.add_argument("--reuse", type=Path, default=None, help="time an existing bench store (skips the build)")
    parser.add_argument(
        "--distinct-texts",
        action="store_true",
        help="end every accession's report texts with its accession, so texts repeat only prelim to final",
    )
    args = parser.parse_args(argv)
    base = args.dir or REPO / "var"
    base.mkdir(parents=True, exist_ok=True)
    workdir = args.reuse or Path(tempfile.mkdtemp(prefix="bench-simulate-", dir=base))
    pipeline = build_pipeline(load_config(None))
    ctx = HistoryContext(pipeline, load_outcome_rules(), {})
    if args.reuse is None:
        store = SQLiteStore.in_state_dir(workdir)
        try:
            started = time.perf_counter()
            reports = build(store, ctx, args.accessions, distinct=args.distinct_texts)
            print(
                f"store: {args.accessions} accessions, {reports} reports, built in {time.perf_counter() - started:.1f} s"
            )
        finally:
            store.close()
    span = PRELIM_SPACING * args.accessions + FINAL_DELAY + timedelta(seconds=1)
    window = ["--since", T0.isoformat(), "--until", (T0 + span).isoformat()]
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    try:
        for fmt in ("json", "table"):
            out = io.StringIO()
            cpu = time.process_time()
            started = time.perf_counter()
            with contextlib.redirect_stdout(out):
                status = overread(
                    ["simulate", "--state-dir", str(workdir), "--policy", str(CANDIDATE), *window, "--format", fmt]
                )
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            assert status == 0, f"overread simulate exited {status}"
            if fmt == "json":
                doc = json.loads(out.getvalue())
                base_doc, cand = doc["baseline"], doc["candidate"]
                print(
                    f"simulate --format json: {elapsed:.1f} s wall, {cpu:.1f} s CPU on one core for"
                    f" {base_doc['reports']} reports ({1e6 * cpu / max(base_doc['reports'], 1):.0f} us CPU a report,"
                    f" both policies; load average {os.getloadavg()[0]:.1f})"
                )
                print(f"  second reads: current {base_doc['workload']['reads']}, stricter {cand['workload']['reads']};"
                      f" discrepancy cases {len(doc['discrepancy_cases'])}")  # fmt: skip
            else:
                print(f"simulate --format table: {elapsed:.1f} s wall, {cpu:.1f} s CPU")
    finally:
        if args.keep or args.reuse:
            print(f"store kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
