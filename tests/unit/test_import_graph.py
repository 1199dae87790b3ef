"""The import graph of ``listener/`` has no cycles, and the core never imports the daemon.

Every import counts: module level, inside functions, and under
``if TYPE_CHECKING:`` (a cycle hidden from the interpreter is still a cycle for
the reader). The core packages (decoding, QA, routing, the pipeline and the
model) must not import ``listener.server`` or ``listener.store``: they are
pure, and the daemon and store are built on them, not the other way round.
The record builder (``listener.intake``: an Outcome -> the stored record and
the answer) is pure too: nothing it reaches is the daemon, a store backend or
Twisted; of the store it uses only the record types (``listener.store.base``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "listener"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

CORE = ("hl7v2", "fhir", "text", "qa", "routing", "outcomes", "pipeline", "model")
OUTER = ("server", "store")

#: Pure modules above the core that build what the store keeps and what a
#: sender is answered: whatever they reach (directly or not) is neither the
#: daemon, nor a store backend, nor Twisted. Of the store they reach only the
#: record types.
RECORD_BUILDERS = ("intake",)
RECORD_TYPES = ("store.base",)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_files(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (a package directory), by dotted name."""
    return {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package, if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    target = _resolve(alias.name, modules)
                    if target is not None:
                        found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                # "from . import x" in a package's __init__ means the package itself.
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == package or source.startswith(package + ".")):
                continue
            for alias in node.names:
                # "from listener import config": the name may be a submodule.
                target = _resolve(f"{source}.{alias.name}", modules) if alias.name != "*" else None
                if target is None or target != f"{source}.{alias.name}":
                    target = _resolve(source, modules)
                if target is not None:
                    found.add(target)
    found.discard(module)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = module_files(root)
    package = root.name
    return {name: imports_of(name, path, modules, package) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that ends where it starts) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        # Tarjan's algorithm; the graph is small, recursion depth is fine.
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return component  # unreachable for a strongly connected component


def _in(module: str, packages: tuple[str, ...], package: str = PACKAGE) -> bool:
    return any(module == f"{package}.{p}" or module.startswith(f"{package}.{p}.") for p in packages)


def core_violations(graph: dict[str, set[str]], package: str = PACKAGE) -> list[str]:
    """Arrows from a core module to ``server`` or ``store``."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if _in(module, CORE, package)
        for target in targets
        if _in(target, OUTER, package)
    )


def test_graph_sees_the_package() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.pipeline" in graph
    assert f"{PACKAGE}.model" in graph[f"{PACKAGE}.pipeline"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (one per tangle; the tangle's modules in brackets):\n" + "\n".join(
        " -> ".join(c) + f"  [{', '.join(sorted(_tangle(c[0], graph)))}]" for c in cycles
    )


def _tangle(module: str, graph: dict[str, set[str]]) -> set[str]:
    """The modules on some cycle through ``module`` (reachable from it and reaching it)."""
    reverse: dict[str, set[str]] = {}
    for source, targets in graph.items():
        for target in targets:
            reverse.setdefault(target, set()).add(source)
    return _reachable(module, graph) & _reachable(module, reverse)


def test_core_does_not_import_server_or_store() -> None:
    violations = core_violations(import_graph())
    assert not violations, "core imports the daemon or store:\n" + "\n".join(violations)


def _reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def builder_violations(graph: dict[str, set[str]], package: str = PACKAGE) -> list[str]:
    """Modules of ``server`` or ``store`` (but the record types) that a record builder reaches."""
    return sorted(
        f"{module} reaches {target}"
        for module in graph
        if _in(module, RECORD_BUILDERS, package)
        for target in _reachable(module, graph)
        if _in(target, OUTER, package) and not _in(target, RECORD_TYPES, package)
    )


def _imports_twisted(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        if any(name == "twisted" or name.startswith("twisted.") for name in names):
            return True
    return False


def test_record_builders_are_pure() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.intake" in graph
    violations = builder_violations(graph)
    assert not violations, "a record builder reaches the daemon or a store backend:\n" + "\n".join(violations)
    modules = module_files(ROOT)
    twisted = sorted(
        target
        for module in graph
        if _in(module, RECORD_BUILDERS)
        for target in _reachable(module, graph)
        if _imports_twisted(modules[target])
    )
    assert not twisted, "a record builder reaches Twisted through:\n" + "\n".join(twisted)


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / PACKAGE
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_finds_hidden_cycles(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from listener.b import B\n",
            "b.py": "def f():\n    from . import c\n",
            "c.py": "from listener import a\n",
            "d.py": "import listener.e.x\n",
            "e/__init__.py": "",
            "e/x.py": "from ..d import thing\n",
        },
    )
    cycles = find_cycles(import_graph(package))
    assert sorted(cycles) == [
        ["listener.a", "listener.b", "listener.c", "listener.a"],
        ["listener.d", "listener.e.x", "listener.d"],
    ]


def test_finds_layer_arrows(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "__init__.py": "",
            "qa/__init__.py": "",
            "qa/rule.py": "def f():\n    from listener.store.sqlite import S\n",
            "store/__init__.py": "",
            "store/sqlite.py": "from listener.qa import rule\n",
            "server/__init__.py": "from listener.qa.rule import f\n",
            "intake.py": "from listener import outbox\nfrom listener.store.base import Record\n",
            "outbox.py": "from listener.qa.rule import f\n",
            "store/base.py": "",
        },
    )
    graph = import_graph(package)
    assert core_violations(graph) == ["listener.qa.rule -> listener.store.sqlite"]
    assert builder_violations(graph) == ["listener.intake reaches listener.store.sqlite"]
