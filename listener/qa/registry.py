"""The QA rule registry: every rule of the rule modules, by id.

Built once, at import of this module, from the functions :func:`listener.qa.engine.rule`
marked in the modules listed in ``RULE_MODULES`` (one per finding category,
docs/qa-rules.md); :func:`registry` returns it. A rule module that is not
listed here runs nowhere (tests/unit/qa/test_engine.py checks the list against
the package).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType, ModuleType

from listener.qa import (
    alignment,
    coding,
    communication,
    comparison,
    completeness,
    compliance,
    consistency,
    contradiction,
    laterality,
    normalcy,
    turnaround,
)
from listener.qa.engine import RuleSpec, rule_spec

__all__ = ["RULE_MODULES", "registry"]

#: The modules that hold rules.
RULE_MODULES: tuple[ModuleType, ...] = (
    alignment,
    coding,
    communication,
    comparison,
    completeness,
    compliance,
    consistency,
    contradiction,
    laterality,
    normalcy,
    turnaround,
)


def _collect(modules: tuple[ModuleType, ...]) -> Mapping[str, RuleSpec]:
    """Every marked function of ``modules`` by rule id, in id order.

    Raises:
        ValueError: two different functions have the same rule id.
    """
    found: dict[str, RuleSpec] = {}
    for module in modules:
        for value in vars(module).values():
            spec = rule_spec(value)
            if spec is None:
                continue
            other = found.get(spec.id)
            if other is not None and other is not spec:
                raise ValueError(f"rule {spec.id} registered twice")
            found[spec.id] = spec
    undescribed = {spec.function.__module__ for spec in found.values() if not spec.description}
    if undescribed:
        docs = {name: _source_descriptions(name) for name in undescribed}
        for rule_id, spec in found.items():
            if not spec.description:
                found[rule_id] = replace(
                    spec, description=docs[spec.function.__module__].get(spec.function.__name__, "")
                )
    return MappingProxyType(dict(sorted(found.items())))


def _source_descriptions(module_name: str) -> dict[str, str]:
    """Each function of ``module_name`` -> its docstring's first line, read from the module's ``.py``.

    For a module compiled by mypyc, whose functions keep no docstring; the build keeps each
    compiled module's source beside its extension (docs/development.md, "Compiled modules").
    One parse per module. A source that cannot be read gives none (tests/unit/qa/test_engine.py
    then fails: every rule needs a description).
    """
    module = sys.modules[module_name]
    if module.__file__ is None:
        return {}
    try:
        source = Path(module.__file__).with_name(module_name.rpartition(".")[2] + ".py").read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            lines = (ast.get_docstring(node) or "").strip().splitlines()
            if lines:
                found[node.name] = lines[0]
    return found


_RULES = _collect(RULE_MODULES)


def registry() -> Mapping[str, RuleSpec]:
    """Every registered rule by id (read-only)."""
    return _RULES
