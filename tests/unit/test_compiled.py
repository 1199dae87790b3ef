"""The modules mypyc-modules.txt lists: compiled all or none, and never older than their sources.

setup.py compiles them unless OVERREAD_MYPYC=0, when it can (docs/development.md, "Compiled modules");
any other build is pure Python and these tests say so in their skip line.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def listed_modules() -> list[str]:
    """The dotted names of the modules mypyc-modules.txt lists."""
    names = set()
    for line in (REPO / "mypyc-modules.txt").read_text(encoding="utf-8").splitlines():
        pattern = line.split("#", 1)[0].strip()
        if pattern:
            names.update(".".join(p.relative_to(REPO).with_suffix("").parts) for p in REPO.glob(pattern))
    return sorted(n.removesuffix(".__init__") for n in names)


def compiled_files() -> dict[str, Path]:
    """Each listed module -> the file it was imported from."""
    return {name: Path(importlib.import_module(name).__file__ or "") for name in listed_modules()}


def test_the_list_names_the_pipeline() -> None:
    assert {"listener.pipeline", "listener.qa.engine", "listener.text.scanner"} <= set(listed_modules())


def test_all_or_none_compiled() -> None:
    """A build compiles every listed module or none (a module listed since the build fails here)."""
    files = compiled_files()
    compiled = sorted(n for n, f in files.items() if f.suffix == ".so")
    if not compiled:
        pytest.skip("pure Python build: no module of mypyc-modules.txt is compiled (docs/development.md)")
    assert compiled == sorted(files), f"not compiled: {sorted(set(files) - set(compiled))}"


def test_compiled_modules_are_not_older_than_their_sources() -> None:
    """A compiled module shadows its .py: an edit since the build would not run (make rebuilds them).

    The code of every module is in the group's library (``overread__mypyc``, setup.py); a module's
    own ``.so`` only loads it, and a rebuild leaves it as it was.
    """
    spec = importlib.util.find_spec("overread__mypyc")
    if spec is None or spec.origin is None:
        pytest.skip("pure Python build: no overread__mypyc library (docs/development.md)")
    built = Path(spec.origin).stat().st_mtime
    stale = []
    for name, file in compiled_files().items():
        source = file.with_name(file.name.split(".", 1)[0] + ".py")
        if file.suffix == ".so" and source.exists() and source.stat().st_mtime > built:
            stale.append(name)
    assert not stale, f"edited since compiled (run make test, or setup.py build_ext --inplace): {stale}"
