"""A pipelined pull from a durable JetStream consumer.

nats-py's `PullSubscription.fetch` costs ~80-90 µs per message (a task and a `wait_for` each) and
leaves a round trip idle between batches: about 10k messages/s on a 2-core machine. Here pull
requests are issued ahead of need on one inbox (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`),
so messages stream in while earlier ones are processed. The accounting is that of nats.go's
`Consume`: count the messages asked for, subtract those that arrived and those an expired or
refused request says it will no longer send (`Nats-Pending-Messages`), and ask again once half of
the window is used. Idle heartbeats tell a request the server forgot (a reconnect, a leader
change) from a stream with nothing in it.

Backpressure: nothing new is asked for while `window` messages are buffered here or on their way,
so a caller that stops taking (ClickHouse down) holds at most `window` messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import Header

from headwater.core.service.tasks import cancel_and_wait, report_end

log = logging.getLogger(__name__)

STATUS_HEADER = "Status"
PENDING_MESSAGES_HEADER = "Nats-Pending-Messages"
HEARTBEAT_STATUS = "100"
# Answers that end a pull request: 404/408 no (more) messages, 409 refused or cut short.
REQUEST_ENDED_STATUSES = ("404", "408", "409")
# 409 descriptions after which asking again is pointless: the consumer must be recreated.
CONSUMER_GONE = ("consumer deleted", "consumer is push based")
NO_RESPONDERS_STATUS = "503"  # nobody serves MSG.NEXT for this name: the consumer does not exist
# How long the inbox must stay quiet before `stop` unsubscribes, and the most it waits for that.
SETTLE_SECONDS = 0.1
SETTLE_LIMIT_SECONDS = 1.0


class PullConsumerGone(Exception):
    """The durable consumer was deleted (or replaced by a push consumer) under us."""


class PipelinedPull:
    def __init__(
        self,
        nats: Client,
        stream: str,
        durable: str,
        batch: int = 500,
        window: int | None = None,
        expires_seconds: float = 30.0,
        heartbeat_seconds: float = 5.0,
    ) -> None:
        self._nats = nats
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = batch
        self._window = window or 2 * batch
        self._expires_ns = int(expires_seconds * 1e9)
        self._heartbeat = heartbeat_seconds
        self._buffer: deque[Msg] = deque()
        self._pending = 0  # asked for and neither arrived nor given up by the server
        self._arrived = asyncio.Event()
        self._last_heard = time.monotonic()
        self._failure: Exception | None = None
        self._inbox = ""
        self._subscription: Subscription | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.broken: str | None = None  # why the watchdog ended, if it did: requests may stall
        self._stopped = False

    @property
    def buffered(self) -> list[Msg]:
        """Delivered to us and not taken yet (they count as ack-pending on the server)."""
        return list(self._buffer)

    async def start(self) -> None:
        self._inbox = self._nats.new_inbox()
        self._subscription = await self._nats.subscribe(self._inbox, cb=self._on_message)
        self._watchdog = asyncio.create_task(self._watch(), name="pull-watchdog")
        report_end(self._watchdog, "the pull watchdog", self._broke)
        await self._top_up()

    async def stop(self) -> None:
        """Stop asking; hand what is buffered back to the server for immediate redelivery.

        The subscription is drained, not just dropped: our pull requests stay open on the server
        until they expire, and whatever it sent before it saw the unsubscribe must still reach the
        buffer, or it would stay pending until its ack wait. Only then is the buffer nak'ed: with
        no interest left on the inbox, a nak'ed message cannot come back to these requests.

        Before unsubscribing it waits for the inbox to fall quiet: the server handles acks and
        naks on a queue of its own, so a message nak'ed just before `stop` may be redelivered to
        our still-open requests after the unsubscribe, and wait out its ack wait there. A pause
        that lasts until nothing has arrived for `SETTLE_SECONDS` (at most `SETTLE_LIMIT_SECONDS`)
        lets such redeliveries land in the buffer first. The server can still pick our request for
        a message in the instant of the unsubscribe; only the ack wait brings that one back."""
        if self._stopped:
            return
        self._stopped = True
        if self._watchdog is not None and not self._watchdog.done():  # one that ended was reported
            await cancel_and_wait(self._watchdog)
        if self._subscription is not None:
            await self._settle()
            with contextlib.suppress(NatsError):
                await self._subscription.drain()  # type: ignore[no-untyped-call]
        while self._buffer:
            with contextlib.suppress(NatsError):
                await self._buffer.popleft().nak()

    async def _settle(self) -> None:
        with contextlib.suppress(NatsError, TimeoutError):
            await self._nats.flush(timeout=1)  # our naks have reached the server
        deadline = time.monotonic() + SETTLE_LIMIT_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(SETTLE_SECONDS, left))
            except TimeoutError:
                return  # quiet for SETTLE_SECONDS

    async def take(self, limit: int, timeout: float) -> list[Msg]:
        """Up to `limit` messages; waits at most `timeout` seconds for the first one."""
        if not self._buffer and self._failure is None:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        if self._failure is not None:
            raise self._failure
        count = min(limit, len(self._buffer))
        messages = [self._buffer.popleft() for _ in range(count)]
        await self._top_up()
        return messages

    def _broke(self, reason: str) -> None:
        self.broken = reason

    def forget_requests(self) -> None:
        """The server no longer holds our requests (after a reconnect): the next top-up asks anew."""
        self._pending = 0

    async def _on_message(self, message: Msg) -> None:
        self._last_heard = time.monotonic()
        headers = message.headers
        status = headers.get(STATUS_HEADER) if headers and not message.data else None
        if status is None:
            self._buffer.append(message)
            self._pending = max(self._pending - 1, 0)
            self._arrived.set()
            return
        if status == HEARTBEAT_STATUS:
            return
        assert headers is not None
        # nats-py keys the description by its `Header` enum, whose hash is not that of the string.
        description = headers.get(Header.DESCRIPTION, "")
        if (status == "409" and description.lower() in CONSUMER_GONE) or status == NO_RESPONDERS_STATUS:
            self._failure = PullConsumerGone(f"{status} {description}".strip())
            self._arrived.set()
            return
        if status in REQUEST_ENDED_STATUSES:
            unsent = headers.get(PENDING_MESSAGES_HEADER)
            # Without the count (old servers) assume every request ended: over-asking is harmless.
            self._pending = max(self._pending - int(unsent), 0) if unsent else 0
            if status == "409":
                log.info("pull request ended by the server: %s %s", status, description)
            with contextlib.suppress(NatsError):
                await self._top_up()
            return
        log.warning("unexpected status %s %r on the pull inbox", status, description)

    async def _top_up(self) -> None:
        while not self._stopped and self._pending + len(self._buffer) + self._batch <= self._window:
            request = {
                "batch": self._batch,
                "expires": self._expires_ns,
                "idle_heartbeat": int(self._heartbeat * 1e9),
            }
            await self._nats.publish(self._next_subject, orjson.dumps(request), reply=self._inbox)
            self._pending += self._batch

    async def _watch(self) -> None:
        """A request that hears nothing, not even a heartbeat, for two heartbeats is gone."""
        while True:
            await asyncio.sleep(self._heartbeat)
            silent = time.monotonic() - self._last_heard
            if self._pending and silent > 2 * self._heartbeat:
                log.info("no word on pull requests for %.0fs; asking again", silent)
                self.forget_requests()
                self._last_heard = time.monotonic()
                with contextlib.suppress(NatsError):
                    await self._top_up()
