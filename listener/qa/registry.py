"""The QA rule registry: every rule of the rule modules, by id.

Built once, at import of this module, from the functions :func:`listener.qa.engine.rule`
marked in the modules listed in ``RULE_MODULES`` (one per finding category,
docs/qa-rules.md); :func:`registry` returns it. A rule module that is not
listed here runs nowhere (tests/unit/qa/test_engine.py checks the list against
the package).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    return MappingProxyType(dict(sorted(found.items())))


_RULES = _collect(RULE_MODULES)


def registry() -> Mapping[str, RuleSpec]:
    """Every registered rule by id (read-only)."""
    return _RULES
