"""Settings of the sessionizer role. Built by `ops/` from flags and HEADWATER_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from .cycle import DEFAULT_SETTLE_SECONDS

DEFAULT_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SessionizerSettings:
    clickhouse_url: str
    # Seconds between the starts of two rounds (one cycle per enabled project each).
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    # How long before ClickHouse's clock a cycle's snapshot ends (sessionizer/cycle.py).
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    # A project whose cycle failed is retried after a delay growing from one interval up to this.
    max_backoff_seconds: float = 300.0
    # Rounds failing for every project for longer than this make /readyz 503.
    unready_after_failing_seconds: float = 120.0
    # Where /healthz, /readyz and /metrics are served; None: not at all (as in `up`).
    host: str = "127.0.0.1"
    port: int | None = None
