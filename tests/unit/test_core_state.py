"""The core keeps no module-level cache: derived data lives on the frozen config values.

A module-level empty dict, list or set (``_CACHE: dict[...] = {}``) is the
shape of a cache filled at run time; the core (decoding, text, QA, routing,
the pipeline and the model) computes what it derives when its configuration
is loaded instead. Constants (filled literals, frozensets, MappingProxyType,
compiled patterns) are fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "listener"
CORE = ("hl7v2", "fhir", "text", "qa", "routing", "pipeline.py", "model.py")
_EMPTY_CALLS = frozenset(
    {"dict", "list", "set", "defaultdict", "OrderedDict", "WeakKeyDictionary", "WeakValueDictionary"}
)


def _core_files() -> list[Path]:
    files: list[Path] = []
    for name in CORE:
        path = ROOT / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def _is_empty_container(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Dict):
        return not value.keys
    if isinstance(value, (ast.List, ast.Set)):
        return not value.elts
    if isinstance(value, ast.Call) and not value.args and not value.keywords:
        func = value.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in _EMPTY_CALLS
    return False


def test_no_module_level_empty_containers_in_the_core() -> None:
    found = []
    for path in _core_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if _is_empty_container(value):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert found == []


def test_no_memoizing_decorators_in_the_core() -> None:
    """``functools.lru_cache``/``cache`` keep a module-level table: the core does without."""
    found = []
    for path in _core_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for decorator in node.decorator_list:
                    target = decorator.func if isinstance(decorator, ast.Call) else decorator
                    name = (
                        target.id
                        if isinstance(target, ast.Name)
                        else target.attr
                        if isinstance(target, ast.Attribute)
                        else ""
                    )
                    if name in ("lru_cache", "cache"):
                        found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}")
    assert found == []
