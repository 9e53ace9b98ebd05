"""Settings of the edge role. Built by `ops/` from flags and HEADWATER_* variables."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    host: str = "127.0.0.1"
    port: int = 8700
    max_body_bytes: int = 500 * 1024
    max_event_bytes: int = 32 * 1024
    publish_timeout_seconds: float = 5.0
    retry_after_seconds: int = 5
