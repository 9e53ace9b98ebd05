"""The drainer: puts spooled envelopes back into JetStream, oldest first, once it answers again.

Each envelope is republished with its original `Nats-Msg-Id`, so JetStream drops one it already
has (within the stream's duplicate window; beyond it, ClickHouse collapses the copy by messageId).
An envelope leaves the spool only after JetStream acknowledged it. Failures back off exponentially
with jitter; draining is paced (it sleeps as long as it worked, times `pace`) so it does not starve
live traffic.

Only a retryable failure (no connection, no answer, no responders) is retried. An envelope JetStream
can never take (larger than the server's max payload or the stream's max message size, e.g. spooled
by an edge that knew a larger limit) is republished split into parts that fit, or, when even one
event does not fit, moved to the spool's quarantine, logged and counted; the envelopes behind it
drain on: it must neither block them forever nor trip the breaker.

The drainer also keeps the spool usable: a spool that cannot be opened at start-up (a full or
failing disk) is opened here once it can be, and a spool fault (the drain lock, a read or a delete
failing) is reported in `problem` (readiness, metrics, one log line) and retried with backoff,
never fatal: the edge serves to JetStream meanwhile and drains once the disk lets it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError

from headwater.core.service.backoff import Backoff
from headwater.core.service.tasks import cancel_and_wait
from headwater.core.wire.envelope import DEFAULT_COMPRESS_ABOVE, Envelope, EnvelopeError
from headwater.core.wire.subjects import EVENTS_STREAM, MSG_ID_HEADER
from headwater.spool import Spool, SpooledEnvelope, SpoolUnavailable

from .errors import MessageTooLarge
from .fallback import CircuitBreaker
from .metrics import EdgeMetrics
from .sink import MESSAGE_TOO_LARGE_CODE
from .split import split

log = logging.getLogger(__name__)


class Undeliverable(Exception):
    """JetStream will never take this envelope."""


async def republish(
    js: JetStreamContext, envelopes: list[SpooledEnvelope], timeout: float
) -> list[BaseException | None]:
    """Publish pipelined and wait for every acknowledgement: per envelope, None once acknowledged,
    Undeliverable when JetStream can never take it, else the (retryable) error. Raises when the
    connection fails or acknowledgements are missing after `timeout`."""
    outcomes: list[BaseException | None] = [None] * len(envelopes)
    waiting: list[tuple[int, asyncio.Future[PubAck]]] = []
    for index, e in enumerate(envelopes):
        try:
            future = await js.publish_async(
                e.subject, e.body, stream=EVENTS_STREAM, headers={MSG_ID_HEADER: e.msg_id}
            )
        except MaxPayloadError:
            outcomes[index] = Undeliverable(f"{len(e.body)} bytes, over the server's max payload")
            continue
        waiting.append((index, future))
    acks = await asyncio.wait_for(asyncio.gather(*(f for _, f in waiting), return_exceptions=True), timeout)
    for (index, _), ack in zip(waiting, acks, strict=True):
        if isinstance(ack, APIError) and ack.err_code == MESSAGE_TOO_LARGE_CODE:
            outcomes[index] = Undeliverable(f"over the stream's max message size: {ack}")
        elif isinstance(ack, BaseException):
            outcomes[index] = ack
    return outcomes


@dataclass(frozen=True, slots=True)
class Drained:
    removed: int  # acknowledged by JetStream and removed from the spool
    quarantined: int  # undeliverable, moved to the spool's quarantine
    failed: int  # a retryable failure: released, to be tried again
    error: BaseException | None  # the first retryable failure


async def drain_batch(
    spool: Spool,
    js: JetStreamContext,
    envelopes: list[SpooledEnvelope],
    timeout: float,
    limit: int | None = None,
    compress_above: int = DEFAULT_COMPRESS_ABOVE,
) -> Drained:
    """Republish leased `envelopes`: remove the acknowledged ones, release the ones that failed
    for a reason that passes, and for one JetStream can never take (over `limit`, JetStream's
    message size less room for headers: see sink.py), publish it split into parts that fit
    (split.py) or, when even one event does not fit, move it to the quarantine. Raises
    (everything released) when the connection failed outright or the spool did."""
    oversize = [e for e in envelopes if limit is not None and len(e.body) > limit]
    fitting = [e for e in envelopes if limit is None or len(e.body) <= limit]
    try:
        outcomes: list[BaseException | None] = list(await republish(js, fitting, timeout))
        for envelope in oversize:
            fitting.append(envelope)
            outcomes.append(await _republish_split(js, envelope, limit, compress_above, timeout))
    except BaseException:
        spool.release(e.key for e in envelopes)
        raise
    try:
        acked, failed, quarantined, error = [], [], 0, None
        for envelope, outcome in zip(fitting, outcomes, strict=True):
            if isinstance(outcome, Undeliverable) and limit is not None and envelope not in oversize:
                # Over a limit the edge did not know (lowered since): split it after all.
                outcome = await _republish_split(js, envelope, limit, compress_above, timeout)
            if outcome is None:
                acked.append(envelope.key)
            elif isinstance(outcome, Undeliverable):
                log.error(
                    "spooled envelope %s (%s) can never be delivered (%s): moved to the spool's quarantine",
                    envelope.msg_id,
                    envelope.subject,
                    outcome,
                )
                await spool.quarantine(envelope.key, f"undeliverable: {outcome}")
                quarantined += 1
            else:
                failed.append(envelope.key)
                error = error or outcome
        spool.release(failed)
        removed = await spool.remove(acked) if acked else 0
    except BaseException:
        # (e.g. the spool's disk failing) What is in JetStream already is republished later under
        # the same Nats-Msg-Id and deduplicated; nothing leaves the spool unacknowledged.
        spool.release(e.key for e in envelopes)
        raise
    return Drained(removed, quarantined, len(failed), error)


async def _republish_split(
    js: JetStreamContext, envelope: SpooledEnvelope, limit: int | None, compress_above: int, timeout: float
) -> BaseException | None:
    """An envelope too large for JetStream, published as parts that fit: None once every part is
    acknowledged, Undeliverable when it cannot be split so (or no limit is known), else the
    retryable error (parts already published are dropped as duplicates by their ids next time)."""
    if limit is None:
        return Undeliverable(f"{len(envelope.body)} bytes, and JetStream's limit is not known")
    try:
        parts = split(Envelope.decode(envelope.body), limit, compress_above)
    except (EnvelopeError, MessageTooLarge) as exc:
        return Undeliverable(f"{len(envelope.body)} bytes, over JetStream's limit of {limit}: {exc}")
    whole = len(parts) == 1
    pieces = [
        SpooledEnvelope(envelope.key, envelope.subject, part.msg_id(envelope.msg_id, whole), part.body)
        for part in parts
    ]
    try:
        outcomes = await republish(js, pieces, timeout)
    except Exception as exc:
        return exc
    failure = next((o for o in outcomes if o is not None), None)
    if failure is None:
        log.warning(
            "spooled envelope %s (%d bytes) was over JetStream's limit: republished as %d parts",
            envelope.msg_id,
            len(envelope.body),
            len(parts),
        )
    return failure


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
        limit: Callable[[], int] | None = None,
        compress_above: int = DEFAULT_COMPRESS_ABOVE,
    ) -> None:
        self._spool = spool
        self._js = js
        self._breaker = breaker
        self._metrics = metrics
        self._batch = batch
        self._pace = pace
        self._publish_timeout = publish_timeout
        self._idle = idle_interval
        self._limit = limit  # the largest body JetStream takes now (JetStreamSink.max_body_bytes)
        self._compress_above = compress_above
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
        """One batch: peek, republish, remove (and quarantine what can never be delivered).
        Returns how many left the spool for JetStream."""
        envelopes = await self._spool.peek_batch(self._batch)
        if not envelopes:
            return 0
        try:
            limit = self._limit() if self._limit is not None else None
            result = await drain_batch(
                self._spool, self._js, envelopes, self._publish_timeout, limit, self._compress_above
            )
        except SpoolUnavailable:
            raise  # the disk, not JetStream: reported and retried by _run
        except Exception as exc:
            await self._failed(len(envelopes), exc)
            return 0
        self._metrics.drained.inc(result.removed)
        self._metrics.undeliverable.inc(result.quarantined)
        if result.error is not None:
            await self._failed(result.failed, result.error)
        else:
            self._failures_in_row = 0
        return result.removed

    async def _failed(self, count: int, error: BaseException) -> None:
        """A retryable failure: JetStream is (again) away; back off, and let live traffic spool."""
        self._failures_in_row += 1
        self._metrics.drain_failures.inc()
        delay = self._backoff.delay(self._failures_in_row)
        log.warning("republishing %d spooled envelopes failed (%r); retrying in %.1fs", count, error, delay)
        self._breaker.trip("republishing spooled envelopes failed")
        await asyncio.sleep(delay)
