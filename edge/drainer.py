"""The drainer: puts spooled envelopes back into JetStream, oldest first, once it answers again.

Each envelope is republished with its original `Nats-Msg-Id`, so JetStream drops one it already
has (within the stream's duplicate window; beyond it, ClickHouse collapses the copy by messageId).
An envelope leaves the spool only after JetStream acknowledged it. Failures back off exponentially
with jitter; draining is paced (it sleeps as long as it worked, times `pace`) so it does not starve
live traffic.

The drainer also keeps the spool usable: a spool that cannot be opened at start-up (a full or
failing disk) is opened here once it can be, and a spool fault (the drain lock, a read or a delete
failing) is reported in `problem` (readiness, metrics, one log line) and retried with backoff,
never fatal: the edge serves to JetStream meanwhile and drains once the disk lets it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext

from headwater.control.tasks import cancel_and_wait
from headwater.spool import Spool, SpooledEnvelope, SpoolUnavailable

from .backoff import Backoff
from .fallback import CircuitBreaker
from .metrics import EdgeMetrics
from .subjects import EVENTS_STREAM, MSG_ID_HEADER

log = logging.getLogger(__name__)


async def republish(js: JetStreamContext, envelopes: list[SpooledEnvelope], timeout: float) -> None:
    """Publish pipelined and wait for every acknowledgement; raises if any is missing."""
    futures = [
        await js.publish_async(e.subject, e.body, stream=EVENTS_STREAM, headers={MSG_ID_HEADER: e.msg_id})
        for e in envelopes
    ]
    await asyncio.wait_for(asyncio.gather(*futures), timeout)


class Drainer:
    def __init__(
        self,
        spool: Spool,
        js: JetStreamContext,
        breaker: CircuitBreaker,
        metrics: EdgeMetrics,
        batch: int = 256,
        pace: float = 0.5,
        publish_timeout: float = 10.0,
        idle_interval: float = 0.2,
        retry_max_seconds: float = 5.0,
    ) -> None:
        self._spool = spool
        self._js = js
        self._breaker = breaker
        self._metrics = metrics
        self._batch = batch
        self._pace = pace
        self._publish_timeout = publish_timeout
        self._idle = idle_interval
        self._backoff = Backoff(0.2)  # exponential from 0.2 s to 30 s, plus up to 1 s of jitter
        self._failures_in_row = 0
        self._spool_backoff = Backoff(0.2, retry_max_seconds, jitter=min(1.0, retry_max_seconds / 2))
        self._faults_in_row = 0
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.problem: str | None = None
        """Why the spool cannot be used right now (cannot be opened, drained), or None."""

    async def open_spool(self) -> bool:
        """Open the spool if it is not open yet; False (the fault reported, not raised) if the disk
        does not let it. The drainer retries in the background once started."""
        if self._spool.is_open:
            return True
        try:
            await self._spool.open()
        except SpoolUnavailable as exc:
            self._fault(exc, "the edge serves to JetStream only until it opens")
            return False
        self._recovered()
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spool-drainer")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._spool.holds_drain_lock:
            self._spool.release_drain_lock()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._step()
                except SpoolUnavailable as exc:
                    self._fault(exc, "retrying")
                    await asyncio.sleep(self._spool_backoff.delay(self._faults_in_row))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            log.exception("spool drainer stopped on an unexpected error")
            raise

    async def _step(self) -> None:
        if not await self.open_spool():
            await asyncio.sleep(self._spool_backoff.delay(self._faults_in_row))
            return
        if self._breaker.is_open or self._spool.stats().entries == 0:
            await asyncio.sleep(self._idle)
            return
        if not self._spool.holds_drain_lock and not self._spool.try_acquire_drain_lock():
            await asyncio.sleep(1.0)  # another process (e.g. `headwater spool drain`) drains it
            return
        started = time.monotonic()
        drained = await self.drain_once()
        self._recovered()
        if drained and self._pace > 0:
            await asyncio.sleep((time.monotonic() - started) * self._pace)

    def _fault(self, exc: SpoolUnavailable, action: str) -> None:
        self._faults_in_row += 1
        problem = str(exc)
        if self.problem is None:  # one line per fault, not one per retry
            log.warning("spool unusable (%s); %s", problem, action)
        self.problem = problem

    def _recovered(self) -> None:
        self._faults_in_row = 0
        if self.problem is not None:
            log.info("spool %s usable again", self._spool.directory)
            self.problem = None

    async def drain_once(self) -> int:
        """One batch: peek, republish, remove. Returns how many left the spool (0 on failure)."""
        envelopes = await self._spool.peek_batch(self._batch)
        if not envelopes:
            return 0
        keys = [e.key for e in envelopes]
        try:
            await republish(self._js, envelopes, self._publish_timeout)
        except Exception as exc:
            self._spool.release(keys)
            self._failures_in_row += 1
            self._metrics.drain_failures.inc()
            delay = self._backoff.delay(self._failures_in_row)
            log.warning(
                "republishing %d spooled envelopes failed (%r); retrying in %.1fs", len(keys), exc, delay
            )
            self._breaker.trip("republishing spooled envelopes failed")
            await asyncio.sleep(delay)
            return 0
        try:
            removed = await self._spool.remove(keys)
        except SpoolUnavailable:
            # In JetStream already: republished later under the same Nats-Msg-Id, deduplicated.
            self._spool.release(keys)
            raise
        self._failures_in_row = 0
        self._metrics.drained.inc(removed)
        return removed
