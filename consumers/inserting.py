"""Inserting: project batches into ClickHouse, then ack. One write runs in the background while
the next batch is built; a failure not about the rows (consumers/insert_errors.py) is retried
with backoff, holding everything up (backpressure); rows ClickHouse refuses are isolated message
by message and only a message refused alone is dead-lettered. Nothing is acked before ClickHouse
accepted its rows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from headwater.core.service.backoff import Backoff
from headwater.core.wire.envelope import EnvelopeError

from .batching import ProjectBatch
from .collecting import SettingsOf, TombstonesOf, no_tombstones, process_with_tombstones, tombstones_for
from .deadletter import DeadLetters
from .insert_errors import InsertFailure, classify
from .metrics import ConsumerMetrics
from .processing import Processor, Refused, WorkerLost
from .settings import ConsumerSettings
from .writer import ClickHouseWriter, deduplication_token

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Inserter:
    writer: ClickHouseWriter
    settings: ConsumerSettings
    processor: Processor  # to process a message alone when ClickHouse refuses a batch's rows
    settings_of: SettingsOf
    dead_letters: DeadLetters
    metrics: ConsumerMetrics
    stopping: asyncio.Event
    # The messages held behind the batch being written: told in progress while its insert is retried.
    waiting: Callable[[], list[Msg]]
    tombstones_of: TombstonesOf = no_tombstones
    rows_written: int = 0
    retries: int = 0
    retrying_since: float | None = None  # monotonic time since when inserts have been failing
    last_insert_error: str | None = None
    _writing: asyncio.Task[None] | None = field(default=None, init=False)  # the previous batch's write

    def __post_init__(self) -> None:
        # exponential from the configured delay up to 30 s, plus up to 1 s of jitter
        self._backoff = Backoff(self.settings.retry_delay_seconds)

    async def flush(self, projects: dict[str, ProjectBatch]) -> None:
        """Start writing `projects` in the background, once the previous write has finished: the
        next batch is pulled and processed while this one is inserted (the engine's part of an
        INSERT runs outside the GIL), and a write that is retrying holds everything up."""
        await self.flushed()
        if projects:
            self._writing = asyncio.create_task(self._write_all(projects), name="event-consumer-write")

    async def flushed(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing  # re-raises what stopped it

    async def _write_all(self, projects: dict[str, ProjectBatch]) -> None:
        for project_id, project_batch in projects.items():
            await self._write(project_id, project_batch)

    async def _write(self, project_id: str, batch: ProjectBatch) -> None:
        """Insert, then ack. While ClickHouse is unreachable or answers an error that is not about
        the rows (consumers/insert_errors.py: full disk, memory, too many parts, ...), retry with
        backoff and fetch nothing more (backpressure: memory stays at one batch), telling JetStream
        the messages are still in progress so they are not redelivered elsewhere. Rows ClickHouse
        refuses are isolated message by message; a message it refuses alone is dead-lettered."""
        messages = batch.messages
        token = deduplication_token(project_id, (m.metadata.sequence.stream for m in messages))
        body = b"".join(batch.blocks)
        attempt = 0
        while body:
            try:
                started = time.perf_counter()
                await asyncio.to_thread(self.writer.insert_native, project_id, body, token)
                self.metrics.insert_seconds.observe(time.perf_counter() - started)
                self.retrying_since = None
                self.last_insert_error = None
                break
            except Exception as exc:
                failure = classify(exc)
                if failure is InsertFailure.ROWS:
                    if len(messages) == 1:
                        await self.dead_letters.message(messages[0], exc)
                        return
                    log.warning(
                        "ClickHouse refused a batch of %s (%r); inserting message by message", project_id, exc
                    )
                    await self._write_one_by_one(project_id, messages)
                    return
                # About ClickHouse, not the rows (unreachable, full, overloaded, stopping, or a
                # code not classified yet): wait it out, holding the batch.
                attempt += 1
                self.retries += 1
                self.metrics.retries.inc()
                if self.retrying_since is None:
                    self.retrying_since = time.monotonic()
                self.last_insert_error = f"{failure.value}: {' '.join(str(exc).split())[:300]}"
                if self.stopping.is_set():
                    for message in messages:
                        await message.nak()  # another consumer (or our restart) takes them
                    return
                delay = self._backoff.delay(attempt)
                log.warning(
                    "ClickHouse insert failed (%s, %r); retrying %d rows of %s in %.1fs",
                    failure.value,
                    exc,
                    batch.rows,
                    project_id,
                    delay,
                )
                await self._wait_working(messages, delay)
        for message in messages:
            await message.ack()
        self.rows_written += batch.rows
        self.metrics.rows.labels(project_id).inc(batch.rows)
        self.metrics.batch_rows.observe(batch.rows)
        for reason, count in batch.dropped.items():  # counted once their messages are acked
            self.metrics.events_dropped.labels(project_id, reason).inc(count)
        now = time.time()
        for received_at in batch.received_at:
            # per request: how long after the edge received it its rows became queryable
            self.metrics.freshness_seconds.observe(now - received_at)

    async def _write_one_by_one(self, project_id: str, messages: list[Msg]) -> None:
        """Each message processed and inserted alone, to find the one(s) ClickHouse refuses."""
        settings = {project_id: self.settings_of(project_id)}
        for message in messages:
            try:
                processed = await process_with_tombstones(
                    self.processor,
                    [(message.subject, message.data)],
                    settings,
                    tombstones_for([project_id], self.tombstones_of),
                )
            except WorkerLost:
                await message.nak()
                continue
            [outcome] = processed.outcomes
            if isinstance(outcome, Refused):  # the rules changed since: as when it was first taken
                await self.dead_letters.message(message, EnvelopeError(outcome.error))
                continue
            await self.dead_letters.events(message, outcome)
            single = ProjectBatch(due=0.0)
            single.add([message], [outcome], processed.blocks.get(project_id, b""))
            await self._write(project_id, single)

    async def _wait_working(self, messages: list[Msg], seconds: float) -> None:
        """Sleep, telling JetStream every third of `ack_wait` that the messages (and those waiting
        behind them: the next batch, those being processed and the pull buffer) are still being
        worked on, so it does not redeliver them meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            for message in messages + self.waiting():
                with contextlib.suppress(NatsError):
                    await message.in_progress()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping.is_set():
                return
            await asyncio.sleep(min(remaining, self.settings.ack_wait_seconds / 3))
