"""Run one fuzz target under atheris (libFuzzer), time-bounded, with seeded corpora.

Usage: python fuzz/run.py TARGET [SECONDS]   (TARGET: framer, header, hl7, fhir)

The working corpus lives in var/fuzz/<target>/corpus (git-ignored) and is
seeded on every run from samples/ and, when present, ../shared/corpus. A
crashing input is written to var/fuzz/<target>/crash-<sha1>; keep it as a
regression file under tests/data/fuzz/<target>/ (see fuzz/README.md).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "corpus"
# Run as a script, Python puts fuzz/ on the path, not the repository.
sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["listener"]):
    from fuzz.properties import TARGETS, check_framer, default_pipeline  # noqa: F401  (imports listener)
    from listener.hl7v2.mllp import frame


def _seeds(target: str) -> list[bytes]:
    hl7 = [p.read_bytes() for p in sorted((REPO / "samples" / "hl7").glob("*.hl7"))]
    hl7 += [p.read_bytes() for p in sorted((SHARED / "hl7").rglob("*.hl7"))] if SHARED.is_dir() else []
    fhir = [p.read_bytes() for p in sorted((REPO / "samples" / "fhir").glob("*.json"))]
    fhir += [p.read_bytes() for p in sorted((SHARED / "fhir").rglob("*.json"))] if SHARED.is_dir() else []
    if target == "framer":
        # Byte 0 (limit) and byte 1 (chunk size) first, then framed messages,
        # one restarted half way, as the attack did.
        out = []
        for i, msg in enumerate(hl7[:20]):
            body = msg.replace(b"\x0b", b"").replace(b"\x1c", b"")
            out.append(bytes([255, i]) + frame(body) + b"\x0b" + body[:40] + frame(body))
            out.append(bytes([3, i]) + frame(body[:200]))
        return out
    if target == "fhir":
        return [f for f in fhir if len(f) < 200_000]
    return [m for m in hl7 if len(m) < 200_000]


def main() -> None:
    target = sys.argv[1]
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    check = TARGETS[target]
    work = REPO / "var" / "fuzz" / target
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in _seeds(target):
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    if target in ("hl7", "fhir"):
        default_pipeline()  # load the configuration before the clock starts
    args = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        "-timeout=20",
        "-rss_limit_mb=3072",
        f"-artifact_prefix={work}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(args, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
