"""Token buckets per project and per (project, client IP), refilled continuously.

Limits come from each project's config (`settings.rate_limits`, in events per second). Each edge
enforces `limit / rate_limit_edges`: with N edges behind a balancer that spreads load evenly, the
project gets about its configured limit in total (docs/ingest-api.md).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from headwater.core.projects.project import Project
from headwater.core.service.clientnet import client_network


@dataclass(slots=True)
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst_seconds: float, now: float) -> TokenBucket:
        capacity = max(rate * burst_seconds, 1.0)
        return cls(rate, capacity, capacity, now)

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` tokens are there (0 when they are)."""
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, edges: int = 1, max_ip_buckets: int = 100_000) -> None:
        self._share = 1.0 / edges
        self._projects: dict[str, TokenBucket] = {}
        self._ips: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._max_ip_buckets = max_ip_buckets

    def _bucket(self, current: TokenBucket | None, limit: float, burst: float, now: float) -> TokenBucket:
        rate = limit * self._share
        if current is None or current.rate != rate or current.capacity != max(rate * burst, 1.0):
            return TokenBucket.full(rate, burst, now)  # new, or the project's limit changed
        current.refill(now)
        return current

    def check(self, project: Project, client_ip: str | None, events: int, now: float | None = None) -> float:
        """Take `events` tokens from the project's buckets; returns 0, or the seconds to wait (and
        takes nothing) when a bucket is short. A request larger than a bucket can ever hold costs a
        full bucket, so it passes when the bucket is full rather than never."""
        limits = project.settings.rate_limits
        now = time.monotonic() if now is None else now
        buckets: list[tuple[TokenBucket, float]] = []
        if limits.project_events_per_second is not None:
            bucket = self._bucket(
                self._projects.get(project.id), limits.project_events_per_second, limits.burst_seconds, now
            )
            self._projects[project.id] = bucket
            buckets.append((bucket, min(events, bucket.capacity)))
        if limits.ip_events_per_second is not None and client_ip is not None:
            # An IPv6 client by its /64: rotating addresses inside it must not buy fresh buckets.
            key = (project.id, client_network(client_ip))
            bucket = self._bucket(self._ips.get(key), limits.ip_events_per_second, limits.burst_seconds, now)
            self._ips[key] = bucket
            self._ips.move_to_end(key)
            while len(self._ips) > self._max_ip_buckets:
                self._ips.popitem(last=False)  # the least recently seen client: it starts full again
            buckets.append((bucket, min(events, bucket.capacity)))
        wait = max((bucket.wait_for(cost) for bucket, cost in buckets), default=0.0)
        if wait > 0:
            return wait
        for bucket, cost in buckets:
            bucket.tokens -= cost
        return 0.0
