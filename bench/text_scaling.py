r"""Cost per KB of the text layer and the QA rules, from 1 KB to 1 MB, per text shape.

Run by hand (about a minute without 1 MB, several with it):

    PYTHONPATH=. .venv/bin/python bench/text_scaling.py                 # 1 KB .. 1 MB
    PYTHONPATH=. .venv/bin/python bench/text_scaling.py --sizes 8,64,128
    PYTHONPATH=. .venv/bin/python bench/text_scaling.py --count --sizes 16,128 --json

Each shape is a synthetic stretch of text (no corpus text) put into the
findings and the impression of ``samples/hl7/xr-chest-2v-normal.hl7`` and run
through ``listener.pipeline.process`` (decode, text layer, every QA rule,
routing). Shapes (docs/hardening.md, "Linear text analysis"):

* ``natural``: short clinical sentences, the way reports are written;
* ``runon``: the same clauses with no sentence break (one giant sentence);
* ``list``: a mention-dense list ("effusion, effusion, ...");
* ``sides``: side words only ("left right left right ...");
* ``triggers``: negation and hedge words only ("no possible no possible ...");
* ``adversarial``: findings, negations and side words packed together;
* ``crossed``: sentences that affirm and deny one finding on opposite sides
  (every mention pairs with every other in the cross-sentence rules);
* ``items``: numbered items at several sites, each site's finding affirmed at
  one and denied at the next (the contradiction rule's site tests for every
  affirmation and denial of a finding found at many sites);
* ``obx``: whole short reports one after another, each line under its own
  heading (EXAM, TECHNIQUE, FINDINGS, IMPRESSION, COMPARISON; line breaks as
  HL7's ``\.br\``), as a message of many OBX segments carries them: thousands
  of sections;
* ``headings``: findings and impression headings inside the text, again and
  again (the sectionizer's heading tests, and every section's walk);
* ``sections``: sections of five kinds again and again, technique among them
  (the coding rules' tests of a title sentence against every section);
* ``agerun``: a run-on of negated age statements, "no open growth plates, "
  (the age rule's look for a negation before each statement);
* ``placeholders``: template placeholders on one long line, "size __ cm,
  measuring *** cm." (the placeholder rule's test of each one's line: work in
  C, string searches and copies, which ``--count`` does not see; timed, with
  ``--repeat``, at 64 KB against 1 MB);
* ``anaphora``: critical findings, each followed by a sentence that refers
  back to it and ends without a period, "Large pneumothorax! This is new!"
  (the communication rules' look for "known" in the next sentence);
* ``nospace``: a list with no blank in it, "effusion,effusion,..." (one
  whitespace-separated token: the sentence cap counts pieces of at most 32
  characters of it, and the contradiction rule's list and denial tests).

Default (timed) mode prints ms/KB per shape and size, and exits 1 when a
shape's ms/KB at the largest size exceeds ``--factor`` (default 2.5) times its
ms/KB at the smallest size of at least 8 KB (smaller sizes are dominated by
the fixed cost of a message). ``--repeat N`` times each message N times and
keeps the fastest (less noise from a shared machine).

``--count`` replaces the clock by a deterministic measure of work: the number
of Python and C function calls (``sys.setprofile``), plus the number of Python
lines run (``sys.settrace``: a loop that calls nothing, such as a walk over a
section's sentences, counts too), plus the number of characters handed to the
regular-expression engine (every pattern compiled after start-up is wrapped;
each search/match/finditer/findall/fullmatch/sub call counts the characters
from ``pos`` to the end of its last match, or to ``endpos`` when it found
nothing; a match counts its length). ``tests/unit/text/test_linear_cost.py``
runs it in a subprocess and compares 4 KB with 32 KB for every shape and 32 KB
with 256 KB for most of them (``--also 256:SHAPE,...``: those shapes at 256 KB
too, in the same run); it times ``placeholders`` (work in C) at 64 KB and 1 MB
with ``--repeat 3``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7"
FINDINGS_ANCHOR = b"The lungs are clear."
IMPRESSION_ANCHOR = b"No acute cardiopulmonary abnormality."

SHAPES: dict[str, bytes] = {
    "natural": (
        b"There is mild patchy opacity in the left lower lobe. No pleural effusion on the right. "
        b"The heart is normal in size. There is no pneumothorax. Possible small nodule in the right upper lobe. "
    ),
    "runon": (
        b"there is mild patchy opacity in the left lower lobe and no effusion on the right side and the heart "
        b"is normal in size and there is no pneumothorax and "
    ),
    "list": b"effusion, ",
    "sides": b"left right ",
    "triggers": b"no possible ",
    "adversarial": b"no pneumothorax left right ",
    "crossed": b"Right pneumothorax. No pneumothorax on the left. Small left effusion. No effusion on the right. ",
    "items": b"1. Left wrist. Fracture of the distal radius. 2. Right knee. No fracture. ",
    "obx": (
        b"\\.br\\EXAM: Chest two views.\\.br\\TECHNIQUE: PA and lateral.\\.br\\FINDINGS: The lungs are clear."
        b"\\.br\\IMPRESSION: Normal chest. COMPARISON: None.\\.br\\"
    ),
    "headings": b"FINDINGS: Small effusion. IMPRESSION: Small effusion. ",
    "sections": (
        b"COMPARISON: CT 2023-02-07. TECHNIQUE: PA and lateral. INDICATION: Cough. "
        b"FINDINGS: Left effusion. IMPRESSION: Right effusion. "
    ),
    "agerun": b"no open growth plates, ",
    "placeholders": b"size __ cm, measuring *** cm. ",
    "anaphora": b"Large pneumothorax! This is new! ",
    "nospace": b"effusion,",
}
DEFAULT_SIZES = (1, 8, 16, 64, 128, 256, 1024)


def message(shape: str, kb: int) -> bytes:
    """The sample message with ``kb`` KB of ``shape`` text, 3/4 in the findings and 1/4 in the impression."""
    raw = SAMPLE.read_bytes()
    unit = SHAPES[shape]
    n = max(1, kb * 1024 // len(unit))
    n_imp = n // 4
    raw = raw.replace(FINDINGS_ANCHOR, FINDINGS_ANCHOR + b" " + unit * (n - n_imp))
    return raw.replace(IMPRESSION_ANCHOR, IMPRESSION_ANCHOR + b" " + unit * n_imp)


class _Counted:
    """A compiled pattern that adds the characters it is asked to read to ``_Counted.chars``."""

    chars = 0
    __slots__ = ("_p",)

    def __init__(self, p: re.Pattern[str]) -> None:
        self._p = p

    @staticmethod
    def _span(s: str, pos: int, endpos: int) -> int:
        return max(0, min(endpos, len(s)) - max(pos, 0))

    def search(self, s: str, pos: int = 0, endpos: int = sys.maxsize):  # type: ignore[no-untyped-def]
        m = self._p.search(s, pos, endpos)
        _Counted.chars += self._span(s, pos, endpos if m is None else m.end())
        return m

    def match(self, s: str, pos: int = 0, endpos: int = sys.maxsize):  # type: ignore[no-untyped-def]
        m = self._p.match(s, pos, endpos)
        _Counted.chars += 1 if m is None else 1 + m.end() - m.start()
        return m

    def fullmatch(self, s: str, pos: int = 0, endpos: int = sys.maxsize):  # type: ignore[no-untyped-def]
        m = self._p.fullmatch(s, pos, endpos)
        _Counted.chars += 1 if m is None else 1 + m.end() - m.start()
        return m

    def finditer(self, s: str, pos: int = 0, endpos: int = sys.maxsize):  # type: ignore[no-untyped-def]
        last = max(pos, 0)
        for m in self._p.finditer(s, pos, endpos):
            _Counted.chars += 1 + m.end() - last
            last = m.end()
            yield m
        _Counted.chars += self._span(s, last, endpos)

    def findall(self, s: str, pos: int = 0, endpos: int = sys.maxsize):  # type: ignore[no-untyped-def]
        _Counted.chars += self._span(s, pos, endpos)
        return self._p.findall(s, pos, endpos)

    def sub(self, repl, s: str, count: int = 0):  # type: ignore[no-untyped-def]
        _Counted.chars += len(s)
        return self._p.sub(repl, s, count)

    def subn(self, repl, s: str, count: int = 0):  # type: ignore[no-untyped-def]
        _Counted.chars += len(s)
        return self._p.subn(repl, s, count)

    def split(self, s: str, maxsplit: int = 0):  # type: ignore[no-untyped-def]
        _Counted.chars += len(s)
        return self._p.split(s, maxsplit)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._p, name)


def _count_regex() -> None:
    """Wrap every pattern compiled from now on (call before importing ``listener``)."""
    real = re.compile

    def compile(pattern, flags=0):  # type: ignore[no-untyped-def]
        p = real(pattern, flags)
        return p if isinstance(pattern, bytes) else _Counted(p)

    re.compile = compile  # type: ignore[assignment]


class WorkCounter:
    """Counts Python and C function calls (``sys.setprofile``) and Python lines run (``sys.settrace``)
    while it is entered: ``units`` is their sum."""

    def __init__(self) -> None:
        self.units = 0

    def _hook(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call" or event == "c_call":
            self.units += 1

    def _trace(self, frame, event, arg):  # type: ignore[no-untyped-def]
        return self._line  # every frame's lines are counted

    def _line(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "line":
            self.units += 1
        return self._line

    def __enter__(self) -> WorkCounter:
        sys.setprofile(self._hook)
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)
        sys.setprofile(None)


def verdict(table: dict[str, dict[int, float]], *, factor: float, as_json: bool, growth: Callable[..., float]) -> int:
    """Print the table (``as_json``) or each shape's growth; 1 when a shape grows more than ``factor``."""
    if as_json:
        print(json.dumps({s: {str(k): v for k, v in row.items()} for s, row in table.items()}))
    bad = []
    for shape, row in table.items():
        g = growth(row)
        if not as_json:
            print(f"{shape:12} growth of cost per KB {g:5.2f}x")
        if g > factor:
            bad.append(shape)
    if bad:
        print("super-linear: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


def run(
    shapes: list[str], sizes: list[int], count: bool, repeat: int = 1, also: dict[str, list[int]] | None = None
) -> dict[str, dict[int, float]]:
    """Cost per KB for each shape and size: ms/KB (the fastest of ``repeat`` runs), or (``count``) work units/KB.

    ``also``: more sizes for some shapes (each shape's sizes run in increasing order).
    """
    if count:
        _count_regex()
    sys.path.insert(0, str(REPO))
    from listener.pipeline import process
    from tests.unit.qa.factory import pipeline

    p = pipeline()
    now = datetime.now(UTC)
    process(message("natural", 1), p, received_at=now)  # warm-up: lazy compiles, caches
    out: dict[str, dict[int, float]] = {}
    for shape in shapes:
        out[shape] = {}
        for kb in sorted({*sizes, *(also or {}).get(shape, [])}):
            raw = message(shape, kb)
            if count:
                _Counted.chars = 0
                with WorkCounter() as work:
                    process(raw, p, received_at=now)
                out[shape][kb] = (work.units + _Counted.chars) / kb
            else:
                best = float("inf")
                for _ in range(max(1, repeat)):
                    t = time.perf_counter()
                    process(raw, p, received_at=now)
                    best = min(best, time.perf_counter() - t)
                out[shape][kb] = best * 1000 / kb
            if not count:
                print(f"{shape:12} {kb:5} KB {out[shape][kb]:8.1f} ms/KB", flush=True)
    return out


def growth(per_kb: dict[int, float]) -> float:
    """Cost per KB at the largest size over cost per KB at the smallest size of at least 8 KB."""
    sizes = sorted(per_kb)
    base = [s for s in sizes if s >= 8] or sizes
    return per_kb[sizes[-1]] / per_kb[base[0]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="KB, comma-separated")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of: " + ", ".join(SHAPES))
    ap.add_argument("--factor", type=float, default=2.5, help="largest allowed growth of the cost per KB")
    ap.add_argument("--count", action="store_true", help="count work (calls + regex characters) instead of time")
    ap.add_argument("--json", action="store_true", help="print the table as one JSON object")
    ap.add_argument("--repeat", type=int, default=1, help="timed mode: keep the fastest of this many runs")
    ap.add_argument(
        "--also", action="append", default=[], metavar="KB:SHAPE,...", help="these shapes at this size too (repeatable)"
    )
    args = ap.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    shapes = [s for s in args.shapes.split(",") if s]
    also: dict[str, list[int]] = {}
    for spec in args.also:
        kb, _, names = spec.partition(":")
        for name in names.split(","):
            if name not in shapes:
                ap.error(f"--also {spec}: {name!r} is not one of the shapes run")
            also.setdefault(name, []).append(int(kb))
    table = run(shapes, sizes, args.count, args.repeat, also)
    return verdict(table, factor=args.factor, as_json=args.json, growth=growth)


if __name__ == "__main__":
    sys.exit(main())
