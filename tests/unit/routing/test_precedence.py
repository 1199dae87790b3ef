"""Bucket precedence, reason order, pool/priority/deadline choice and corrections."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from listener.model import Severity
from tests.unit.routing.helpers import NOW, finding, policy_from, report, route

# Every rule matches a CT head read by R1042 at LEMC; the buckets are listed
# lowest first so that file order cannot be mistaken for precedence.
ALL_BUCKETS = """
rules:
  qa_error:
    bucket: process_check
    when: {qa_finding: {min_severity: error}}
    pool: author
  ct_overread:
    bucket: selective_overread
    when: {modality: [CT]}
    pool: general_overread
    priority: asap
    turnaround_minutes: 240
  head_overread:
    bucket: selective_overread
    when: {body_region: [head]}
    pool: critical_results
    priority: stat
    turnaround_minutes: 90
  lemc_final:
    bucket: always_final
    when: {site: [LEMC]}
    pool: neuroradiology
"""


def test_always_final_outranks_everything(tmp_path: Path) -> None:
    """always_final wins over selective_overread and process_check; every matched rule is a reason, deciders first."""
    result = route(report(), policy_from(tmp_path, ALL_BUCKETS), (finding("coding.contrast_vs_code"),))
    assert result.bucket == "always_final"
    assert result.pool == "neuroradiology"
    assert result.reasons == ("lemc_final", "ct_overread", "head_overread", "qa_error")
    assert result.corrections == ("coding.contrast_vs_code",)


def test_selective_outranks_process_check(tmp_path: Path) -> None:
    """Without the always_final rule, selective_overread wins and the QA error rides along as a correction."""
    rep = report(site="PVCH")
    result = route(rep, policy_from(tmp_path, ALL_BUCKETS), (finding("communication.critical_not_communicated"),))
    assert result.bucket == "selective_overread"
    assert result.reasons == ("ct_overread", "head_overread", "qa_error")
    assert result.corrections == ("communication.critical_not_communicated",)


def test_pool_first_rule_priority_most_urgent_deadline_earliest(tmp_path: Path) -> None:
    """Among the deciding rules: the first rule's pool, the most urgent priority, the earliest deadline."""
    result = route(report(site="PVCH"), policy_from(tmp_path, ALL_BUCKETS))
    assert result.pool == "general_overread"
    assert result.priority == "stat"
    assert result.deadline == NOW + timedelta(minutes=90)


def test_process_check_over_release(tmp_path: Path) -> None:
    """A QA error alone returns the report to its author."""
    body = ALL_BUCKETS.replace("modality: [CT]", "modality: [MR]").replace(
        "body_region: [head]", "body_region: [chest]"
    )
    result = route(report(site="PVCH"), policy_from(tmp_path, body), (finding("laterality.order_vs_report"),))
    assert (result.bucket, result.pool, result.reasons) == ("process_check", "author", ("qa_error",))


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        ("error", ("laterality.a",)),
        ("warning", ("comparison.c", "laterality.a")),
        ("info", ("comparison.c", "completeness.b", "laterality.a")),
    ],
)
def test_corrections_follow_min_severity(tmp_path: Path, floor: str, expected: tuple[str, ...]) -> None:
    """corrections.min_severity picks which findings go back to the author, whatever the bucket."""
    body = f"corrections: {{min_severity: {floor}}}\n" + ALL_BUCKETS
    findings = (
        finding("laterality.a"),
        finding("completeness.b", Severity.INFO),
        finding("comparison.c", Severity.WARNING),
    )
    result = route(report(), policy_from(tmp_path, body), findings)
    assert result.bucket == "always_final"
    assert result.corrections == expected


def test_disabled_rule_never_matches(tmp_path: Path) -> None:
    """``enabled: false`` takes a rule out without deleting it."""
    body = ALL_BUCKETS.replace("    pool: neuroradiology\n", "    pool: neuroradiology\n    enabled: false\n")
    result = route(report(), policy_from(tmp_path, body))
    assert result.bucket == "selective_overread"
    assert "lemc_final" not in result.reasons
