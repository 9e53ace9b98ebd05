"""The consumer's metrics, all named here, exported in Prometheus text format at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ConsumerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rows = Counter(
            "headwater_consumer_rows", "Rows written to ClickHouse.", ["project"], registry=self.registry
        )
        self.batch_rows = Histogram(
            "headwater_consumer_batch_rows",
            "Rows per INSERT.",
            buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
            registry=self.registry,
        )
        self.insert_seconds = Histogram(
            "headwater_consumer_insert_seconds",
            "Time of one INSERT that ClickHouse accepted.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.freshness_seconds = Histogram(
            "headwater_consumer_freshness_seconds",
            "From the edge receiving a request to its rows being accepted by ClickHouse (per request).",
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.retries = Counter(
            "headwater_consumer_insert_retries",
            "INSERTs retried because ClickHouse was unreachable or answered an error not about the rows.",
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "headwater_consumer_dead_lettered",
            "Messages sent to the dead-letter stream.",
            ["project"],
            registry=self.registry,
        )
        self.leftovers_discarded = Counter(
            "headwater_consumer_leftovers_discarded",
            "Messages of a purged project (or of its earlier incarnation) discarded, not stored.",
            ["project"],
            registry=self.registry,
        )
        self.events_suppressed = Counter(
            "headwater_consumer_events_suppressed",
            "Events not stored because a data-subject tombstone names their user or anonymous id.",
            ["project"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "headwater_consumer_events_dropped",
            "Events of bots not stored, under a project's bots mode `drop` (docs/privacy.md).",
            ["project", "reason"],
            registry=self.registry,
        )
        self.lost_to_workers = Counter(
            "headwater_consumer_lost_to_workers",
            "Messages given back for redelivery because the worker process handling them died.",
            registry=self.registry,
        )
        self.lag = Gauge(
            "headwater_consumer_lag",
            "Messages in the stream the durable consumer has not been delivered yet.",
            registry=self.registry,
        )
        self.ack_pending = Gauge(
            "headwater_consumer_ack_pending",
            "Messages delivered and not acknowledged yet.",
            registry=self.registry,
        )
        self.redelivered = Gauge(
            "headwater_consumer_redelivered",
            "Messages delivered more than once and not acknowledged yet.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
