"""FHIR bodies cost time linear in their size, whatever they repeat or reference.

``bench/fhir_scaling.py`` builds the shapes (docs/hardening.md, "FHIR input size
and shape"); it runs in a subprocess so that its profiling hooks touch no other
test. Two checks:

* Not timed, for the shapes whose cost was work we can count (Python and C
  calls, lines run, characters of report text built: ``--count``): n
  references to one 10 KB Observation (``same_result``), ``hasMember``
  fanning out over four levels (``fanout``), n ``basedOn`` references to one
  ServiceRequest with 100 reasons (``same_order``), plus the plain shapes
  ``results`` and ``contained`` (a reference index that scanned would show
  here). The cost per KB at n = 1,600 stays within ``_COUNT_BOUND`` of n =
  200; main before the fix: 1.93x, 3.19x and 1.89x, after 1.22x, 0.99x, 0.86x.
* Timed, for the three quadratics that sit inside one C call (``x in list``,
  ``line in text``), which no counter sees: interpretation flags, reasons and
  a long conclusion. Only the building of Reports from the parsed JSON is
  timed (``--stage report``: CPU time, best of three), where the quadratic
  is all there is: main before the fix grew 6.4x to 7x from n = 1,000 to
  8,000, linear code 0.8x to 1.1x; the bound is ``_TIME_BOUND``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
_COUNT_BOUND = 1.5
_TIME_BOUND = 2.5


def _growth(*args: str) -> dict[str, float]:
    """Cost per KB at the larger size over the smaller, per shape, from ``bench/fhir_scaling.py``."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fhir_scaling.py"), "--json", "--factor", "1000", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table: dict[str, dict[str, float]] = json.loads(proc.stdout.strip().splitlines()[-1])
    out = {}
    for shape, row in table.items():
        small, large = sorted(row, key=int)
        out[shape] = row[large] / row[small]
    return out


def test_repeated_references_cost_linear_work() -> None:
    shapes = "same_result,fanout,same_order,results,contained"
    growth = _growth("--count", "--sizes", "200,1600", "--shapes", shapes)
    assert set(growth) == set(shapes.split(","))
    over = {s: round(g, 2) for s, g in growth.items() if g > _COUNT_BOUND}
    assert not over, f"work per KB grows with n: {over}"


def test_flags_reasons_and_conclusion_cost_linear_time() -> None:
    growth = _growth(
        "--stage", "report", "--repeat", "3", "--sizes", "1000,8000", "--shapes", "flags,reasons,conclusion"
    )
    assert set(growth) == {"flags", "reasons", "conclusion"}
    over = {s: round(g, 2) for s, g in growth.items() if g > _TIME_BOUND}
    assert not over, f"CPU time per KB grows with n: {over}"
