"""The shipped alert rules and Grafana dashboard (ops/) name only metrics the daemon exports.

The expressions are scanned for ``overread_*`` names (every metric of ours has
that prefix) and their ``{label...}`` matchers; each must be a sample name, and
each label a label, of the registry a running daemon builds. ``promtool check
rules`` runs when promtool is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from listener.server.metrics import Metrics
from listener.store.base import OutboxDepth, OutboxStats

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "overread.rules.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "overread.json"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"\b(overread_[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")


class _Store:
    """Just enough store for the outbox collector to yield every family."""

    save_failures = 0

    def outbox_stats(self, now: datetime) -> OutboxStats:
        return OutboxStats((OutboxDepth("ris", "pending", 1, timedelta(seconds=5)),), timedelta(seconds=5))

    def health_reason(self) -> str:
        return ""


def registry_names() -> dict[str, set[str]]:
    """Every sample name the daemon's registry exposes -> its label names."""
    metrics = Metrics(_Store())  # type: ignore[arg-type]
    # Touch the labelled families so their samples (and label names) exist.
    metrics.received.labels("mllp", "default")
    metrics.answered.labels("mllp", "default", "AA")
    metrics.duplicates.labels("mllp")
    metrics.findings.labels("qa", "error")
    metrics.routes.labels("release")
    metrics.latency.labels("mllp").observe(0.01)
    metrics.http_requests.labels("metrics", "200")
    metrics.reports.labels("mllp", "default")
    metrics.sender_messages.labels("mllp", "RIS", "LEMC", "AA")
    metrics.sender_last_seen.labels("mllp", "RIS", "LEMC").set(1)
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(k for k in sample.labels if k != "le")
            if sample.name.endswith("_bucket"):
                names[sample.name].add("le")
    return names


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its matcher) for each overread_* selector in a PromQL expression."""
    # Label values are strings: drop their content so a value cannot look like a name.
    text = _STRING.sub('""', expr)
    return [
        (m.group(1), {label.group(1) for label in _MATCHER.finditer(m.group(2) or "")})
        for m in _SELECTOR.finditer(text)
    ]


def _rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    out = []
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
            assert rule["alert"] and rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            out.append((rule["alert"], str(rule["expr"])))
    return out


def _dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"] and doc["panels"]
    return [(panel["title"], target["expr"]) for panel in doc["panels"] for target in panel["targets"]]


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_expression_names_registry_metrics_and_labels(source: str) -> None:
    """Each expression uses at least one overread_* metric; every one exists, with the labels it matches on."""
    names = registry_names()
    exprs = _rule_exprs() if source == "rules" else _dashboard_exprs()
    assert exprs
    for where, expr in exprs:
        found = selectors(expr)
        assert found, f"{where}: no overread_* metric in {expr!r}"
        for name, labels in found:
            assert name in names, f"{where}: {name} is not exported (known: {sorted(names)})"
            assert labels <= names[name] | {"instance", "job"}, (
                f"{where}: {name} has no label {sorted(labels - names[name])}"
            )


def test_the_scan_catches_a_wrong_name_and_label() -> None:
    """The check itself can fail: a misspelt metric and an unknown label are seen."""
    names = registry_names()
    found = selectors('sum(rate(overread_sender_mesages_total{code!~"AA|overread_x"}[5m])) by (sender)')
    assert found == [("overread_sender_mesages_total", {"code"})]
    assert found[0][0] not in names
    assert selectors('overread_store_up{nope="1"}')[0][1] - names["overread_store_up"] == {"nope"}


def test_rules_cover_what_issue_11_asks_for() -> None:
    """Queue, oldest pending age, dead letters, NACK ratio per sender, a silent sender, store errors."""
    exprs = dict(_rule_exprs())
    used = {name for expr in exprs.values() for name, _ in selectors(expr)}
    assert {
        "overread_outbox_messages",
        "overread_outbox_oldest_pending_age_seconds",
        "overread_sender_messages_total",
        "overread_sender_last_message_timestamp_seconds",
        "overread_store_up",
        "overread_store_save_failures_total",
    } <= used
    assert 'state="dead"' in exprs["OverreadDeadLetters"]


def test_promtool_check_rules() -> None:
    """promtool accepts the rules file (skipped where promtool is not installed)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not installed (https://prometheus.io/download/); the YAML and metric names are still checked above"
        )
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
