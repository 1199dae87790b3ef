"""The contracts: section of policies/outcomes.yaml: targets per group, refused with file:line when invalid."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.errors import ConfigError
from listener.outcomes import load_outcome_rules
from listener.outcomes.contracts import contract_for, load_contracts

RULES = """\
version: "7"
rules:
  critical:
    when: {kind: critical_added}
    grade: 3b
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "outcomes.yaml"
    path.write_text(RULES + text, encoding="utf-8")
    return path


def test_shipped_contract_of_nocturna() -> None:
    target = contract_for(load_contracts(), "  NOCTURNA teleradiology ")
    assert target is not None and target.group == "Nocturna Teleradiology"
    assert (target.prelim_median, target.prelim_p90, target.final_median, target.final_p90) == (30, 60, None, 720)
    assert (target.max_discrepancy_rate, target.max_significant_rate) == (0.05, 0.02)
    assert contract_for(load_contracts(), "Lakeshore Radiology") is None


def test_a_file_without_contracts_has_none(tmp_path: Path) -> None:
    assert dict(load_contracts(write(tmp_path, ""))) == {}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("contracts:\n  G:\n    max_discrepancy_rate: 3\n", 8, "fraction between 0 and 1"),
        ("contracts:\n  G:\n    prelim_turnaround_minutes: {mean: 3}\n", 8, "unknown key 'mean'"),
        ("contracts:\n  G:\n    prelim_to_final_minutes: {}\n", 8, "give median:, p90: or both"),
        ("contracts:\n  G:\n    turnaround: 3\n", 8, "unknown key 'turnaround'"),
        ("contracts:\n  G: 3\n", 7, "must be a mapping"),
        ("contracts:\n  G:\n    max_significant_discrepancy_rate: -0.1\n", 8, "at least 0"),
        ("contracts:\n  Grp:\n    description: a\n  GRP:\n    description: b\n", 9, "listed twice"),
    ],
)
def test_invalid_contracts_are_refused_with_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    for load in (load_contracts, load_outcome_rules):
        with pytest.raises(ConfigError) as err:
            load(path)
        assert err.value.path == str(path) and err.value.line == line and words in err.value.message, err.value
