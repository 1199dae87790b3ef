"""Decode throughput: our ORU decoder vs python-hl7's full parse vs hl7apy.

Run by hand (`make bench` or `.venv/bin/python bench/decode.py [FILE]`); prints
figures, asserts nothing. Default input: a ~2.5 KB radiology ORU from
../shared/corpus (read at run time), else samples/hl7.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from listener.assemble import build_pipeline  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.hl7v2.decode import decode_message  # noqa: E402

DEFAULT = ROOT.parent / "shared/corpus/hl7/scout/oru_v24_prelim_mr_cardiac_accession_prefix.hl7"


def timed(label: str, func, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Run func repeatedly for about `seconds`; print per-call median/p99 and rate."""
    func()  # warm-up (loads hl7apy tables, compiles regexes)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        func()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    med = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(
        f"{label:<42} {1 / med:>9.0f} msg/s   median {med * 1e3:7.3f} ms   p99 {p99 * 1e3:7.3f} ms   n={len(samples)}"
    )
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    path: Path = args.file if args.file.is_file() else sorted((ROOT / "samples/hl7").glob("*.hl7"))[0]
    raw = path.read_bytes()
    text = raw.decode("latin-1").replace("\r\n", "\r").replace("\n", "\r")
    pipeline = build_pipeline(load_config(None))
    now = datetime.now(UTC)
    print(f"input: {path.name} ({len(raw)} bytes, {text.count(chr(13))} segments)  python {sys.version.split()[0]}")
    gc.freeze()

    ours = timed(
        "overread decode_message (lenient)",
        lambda: decode_message(raw, pipeline.mappings, received_at=now, procedures=pipeline.procedures),
        args.seconds,
    )
    full = timed("python-hl7 hl7.parse (all segments)", lambda: hl7.parse(text), args.seconds)
    timed(
        "hl7apy parse_message (tolerant)",
        lambda: parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True),
        args.seconds,
    )

    def strict() -> None:
        try:
            parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
        except Exception:  # noqa: BLE001 - real feeds often fail strict; the cost is what we measure
            pass

    timed("hl7apy parse + validate (strict)", strict, args.seconds)
    print(f"our decoder / python-hl7 full parse: {full / ours:.2f}x faster")

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    keep = [
        decode_message(raw, pipeline.mappings, received_at=now, procedures=pipeline.procedures) for _ in range(1000)
    ]
    after = tracemalloc.take_snapshot()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    print(f"memory: {size / len(keep) / 1024:.1f} KiB retained per decoded message (1000 kept)")


if __name__ == "__main__":
    main()
