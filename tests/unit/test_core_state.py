"""The core keeps no module-level cache: derived data lives on the frozen config values.

A module-level empty dict, list or set (``_CACHE: dict[...] = {}``) is the
shape of a cache filled at run time; the core (decoding, text, QA, routing,
the pipeline and the model) computes what it derives when its configuration
is loaded instead. Constants (filled literals, frozensets, MappingProxyType,
compiled patterns) are fine.

A module-level instance of a stateful class (one whose ``__init__`` sets an
attribute to an empty container, such as a memo or
:class:`listener.text.TextCache`) is a cache too: results shared between
messages live in an object the caller creates per report and passes on.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "listener"
CORE = ("hl7v2", "fhir", "text", "qa", "routing", "outcomes", "pipeline.py", "model.py")
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


#: Cache classes named outright, whether or not the core defines them.
_CACHE_CLASSES = frozenset({"Memo", "TextCache"})


def _call_name(value: ast.expr | None) -> str:
    if not isinstance(value, ast.Call):
        return ""
    func = value.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _stateful_classes(trees: list[ast.Module]) -> set[str]:
    """Classes whose ``__init__`` sets ``self.<name>`` to an empty container."""
    found: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if not (isinstance(item, ast.FunctionDef) and item.name == "__init__"):
                    continue
                for stmt in ast.walk(item):
                    targets: list[ast.expr]
                    value: ast.expr | None
                    if isinstance(stmt, ast.Assign):
                        targets, value = stmt.targets, stmt.value
                    elif isinstance(stmt, ast.AnnAssign):
                        targets, value = [stmt.target], stmt.value
                    else:
                        continue
                    to_self = any(
                        isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
                        for t in targets
                    )
                    if to_self and _is_empty_container(value):
                        found.add(node.name)
    return found


def _module_level_instances(trees: dict[str, ast.Module], classes: set[str]) -> list[str]:
    found = []
    for where, tree in trees.items():
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            name = _call_name(value)
            if name in classes:
                found.append(f"{where}:{node.lineno} {name}()")
    return found


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


def test_no_module_level_cache_objects_in_the_core() -> None:
    """``_SENTENCES = Memo()``: a module-level instance of a stateful class shares results between messages."""
    trees = {str(path.relative_to(ROOT.parent)): ast.parse(path.read_text(encoding="utf-8")) for path in _core_files()}
    classes = _stateful_classes(list(trees.values())) | _CACHE_CLASSES
    assert "TextCache" in _stateful_classes(list(trees.values()))
    assert _module_level_instances(trees, classes) == []


def test_the_cache_object_check_finds_a_memo() -> None:
    source = """
class Memo:
    def __init__(self, size: int = 32) -> None:
        self._d: dict[object, object] = {}
        self._size = size


class Plain:
    def __init__(self) -> None:
        self.size = 3


_SENTENCES = Memo()
_LIMIT: Plain = Plain()
"""
    tree = ast.parse(source)
    classes = _stateful_classes([tree])
    assert classes == {"Memo"}
    assert _module_level_instances({"m.py": tree}, classes) == ["m.py:13 Memo()"]
