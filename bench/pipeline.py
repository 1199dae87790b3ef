"""Where one message's CPU goes in the daemon: per-stage times, in process.

Run by hand: ``.venv/bin/python bench/pipeline.py [--seconds S] [--profile N] [FILE...]``.

Uses the real default configuration (``build_pipeline(load_config(None))``) and the
real code of each stage, on the reactor thread's path of ``Intake.receive``:

* ``frame+unframe``: ``mllp.frame`` and ``MllpFramer.feed`` of the message;
* ``read_header``: the MSH read done before the duplicate lookup;
* ``decode``: ``decode_message`` (bytes -> Reports);
* ``qa``: ``run_rules`` over each report (text analysis + every enabled rule);
* ``route``: ``Pipeline.decide_route`` (routing facts + policy rules);
* ``pipeline.process``: the three above as the daemon calls them;
* ``serialize``: the store columns (report/findings/route JSON) of ``_reports``;
* ``ack``: the intake's ACK builder (``listener.intake.ack_builder``: control id, ``build_ack``);
* ``log``: the ``message_processed`` line (bind + keyed hashes + JSON render to
  /dev/null, the daemon's processor chain);
* ``receive (reactor)``: all of ``Intake.receive`` up to the store submit,
  store commits excluded (a store stub that answers at once);
* ``commit``: one ``SQLiteStore.save`` (synchronous=FULL), wall clock, for
  reference (every other stage is this thread's CPU time).

Default input: the corpus message of bench/mllp.py plus a few samples/hl7
messages. Every call analyses its text afresh: the text layer's results live in
one report's ``TextCache``, not across calls. Prints the median and p90 per stage in microseconds. ``--profile N``
also prints the top N functions of a cProfile run of ``Intake.receive``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from listener.assemble import build_pipeline  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.hl7v2.decode import decode_message  # noqa: E402
from listener.hl7v2.mllp import MllpFramer, frame  # noqa: E402
from listener.hl7v2.segments import read_header  # noqa: E402
from listener.intake import outcome_ack_code  # noqa: E402
from listener.intake import report_records as _reports  # noqa: E402
from listener.logs import configure_logging, get_logger, keyed_hash  # noqa: E402
from listener.pipeline import process  # noqa: E402
from listener.qa.engine import QaContext, run_rules  # noqa: E402
from listener.server.mllp import Intake  # noqa: E402
from listener.store.base import MessageRecord, SaveResult  # noqa: E402
from listener.store.sqlite import SQLiteStore  # noqa: E402

CORPUS_FILE = ROOT / "tests" / "data" / "hl7" / "scout" / "oru_v27_prelim_xr_chest.hl7"
SAMPLES = ("xr-chest-2v-normal.hl7", "ct-head-critical-sdh-communicated.hl7", "mr-knee-left-73721-lt.hl7")


class _NullStore:
    """Answers at once: isolates the reactor thread's CPU from the commit."""

    def submit(self, record: MessageRecord) -> Future[SaveResult]:
        fut: Future[SaveResult] = Future()
        fut.set_result(SaveResult(1, False, record.ack, record.ack_code))
        return fut


def timed(
    func: Callable[[], object], seconds: float, clock: Callable[[], float] = time.thread_time
) -> tuple[float, float, float]:
    """(minimum, median, p90) microseconds of func over about ``seconds``.

    The default clock is this thread's CPU time, so other processes on a busy
    machine do not inflate the figures (they still cost cache misses).
    """
    func()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 20:
        t0 = clock()
        func()
        samples.append(clock() - t0)
    samples.sort()
    return samples[0] * 1e6, statistics.median(samples) * 1e6, samples[int(len(samples) * 0.9)] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--seconds", type=float, default=1.0, help="per stage and message")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions of Intake.receive")
    parser.add_argument("--sort", default="tottime", help="pstats sort key for --profile")
    parser.add_argument("--no-freeze", action="store_true", help="skip gc.freeze() after loading (the daemon's state)")
    args = parser.parse_args()
    files: list[Path] = args.files or [CORPUS_FILE] + [ROOT / "samples" / "hl7" / n for n in SAMPLES]

    devnull = open("/dev/null", "w")  # noqa: SIM115 - lives for the run
    configure_logging("json", stream=devnull)
    pipeline = build_pipeline(load_config(None))
    assert pipeline.qa is not None and pipeline.decide_route is not None
    key = b"k" * 32
    now = datetime.now(UTC)
    log = get_logger("listener.server.mllp").bind(peer="127.0.0.1:1", conn=1)
    intake = Intake(pipeline, _NullStore(), hash_key=key, call_from_thread=lambda f, *a: f(*a))  # type: ignore[arg-type]
    counter = iter(range(10**9))

    def fresh(raw: bytes) -> bytes:
        fields = raw.split(b"|", 10)
        fields[9] = f"B{next(counter)}".encode()
        return b"|".join(fields)

    tmp = tempfile.TemporaryDirectory()
    store = SQLiteStore(Path(tmp.name) / "bench.db", synchronous="FULL")
    import gc

    if not args.no_freeze:
        gc.freeze()
    totals: dict[str, list[float]] = {}
    mins: dict[str, list[float]] = {}
    for path in files:
        raw = path.read_bytes()
        header = read_header(raw)
        assert header is not None
        decoded = decode_message(raw, pipeline.mappings, received_at=now, procedures=pipeline.procedures)
        ctx = QaContext(now=now)
        outcome = process(raw, pipeline, received_at=now)
        report = decoded.reports[0]
        findings = outcome.reports[0].findings
        framed = frame(raw)
        code = outcome_ack_code(outcome)

        def log_line() -> None:
            mlog = log.bind(
                control_id=header.control_id,
                sender_app=header.sending_application,
                sender_facility=header.sending_facility,
            )
            mlog.info(
                "message_processed",
                ack_code="AA",
                duration_ms=1.234,
                feed=outcome.feed,
                message_type=header.message_type,
                bucket="release",
                finding_count=len(findings),
                error_code="",
                policy_version=pipeline.version,
                accession_h=keyed_hash(report.accession, key),
                patient_h=keyed_hash(report.patient.id, key),
            )

        def receive() -> None:
            d = intake.receive(fresh(raw), log)
            d.addCallback(lambda _: None)

        def commit() -> None:
            fresh_raw = fresh(raw)
            h = read_header(fresh_raw)
            assert h is not None
            store.save(
                MessageRecord(
                    control_id=h.control_id,
                    sender_application=h.sending_application,
                    sender_facility=h.sending_facility,
                    feed=outcome.feed,
                    received=now,
                    raw=fresh_raw,
                    transport="mllp",
                    state="processed",
                    ack_code="AA",
                    ack=b"ACK",
                    error_code="",
                    reports=_reports(outcome),
                    outbox=(),
                )
            )

        stages: dict[str, Callable[[], object]] = {
            "frame+unframe": lambda: MllpFramer().feed(framed),
            "read_header": lambda: read_header(raw),
            "decode": lambda: decode_message(raw, pipeline.mappings, received_at=now, procedures=pipeline.procedures),
            "qa": lambda: run_rules(report, pipeline.qa, ctx),  # type: ignore[arg-type]
            "route": lambda: pipeline.decide_route(report, findings, ctx),  # type: ignore[misc]
            "pipeline.process": lambda: process(raw, pipeline, received_at=now),
            "serialize": lambda: _reports(outcome),
            "ack": lambda: intake._ack(header, code, ()),
            "log": log_line,
            "receive (reactor)": receive,
            "commit (writer thread)": commit,
        }
        print(
            f"{path.name} ({len(raw)} bytes, {len(report.text)} chars of text, {len(findings)} findings,"
            f" route {outcome.reports[0].route.bucket if outcome.reports[0].route else '-'})"
        )
        for name, func in stages.items():
            clock = time.perf_counter if name.startswith("commit") else time.thread_time
            low, med, p90 = timed(func, args.seconds, clock)
            totals.setdefault(name, []).append(med)
            mins.setdefault(name, []).append(low)
            print(f"  {name:<24} min {low:8.1f} us   median {med:8.1f} us   p90 {p90:8.1f} us")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(200):
                receive()
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(args.sort).print_stats(args.profile)
            print(out.getvalue())
    print("mean over the files (us):              min   median")
    for name, values in totals.items():
        print(f"  {name:<24} {statistics.fmean(mins[name]):12.1f} {statistics.fmean(values):8.1f}")
    store.close()
    tmp.cleanup()
    devnull.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
