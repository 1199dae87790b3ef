"""The ``overread`` command the install puts beside the interpreter runs from any directory.

``make run`` starts the daemon with it, and operators type it. A compiled checkout's modules load
mypyc's group library (``overread__mypyc``, setup.py) when first imported. It sits at the top of
the checkout, outside the package, where the editable install's finder (which maps only
``listener``) does not look; the Makefile's ``overread-checkout.pth`` puts the checkout on the
path (docs/development.md, "Compiled modules"). Without it every command failed at its first
import. The suite's own daemons run ``python -m listener`` from the checkout, which finds the
library either way, so only this test runs the command itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "hl7" / "ct-abdomen-pelvis-with-contrast-diverticulitis.hl7"


def test_the_installed_command_checks_a_message_from_another_directory(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "overread"
    if not script.exists():
        pytest.skip(f"no overread command beside {sys.executable}: the package is not installed there")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), "check", str(SAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert "route" in done.stdout.lower()
