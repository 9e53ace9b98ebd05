"""Lag metrics: how far the durable consumer is behind the stream, refreshed from its state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from headwater.core.wire.subjects import EVENTS_STREAM

from .metrics import ConsumerMetrics

LAG_INTERVAL_SECONDS = 5.0


async def watch_lag(refresh: Callable[[], Awaitable[None]], interval: float = LAG_INTERVAL_SECONDS) -> None:
    """Refresh the lag gauges every `interval` seconds, until cancelled."""
    while True:
        # A NATS failure is reported again once NATS answers; readiness shows the connection.
        with contextlib.suppress(NatsError, TimeoutError):
            await refresh()
        await asyncio.sleep(interval)


async def refresh_lag(js: JetStreamContext, durable: str, metrics: ConsumerMetrics) -> None:
    info = await js.consumer_info(EVENTS_STREAM, durable)
    metrics.lag.set(info.num_pending or 0)
    metrics.ack_pending.set(info.num_ack_pending or 0)
    metrics.redelivered.set(info.num_redelivered or 0)
