"""Builders for routing tests: reports, policies from YAML text, a fixed clock.

Reports come from the QA test factory (plain text, sectioned like the decoder);
policies are written to a temporary file so that every error names a real
file and line, and are loaded against the repository's sites, readers and
vocabularies.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from listener.assemble import load_routing_policy
from listener.model import Finding, Reader, Report, ResultStatus, Route, Severity, Times
from listener.routing import RoutingContext, RoutingPolicy, decide_route
from listener.sites import Directory, load_directory
from tests.unit.qa.factory import make_report, pipeline

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"
NOW = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
CLEAN_CT_HEAD = "FINDINGS:\nNo acute intracranial abnormality.\nIMPRESSION:\nNormal CT of the head."
_DIRECTORY: Directory | None = None


def directory() -> Directory:
    """The repository's sites.yaml and readers.yaml, loaded once."""
    global _DIRECTORY
    if _DIRECTORY is None:
        _DIRECTORY = load_directory(POLICIES)
    return _DIRECTORY


def default_policy() -> RoutingPolicy:
    """policies/routing.yaml as shipped."""
    return load_policy_file(POLICIES / "routing.yaml")


def load_policy_file(path: Path) -> RoutingPolicy:
    """Load a policy file with the repository's directory and vocabularies."""
    qa = pipeline().qa
    return load_routing_policy(path, directory=directory(), terms=qa.terms if qa else None)


POOLS = "pools: [neuroradiology, critical_results, general_overread, peer_review, author, none]\n"


def policy_from(tmp_path: Path, body: str, *, pools: str = POOLS) -> RoutingPolicy:
    """Write ``pools`` + ``body`` (dedented YAML) to tmp_path/routing.yaml and load it."""
    path = tmp_path / "routing.yaml"
    path.write_text(pools + textwrap.dedent(body), encoding="utf-8")
    return load_policy_file(path)


def report(
    text: str = CLEAN_CT_HEAD,
    *,
    procedure: str = "70450",
    reader: str = "R1042",
    site: str = "LEMC",
    status: ResultStatus = ResultStatus.FINAL,
    at: datetime | None = None,
    birth_date: date | None = date(1960, 5, 1),
    **overrides: Any,
) -> Report:
    """A LEMC report (CT head by default) read by ``reader``, sent at ``at`` (MSH-7)."""
    base = make_report(text, procedure=procedure, status=status, birth_date=birth_date)
    when = at or NOW
    times = Times(observation=when, report=when, received=NOW, message=when)
    fields: dict[str, Any] = {"accession": "A1", **overrides}
    return replace(base, reader=Reader(id=reader), site=site, times=times, **fields)


def finding(rule: str, severity: Severity = Severity.ERROR) -> Finding:
    """A QA finding of ``rule`` (no evidence needed by routing)."""
    return Finding(rule=rule, severity=severity, message="test finding")


def route(rep: Report, policy: RoutingPolicy, findings: tuple[Finding, ...] = (), **context: Any) -> Route:
    """decide_route with the fixed clock."""
    return decide_route(rep, findings, RoutingContext(now=NOW, **context), policy)
