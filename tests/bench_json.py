"""Run a bench script with ``--json`` in a subprocess and read the table it prints last.

The linear-cost guards (tests/unit/text/test_linear_cost.py, tests/unit/fhir/test_linear_cost.py)
count work through ``bench/text_scaling.py`` and ``bench/fhir_scaling.py``, whose counters hook
``re.compile`` and the profiler: a subprocess keeps those hooks away from every other test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_json(script: str, *args: str) -> dict[str, dict[str, float]]:
    """``bench/<script> --json ARGS``'s last line, parsed: {shape: {size: cost per KB}}."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
