"""The sessionizer's metrics, all named here, exported in Prometheus text format at /metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("advanced", "skipped", "deferred", "failed")


class SessionizerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.cycles = Counter(
            "headwater_sessionizer_cycles",
            "Cycles run, by outcome: advanced (moved the watermark), skipped (nothing new, or another "
            "writer's later snapshot covered it: a cycle that wrote anyway is reconciled by a later "
            "one), deferred (another writer announced a snapshot moments ago and is still at work) "
            "or failed.",
            ["project", "outcome"],
            registry=self.registry,
        )
        self.sessions = Counter(
            "headwater_sessionizer_sessions_written",
            "Session rows written (new or re-aggregated).",
            ["project"],
            registry=self.registry,
        )
        self.tombstones = Counter(
            "headwater_sessionizer_tombstones",
            "Sessions deleted because a recomputation no longer produced them (merged by a late event).",
            ["project"],
            registry=self.registry,
        )
        self.reconciled = Counter(
            "headwater_sessionizer_reconciled_identities",
            "Identities recomputed because a writer wrote for them and ended after another (a second "
            "sessionizer, a rebuild) announced a later snapshot, or failed, or died (docs/sessions.md).",
            ["project"],
            registry=self.registry,
        )
        self.late_events = Counter(
            "headwater_sessionizer_late_events",
            "Events that arrived later than their session's close plus the allowed lateness: stored, "
            "not sessionized until a rebuild.",
            ["project"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "headwater_sessionizer_lag_seconds",
            "Now minus the project's watermark (every event inserted before it is sessionized).",
            ["project"],
            registry=self.registry,
        )
        self.cycle_seconds = Histogram(
            "headwater_sessionizer_cycle_seconds",
            "Time of one cycle of one project (failed ones included).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )

    def forget(self, project_id: str) -> None:
        """Drop the per-project series of a project that is gone or disabled."""
        for metric in (self.sessions, self.tombstones, self.reconciled, self.late_events, self.lag):
            with contextlib.suppress(KeyError):
                metric.remove(project_id)
        for outcome in OUTCOMES:
            with contextlib.suppress(KeyError):
                self.cycles.remove(project_id, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
