"""Benchmark ``collect()``: a window's accessions graded from the store, cold and warm.

Run by hand: ``.venv/bin/python bench/outcome_data.py [--accessions 2000] [--dir DIR]``

Builds a SQLite store (in ``--dir``, default a temporary directory under
./var) holding N accessions, each a preliminary and a final of one of the
sample HL7 bodies (samples/hl7), decoded and saved as the daemon saves them.
The final varies: unchanged, a critical finding added, a finding added, a
sentence reworded. Then it times, in one process:

* ``cold``: ``collect()`` on an empty comparisons cache (every pair's two
  raw bodies decoded again and compared; results written to the cache);
* ``warm``: ``collect()`` again (every pair read from the cache);
* the warm call's store reads alone: the window's accessions with two
  versions (every one here: no lone version to count), the
  accessions' rows (one ``report_history`` each, against the one
  ``report_histories`` call collect makes), each accession's scores (one
  ``scores`` each, against one ``scores_of_accessions`` call).

docs/outcomes.md, "Scorecards: where the figures come from".
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from listener.assemble import build_pipeline  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.outcome_data import HistoryContext, collect  # noqa: E402
from listener.outcomes import load_outcome_rules  # noqa: E402
from listener.pipeline import Pipeline, process  # noqa: E402
from listener.store import ScoreRecord, SQLiteStore  # noqa: E402
from listener.store.base import HISTORY_LIMIT  # noqa: E402
from tests.unit.store.records import processed  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC)
#: Sentences appended to the final's last text row: none, a critical finding, a finding, a rewording.
FINAL_EDITS = (
    b"",
    b" There is a large right pneumothorax.",
    b" Small left pleural effusion.",
    b" Otherwise unremarkable.",
)


def _set_field(segment: bytes, index: int, value: bytes) -> bytes:
    fields = segment.split(b"|")
    if len(fields) > index:
        fields[index] = value
    return b"|".join(fields)


def _versions(raw: bytes, accession: bytes, new: bytes, edit: bytes) -> tuple[bytes, bytes]:
    """(prelim, final) of a sample: OBR-25 and OBX-11 ``P`` in the prelim, ``edit`` appended to the final's last OBX."""
    segments = raw.replace(accession, new).split(b"\r")
    prelim, final = [], []
    last_obx = max((i for i, s in enumerate(segments) if s.startswith(b"OBX|")), default=-1)
    for i, seg in enumerate(segments):
        p = _set_field(seg, 25, b"P") if seg.startswith(b"OBR|") else seg
        p = _set_field(p, 11, b"P") if seg.startswith(b"OBX|") else p
        prelim.append(p)
        if i == last_obx and edit:
            fields = seg.split(b"|")
            fields[5] = fields[5] + edit
            seg = b"|".join(fields)
        final.append(seg)
    return b"\r".join(prelim), b"\r".join(final)


def _samples(pipeline: Pipeline) -> list[tuple[bytes, bytes]]:
    """(body, accession) of each sample that decodes to one report with an accession."""
    out = []
    for path in sorted((REPO / "samples/hl7").glob("*.hl7")):
        raw = path.read_bytes()
        outcome = process(raw, pipeline, received_at=T0)
        if len(outcome.reports) == 1 and outcome.reports[0].report.accession:
            out.append((raw, outcome.reports[0].report.accession.encode()))
    return out


def build(store: SQLiteStore, pipeline: Pipeline, n: int) -> int:
    """Save N accessions (prelim and final); return the messages stored."""
    samples = _samples(pipeline)
    pending = []
    saved = 0
    for i in range(n):
        raw, accession = samples[i % len(samples)]
        prelim, final = _versions(raw, accession, b"BENCH%06d" % i, FINAL_EDITS[i % len(FINAL_EDITS)])
        at = T0 + timedelta(minutes=10 * i)
        records = [
            processed(pipeline, prelim, f"P{i}", at),
            processed(pipeline, final, f"F{i}", at + timedelta(hours=8)),
        ]
        saved += sum(1 for r in records if r.reports)
        pending.extend(store.submit(r) for r in records if r.reports)
        if len(pending) >= 256:
            for f in pending:
                f.result()
            pending.clear()
    for f in pending:
        f.result()
    store.record_scores([ScoreRecord(f"BENCH{i:06d}", "2a", "csv", T0 + timedelta(days=60)) for i in range(0, n, 50)])
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accessions", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where the store is built (default: under ./var)")
    args = parser.parse_args(argv)
    base = args.dir or REPO / "var"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-outcome-data-", dir=base))
    pipeline = build_pipeline(load_config(None))
    ctx = HistoryContext(pipeline, load_outcome_rules(), {})
    store = SQLiteStore.in_state_dir(workdir)
    try:
        started = time.perf_counter()
        messages = build(store, pipeline, args.accessions)
        print(
            f"store: {args.accessions} accessions, {messages} messages, built in {time.perf_counter() - started:.1f} s"
        )
        window = {"since": T0, "until": T0 + timedelta(days=365)}
        started = time.perf_counter()
        cold = collect(store, ctx, **window).outcomes
        cold_s = time.perf_counter() - started
        graded = sum(1 for o in cold for g in o.graded if g.comparable)
        pairs = sum(len(o.graded) for o in cold)
        print(
            f"cold: {cold_s:.2f} s for {len(cold)} accessions, {pairs} pairs, {graded} compared"
            f" ({1000 * cold_s / max(graded, 1):.2f} ms/pair)"
        )
        grades: dict[str, int] = {}
        for o in cold:
            for g in o.graded:
                grades[str(g.grade)] = grades.get(str(g.grade), 0) + 1
        print(f"      grades: {dict(sorted(grades.items()))}")
        times = []
        for _ in range(3):
            started = time.perf_counter()
            warm = collect(store, ctx, **window).outcomes
            times.append(time.perf_counter() - started)
        assert [o.graded for o in warm] == [o.graded for o in cold]
        best = min(times)
        print(f"warm: {best:.3f} s best of 3 ({1000 * best / max(len(warm), 1):.3f} ms/accession)")
        # The warm call's store reads, one by one.
        started = time.perf_counter()
        accessions = store.window_versions(window["since"], window["until"], ()).multi
        t_window = time.perf_counter() - started
        started = time.perf_counter()
        for a in accessions:
            store.report_history(a, limit=HISTORY_LIMIT)
        t_history = time.perf_counter() - started
        started = time.perf_counter()
        store.report_histories(accessions, limit=HISTORY_LIMIT)
        t_histories = time.perf_counter() - started
        started = time.perf_counter()
        for a in accessions:
            store.scores(a, limit=HISTORY_LIMIT)
        t_scores = time.perf_counter() - started
        started = time.perf_counter()
        store.scores_of_accessions(accessions, limit=HISTORY_LIMIT)
        t_scores_once = time.perf_counter() - started
        print(
            f"      store reads: window {1000 * t_window:.1f} ms, report_history x{len(accessions)}"
            f" {1000 * t_history:.1f} ms (report_histories once: {1000 * t_histories:.1f} ms),"
            f" scores x{len(accessions)} {1000 * t_scores:.1f} ms"
            f" (scores_of_accessions once: {1000 * t_scores_once:.1f} ms)"
        )
    finally:
        store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
