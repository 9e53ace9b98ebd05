"""The consume loop: pull from the durable consumer → decode → batch per project → INSERT → ack.

Each step has a module of its own, composed here: intake.py (bind to the durable consumer, take
groups of messages), processing.py (messages → one Native block per project, in worker
processes), collecting.py (blocks into the batch; what cannot become rows to deadletter.py),
batching.py (per project, up to its span or max rows), inserting.py (INSERT with retries, then
ack) and lag.py (lag gauges). This module runs the loop, keeps the groups in flight in order, and
reports health.

Nothing is acked before ClickHouse accepted its rows. A message that cannot be decoded is
dead-lettered (published to `hw.dlq.<project>`, then terminated) so it never blocks the stream.
An insert that fails for a reason other than its rows (consumers/insert_errors.py) is held and
retried with backoff; rows ClickHouse refuses are isolated and dead-lettered one message at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.tasks import cancel_and_wait, report_end
from headwater.core.wire.subjects import project_of_subject

from .batching import Batch
from .collecting import (
    Collector,
    LeftoverOf,
    SettingsOf,
    TombstonesOf,
    no_tombstones,
    process_with_tombstones,
    tombstones_for,
)
from .deadletter import DeadLetters
from .inserting import Inserter
from .intake import Intake
from .lag import refresh_lag, watch_lag
from .metrics import ConsumerMetrics
from .processing import Processed, Processor, WorkerLost
from .settings import ConsumerSettings
from .writer import ClickHouseWriter

log = logging.getLogger(__name__)

# Messages taken from the pull and the task turning them into blocks.
InProcessing = tuple[list[Msg], asyncio.Task[Processed]]


class EventConsumer:
    """Also a `ConnectionListener`: register it so pull requests are renewed after a reconnect."""

    def __init__(
        self,
        nats: Client,
        writer: ClickHouseWriter,
        settings: ConsumerSettings,
        processor: Processor,
        settings_of: SettingsOf | None = None,
        metrics: ConsumerMetrics | None = None,
        leftover_of: LeftoverOf | None = None,
        tombstones_of: TombstonesOf | None = None,
    ) -> None:
        self._js = nats.jetstream()
        self._tombstones_of: TombstonesOf = tombstones_of or no_tombstones
        self._settings = settings
        self._processor = processor
        self._settings_of = settings_of or (lambda _project: ProjectSettings())
        self.metrics = metrics or ConsumerMetrics()
        self._stopping = asyncio.Event()
        self._batch = Batch()  # being built
        # Messages taken from the pull, each group with the task turning it into blocks: one per
        # worker and one waiting. Bounded, so a consumer that cannot write stops pulling.
        self._processing: asyncio.Queue[InProcessing | None] = asyncio.Queue(processor.capacity + 1)
        self._in_processing: deque[InProcessing] = deque()  # taken, not collected yet
        self._dead_letters = DeadLetters(self._js, self.metrics)
        self._intake = Intake(nats, settings, self._dead_letters, self._stopping)
        self._collector = Collector(
            processor,
            self._settings_of,
            leftover_of or (lambda _project, _received_at: None),
            self._dead_letters,
            self.metrics,
            self._tombstones_of,
        )
        self._inserter = Inserter(
            writer,
            settings,
            processor,
            self._settings_of,
            self._dead_letters,
            self.metrics,
            self._stopping,
            self._waiting,
            self._tombstones_of,
        )
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.broken: str | None = None  # why a background task of the consumer ended, if one did

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def rows_written(self) -> int:
        return self._inserter.rows_written

    @property
    def retries(self) -> int:
        return self._inserter.retries

    @property
    def retrying_since(self) -> float | None:
        """Since when (monotonic) inserts have been failing and retried; None while they succeed."""
        return self._inserter.retrying_since

    @property
    def dead_lettered(self) -> int:
        return self._dead_letters.count

    @property
    def leftovers_discarded(self) -> int:
        return self._collector.leftovers_discarded

    def health(self) -> tuple[bool, str | None]:
        """Ready, or not and why: inserts failing for longer than the settings allow (nothing is
        lost meanwhile: the batch is held and retried), or a background task that ended."""
        pull = self._intake.pull
        for broken in (self.broken, pull.broken if pull is not None else None):
            if broken is not None:
                return False, broken
        retrying = self.retrying_since
        if retrying is not None:
            seconds = time.monotonic() - retrying
            if seconds >= self._settings.unready_after_retrying_seconds:
                error = self._inserter.last_insert_error
                return False, f"ClickHouse inserts failing for {seconds:.0f}s ({error})"
        return True, None

    async def start(self) -> None:
        await self._intake.start()
        self._task = asyncio.create_task(self._run(), name="event-consumer")
        self._lag_task = asyncio.create_task(watch_lag(self._refresh_lag), name="event-consumer-lag")
        report_end(self._lag_task, "the lag watcher", self._broke)

    def _broke(self, reason: str) -> None:
        self.broken = reason

    async def _refresh_lag(self) -> None:
        await refresh_lag(self._js, self._settings.durable_name, self.metrics)

    def on_disconnected(self) -> None:
        pass

    def on_reconnected(self) -> None:
        if self._intake.pull is not None:
            self._intake.pull.forget_requests()

    async def stop(self) -> None:
        """Stop fetching, write and ack what is buffered, then return."""
        self._stopping.set()
        if self._lag_task is not None and not self._lag_task.done():  # one that ended was reported
            await cancel_and_wait(self._lag_task)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        batch = self._batch
        feeding = asyncio.create_task(self._feed(), name="event-consumer-feed")
        try:
            while (taken := await self._next_processed(batch, feeding)) is not None:
                if taken:
                    await self._collect(batch, *taken)
                due = batch.take(full=batch.rows >= self._settings.max_batch_rows)
                if due:
                    await self._inserter.flush(due)
            await feeding  # re-raises what stopped it
            await self._inserter.flush(batch.take(full=True))
            await self._inserter.flushed()
            await self._intake.stop()
        except Exception as exc:
            self.failure = exc
            log.exception("event consumer stopped on an unexpected error")
            await cancel_and_wait(feeding)
            await self._abandon()
            raise
        finally:
            await cancel_and_wait(feeding)

    async def _abandon(self) -> None:
        """After a failure: cancel the groups still being processed and hand every message not
        written back to JetStream at once, rather than leave them pending until their ack wait."""
        await self._intake.stop()  # first: drained, it receives no redelivery; naks its buffer
        handed_back: list[Msg] = []
        while self._in_processing:  # queued, or taken by the feed and not queued yet
            messages, task = self._in_processing.popleft()
            task.cancel()
            with contextlib.suppress(BaseException):  # the failure was reported already
                await task
            handed_back += messages
        while not self._processing.empty():
            self._processing.get_nowait()
        handed_back += self._batch.messages()
        self._batch.projects.clear()
        for message in handed_back:
            with contextlib.suppress(NatsError):
                await message.nak()

    async def _next_processed(
        self, batch: Batch, feeding: asyncio.Task[None]
    ) -> InProcessing | tuple[()] | None:
        """The next group of messages being processed; () when the first buffered project is due
        before one comes; None once the feed has ended (stopping, or failed) and nothing is left."""
        next_due = batch.next_due()
        timeout = None if next_due is None else max(next_due - time.monotonic(), 0.0)
        getting = asyncio.ensure_future(self._processing.get())
        await asyncio.wait((getting, feeding), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            return getting.result()
        await cancel_and_wait(getting)  # a cancelled get() takes nothing off the queue
        return None if feeding.done() and self._processing.empty() else ()

    async def _feed(self) -> None:
        """Pull, dead-letter what was delivered too often, and hand the rest to the processor:
        several groups at once (one per worker and one waiting), in order."""
        while not self._stopping.is_set():
            messages = await self._intake.take_group()
            if not messages:
                continue
            projects = {project_of_subject(m.subject) for m in messages}
            settings = {project: self._settings_of(project) for project in projects}
            items = [(m.subject, m.data) for m in messages]
            tombstones = tombstones_for(projects, self._tombstones_of)
            task = asyncio.create_task(process_with_tombstones(self._processor, items, settings, tombstones))
            self._in_processing.append((messages, task))
            await self._processing.put((messages, task))

    async def _collect(self, batch: Batch, messages: list[Msg], processing: asyncio.Task[Processed]) -> None:
        """Wait for a group's processing, then add it to the batch. A group lost with a worker
        process is handed back for redelivery."""
        try:
            processed = await processing
        except WorkerLost as exc:
            log.error("%s; %d messages will be redelivered", exc, len(messages))
            self.metrics.lost_to_workers.inc(len(messages))
            await self._hand_back(messages, stopping=self._stopping.is_set())
            return
        except BaseException:  # a bug, or cancelled: the consumer stops; hand the group back
            await self._hand_back(messages, stopping=True)
            raise
        finally:
            done, _ = self._in_processing.popleft()  # groups are collected in the order they were taken
            assert done is messages
        await self._collector.add(batch, messages, processed)

    async def _hand_back(self, messages: list[Msg], stopping: bool) -> None:
        """Nak a group for redelivery. A consumer on its way out stops its intake first: a nak'ed
        message goes straight to any pull request still open, and one that arrives as the intake
        unsubscribes would stay pending until its ack wait (a Ctrl-C reaching the workers too)."""
        if stopping:
            await self._intake.stop()
        for message in messages:
            with contextlib.suppress(NatsError):
                await message.nak()

    def _waiting(self) -> list[Msg]:
        """Messages held behind a write: the pull buffer, the next batch, those being processed."""
        waiting = self._intake.buffered()
        waiting += self._batch.messages()
        waiting += [m for group, _ in self._in_processing for m in group]
        return waiting
