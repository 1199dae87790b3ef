"""The text layer and the QA rules cost time linear in the report's length.

Not timed: ``bench/text_scaling.py --count`` measures work deterministically
(Python and C function calls, counted by ``sys.setprofile``, Python lines run,
counted by ``sys.settrace``, plus the characters handed to the
regular-expression engine), in a subprocess so that its hooks and its wrapping
of ``re.compile`` touch no other test. See docs/hardening.md, "Linear text
analysis".

Two steps are checked:

* every shape from 4 KB to 32 KB: the cost per KB at 32 KB stays within
  ``_BOUND`` times its cost at 4 KB. A quadratic term in a sentence (main
  before the sentence cap: ``runon`` 4.0x, ``list`` 7.5x) shows here.
* the shapes of ``LARGE_SHAPES`` from 32 KB to 256 KB, within
  ``_LARGE_BOUND``. A quadratic term across sentences (a rule comparing every
  finding with every other) is small next to the per-message cost at 4 KB and
  shows only at the larger size: main before the pair indexes gave
  ``natural`` 4.3x and ``runon`` 1.4x here, and 1.6x and 0.9x from 4 to 32 KB,
  which the first check let through; ``headings`` (a heading tested against
  every heading found before it) 1.6x and 4.6x. Past 32 KB the fixed cost of a message
  is spread thin, so linear code gives 0.99-1.0x; ``sides`` and
  ``adversarial`` (the side-word attachment, the dearest shapes) are left at
  32 KB to keep the test near 45 s.

Nothing is timed here: work done in C, such as a string searched back to its
line's start or a line copied for each placeholder on it, is not a call, a
line or a regex character, so the count does not see it. ``placeholders``
(3.4-3.9x before its fix) is checked by hand with the bench's clock:
``bench/text_scaling.py --repeat 3 --sizes 64,1024 --shapes placeholders
--factor 2`` exits 1 above 2x (docs/hardening.md, "Linear text analysis").
"""

from __future__ import annotations

import pytest

from tests.bench_json import bench_json

_BOUND = 2.0
_LARGE_BOUND = 1.25
_SMALL, _MEDIUM, _LARGE = 4, 32, 256

SHAPES = [
    "natural",
    "runon",
    "list",
    "sides",
    "triggers",
    "adversarial",
    "crossed",
    "items",
    "obx",
    "headings",
    "sections",
    "agerun",
    "placeholders",
    "anaphora",
    "nospace",
]
LARGE_SHAPES = ["natural", "runon", "list", "triggers", "crossed", "obx", "headings", "sections"]


@pytest.fixture(scope="module")
def costs() -> dict[str, dict[str, float]]:
    """Work units per KB of every shape at the small and medium sizes, and of ``LARGE_SHAPES`` at the
    large size too: one run, each shape's sizes one after another (the process and its pipeline built once)."""
    args = ["--count", "--factor", "1000", "--sizes", f"{_SMALL},{_MEDIUM}"]
    return bench_json("text_scaling.py", *args, "--also", f"{_LARGE}:{','.join(LARGE_SHAPES)}")


def _check(row: dict[str, float], small: int, large: int, bound: float, shape: str) -> None:
    a, b = row[str(small)], row[str(large)]
    assert b <= bound * a, f"{shape}: {a:.0f} -> {b:.0f} work units per KB ({b / a:.2f}x, {small} -> {large} KB)"


@pytest.mark.parametrize("shape", SHAPES)
def test_cost_per_kb_is_flat(costs: dict[str, dict[str, float]], shape: str) -> None:
    _check(costs[shape], _SMALL, _MEDIUM, _BOUND, shape)


@pytest.mark.parametrize("shape", LARGE_SHAPES)
def test_cost_per_kb_stays_flat_at_large_sizes(costs: dict[str, dict[str, float]], shape: str) -> None:
    _check(costs[shape], _MEDIUM, _LARGE, _LARGE_BOUND, shape)


def test_every_bench_shape_is_guarded(costs: dict[str, dict[str, float]]) -> None:
    assert sorted(costs) == sorted(SHAPES)
