"""Every input the fuzzers ever crashed on, replayed through the same property checks.

The files live in tests/data/fuzz/<target>/ (target: framer, header, hl7, fhir);
fuzz/properties.py holds the checks that fuzz/run.py runs under atheris, so a
regression fails here, in the normal suite, without atheris installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.properties import TARGETS

DATA = Path(__file__).resolve().parent.parent / "data" / "fuzz"
CASES = sorted(
    (target, path)
    for target in TARGETS
    for path in (DATA / target).glob("*")
    if path.is_file() and not path.name.startswith(".")
)


def test_regression_files_exist_for_known_targets_only() -> None:
    """Each folder under tests/data/fuzz is a fuzz target, and at least one crash is kept."""
    folders = {p.name for p in DATA.iterdir() if p.is_dir()}
    assert folders <= set(TARGETS)
    assert CASES


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_crashing_input_now_passes(target: str, path: Path) -> None:
    """The saved input satisfies its target's properties (it once raised or broke one)."""
    TARGETS[target](path.read_bytes())
