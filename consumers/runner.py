"""The consume loop: pull from the durable consumer → decode → batch per project → INSERT → ack.

Nothing is acked before ClickHouse accepted its rows. A message that cannot be decoded is
dead-lettered (published to `hw.dlq.<project>`, then terminated) so it never blocks the stream.
An insert that fails is negatively acknowledged with a delay and redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clickhouse_connect.driver.exceptions import OperationalError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from headwater.control.project_settings import ProjectSettings
from headwater.control.tasks import cancel_and_wait
from headwater.edge.backoff import Backoff
from headwater.edge.envelope import EnvelopeError
from headwater.edge.subjects import (
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

from .enrich import Enricher
from .metrics import ConsumerMetrics
from .pull import PipelinedPull, PullConsumerGone
from .rows import COLUMNS, Row, envelope_rows
from .settings import ConsumerSettings
from .wire import decode_envelope
from .writer import ClickHouseWriter, deduplication_token

log = logging.getLogger(__name__)

RECEIVED_AT = COLUMNS.index("received_at")


class PoisonMessage(Exception):
    """A message that keeps failing however often it is delivered."""


# Errors that say ClickHouse could not be reached (not that it refused the rows): retried.
RETRYABLE = (OperationalError, OSError, TimeoutError)


@dataclass
class ProjectBatch:
    due: float  # monotonic time by which the project's batching span says to write
    messages: list[Msg] = field(default_factory=list)
    rows_of: list[list[Row]] = field(default_factory=list)  # per message, to isolate a bad one

    @property
    def rows(self) -> list[Row]:
        return [row for rows in self.rows_of for row in rows]


@dataclass
class Batch:
    """What the consumer holds, per project, until a project's span ends or the batch is full."""

    projects: dict[str, ProjectBatch] = field(default_factory=dict)
    rows: int = 0

    def add(self, project_id: str, span_seconds: float, message: Msg, rows: list[Row]) -> None:
        batch = self.projects.get(project_id)
        if batch is None:
            batch = self.projects[project_id] = ProjectBatch(due=time.monotonic() + span_seconds)
        batch.messages.append(message)
        batch.rows_of.append(rows)
        self.rows += len(rows)

    def next_due(self) -> float | None:
        return min((b.due for b in self.projects.values()), default=None)

    def take(self, full: bool) -> dict[str, ProjectBatch]:
        """The project batches to write now: all of them when the batch is full, else those due."""
        now = time.monotonic()
        taken = {p: b for p, b in self.projects.items() if full or b.due <= now}
        for project_id, batch in taken.items():
            del self.projects[project_id]
            self.rows -= sum(len(rows) for rows in batch.rows_of)
        return taken


# A project's settings (batching span, anonymisation), from its live config.
SettingsOf = Callable[[str], ProjectSettings]


class EventConsumer:
    """Also a `ConnectionListener`: register it so pull requests are renewed after a reconnect."""

    def __init__(
        self,
        nats: Client,
        writer: ClickHouseWriter,
        settings: ConsumerSettings,
        enricher: Enricher,
        settings_of: SettingsOf | None = None,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._nats = nats
        self._js = nats.jetstream()
        self._pull: PipelinedPull | None = None
        self._batch = Batch()  # being built
        self._writing: asyncio.Task[None] | None = None  # the write of the previous batch
        self.metrics = metrics or ConsumerMetrics()
        self._lag_task: asyncio.Task[None] | None = None
        self.retrying_since: float | None = None
        self._enricher = enricher
        self._settings_of = settings_of or (lambda _project: ProjectSettings())
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

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._pull = await self._start_pull()
        self._task = asyncio.create_task(self._run(), name="event-consumer")
        self._lag_task = asyncio.create_task(self._watch_lag(), name="event-consumer-lag")

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
        if self._lag_task is not None:
            await cancel_and_wait(self._lag_task)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        batch = self._batch
        try:
            while not self._stopping.is_set():
                await self._pull_into(batch)
                due = batch.take(full=batch.rows >= self._settings.max_batch_rows)
                if due:
                    await self._flush(due)
            await self._flush(batch.take(full=True))
            await self._flushed()
            if self._pull is not None:
                await self._pull.stop()
        except Exception as exc:
            self.failure = exc
            log.exception("event consumer stopped on an unexpected error")
            raise

    async def _pull_into(self, batch: Batch) -> None:
        assert self._pull is not None
        # Wait for messages at most until the first buffered project is due.
        next_due = batch.next_due()
        timeout = self._settings.flush_interval_seconds if next_due is None else next_due - time.monotonic()
        try:
            messages = await self._pull.take(self._settings.fetch_batch, timeout=max(timeout, 0.0))
        except PullConsumerGone as exc:
            log.warning("durable consumer %s is gone (%s); recreating it", self._settings.durable_name, exc)
            await self._pull.stop()
            await self._restart_pull()
            return
        except NatsError:
            log.warning("pulling from %s failed; retrying", EVENTS_STREAM, exc_info=True)
            await asyncio.sleep(self._settings.retry_delay_seconds)
            return
        for message in messages:
            if message.metadata.num_delivered >= self._settings.max_deliver:
                # Its last delivery: every earlier one ended without an ack (a consumer died on
                # it, or its insert never finished). Dead-letter it rather than let JetStream drop
                # it after this try.
                await self._dead_letter(
                    message, PoisonMessage(f"delivered {message.metadata.num_delivered} times")
                )
                continue
            try:
                envelope = decode_envelope(message.data)
                if envelope.project != project_of_subject(message.subject):
                    raise EnvelopeError(f"envelope of project {envelope.project!r} on {message.subject}")
                project_settings = self._settings_of(envelope.project)
                rows = envelope_rows(envelope, self._enricher, project_settings)
            except (EnvelopeError, ValueError) as exc:
                await self._dead_letter(message, exc)
                continue
            batch.add(envelope.project, project_settings.batching.span_seconds, message, rows)

    async def _flush(self, projects: dict[str, ProjectBatch]) -> None:
        """Start writing `projects` in the background, once the previous write has finished: the
        next batch is pulled, decoded and enriched while this one is inserted (the engine's part of
        an INSERT runs outside the GIL), and a write that is retrying holds everything up."""
        await self._flushed()
        if projects:
            self._writing = asyncio.create_task(self._write_all(projects), name="event-consumer-write")

    async def _flushed(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing  # re-raises what stopped it

    async def _write_all(self, projects: dict[str, ProjectBatch]) -> None:
        for project_id, project_batch in projects.items():
            await self._write(project_id, project_batch.messages, project_batch.rows_of)

    async def _write(self, project_id: str, messages: list[Msg], rows_of: list[list[Row]]) -> None:
        """Insert, then ack. While ClickHouse is unreachable, retry with backoff and fetch nothing
        more (backpressure: memory stays at one batch), telling JetStream the messages are still
        in progress so they are not redelivered elsewhere. Rows ClickHouse refuses are isolated
        message by message; a message it refuses alone is dead-lettered."""
        rows = [row for part in rows_of for row in part]
        token = deduplication_token(project_id, (m.metadata.sequence.stream for m in messages))
        attempt = 0
        while True:
            try:
                started = time.perf_counter()
                await asyncio.to_thread(self._writer.insert, project_id, rows, token)
                self.metrics.insert_seconds.observe(time.perf_counter() - started)
                self.retrying_since = None
                break
            except RETRYABLE as exc:
                attempt += 1
                self.retries += 1
                self.metrics.retries.inc()
                if self.retrying_since is None:
                    self.retrying_since = time.monotonic()
                if self._stopping.is_set():
                    for message in messages:
                        await message.nak()  # another consumer (or our restart) takes them
                    return
                delay = self._backoff.delay(attempt)
                log.warning(
                    "ClickHouse unavailable (%r); retrying %d rows of %s in %.1fs",
                    exc,
                    len(rows),
                    project_id,
                    delay,
                )
                await self._wait_working(messages, delay)
            except Exception as exc:
                if len(messages) == 1:
                    await self._dead_letter(messages[0], exc)
                    return
                log.warning(
                    "ClickHouse refused a batch of %s (%r); inserting message by message", project_id, exc
                )
                for message, part in zip(messages, rows_of, strict=True):
                    await self._write(project_id, [message], [part])
                return
        for message in messages:
            await message.ack()
        self.rows_written += len(rows)
        self.metrics.rows.labels(project_id).inc(len(rows))
        self.metrics.batch_rows.observe(len(rows))
        self._observe_freshness(rows_of)

    def _observe_freshness(self, rows_of: list[list[Row]]) -> None:
        """Per request (message): how long after the edge received it its rows became queryable."""
        now = time.time()
        for part in rows_of:
            if part:
                self.metrics.freshness_seconds.observe(now - part[0][RECEIVED_AT].timestamp())

    async def _wait_working(self, messages: list[Msg], seconds: float) -> None:
        """Sleep, telling JetStream every third of `ack_wait` that the messages (and those waiting
        behind them: the next batch and the pull buffer) are still being worked on, so it does not
        redeliver them meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            waiting = self._pull.buffered if self._pull is not None else []
            waiting += [m for batch in self._batch.projects.values() for m in batch.messages]
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

    async def _watch_lag(self, interval: float = 5.0) -> None:
        """Refresh the lag gauges from the durable consumer's state."""
        while True:
            try:
                info = await self._js.consumer_info(EVENTS_STREAM, self._settings.durable_name)
            except (NatsError, TimeoutError):
                pass  # reported again once NATS answers; readiness shows the connection
            else:
                self.metrics.lag.set(info.num_pending or 0)
                self.metrics.ack_pending.set(info.num_ack_pending or 0)
                self.metrics.redelivered.set(info.num_redelivered or 0)
            await asyncio.sleep(interval)
