"""A policy with an unknown key or an impossible condition is refused with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.errors import ConfigError
from tests.unit.routing.helpers import policy_from

# Line 1 is the pools: line that policy_from writes; the body starts on line 2.
GOOD_RULE = """\
rules:
  r:
    bucket: selective_overread
    pool: general_overread
    when:
      {condition}
"""
CONDITION_LINE = 7

BAD_CONDITIONS = [
    ('coverage_window: {from: "25:00", to: "07:00"}', "'25:00' is not a time of day", "coverage_window.from"),
    ('coverage_window: {from: "22:00", to: "07:61"}', "is not a time of day", "coverage_window.to"),
    ("coverage_window: {from: 22:00, to: 07:00}", 'write the time in quotes, like "22:00"', "coverage_window.from"),
    ('coverage_window: {from: "22:00", to: "22:00"}', "the window is empty", "coverage_window"),
    ('coverage_window: {from: "22:00"}', "missing 'to'", "coverage_window"),
    ('coverage_window: {from: "22:00", to: "07:00", days: [funday]}', "is not a weekday", "coverage_window.days"),
    ('coverage_window: {from: "22:00", to: "07:00", time: arrival}', "'time' must be one of", "time"),
    ('coverage_window: {from: "22:00", to: "07:00", tz: UTC}', "unknown key 'tz'", "coverage_window"),
    ("sample: {rate: 1.5}", "1.5 is above 1", "sample.rate"),
    ("sample: {rate: 0}", "0 never matches", "sample.rate"),
    ("sample: {rate: -0.1}", "'rate' must be at least 0", "rate"),
    ("patient_age: {min: 18, max: 2}", "min 18 is above max 2", "patient_age"),
    ("patient_age: {max: 200}", "not a possible age", "patient_age.max"),
    ("patient_age: {max: 17.5}", "must be a whole number", "patient_age.max"),
    ("patient_age: {}", "give min and/or max", "patient_age"),
    ("modality: [CAT]", "unknown value 'CAT'", "modality"),
    ("body_region: [brain]", "unknown value 'brain'", "body_region"),
    ("priority: [urgent]", "unknown value 'urgent'", "priority"),
    ("status: [signed]", "unknown value 'signed'", "status"),
    ("reader_type: [locum]", "unknown value 'locum'", "reader_type"),
    ("site: [LEMX]", "unknown value 'LEMX'", "site"),
    ("client: [Lakeshore]", "unknown value 'Lakeshore'", "client"),
    ("reader: [NOBODY]", "unknown value 'NOBODY'", "reader"),
    ("procedure_code: [7045]", "is not a 5-character procedure code", "procedure_code"),
    ("modality: []", "list at least one value", "modality"),
    ("critical_finding: [broken_nail]", "unknown concept 'broken_nail'", "critical_finding"),
    ("critical_finding: false", "false is not a condition", "critical_finding"),
    ("hedge_density: {above: -1}", "'above' must be at least 0", "above"),
    ("hedge_density: {above: 0.5, section: conclusion}", "'section' must be one of", "section"),
    ("qa_finding: {min_severity: fatal}", "'min_severity' must be one of", "min_severity"),
    ("qa_finding: {rules: [lateral]}", "is not a rule id", "qa_finding.rules"),
    ("qa_finding: {categories: [style]}", "unknown category 'style'", "qa_finding.categories"),
    ("reader_discrepancy_rate: {above: 5}", "a rate is a fraction below 1", "reader_discrepancy_rate.above"),
    ("reader_discrepancy_rate: {above: 0.05, min_reads: 0}", "'min_reads' must be at least 1", "min_reads"),
    ("group_discrepancy_rate: {above: 1.5}", "a rate is a fraction below 1", "group_discrepancy_rate.above"),
    ("group_discrepancy_rate: {above: 0.05, min_reads: 2.5}", "must be a whole number", "min_reads"),
    ("group_discrepancy_rate: {above: 0.05, window: 90}", "unknown key 'window'", "group_discrepancy_rate"),
    ("reader_lacks_subspecialty: [Peds Neuro]", "is not a subspecialty name", "reader_lacks_subspecialty"),
    ("modaility: [CT]", "unknown key 'modaility'", "rules.r.when"),
    ("modality:", "empty condition", "modality"),
]


@pytest.mark.parametrize(("condition", "message", "key"), BAD_CONDITIONS, ids=[c[0] for c in BAD_CONDITIONS])
def test_impossible_condition_refused(tmp_path: Path, condition: str, message: str, key: str) -> None:
    """Each impossible or misspelt condition is refused, naming the file, the condition's line and the key."""
    with pytest.raises(ConfigError) as info:
        policy_from(tmp_path, GOOD_RULE.format(condition=condition))
    error = info.value
    assert error.path == str(tmp_path / "routing.yaml")
    assert error.line == CONDITION_LINE
    assert message in error.message
    assert key in error.message
    assert str(error).startswith(f"{tmp_path / 'routing.yaml'}:{CONDITION_LINE}: ")


BAD_RULES = [
    (
        "rules:\n  r:\n    bucket: overread\n    pool: none\n    when: {modality: [CT]}\n",
        4,
        "unknown bucket 'overread'",
    ),
    ("rules:\n  r:\n    bucket: release\n    pool: nowhere\n    when: {}\n", 5, "unknown pool 'nowhere'"),
    ("rules:\n  r:\n    bucket: always_final\n    pool: none\n    when: {}\n", 6, "needs at least one condition"),
    ("rules:\n  r:\n    bucket: always_final\n    pool: none\n", 3, "missing required key 'when'"),
    (
        "rules:\n  r:\n    bucket: always_final\n    pool: none\n    when: {modality: [CT]}\n    colour: red\n",
        7,
        "unknown key 'colour'",
    ),
    (
        "rules:\n  r:\n    bucket: always_final\n    pool: none\n    when: {modality: [CT]}\n    priority: urgent\n",
        7,
        "'priority' must be one of",
    ),
    (
        "rules:\n  r:\n    bucket: always_final\n    pool: none\n    when: {modality: [CT]}\n    turnaround_minutes: 0\n",
        7,
        "at least 1",
    ),
    (
        "rules:\n  r:\n    bucket: always_final\n    pool: none\n    when: {modality: [CT]}\n    turnaround_minutes: soon\n",
        7,
        "a number of minutes, or site",
    ),
    ("rules:\n  Bad-Name:\n    bucket: release\n    pool: none\n    when: {}\n", 3, "lower_snake_case"),
    (
        "rules:\n  r:\n    bucket: release\n    pool: none\n    when: {}\n  r:\n    bucket: release\n    pool: none\n    when: {}\n",
        7,
        "duplicate key 'r'",
    ),
    ("rules: {}\n", 2, "at least one rule"),
    ("rule:\n  r: {}\n", 2, "unknown key 'rule'"),
    ("default_timezone: Central\nrules: {}\n", 2, "unknown time zone 'Central'"),
    ("corrections: {min_severity: severe}\nrules: {}\n", 2, "'min_severity' must be one of"),
    ("release: {pool: void}\nrules: {}\n", 2, "unknown pool 'void'"),
]


@pytest.mark.parametrize(("body", "line", "message"), BAD_RULES, ids=[c[2] for c in BAD_RULES])
def test_bad_rule_or_top_level_refused(tmp_path: Path, body: str, line: int, message: str) -> None:
    """Unknown buckets, pools and keys, empty rules and bad top-level settings are refused at their line."""
    with pytest.raises(ConfigError) as info:
        policy_from(tmp_path, body)
    assert info.value.line == line
    assert message in info.value.message


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        ("pools: [Neuro]\n", "is not a pool name"),
        ("pools: [a, a]\n", "listed twice"),
        ("", "missing required key 'pools'"),
    ],
)
def test_bad_pools_refused(tmp_path: Path, pools: str, message: str) -> None:
    """Pools must be declared once each, as lower_snake_case names."""
    with pytest.raises(ConfigError) as info:
        policy_from(tmp_path, "rules:\n  r: {bucket: release, pool: a, when: {}}\n", pools=pools)
    assert message in info.value.message
    assert info.value.line is not None


def test_good_policy_loads(tmp_path: Path) -> None:
    """The same skeleton with a valid condition loads, and the version is label + content hash."""
    policy = policy_from(tmp_path, 'version: "t1"\n' + GOOD_RULE.format(condition="modality: [CT]"))
    assert policy.version.startswith("t1+") and len(policy.version) == len("t1+") + 10
    assert [r.name for r in policy.rules] == ["r"]
    assert policy.rules[0].line == 4


def test_version_hash_follows_content(tmp_path: Path) -> None:
    """Changing a rule changes the recorded version even when the label stays the same."""
    first = policy_from(tmp_path, GOOD_RULE.format(condition="modality: [CT]"))
    second = policy_from(tmp_path, GOOD_RULE.format(condition="modality: [MR]"))
    assert first.label == second.label
    assert first.version != second.version


def test_missing_policy_file(tmp_path: Path) -> None:
    """``--policy F`` with a file that does not exist is a ConfigError naming it."""
    from listener.assemble import load_decider

    with pytest.raises(ConfigError, match="file not found"):
        load_decider(tmp_path, policy_file=tmp_path / "nope.yaml")
    assert load_decider(tmp_path) is None
