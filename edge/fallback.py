"""The fallback sink: JetStream first, the local disk spool when JetStream cannot acknowledge.

Behind a circuit breaker: once a publish failed (or the NATS connection dropped), requests go
straight to the spool instead of each waiting for a timeout, and a probe closes the breaker as
soon as the events stream answers again. Only a *retryable* failure falls back: validation errors
never reach a sink at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from headwater.core.service.tasks import cancel_and_wait
from headwater.spool import Spool, SpoolError, SpoolFull

from .errors import MessageTooLarge, SinkUnavailable
from .metrics import EdgeMetrics
from .sink import Sink

log = logging.getLogger(__name__)
Probe = Callable[[], Awaitable[None]]


class CircuitBreaker:
    """Closed: use JetStream. Open: use the spool, and probe JetStream every `interval` seconds."""

    def __init__(self, probe: Probe, interval: float = 1.0, probe_timeout: float = 2.0) -> None:
        self._probe = probe
        self._interval = interval
        self._probe_timeout = probe_timeout
        self._open_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.trips = 0

    @property
    def is_open(self) -> bool:
        return self._open_since is not None

    @property
    def state(self) -> str:
        return "open" if self.is_open else "closed"

    def open_seconds(self) -> float | None:
        return None if self._open_since is None else time.monotonic() - self._open_since

    def trip(self, reason: str) -> None:
        if self._open_since is None:
            self._open_since = time.monotonic()
            self.trips += 1
            log.warning("circuit breaker open (%s): events go to the disk spool", reason)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._probe_until_closed(), name="breaker-probe")

    # ConnectionListener: a dropped connection opens the breaker at once; a reconnect probes now.
    def on_disconnected(self) -> None:
        self.trip("NATS connection lost")

    def on_reconnected(self) -> None:
        if self.is_open and self._task is not None:
            self._task.cancel()
            self._task = asyncio.create_task(self._probe_until_closed(delay=0.0), name="breaker-probe")

    async def _probe_until_closed(self, delay: float | None = None) -> None:
        await asyncio.sleep(self._interval if delay is None else delay)
        while self._open_since is not None:
            try:
                await asyncio.wait_for(self._probe(), self._probe_timeout)
            except Exception as exc:
                log.debug("JetStream probe failed: %r", exc)
                await asyncio.sleep(self._interval)
                continue
            log.info("circuit breaker closed after %.1fs: JetStream answers again", self.open_seconds() or 0)
            self._open_since = None

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)


class FallbackSink:
    def __init__(self, primary: Sink, spool: Spool, breaker: CircuitBreaker, metrics: EdgeMetrics) -> None:
        self._primary = primary
        self._spool = spool
        self._breaker = breaker
        self._metrics = metrics

    def max_body_bytes(self) -> int:
        return self._primary.max_body_bytes()

    async def publish(self, subject: str, msg_id: str, body: bytes) -> None:
        """MessageTooLarge is not a reason to fall back: the spool could never drain it."""
        if not self._breaker.is_open:
            try:
                await self._primary.publish(subject, msg_id, body)
                return
            except SinkUnavailable as exc:
                self._breaker.trip(str(exc))
        elif len(body) > self.max_body_bytes():
            raise MessageTooLarge(f"a message of {len(body)} bytes is over JetStream's limit")
        try:
            await self._spool.append(subject, msg_id, body)
        except SpoolFull as exc:
            self._metrics.spool_refused.inc()
            raise SinkUnavailable(f"JetStream is unreachable and the spool is full ({exc.reason})") from exc
        except SpoolError as exc:
            self._metrics.spool_refused.inc()
            raise SinkUnavailable(f"JetStream is unreachable and the spool failed: {exc}") from exc
        self._metrics.spooled.inc()
