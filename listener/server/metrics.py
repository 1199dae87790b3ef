"""Prometheus metrics: one registry per daemon, counters fed by the MLLP and HTTP shells.

Layer: reactor-side bookkeeping (no I/O of its own). Counters are bumped on the
reactor thread as answers go out; :meth:`Metrics.render` runs on a thread,
because the outbox gauges read the store at scrape time.

Labels carry codes and configured names only (transport, feed, answer code,
finding category, bucket, destination), never message content, so the label
sets stay small and free of patient data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from listener.errors import StoreError
from listener.intake import Tally
from listener.pipeline import DIRECTORY_UNKNOWN_RULES
from listener.store.base import OUTBOX_STATES, Store

__all__ = ["CONTENT_TYPE", "DEFAULT_SENDER_LIMIT", "OTHER_SENDER", "Metrics"]

#: Distinct senders that get their own label values; later ones share :data:`OTHER_SENDER`.
DEFAULT_SENDER_LIMIT = 64
OTHER_SENDER = "other"
#: Longest sender label value kept (a peer chooses MSH-3/MSH-4).
_MAX_LABEL_CHARS = 40


def _label(value: str) -> str:
    """A sender name as a label value: trimmed, printable, bounded; "" becomes "none"."""
    text = "".join(ch for ch in value.strip() if ch.isprintable())[:_MAX_LABEL_CHARS]
    return text or "none"


#: The Prometheus text exposition format served at ``/metrics``.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Processing latency: receive to answer, including the durable commit (fsync).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _OutboxCollector(Collector):
    """Outbox depth by destination and state, and the oldest pending row's age, read at scrape time."""

    def __init__(self, store: Store, now: Callable[[], datetime], destinations: Callable[[], Iterable[str]]) -> None:
        self.store = store
        self.now = now
        self.destinations = destinations

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily(
            "overread_outbox_messages", "Outbox rows by destination and state", labels=["destination", "state"]
        )
        oldest = GaugeMetricFamily(
            "overread_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row, by destination (0 when none pending)",
            labels=["destination"],
        )
        up = GaugeMetricFamily(
            "overread_store_up", "1 when the store answers reads and its last save and write probe succeeded"
        )
        failures = CounterMetricFamily(
            "overread_store_save_failures", "Saves that failed (the message was answered AR 207)"
        )
        failures.add_metric([], float(getattr(self.store, "save_failures", 0)))
        yield failures
        try:
            stats = self.store.outbox_stats(self.now())
        except StoreError:
            up.add_metric([], 0.0)
            yield up
            return
        seen = {(d.destination, d.state) for d in stats.depth}
        for d in stats.depth:
            depth.add_metric([d.destination, d.state], float(d.count))
        # Every known destination shows every state, so a drained queue reads 0, not "absent".
        for destination in sorted({d.destination for d in stats.depth}):
            for state in OUTBOX_STATES:
                if (destination, state) not in seen:
                    depth.add_metric([destination, state], 0.0)
        # Per destination: one stuck RIS must show as that RIS, not as "the queue".
        pending_age = {d.destination: d.oldest_age.total_seconds() for d in stats.depth if d.state == "pending"}
        for destination in sorted({d.destination for d in stats.depth} | set(self.destinations())):
            oldest.add_metric([destination], max(0.0, pending_age.get(destination, 0.0)))
        reason = getattr(self.store, "health_reason", lambda: "")()
        up.add_metric([], 0.0 if reason else 1.0)
        yield depth
        yield oldest
        yield up


class Metrics:
    """The daemon's metrics.

    Args:
        store: read at scrape time for the outbox gauges (None: no outbox gauges).
        now: the clock for outbox ages (aware UTC).
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        destinations: Callable[[], Iterable[str]] = tuple,
        sender_limit: int = DEFAULT_SENDER_LIMIT,
    ) -> None:
        # No ``*_created`` series: they double the output and no dashboard of ours reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "overread_messages_received",
            "Messages received, by transport and feed",
            ["transport", "feed"],
            registry=self.registry,
        )
        self.answered = Counter(
            "overread_messages_answered",
            "Answers sent, by transport, feed and code (MLLP MSA-1 such as AA/AE/AR, HTTP status such as 201/422)",
            ["transport", "feed", "code"],
            registry=self.registry,
        )
        self.lease_takeovers = Counter(
            "overread_outbox_lease_takeovers",
            "Outbox rows this daemon claimed after another instance's lease on them expired, by destination",
            ["destination"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "overread_messages_duplicate",
            "Duplicates answered with the stored answer",
            ["transport"],
            registry=self.registry,
        )
        self.findings = Counter(
            "overread_findings",
            "QA findings, by category and severity",
            ["category", "severity"],
            registry=self.registry,
        )
        self.routes = Counter("overread_routes", "Routing decisions, by bucket", ["bucket"], registry=self.registry)
        self.latency = Histogram(
            "overread_processing_seconds",
            "Receive to answer, including the durable commit",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "overread_http_requests",
            "HTTP requests, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.reports = Counter(
            "overread_reports",
            "Reports processed (each report of a Bundle or a multi-report message counts), by transport and feed",
            ["transport", "feed"],
            registry=self.registry,
        )
        # Per sender (MSH-3/MSH-4, or the HTTP client and its facility): the
        # first ``sender_limit`` pairs seen get their own labels, later ones
        # share "other", so a misbehaving peer cannot grow the series count.
        self.sender_limit = sender_limit
        self._senders: set[tuple[str, str]] = set()
        #: A sender's (application, facility) as received -> its label values, for
        #: senders that have their own labels only (at most four spellings each).
        self._sender_keys: dict[tuple[str, str], tuple[str, str]] = {}
        #: (metric, label values) -> the labelled child: ``labels()`` checks and
        #: converts its values on every call, and one message bumps about nine
        #: series (the label sets are bounded, so is this).
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self.sender_messages = Counter(
            "overread_sender_messages",
            "Messages answered, by sender (MSH-3/MSH-4; bounded, then 'other') and answer code",
            ["transport", "sender_application", "sender_facility", "code"],
            registry=self.registry,
        )
        self.sender_last_seen = Gauge(
            "overread_sender_last_message_timestamp_seconds",
            "Unix time of the last message from each sender (for 'sender silent' alerts)",
            ["transport", "sender_application", "sender_facility"],
            registry=self.registry,
        )
        self.directory_unknown = Counter(
            "overread_directory_unknown",
            "Reports whose site is not in sites.yaml or whose reader is not in readers.yaml (kind: site or reader)",
            ["kind"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "overread_config_reloads",
            "SIGHUP reloads, by outcome (applied, refused)",
            ["outcome"],
            registry=self.registry,
        )
        self.live_figures_refreshes = Counter(
            "overread_live_figures_refreshes",
            "Refreshes of the live discrepancy figures routing reads, by outcome (ok, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.live_figures_age = Gauge(
            "overread_live_figures_age_seconds",
            "Seconds since the live discrepancy figures in force were computed (NaN: none yet)",
            registry=self.registry,
        )
        self.live_figures_age.set(float("nan"))
        for outcome in ("ok", "failed"):
            self.live_figures_refreshes.labels(outcome)
        for kind in ("site", "reader"):
            self.directory_unknown.labels(kind)
        for outcome in ("applied", "refused"):
            self.config_reloads.labels(outcome)
        if store is not None:
            self.registry.register(_OutboxCollector(store, now, destinations))

    def sender_labels(self, application: str, facility: str) -> tuple[str, str]:
        """The label values for a sender: itself while under the limit, else ("other", "other")."""
        known = self._sender_keys.get((application, facility))
        if known is not None:
            return known
        key = (_label(application), _label(facility))
        if key in self._senders or len(self._senders) < self.sender_limit:
            self._senders.add(key)
            if len(self._sender_keys) < self.sender_limit * 4:
                self._sender_keys[(application, facility)] = key
            return key
        return (OTHER_SENDER, OTHER_SENDER)

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set."""
        child = self._children.get((metric, values))
        if child is None:
            child = self._children[(metric, values)] = metric.labels(*values)
        return child

    def message_answered(
        self,
        transport: str,
        feed: str,
        code: str,
        seconds: float | None = None,
        counted: Tally | None = None,
        *,
        duplicate: bool = False,
        sender: tuple[str, str] | None = None,
    ) -> None:
        """Count one message and its answer; findings and routes of a newly processed one.

        Args:
            transport: ``mllp`` or ``http``.
            feed: the mapping feed ("" when unknown, e.g. garbage).
            code: the answer code (AA/AE/AR/CA/..., or an HTTP status).
            seconds: receive-to-answer time, for the latency histogram.
            counted: the processed reports' :class:`~listener.intake.Tally` (not given for
                duplicates and refusals).
            duplicate: the stored answer of an earlier message was sent again.
            sender: (application, facility) of the sender, when known (MSH-3/MSH-4,
                or the HTTP client's name and facility).
        """
        feed = feed or "unknown"
        child = self._child
        child(self.received, transport, feed).inc()
        child(self.answered, transport, feed, code).inc()
        if sender is not None:
            app, fac = self.sender_labels(*sender)
            child(self.sender_messages, transport, app, fac, code).inc()
            child(self.sender_last_seen, transport, app, fac).set(time.time())
        if duplicate:
            child(self.duplicates, transport).inc()
        if seconds is not None:
            child(self.latency, transport).observe(seconds)
        if counted is None:
            return
        if counted.reports:
            child(self.reports, transport, feed).inc(counted.reports)
        for category, severity, rule in counted.findings:
            child(self.findings, category, severity).inc()
            kind = DIRECTORY_UNKNOWN_RULES.get(rule)
            if kind is not None:
                child(self.directory_unknown, kind).inc()
        for bucket in counted.buckets:
            child(self.routes, bucket).inc()

    def render(self) -> bytes:
        """The exposition text (reads the store: call it off the reactor thread)."""
        return generate_latest(self.registry)
