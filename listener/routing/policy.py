"""The routing policy: policies/routing.yaml -> RoutingPolicy, and decide_route.

Pure: :func:`build_policy` takes the parsed file (``listener.assemble.load_routing_policy``
reads it); no clock (``RoutingContext.now`` is passed in), no global state, no logging.

A policy is a list of named rules. Each rule names a bucket and states, under
``when:``, conditions that must all hold (see ``listener.routing.conditions``).
The decision:

1. every rule is checked against the report (all of them: the explanation
   says why each one did or did not match);
2. the bucket is the highest-precedence bucket of any matched rule
   (``always_final`` > ``selective_overread`` > ``process_check``), else
   ``release``;
3. the pool is that of the first matched rule of the winning bucket (file
   order), the priority the most urgent one those rules set (else the
   report's own), the deadline the earliest turnaround they set;
4. reasons list every matched rule, the winning bucket's first, so
   ``reasons[0]`` is the primary reason;
5. corrections are the QA findings at or above ``corrections.min_severity``,
   whatever the bucket (docs/routing.md).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from listener.model import BUCKETS, PRIORITIES, Finding, Report, Route, Severity
from listener.qa.engine import QaContext
from listener.routing.conditions import Condition, LoadEnv, parse_conditions
from listener.routing.facts import Facts, RoutingContext
from listener.sites import Directory, ReaderHistory
from listener.text import Terms
from listener.yamlconf import YamlMap

__all__ = [
    "RoutingPolicy",
    "Rule",
    "RuleResult",
    "decide_route",
    "evaluate",
    "build_policy",
    "routing_decider",
]

_RULE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_POOL_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_TOP_KEYS = frozenset({"version", "default_timezone", "pools", "release", "corrections", "unchecked", "rules"})
#: The finding the pipeline adds when QA ran out of time (listener.pipeline.QA_TIMEOUT).
_QA_TIMEOUT = "qa.timeout"
_RULE_KEYS = frozenset({"bucket", "description", "when", "pool", "priority", "turnaround_minutes", "enabled"})
_URGENCY = {p: i for i, p in enumerate(PRIORITIES)}  # stat 0 < asap 1 < routine 2


@dataclass(frozen=True, slots=True)
class Rule:
    """One named rule of the policy.

    Attributes:
        turnaround_minutes: minutes from the decision to the deadline; ``None``
            for no deadline; ``-1`` for "the site's contract target for the
            report's priority" (``turnaround_minutes: site``).
        line: where the rule starts in its file (for explanations and errors).
    """

    name: str
    bucket: str
    description: str
    conditions: tuple[Condition, ...]
    pool: str
    priority: str | None
    turnaround_minutes: int | None
    enabled: bool = True
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """A loaded routing policy, ready to decide (swap it whole on reload)."""

    label: str
    version: str  # label + content hash, recorded in every Route
    source: str
    rules: tuple[Rule, ...]
    pools: tuple[str, ...]
    release_pool: str
    corrections_min_severity: Severity
    directory: Directory
    terms: Terms | None
    default_timezone: ZoneInfo
    #: Where a report goes whose QA did not finish (``unchecked:``; docs/hardening.md).
    unchecked_bucket: str = "selective_overread"
    unchecked_pool: str = ""


@dataclass(frozen=True, slots=True)
class RuleResult:
    """How one rule fared on one report: matched or not, and each condition's verdict."""

    rule: Rule
    matched: bool
    checks: tuple[tuple[bool, str], ...]


# --------------------------------------------------------------------------
# loading


def build_policy(doc: YamlMap, raw: bytes, *, directory: Directory, terms: Terms | None) -> RoutingPolicy:
    """Build a RoutingPolicy from a parsed document (``raw``: its bytes, for the version hash)."""
    doc.reject_unknown(_TOP_KEYS)
    label = doc.get_str("version", "unversioned")
    tz_name = doc.get_str("default_timezone", "UTC")
    try:
        default_tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise doc.error(
            "default_timezone", f"unknown time zone {tz_name!r} (use an IANA name like America/Chicago)"
        ) from None

    pools_list = doc.get_list("pools", required=True)
    pools = tuple(p.strip() for p in pools_list.strings())
    for i, pool in enumerate(pools):
        if not _POOL_RE.match(pool):
            raise pools_list.error(i, f"pools: {pool!r} is not a pool name like neuroradiology")
        if pool in pools[:i]:
            raise pools_list.error(i, f"pools: {pool!r} listed twice")

    release = doc.get_map("release")
    release.reject_unknown({"pool"}, "release")
    release_pool = _pool(release, "pool", pools, "release", "none") if "pool" in release else ""

    corrections = doc.get_map("corrections")
    corrections.reject_unknown({"min_severity"}, "corrections")
    min_severity = Severity(corrections.get_choice("min_severity", tuple(s.value for s in Severity), "error"))

    # A report whose QA ran out of time was not checked: by default it gets a
    # second read rather than a release (docs/hardening.md).
    unchecked = doc.get_map("unchecked")
    unchecked.reject_unknown({"bucket", "pool"}, "unchecked")
    unchecked_bucket = unchecked.get_choice("bucket", BUCKETS, "selective_overread")
    default_pool = (
        "general_overread"
        if "general_overread" in pools
        else next((p for p in pools if p != release_pool), pools[0] if pools else "")
    )
    unchecked_pool = _pool(unchecked, "pool", pools, "unchecked", default_pool)

    env = LoadEnv(directory, terms)
    rules_node = doc.get_map("rules", required=True)
    rules: list[Rule] = []
    for name in rules_node:
        rules.append(_rule(rules_node, name, pools, env))
    if not rules:
        raise doc.error("rules", "rules: at least one rule is needed")

    digest = hashlib.sha256(raw)
    digest.update(f"\0{directory.version}\0{terms.digest if terms else ''}".encode())
    return RoutingPolicy(
        label=label,
        version=f"{label}+{digest.hexdigest()[:10]}",
        source=doc.path,
        rules=tuple(rules),
        pools=pools,
        release_pool=release_pool,
        corrections_min_severity=min_severity,
        directory=directory,
        terms=terms,
        default_timezone=default_tz,
        unchecked_bucket=unchecked_bucket,
        unchecked_pool=unchecked_pool,
    )


def _pool(node: YamlMap, key: str, pools: tuple[str, ...], where: str, default: str | None = None) -> str:
    pool = node.get_str(key, default)
    if pool not in pools:
        raise node.error(key, f"{where}.{key}: unknown pool {pool!r} (declare it under pools: {', '.join(pools)})")
    return pool


def _rule(rules_node: YamlMap, name: str, pools: tuple[str, ...], env: LoadEnv) -> Rule:
    where = f"rules.{name}"
    if not _RULE_RE.match(name):
        raise rules_node.error(name, f"{where}: rule names are lower_snake_case")
    node = rules_node.get_map(name, required=True)
    node.reject_unknown(_RULE_KEYS, where)
    bucket = node.get_str("bucket")
    if bucket not in BUCKETS:
        raise node.error("bucket", f"{where}.bucket: unknown bucket {bucket!r} (one of: {', '.join(BUCKETS)})")
    if "when" not in node:
        raise rules_node.error(name, f"{where}: missing required key 'when' (the conditions)")
    when = node.get_map("when")
    conditions = parse_conditions(when, env, f"{where}.when")
    if not conditions and bucket != "release":
        raise node.error("when", f"{where}.when: a {bucket} rule needs at least one condition")
    pool = _pool(node, "pool", pools, where)
    priority = node.get_choice("priority", PRIORITIES) if "priority" in node else None
    turnaround: int | None = None
    if "turnaround_minutes" in node:
        value = node.get("turnaround_minutes")
        if value == "site":
            turnaround = -1
        else:
            if isinstance(value, str):
                raise node.error("turnaround_minutes", f"{where}.turnaround_minutes: a number of minutes, or site")
            number = node.get_number("turnaround_minutes", minimum=1)
            if number != int(number):
                raise node.error("turnaround_minutes", f"{where}.turnaround_minutes must be whole minutes")
            turnaround = int(number)
    return Rule(
        name=name,
        bucket=bucket,
        description=" ".join(node.get_str("description", "").split()),
        conditions=conditions,
        pool=pool,
        priority=priority,
        turnaround_minutes=turnaround,
        enabled=node.get_bool("enabled", True),
        line=rules_node.line_of(name),
    )


# --------------------------------------------------------------------------
# deciding


def evaluate(
    report: Report, findings: tuple[Finding, ...], context: RoutingContext, policy: RoutingPolicy
) -> tuple[Facts, tuple[RuleResult, ...]]:
    """Check every enabled rule against the report (no short cut: explanations need all).

    Returns:
        The computed facts and one RuleResult per enabled rule, in file order.
    """
    facts = Facts(report, findings, context, policy.directory, policy.terms, policy.default_timezone)
    results = []
    for rule in policy.rules:
        if not rule.enabled:
            continue
        checks = tuple(c.check(facts) for c in rule.conditions)
        results.append(RuleResult(rule, all(ok for ok, _ in checks), checks))
    return facts, tuple(results)


def decide_route(
    report: Report, findings: tuple[Finding, ...], context: RoutingContext, policy: RoutingPolicy
) -> Route:
    """Decide the bucket, pool, priority and deadline for one report.

    Args:
        report: the decoded report.
        findings: its QA findings (may be empty).
        context: the clock and reader history.
        policy: the loaded policy.

    Returns:
        A Route whose ``reasons`` name every matched rule (the deciding rules
        first), ``corrections`` the QA rule ids sent back to the author,
        ``policy_version`` the policy's version, and ``explanation`` one line
        per rule saying why it did or did not match.
    """
    if any(f.rule == _QA_TIMEOUT for f in findings):
        return unchecked_route(report, findings, context, policy)
    facts, results = evaluate(report, findings, context, policy)
    return route_from(facts, results, policy)


def unchecked_route(
    report: Report, findings: tuple[Finding, ...], context: RoutingContext, policy: RoutingPolicy
) -> Route:
    """The route of a report whose QA did not finish: the policy's ``unchecked`` choice.

    No rule is evaluated (the facts need the same text analysis that ran out
    of time); the explanation says so.
    """
    floor = policy.corrections_min_severity.rank
    corrections = tuple(sorted({f.rule for f in findings if f.severity.rank >= floor}))
    return Route(
        bucket=policy.unchecked_bucket,
        pool=policy.unchecked_pool,
        priority=report.priority,
        reasons=("qa_incomplete",),
        corrections=corrections,
        policy_version=policy.version,
        deadline=None,
        explanation=(
            f"qa_incomplete [{policy.unchecked_bucket}] MATCHED - QA did not finish within the "
            "message's time budget (qa.timeout); the policy's rules were not evaluated",
        ),
    )


def route_from(facts: Facts, results: tuple[RuleResult, ...], policy: RoutingPolicy) -> Route:
    """The Route for already-evaluated rules (shared with the explanation)."""
    report, context = facts.report, facts.context
    matched = [r.rule for r in results if r.matched]
    rank = {b: i for i, b in enumerate(BUCKETS)}
    bucket = min((r.bucket for r in matched), key=rank.__getitem__, default="release")
    deciding = [r for r in matched if r.bucket == bucket]
    others = sorted((r for r in matched if r.bucket != bucket), key=lambda r: rank[r.bucket])
    pool = deciding[0].pool if deciding else policy.release_pool
    set_priorities = [r.priority for r in deciding if r.priority is not None]
    priority = min(set_priorities, key=_URGENCY.__getitem__) if set_priorities else report.priority
    deadline: datetime | None = None
    for rule in deciding:
        minutes = rule.turnaround_minutes
        if minutes == -1:
            target = policy.directory.turnaround_target(report)
            minutes = target if target is not None else None
        if minutes is not None:
            candidate = context.now + timedelta(minutes=minutes)
            deadline = candidate if deadline is None or candidate < deadline else deadline
    floor = policy.corrections_min_severity.rank
    corrections = tuple(sorted({f.rule for f in facts.findings if f.severity.rank >= floor}))
    return Route(
        bucket=bucket,
        pool=pool,
        priority=priority,
        reasons=tuple(r.name for r in deciding + others),
        corrections=corrections,
        policy_version=policy.version,
        deadline=deadline,
        explanation=tuple(rule_line(r) for r in results),
    )


def rule_line(result: RuleResult) -> str:
    """One line: the rule, its bucket, matched or not, and every condition's verdict."""
    verdict = "MATCHED" if result.matched else "no match"
    checks = "; ".join(f"{'yes' if ok else 'NO'}: {why}" for ok, why in result.checks) or "no conditions"
    return f"{result.rule.name} [{result.rule.bucket}] {verdict} - {checks}"


def routing_decider(
    policy: RoutingPolicy, reader_history: Mapping[str, ReaderHistory] | None = None
) -> Callable[[Report, tuple[Finding, ...], QaContext], Route]:
    """Adapt a policy to ``Pipeline.decide_route`` (report, findings, QaContext) -> Route.

    The pipeline's context carries the clock (``now``), the report's text
    analysis results (``text_cache``, shared with its QA run) and the live
    peer-review figures (``live_figures``: the daemon's cache, docs/routing.md).
    Without live figures, reader history comes from ``reader_history`` when
    given, else from readers.yaml.
    """
    history = MappingProxyType(dict(reader_history or {}))

    def decide(report: Report, findings: tuple[Finding, ...], context: QaContext) -> Route:
        live = context.live_figures
        if live is not None:
            routing_context = RoutingContext(
                now=context.now,
                reader_history=live.readers,
                group_history=live.groups,
                history_source=live.source,
                text_cache=context.text_cache,
            )
        else:
            routing_context = RoutingContext(now=context.now, reader_history=history, text_cache=context.text_cache)
        return decide_route(report, findings, routing_context, policy)

    return decide
