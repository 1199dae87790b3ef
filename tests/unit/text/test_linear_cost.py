"""The text layer and the QA rules cost time linear in the report's length.

Not timed: ``bench/text_scaling.py --count`` measures work deterministically
(Python and C function calls, counted by ``sys.setprofile``, plus the
characters handed to the regular-expression engine), in a subprocess so that
its wrapping of ``re.compile`` touches no other test. The cost per KB of each
text shape at 32 KB must stay within ``_BOUND`` times its cost per KB at
4 KB: linear code stays near 1x, quadratic code grows about 8x (the code of
main before the sentence cap gave 4.0x for a run-on report and 7.5x for a
mention list, and failed this test). See docs/hardening.md, "Linear text
analysis". The sizes are past the 150-token sentence cap many times over;
16 KB vs 128 KB measures the same ratio but takes four times as long.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
_BOUND = 2.0
_SMALL, _LARGE = 4, 32


@pytest.fixture(scope="module")
def costs() -> dict[str, dict[str, float]]:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "text_scaling.py"),
            "--count",
            "--json",
            "--sizes",
            f"{_SMALL},{_LARGE}",
            "--factor",
            "1000",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


SHAPES = ["natural", "runon", "list", "sides", "triggers", "adversarial", "crossed"]


@pytest.mark.parametrize("shape", SHAPES)
def test_cost_per_kb_is_flat(costs: dict[str, dict[str, float]], shape: str) -> None:
    row = costs[shape]
    small, large = row[str(_SMALL)], row[str(_LARGE)]
    assert large <= _BOUND * small, f"{shape}: {small:.0f} -> {large:.0f} work units per KB ({large / small:.1f}x)"


def test_every_bench_shape_is_guarded(costs: dict[str, dict[str, float]]) -> None:
    assert sorted(costs) == sorted(SHAPES)
