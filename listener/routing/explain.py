"""Why a report was routed as it was: lines for ``overread explain FILE``.

Pure: no I/O, no clock, no logging. The lines quote no report text and no
patient data: rule names, field values such as modality and site, counts,
concept names and times.
"""

from __future__ import annotations

from listener.model import Finding, Report
from listener.routing.facts import RoutingContext
from listener.routing.policy import RoutingPolicy, evaluate, route_from, rule_line

__all__ = ["explain", "explain_lines"]


def explain_lines(
    report: Report, findings: tuple[Finding, ...], context: RoutingContext, policy: RoutingPolicy
) -> list[str]:
    """Explain the decision for one report, one rule per line.

    Args:
        report, findings, context, policy: as for :func:`decide_route`.

    Returns:
        A header (policy, decision), then every enabled rule with MATCHED or
        "no match" and each condition's verdict, then disabled rules and the
        corrections.
    """
    facts, results = evaluate(report, findings, context, policy)
    route = route_from(facts, results, policy)
    deadline = route.deadline.isoformat() if route.deadline is not None else "none"
    lines = [
        f"policy {route.policy_version} ({policy.source})",
        f"accession {report.accession or '(none)'}: {route.bucket}, pool {route.pool or '(none)'},"
        f" priority {route.priority}, deadline {deadline}",
        f"reasons: {', '.join(route.reasons) if route.reasons else 'none (no rule matched: release)'}",
    ]
    lines.extend(f"  {rule_line(result)}" for result in results)
    lines.extend(f"  {rule.name} [{rule.bucket}] disabled" for rule in policy.rules if not rule.enabled)
    floor = policy.corrections_min_severity.value
    lines.append(
        f"corrections (QA findings >= {floor}): {', '.join(route.corrections) if route.corrections else 'none'}"
    )
    return lines


#: The same function under the short name used in the issue.
explain = explain_lines
