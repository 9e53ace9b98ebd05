"""Intake: bind to the durable consumer (creating it when it does not exist) and take groups of
messages from its pipelined pull; bind again when it is deleted under us; dead-letter a message on
its last delivery rather than let JetStream drop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from headwater.core.wire.subjects import EVENTS_STREAM, EVENTS_SUBJECTS

from .deadletter import DeadLetters, PoisonMessage
from .pull import PipelinedPull, PullConsumerGone
from .settings import ConsumerSettings

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self, nats: Client, settings: ConsumerSettings, dead_letters: DeadLetters, stopping: asyncio.Event
    ) -> None:
        self._nats = nats
        self._js = nats.jetstream()
        self._settings = settings
        self._dead_letters = dead_letters
        self._stopping = stopping
        self.pull: PipelinedPull | None = None

    async def start(self) -> None:
        self.pull = await self._start_pull()

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
                self.pull = await self._start_pull()
                return
            except (NatsError, TimeoutError):
                log.warning("cannot bind to %s yet; retrying", self._settings.durable_name, exc_info=True)
                await asyncio.sleep(self._settings.retry_delay_seconds)

    async def stop(self) -> None:
        """Drain the pull; what it buffered goes back to JetStream at once."""
        if self.pull is not None:
            await self.pull.stop()

    def buffered(self) -> list[Msg]:
        return self.pull.buffered if self.pull is not None else []

    async def take_group(self) -> list[Msg]:
        """Up to fetch_batch messages, without those on their last delivery (dead-lettered)."""
        return [m for m in await self._take_group() if not await self._delivered_too_often(m)]

    async def _take_group(self) -> list[Msg]:
        """Up to fetch_batch messages; a smaller group first lingers a moment for more (a trickle
        of single messages would otherwise become many tiny blocks)."""
        messages = await self._take()
        wanted = self._settings.fetch_batch - len(messages)
        if messages and wanted > 0 and self._settings.group_linger_seconds > 0 and self.pull is not None:
            await asyncio.sleep(self._settings.group_linger_seconds)
            # A failure here is raised again by the next take, which handles it.
            with contextlib.suppress(NatsError, PullConsumerGone):
                messages += await self.pull.take(wanted, timeout=0)
        return messages

    async def _take(self) -> list[Msg]:
        assert self.pull is not None
        try:
            timeout = self._settings.flush_interval_seconds
            return await self.pull.take(self._settings.fetch_batch, timeout=timeout)
        except PullConsumerGone as exc:
            log.warning("durable consumer %s is gone (%s); recreating it", self._settings.durable_name, exc)
            await self.pull.stop()
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
        poison = PoisonMessage(f"delivered {message.metadata.num_delivered} times")
        await self._dead_letters.message(message, poison)
        return True
