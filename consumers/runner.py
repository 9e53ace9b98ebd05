"""The consume loop: pull from the durable consumer → decode → batch per project → INSERT → ack.

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
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.backoff import Backoff
from headwater.core.service.tasks import cancel_and_wait, report_end
from headwater.core.wire.envelope import EnvelopeError
from headwater.core.wire.subjects import (
    DLQ_DELIVERIES_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_ORIGINAL_MSG_ID_HEADER,
    DLQ_ORIGINAL_SUBJECT_HEADER,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    MSG_ID_HEADER,
    dlq_subject,
    project_of_subject,
)

from .insert_errors import InsertFailure, classify
from .metrics import ConsumerMetrics
from .processing import Decoded, Processed, Processor, Refused, WorkerLost
from .pull import PipelinedPull, PullConsumerGone
from .settings import ConsumerSettings
from .writer import ClickHouseWriter, deduplication_token

log = logging.getLogger(__name__)


class PoisonMessage(Exception):
    """A message that keeps failing however often it is delivered."""


@dataclass
class ProjectBatch:
    due: float  # monotonic time by which the project's batching span says to write
    messages: list[Msg] = field(default_factory=list)
    blocks: list[bytes] = field(default_factory=list)  # Native blocks of the messages' rows
    rows: int = 0
    received_at: list[float] = field(default_factory=list)  # per message with rows (freshness)

    def add(self, messages: list[Msg], outcomes: list[Decoded], block: bytes) -> int:
        """Add processed messages and their block; returns how many rows that was."""
        self.messages += messages
        if block:
            self.blocks.append(block)
        rows = sum(outcome.rows for outcome in outcomes)
        self.rows += rows
        self.received_at += [o.received_at for o in outcomes if o.received_at is not None]
        return rows


@dataclass
class Batch:
    """What the consumer holds, per project, until a project's span ends or the batch is full."""

    projects: dict[str, ProjectBatch] = field(default_factory=dict)
    rows: int = 0

    def add(
        self, project_id: str, span_seconds: float, messages: list[Msg], outcomes: list[Decoded], block: bytes
    ) -> None:
        batch = self.projects.get(project_id)
        if batch is None:
            batch = self.projects[project_id] = ProjectBatch(due=time.monotonic() + span_seconds)
        self.rows += batch.add(messages, outcomes, block)

    def next_due(self) -> float | None:
        return min((b.due for b in self.projects.values()), default=None)

    def take(self, full: bool) -> dict[str, ProjectBatch]:
        """The project batches to write now: all of them when the batch is full, else those due."""
        now = time.monotonic()
        taken = {p: b for p, b in self.projects.items() if full or b.due <= now}
        for project_id, batch in taken.items():
            del self.projects[project_id]
            self.rows -= batch.rows
        return taken


# Messages taken from the pull and the task turning them into blocks.
InProcessing = tuple[list[Msg], asyncio.Task[Processed]]

# A project's settings (batching span, anonymisation), from its live config.
SettingsOf = Callable[[str], ProjectSettings]
# Why a message of a project, received at a time (epoch seconds), is a purged project's leftover to
# discard (consumers/leftovers.py); None: store it.
LeftoverOf = Callable[[str, float | None], str | None]


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
    ) -> None:
        self._nats = nats
        self._js = nats.jetstream()
        self._pull: PipelinedPull | None = None
        self._batch = Batch()  # being built
        self._writing: asyncio.Task[None] | None = None  # the write of the previous batch
        self.metrics = metrics or ConsumerMetrics()
        self._lag_task: asyncio.Task[None] | None = None
        self.retrying_since: float | None = None
        self._processor = processor
        # Messages taken from the pull, each group with the task turning it into blocks: one per
        # worker and one waiting. Bounded, so a consumer that cannot write stops pulling.
        self._processing: asyncio.Queue[InProcessing | None] = asyncio.Queue(processor.capacity + 1)
        self._in_processing: deque[InProcessing] = deque()  # taken, not collected yet
        self._settings_of = settings_of or (lambda _project: ProjectSettings())
        self._leftover_of = leftover_of or (lambda _project, _received_at: None)
        self.leftovers_discarded = 0
        self._writer = writer
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.rows_written = 0
        self.retries = 0
        self.dead_lettered = 0
        # exponential from the configured delay up to 30 s, plus up to 1 s of jitter
        self._backoff = Backoff(settings.retry_delay_seconds)
        self.failure: BaseException | None = None
        self.last_insert_error: str | None = None
        self.broken: str | None = None  # why a background task of the consumer ended, if one did

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def health(self) -> tuple[bool, str | None]:
        """Ready, or not and why: inserts failing for longer than the settings allow (nothing is
        lost meanwhile: the batch is held and retried), or a background task that ended."""
        for broken in (self.broken, self._pull.broken if self._pull is not None else None):
            if broken is not None:
                return False, broken
        retrying = self.retrying_since
        if retrying is not None:
            seconds = time.monotonic() - retrying
            if seconds >= self._settings.unready_after_retrying_seconds:
                return False, f"ClickHouse inserts failing for {seconds:.0f}s ({self.last_insert_error})"
        return True, None

    async def start(self) -> None:
        self._pull = await self._start_pull()
        self._task = asyncio.create_task(self._run(), name="event-consumer")
        self._lag_task = asyncio.create_task(self._watch_lag(), name="event-consumer-lag")
        report_end(self._lag_task, "the lag watcher", self._broke)

    def _broke(self, reason: str) -> None:
        self.broken = reason

    async def _start_pull(self) -> PipelinedPull:
        """Bind to the durable consumer, creating it when it does not exist (an existing one keeps
        its configuration, as several processes share it)."""
        durable = self._settings.durable_name
        try:
            await self._js.consumer_info(EVENTS_STREAM, durable)
        except NotFoundError:
            config = ConsumerConfig(
                durable_name=durable,
                filter_subject=EVENTS_SUBJECTS,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self._settings.ack_wait_seconds,
                max_ack_pending=self._settings.max_ack_pending,
                max_deliver=self._settings.max_deliver,
            )
            await self._js.add_consumer(EVENTS_STREAM, config)
        pull = PipelinedPull(self._nats, EVENTS_STREAM, durable, batch=self._settings.fetch_batch)
        await pull.start()
        return pull

    async def _restart_pull(self) -> None:
        while not self._stopping.is_set():
            try:
                self._pull = await self._start_pull()
                return
            except (NatsError, TimeoutError):
                log.warning("cannot bind to %s yet; retrying", self._settings.durable_name, exc_info=True)
                await asyncio.sleep(self._settings.retry_delay_seconds)

    def on_disconnected(self) -> None:
        pass

    def on_reconnected(self) -> None:
        if self._pull is not None:
            self._pull.forget_requests()

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
                    await self._flush(due)
            await feeding  # re-raises what stopped it
            await self._flush(batch.take(full=True))
            await self._flushed()
            if self._pull is not None:
                await self._pull.stop()
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
        if self._pull is not None:
            await self._pull.stop()  # first: unsubscribed, it receives no redelivery; naks its buffer
        handed_back: list[Msg] = []
        while self._in_processing:  # queued, or taken by the feed and not queued yet
            messages, task = self._in_processing.popleft()
            task.cancel()
            with contextlib.suppress(BaseException):  # the failure was reported already
                await task
            handed_back += messages
        while not self._processing.empty():
            self._processing.get_nowait()
        handed_back += [m for batch in self._batch.projects.values() for m in batch.messages]
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
            messages = [m for m in await self._take_group() if not await self._delivered_too_often(m)]
            if not messages:
                continue
            projects = {project_of_subject(m.subject) for m in messages}
            settings = {project: self._settings_of(project) for project in projects}
            items = [(m.subject, m.data) for m in messages]
            task = asyncio.create_task(self._processor.process(items, settings))
            self._in_processing.append((messages, task))
            await self._processing.put((messages, task))

    async def _take_group(self) -> list[Msg]:
        """Up to fetch_batch messages; a smaller group first lingers a moment for more (a trickle
        of single messages would otherwise become many tiny blocks)."""
        messages = await self._take()
        wanted = self._settings.fetch_batch - len(messages)
        if messages and wanted > 0 and self._settings.group_linger_seconds > 0 and self._pull is not None:
            await asyncio.sleep(self._settings.group_linger_seconds)
            # A failure here is raised again by the next take, which handles it.
            with contextlib.suppress(NatsError, PullConsumerGone):
                messages += await self._pull.take(wanted, timeout=0)
        return messages

    async def _take(self) -> list[Msg]:
        assert self._pull is not None
        try:
            timeout = self._settings.flush_interval_seconds
            return await self._pull.take(self._settings.fetch_batch, timeout=timeout)
        except PullConsumerGone as exc:
            log.warning("durable consumer %s is gone (%s); recreating it", self._settings.durable_name, exc)
            await self._pull.stop()
            await self._restart_pull()
        except NatsError:
            log.warning("pulling from %s failed; retrying", EVENTS_STREAM, exc_info=True)
            await asyncio.sleep(self._settings.retry_delay_seconds)
        return []

    async def _delivered_too_often(self, message: Msg) -> bool:
        if message.metadata.num_delivered < self._settings.max_deliver:
            return False
        # Its last delivery: every earlier one ended without an ack (a consumer died on it, or its
        # insert never finished). Dead-letter it rather than let JetStream drop it after this try.
        await self._dead_letter(message, PoisonMessage(f"delivered {message.metadata.num_delivered} times"))
        return True

    async def _collect(self, batch: Batch, messages: list[Msg], processing: asyncio.Task[Processed]) -> None:
        """Add processed messages to the batch; dead-letter those that cannot become rows."""
        try:
            processed = await processing
        except WorkerLost as exc:
            log.error("%s; %d messages will be redelivered", exc, len(messages))
            self.metrics.lost_to_workers.inc(len(messages))
            for message in messages:
                with contextlib.suppress(NatsError):
                    await message.nak()
            return
        except BaseException:  # a bug, or cancelled: the consumer stops; hand the group back
            for message in messages:
                with contextlib.suppress(NatsError):
                    await message.nak()
            raise
        finally:
            done, _ = self._in_processing.popleft()  # groups are collected in the order they were taken
            assert done is messages
        of_project: dict[str, tuple[list[Msg], list[Decoded]]] = {}
        for message, outcome in zip(messages, processed.outcomes, strict=True):
            if isinstance(outcome, Refused):
                await self._dead_letter(message, EnvelopeError(outcome.error))
                continue
            await self._dead_letter_events(message, outcome)
            project_messages, outcomes = of_project.setdefault(outcome.project, ([], []))
            project_messages.append(message)
            outcomes.append(outcome)
        for project_id, (project_messages, outcomes) in of_project.items():
            block = processed.blocks.get(project_id, b"")
            kept = await self._discard_leftovers(project_id, project_messages, outcomes)
            if kept is None:
                continue
            if len(kept[0]) < len(project_messages):  # some discarded: the block without them
                try:
                    again = await self._processor.process(
                        [(m.subject, m.data) for m in kept[0]], {project_id: self._settings_of(project_id)}
                    )
                except WorkerLost:
                    for message in kept[0]:
                        with contextlib.suppress(NatsError):
                            await message.nak()
                    continue
                block = again.blocks.get(project_id, b"")
            span = self._settings_of(project_id).batching.span_seconds
            batch.add(project_id, span, kept[0], kept[1], block)

    async def _discard_leftovers(
        self, project_id: str, messages: list[Msg], outcomes: list[Decoded]
    ) -> tuple[list[Msg], list[Decoded]] | None:
        """Acknowledge (without storing) the messages a purged project left behind; the others,
        or None when none is left."""
        kept: tuple[list[Msg], list[Decoded]] = ([], [])
        for message, outcome in zip(messages, outcomes, strict=True):
            reason = self._leftover_of(project_id, outcome.received_at)
            if reason is None:
                kept[0].append(message)
                kept[1].append(outcome)
                continue
            log.warning("discarding message %s: %s", message.metadata.sequence.stream, reason)
            self.leftovers_discarded += 1
            self.metrics.leftovers_discarded.labels(project_id).inc()
            await message.ack()
        return kept if kept[0] else None

    async def _flush(self, projects: dict[str, ProjectBatch]) -> None:
        """Start writing `projects` in the background, once the previous write has finished: the
        next batch is pulled and processed while this one is inserted (the engine's part of an
        INSERT runs outside the GIL), and a write that is retrying holds everything up."""
        await self._flushed()
        if projects:
            self._writing = asyncio.create_task(self._write_all(projects), name="event-consumer-write")

    async def _flushed(self) -> None:
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
                await asyncio.to_thread(self._writer.insert_native, project_id, body, token)
                self.metrics.insert_seconds.observe(time.perf_counter() - started)
                self.retrying_since = None
                self.last_insert_error = None
                break
            except Exception as exc:
                failure = classify(exc)
                if failure is InsertFailure.ROWS:
                    if len(messages) == 1:
                        await self._dead_letter(messages[0], exc)
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
                if self._stopping.is_set():
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
        now = time.time()
        for received_at in batch.received_at:
            # per request: how long after the edge received it its rows became queryable
            self.metrics.freshness_seconds.observe(now - received_at)

    async def _write_one_by_one(self, project_id: str, messages: list[Msg]) -> None:
        """Each message processed and inserted alone, to find the one(s) ClickHouse refuses."""
        settings = {project_id: self._settings_of(project_id)}
        for message in messages:
            try:
                processed = await self._processor.process([(message.subject, message.data)], settings)
            except WorkerLost:
                await message.nak()
                continue
            [outcome] = processed.outcomes
            if isinstance(outcome, Refused):  # the rules changed since: as when it was first taken
                await self._dead_letter(message, EnvelopeError(outcome.error))
                continue
            await self._dead_letter_events(message, outcome)
            single = ProjectBatch(due=0.0)
            single.add([message], [outcome], processed.blocks.get(project_id, b""))
            await self._write(project_id, single)

    async def _wait_working(self, messages: list[Msg], seconds: float) -> None:
        """Sleep, telling JetStream every third of `ack_wait` that the messages (and those waiting
        behind them: the next batch, those being processed and the pull buffer) are still being
        worked on, so it does not redeliver them meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            waiting = self._pull.buffered if self._pull is not None else []
            waiting += [m for batch in self._batch.projects.values() for m in batch.messages]
            waiting += [m for group, _ in self._in_processing for m in group]
            for message in messages + waiting:
                with contextlib.suppress(NatsError):
                    await message.in_progress()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                return
            await asyncio.sleep(min(remaining, self._settings.ack_wait_seconds / 3))

    async def _dead_letter(self, message: Msg, error: Exception) -> None:
        project_id = project_of_subject(message.subject)
        log.error(
            "dead-lettering message %s of %s: %s", message.metadata.sequence.stream, message.subject, error
        )
        headers = {
            # A header cannot hold a line break.
            DLQ_ERROR_HEADER: " ".join(str(error).split())[:1000],
            DLQ_ORIGINAL_SUBJECT_HEADER: message.subject,
            DLQ_DELIVERIES_HEADER: str(message.metadata.num_delivered),
        }
        original_id = (message.headers or {}).get(MSG_ID_HEADER)
        if original_id:
            headers[DLQ_ORIGINAL_MSG_ID_HEADER] = original_id
        await self._js.publish(dlq_subject(project_id), message.data, headers=headers)
        self.dead_lettered += 1
        self.metrics.dead_lettered.labels(project_id).inc()
        await message.term()

    async def _dead_letter_events(self, message: Msg, outcome: Decoded) -> None:
        """Dead-letter the events of a message that cannot become rows, each alone; the message
        itself is acked once its other events are stored. Each dead letter has an id of its own
        within the message's, so a redelivery does not dead-letter the same event twice."""
        if not outcome.dead_letters:
            return
        project_id = project_of_subject(message.subject)
        original_id = (message.headers or {}).get(MSG_ID_HEADER) or str(message.metadata.sequence.stream)
        for index, letter, error in outcome.dead_letters:
            log.error("dead-lettering an event of message %s of %s: %s", original_id, message.subject, error)
            headers = {
                MSG_ID_HEADER: f"{original_id}:dead:{index}",
                DLQ_ERROR_HEADER: " ".join(error.split())[:1000],
                DLQ_ORIGINAL_SUBJECT_HEADER: message.subject,
                DLQ_DELIVERIES_HEADER: str(message.metadata.num_delivered),
                DLQ_ORIGINAL_MSG_ID_HEADER: original_id,
            }
            await self._js.publish(dlq_subject(project_id), letter, headers=headers)
            self.dead_lettered += 1
            self.metrics.dead_lettered.labels(project_id).inc()

    async def _watch_lag(self, interval: float = 5.0) -> None:
        """Refresh the lag gauges from the durable consumer's state."""
        while True:
            # A NATS failure is reported again once NATS answers; readiness shows the connection.
            with contextlib.suppress(NatsError, TimeoutError):
                await self._refresh_lag()
            await asyncio.sleep(interval)

    async def _refresh_lag(self) -> None:
        info = await self._js.consumer_info(EVENTS_STREAM, self._settings.durable_name)
        self.metrics.lag.set(info.num_pending or 0)
        self.metrics.ack_pending.set(info.num_ack_pending or 0)
        self.metrics.redelivered.set(info.num_redelivered or 0)
