"""Explanations: every rule is listed with why it did or did not match; no report text leaks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from listener.model import ResultStatus
from listener.routing import RoutingContext, explain, explain_lines
from tests.unit.routing.helpers import NOW, default_policy, finding, policy_from, report, route

NIGHT = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def test_explanation_lists_every_rule() -> None:
    """explain_lines names every rule of the default policy once, with MATCHED or no match."""
    policy = default_policy()
    rep = report(reader="NT7741", status=ResultStatus.PRELIMINARY, at=NIGHT)
    lines = explain_lines(rep, (), RoutingContext(now=NOW), policy)
    for rule in policy.rules:
        mentioned = [line for line in lines if line.strip().startswith(f"{rule.name} [{rule.bucket}]")]
        assert len(mentioned) == 1, rule.name
    assert any(line.strip().startswith("overnight_external_neuro_prelim [always_final] MATCHED") for line in lines)
    assert lines[0].startswith(f"policy {policy.version}")
    assert "always_final, pool neuroradiology" in lines[1]
    assert lines[2] == "reasons: overnight_external_neuro_prelim"
    assert lines[-1] == "corrections (QA findings >= error): none"


def test_route_explanation_has_one_line_per_rule() -> None:
    """Route.explanation holds one line per enabled rule, in file order."""
    policy = default_policy()
    result = route(report(), policy)
    assert [line.split(" ", 1)[0] for line in result.explanation] == [r.name for r in policy.rules]


def test_each_condition_gets_a_verdict() -> None:
    """A non-matching rule shows which condition failed (NO) and which held (yes)."""
    result = route(report(reader="NT7741", status=ResultStatus.PRELIMINARY, at=NIGHT), default_policy())
    stroke = next(line for line in result.explanation if line.startswith("overnight_external_stroke_prelim"))
    assert "yes: reader_type external (NT7741, readers.yaml) in [external]" in stroke
    assert "NO: procedure_code 70450 not in [" in stroke
    assert "yes: coverage_window message time Fri 2026-11-20 02:00 LEMC America/Chicago inside 22:00-07:00" in stroke


def test_disabled_rules_and_corrections_are_listed(tmp_path: Path) -> None:
    """Disabled rules appear as disabled; corrections are named."""
    policy = policy_from(
        tmp_path,
        """
        rules:
          switched_off:
            bucket: always_final
            when: {modality: [CT]}
            pool: neuroradiology
            enabled: false
          qa:
            bucket: process_check
            when: {qa_finding: {min_severity: error}}
            pool: author
        """,
    )
    lines = explain(report(), (finding("laterality.impression_vs_findings"),), RoutingContext(now=NOW), policy)
    assert "  switched_off [always_final] disabled" in lines
    assert lines[-1] == "corrections (QA findings >= error): laterality.impression_vs_findings"
    assert "reasons: qa" in lines


def test_explanation_quotes_no_report_text() -> None:
    """The explanation names concepts, not the sentences they came from (no patient text)."""
    marker = "ZZMARKER"
    text = f"FINDINGS:\nAcute subdural hematoma near {marker}.\nIMPRESSION:\nAcute subdural hematoma, {marker}."
    lines = explain_lines(report(text), (), RoutingContext(now=NOW), default_policy())
    assert not any(marker in line for line in lines)
    assert any("critical_finding affirmed: intracranial_hemorrhage" in line for line in lines)


def test_release_explanation_says_no_rule_matched() -> None:
    """A released report says that no rule matched."""
    lines = explain_lines(report(), (), RoutingContext(now=NOW), default_policy())
    assert lines[2] == "reasons: none (no rule matched: release)"
