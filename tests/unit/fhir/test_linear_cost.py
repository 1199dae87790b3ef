"""FHIR bodies cost time linear in their size, whatever they repeat or reference.

``bench/fhir_scaling.py`` builds the shapes (docs/hardening.md, "FHIR input size
and shape") and counts the work (Python and C calls, lines run, characters of
report text built: ``--count``), in a subprocess so that its profiling hooks
touch no other test. The shapes: n references to one 10 KB Observation
(``same_result``), ``hasMember`` fanning out over four levels (``fanout``), n
``basedOn`` references to one ServiceRequest with 100 reasons
(``same_order``), and the plain shapes ``results`` and ``contained`` (a
reference index that scanned would show here). The cost per KB at n = 1,600
stays within ``_COUNT_BOUND`` of n = 200; main before the fix: 1.93x, 3.19x and
1.89x, after 1.22x, 0.99x, 0.86x.

The flag, reason and conclusion quadratics sat inside one C call (``x in
list``, ``line in text``), which no count sees, and no test here is timed:
``bench/fhir_scaling.py --stage report --repeat 3 --sizes 1000,8000 --shapes
flags,reasons,conclusion --factor 2.5`` checks them by hand (it exits 1 above
that growth; docs/hardening.md, "FHIR input size and shape").
"""

from __future__ import annotations

from tests.bench_json import bench_json

_COUNT_BOUND = 1.5


def _growth(*args: str) -> dict[str, float]:
    """Cost per KB at the larger size over the smaller, per shape, from ``bench/fhir_scaling.py``."""
    out = {}
    for shape, row in bench_json("fhir_scaling.py", "--factor", "1000", *args).items():
        small, large = sorted(row, key=int)
        out[shape] = row[large] / row[small]
    return out


def test_repeated_references_cost_linear_work() -> None:
    shapes = "same_result,fanout,same_order,results,contained"
    growth = _growth("--count", "--sizes", "200,1600", "--shapes", shapes)
    assert set(growth) == set(shapes.split(","))
    over = {s: round(g, 2) for s, g in growth.items() if g > _COUNT_BOUND}
    assert not over, f"work per KB grows with n: {over}"
