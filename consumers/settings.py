"""Settings of the consumer role. Built by `ops/` from flags and HEADWATER_* variables."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    clickhouse_url: str
    durable_name: str = "hw-clickhouse"
    fetch_batch: int = 500
    max_batch_rows: int = 10_000
    flush_interval_seconds: float = 1.0
    ack_wait_seconds: float = 60.0
    max_ack_pending: int = 20_000
    max_deliver: int = 20
    retry_delay_seconds: float = 2.0
