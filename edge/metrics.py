"""The edge's metrics, all named here, exported in Prometheus text format at /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class EdgeMetrics:
    """One registry per edge app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "headwater_edge_requests",
            "Ingest HTTP requests by endpoint and response status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "headwater_edge_events",
            "Events by project and outcome (accepted, or rejected with the reason code).",
            ["project", "outcome", "reason"],
            registry=self.registry,
        )
        self.utf8_repaired = Counter(
            "headwater_edge_utf8_repaired",
            "Requests whose body held bytes that are not UTF-8, replaced by U+FFFD (docs/ingest-api.md).",
            ["project"],
            registry=self.registry,
        )
        self.cookieless_ids = Counter(
            "headwater_edge_cookieless_ids",
            "Events given a cookieless anonymousId (docs/privacy.md#cookieless-visitors).",
            ["project"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "headwater_edge_publish_seconds",
            "Time from publishing an envelope to its durable acknowledgement.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.envelope_bytes = Counter(
            "headwater_edge_envelope_bytes",
            "Bytes of accepted envelopes: as JSON, and as stored (LZ4-framed above --compress-above).",
            ["form"],
            registry=self.registry,
        )
        self.spooled = Counter(
            "headwater_edge_spooled", "Envelopes written to the disk spool.", registry=self.registry
        )
        self.spool_refused = Counter(
            "headwater_edge_spool_refused",
            "Envelopes neither JetStream nor the spool could take (answered 503).",
            registry=self.registry,
        )
        self.drained = Counter(
            "headwater_edge_spool_drained",
            "Spooled envelopes republished to JetStream.",
            registry=self.registry,
        )
        self.undeliverable = Counter(
            "headwater_edge_spool_undeliverable",
            "Spooled envelopes JetStream can never take (over its size limits), moved to quarantine.",
            registry=self.registry,
        )
        self.drain_failures = Counter(
            "headwater_edge_spool_drain_failures", "Failed republishing attempts.", registry=self.registry
        )

    def watch(self, state: Callable[[], dict[str, Any]]) -> None:
        """Gauges read at scrape time from `state()`: the breaker and the spool's stats."""
        self.registry.register(_StateCollector(state))

    def accepted(self, project: str, count: int) -> None:
        if count:
            self.events.labels(project, "accepted", "").inc(count)

    def rejected(self, project: str, reason: str, count: int = 1) -> None:
        self.events.labels(project, "rejected", reason).inc(count)

    def envelope(self, json_bytes: int, stored_bytes: int) -> None:
        self.envelope_bytes.labels("json").inc(json_bytes)
        self.envelope_bytes.labels("stored").inc(stored_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        breaker_open = bool(state.get("breaker_open"))
        sink = GaugeMetricFamily(
            "headwater_edge_sink_in_use", "1 for the sink envelopes go to now.", labels=["sink"]
        )
        sink.add_metric(["jetstream"], 0.0 if breaker_open else 1.0)
        sink.add_metric(["spool"], 1.0 if breaker_open else 0.0)
        yield sink
        yield GaugeMetricFamily(
            "headwater_edge_breaker_open", "1 while the circuit breaker is open.", breaker_open
        )
        spool = state.get("spool")
        if spool is None:
            return
        yield GaugeMetricFamily(
            "headwater_edge_spool_failing",
            "1 while the spool cannot be opened or drained (a full or failing disk); see /readyz.",
            1.0 if state.get("spool_problem") else 0.0,
        )
        for name, help_text, value in (
            ("entries", "Envelopes waiting in the spool.", spool.entries),
            ("bytes", "Bytes of envelopes waiting in the spool.", spool.bytes),
            ("oldest_age_seconds", "Age of the oldest spooled envelope.", spool.oldest_age_seconds or 0.0),
            ("quarantined", "Corrupt spool entries moved to quarantine.", spool.quarantined),
            ("writable", "1 while the spool accepts envelopes.", 1.0 if spool.writable else 0.0),
        ):
            yield GaugeMetricFamily(f"headwater_edge_spool_{name}", help_text, float(value))
