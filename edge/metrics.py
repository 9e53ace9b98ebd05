"""The edge's metrics, all named here, exported in Prometheus text format at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


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
        self.publish_seconds = Histogram(
            "headwater_edge_publish_seconds",
            "Time from publishing an envelope to its durable acknowledgement.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.sink_in_use = Gauge(
            "headwater_edge_sink_in_use",
            "1 for the sink envelopes currently go to (jetstream, spool).",
            ["sink"],
            registry=self.registry,
        )
        self.sink_in_use.labels("jetstream").set(1)

    def accepted(self, project: str, count: int) -> None:
        if count:
            self.events.labels(project, "accepted", "").inc(count)

    def rejected(self, project: str, reason: str, count: int = 1) -> None:
        self.events.labels(project, "rejected", reason).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
