"""Settings of the sessionizer role. Built by `ops/` from flags and HEADWATER_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from .cycle import DEFAULT_SETTLE_SECONDS

DEFAULT_INTERVAL_SECONDS = 10.0
# The most of its time the sessionizer spends in cycles: on a machine it shares with the
# consumers, the rest is theirs (docs/sessions.md, "Pacing").
DEFAULT_MAX_BUSY_FRACTION = 0.25
# A cycle waits this long at most for another writer's announced snapshot before it runs beside it
# (docs/sessions.md, "The sessionizer role": high availability).
DEFAULT_DEFER_TO_WRITERS_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class SessionizerSettings:
    clickhouse_url: str
    # Seconds between the starts of two rounds (one cycle per enabled project each).
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    # After a round of t seconds, a pause of at least t * (1 - f) / f: busy at most this fraction
    # of the time (1: no limit beyond the interval).
    max_busy_fraction: float = DEFAULT_MAX_BUSY_FRACTION
    # How long before ClickHouse's clock a cycle's snapshot ends (sessionizer/cycle.py).
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    # While another writer (a second sessionizer, a rebuild) announced a snapshot less than this
    # long ago and has not ended, a project's cycle waits for a later round (0: never waits).
    defer_to_writers_seconds: float = DEFAULT_DEFER_TO_WRITERS_SECONDS
    # A project whose cycle failed is retried after a delay growing from one interval up to this.
    max_backoff_seconds: float = 300.0
    # Rounds failing for every project for longer than this make /readyz 503.
    unready_after_failing_seconds: float = 120.0
    # Where /healthz, /readyz and /metrics are served; None: not at all (as in `up`).
    host: str = "127.0.0.1"
    port: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.max_busy_fraction <= 1:
            raise ValueError(f"max_busy_fraction must be in (0, 1], not {self.max_busy_fraction}")
        if self.defer_to_writers_seconds < 0:
            raise ValueError(
                f"defer_to_writers_seconds must be 0 or more, not {self.defer_to_writers_seconds}"
            )
