"""policies/outcomes.yaml: loading, validation errors naming file:line, and grading order."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.errors import ConfigError
from listener.outcomes import DEFAULT_OUTCOMES_FILE, load_outcome_rules, worst_grade
from listener.outcomes.rules import GRADES

MINIMAL = """\
version: "7"
rules:
  critical:
    when: {kind: critical_added}
    grade: 3b
  any_interpretive:
    when: {category: interpretive}
    grade: 2a
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "outcomes.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_rules_load() -> None:
    rules = load_outcome_rules(DEFAULT_OUTCOMES_FILE)
    assert rules.version.startswith("1+")
    assert rules.grade("critical_added", "interpretive", "critical", "absent", "affirmed") == ("3b", "critical_added")
    assert rules.grade("side_changed", "interpretive", "other", "affirmed", "affirmed")[0] == "2b"
    assert rules.grade("wording_changed", "operational", "other", "absent", "absent")[0] == "1"
    assert rules.communication_re is not None and rules.equivalent_re is not None


def test_first_matching_rule_wins_and_default_applies(tmp_path: Path) -> None:
    rules = load_outcome_rules(write(tmp_path, MINIMAL))
    assert rules.version.startswith("7+")
    assert rules.grade("critical_added", "interpretive", "critical", "absent", "affirmed") == ("3b", "critical")
    assert rules.grade("side_changed", "interpretive", "other", "affirmed", "affirmed") == ("2a", "any_interpretive")
    assert rules.grade("wording_changed", "operational", "other", "absent", "absent") == ("1", "")


def test_significance_ranks_before_number() -> None:
    assert GRADES == ("1", "2a", "3a", "2b", "3b")
    assert worst_grade(["3a", "2b"]) == "2b"
    assert worst_grade(["1", "2a"]) == "2a"
    assert worst_grade([]) == "1"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (MINIMAL + "colour: red\n", 9, "unknown key 'colour'"),
        (MINIMAL.replace("grade: 3b", "grade: 4"), 5, "grade '4' must be one of"),
        (
            MINIMAL.replace("{kind: critical_added}", "{kind: critical_added, organ: lung}"),
            4,
            "rules.critical.when: unknown key 'organ'",
        ),
        (MINIMAL.replace("{kind: critical_added}", "{kind: [critical_add]}"), 4, "unknown value 'critical_add'"),
        (MINIMAL.replace("{kind: critical_added}", "{to: []}"), 4, "an empty list matches nothing"),
        (MINIMAL.replace("  critical:\n", "  Critical:\n"), 3, "snake_case"),
        (MINIMAL + "communication: ['call(ed']\n", 9, "invalid regex"),
        (
            MINIMAL + "equivalent_phrases:\n  - [normal, unremarkable]\n  - [normal, negative]\n",
            11,
            "already in another group",
        ),
        (MINIMAL + "equivalent_phrases:\n  - [normal]\n", 10, "at least two"),
        ('version: "1"\n', None, "missing required key 'rules'"),
        ('version: "1"\nrules: {}\n', 2, "at least one rule"),
        (MINIMAL.replace("    grade: 2a\n", ""), 7, "missing required key 'grade'"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int | None, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_outcome_rules(path)
    assert needle in str(err.value)
    assert str(err.value).startswith(str(path))
    if line is not None:
        assert err.value.line == line, str(err.value)
