"""Contract targets of the external groups: the ``contracts:`` section of policies/outcomes.yaml.

Pure apart from :func:`load_contracts` reading the file it is given. The
feedback document (docs/outcomes.md, "Feedback to the provider") sets the
group's figures beside these targets. A section that does not validate is
refused with a ConfigError naming the file, the line and the key, by
:func:`load_contracts` and by :func:`listener.outcomes.rules.load_outcome_rules`
alike, so ``overread config check`` and the daemon refuse it too.

```yaml
contracts:
  Nocturna Teleradiology:            # a group name of policies/readers.yaml (case ignored)
    prelim_turnaround_minutes: {median: 30, p90: 60}
    prelim_to_final_minutes: {p90: 720}
    max_discrepancy_rate: 0.03       # grades other than 1, of the graded reads
    max_significant_discrepancy_rate: 0.01   # grades 2b and 3b
    description: free text
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from listener.resources import defaults_root
from listener.yamlconf import YamlMap, load_yaml

__all__ = ["ContractTargets", "build_contracts", "contract_for", "load_contracts"]

#: The shipped policies/outcomes.yaml (the same file as ``rules.DEFAULT_OUTCOMES_FILE``).
_DEFAULT_FILE = defaults_root() / "policies" / "outcomes.yaml"

_KEYS = frozenset(
    {
        "prelim_turnaround_minutes",
        "prelim_to_final_minutes",
        "max_discrepancy_rate",
        "max_significant_discrepancy_rate",
        "description",
    }
)
_TIME_KEYS = frozenset({"median", "p90"})


@dataclass(frozen=True, slots=True)
class ContractTargets:
    """One group's contract targets; None means the contract sets none.

    Attributes:
        group: the group name as the file spells it.
        prelim_median, prelim_p90: order (exam time) to preliminary, minutes.
        final_median, final_p90: preliminary to final, minutes.
        max_discrepancy_rate: the highest rate of grades other than 1 (a fraction).
        max_significant_rate: the highest rate of grades 2b and 3b (a fraction).
        line: where the group's entry starts in its file.
    """

    group: str
    prelim_median: float | None = None
    prelim_p90: float | None = None
    final_median: float | None = None
    final_p90: float | None = None
    max_discrepancy_rate: float | None = None
    max_significant_rate: float | None = None
    description: str = ""
    source: str = ""
    line: int | None = None


def _minutes(node: YamlMap, key: str, where: str) -> tuple[float | None, float | None]:
    if key not in node:
        return None, None
    times = node.get_map(key)
    times.reject_unknown(_TIME_KEYS, f"{where}.{key}")
    if not times:
        raise node.error(key, f"{where}.{key}: give median:, p90: or both (minutes)")
    median = times.get_number("median", minimum=0) if "median" in times else None
    p90 = times.get_number("p90", minimum=0) if "p90" in times else None
    return median, p90


def _rate(node: YamlMap, key: str, where: str) -> float | None:
    if key not in node:
        return None
    value = node.get_number(key, minimum=0)
    if value > 1:
        raise node.error(key, f"{where}.{key}: a rate is a fraction between 0 and 1 (0.02 for 2%)")
    return value


def build_contracts(node: YamlMap) -> Mapping[str, ContractTargets]:
    """The ``contracts:`` mapping -> targets by folded group name (lower case)."""
    out: dict[str, ContractTargets] = {}
    for group in node:
        where = f"contracts.{group}"
        entry = node.get_map(group, required=True)
        if not isinstance(node.get(group), YamlMap):
            raise node.error(group, f"{where} must be a mapping of targets")
        entry.reject_unknown(_KEYS, where)
        folded = group.strip().casefold()
        if not folded:
            raise node.error(group, "contracts: a group name cannot be empty")
        if folded in out:
            raise node.error(group, f"{where}: the group is listed twice (names are compared without case)")
        prelim_median, prelim_p90 = _minutes(entry, "prelim_turnaround_minutes", where)
        final_median, final_p90 = _minutes(entry, "prelim_to_final_minutes", where)
        out[folded] = ContractTargets(
            group=group,
            prelim_median=prelim_median,
            prelim_p90=prelim_p90,
            final_median=final_median,
            final_p90=final_p90,
            max_discrepancy_rate=_rate(entry, "max_discrepancy_rate", where),
            max_significant_rate=_rate(entry, "max_significant_discrepancy_rate", where),
            description=entry.get_str("description", ""),
            source=node.path,
            line=node.line_of(group),
        )
    return MappingProxyType(out)


def load_contracts(path: str | Path = _DEFAULT_FILE) -> Mapping[str, ContractTargets]:
    """Read the ``contracts:`` section of policies/outcomes.yaml (empty when it has none).

    Raises:
        ConfigError: naming the file, line and key of the first problem.
    """
    return build_contracts(load_yaml(path).get_map("contracts"))


def contract_for(contracts: Mapping[str, ContractTargets], group: str) -> ContractTargets | None:
    """The targets of ``group`` (case ignored), or None when the file sets none."""
    return contracts.get(group.strip().casefold())
