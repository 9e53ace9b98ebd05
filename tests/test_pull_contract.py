"""One set of cases for pulling from a durable JetStream consumer, run against the hand-written
pipelined pull (consumers/pull.py) and against nats-py's own `pull_subscribe(...).fetch`, through
one small adapter, on a real nats-server: the pipelined pull is a faster fetch, not another
meaning of one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import pytest
from hw_testing import eventually
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import ServiceUnavailableError

from headwater.consumers.pull import PipelinedPull, PullConsumerGone
from headwater.core.wire.subjects import EVENTS_STREAM, MSG_ID_HEADER

pytestmark = pytest.mark.services
DURABLE = "pull-contract"


class ConsumerGone(Exception):
    """The durable consumer no longer exists (however each puller says so)."""


class Puller(Protocol):
    async def take(self, limit: int, timeout: float) -> list[Msg]:
        """Up to `limit` messages, waiting at most about `timeout` for the first; [] when none
        came; ConsumerGone once the consumer is deleted."""

    async def stop(self) -> None: ...


class Pipelined:
    def __init__(self, nats: NatsClient) -> None:
        self._pull = PipelinedPull(nats, EVENTS_STREAM, DURABLE, batch=4)  # several requests out

    async def start(self) -> None:
        await self._pull.start()

    async def take(self, limit: int, timeout: float) -> list[Msg]:
        try:
            return await self._pull.take(limit, timeout)
        except PullConsumerGone as exc:
            raise ConsumerGone(str(exc)) from exc

    async def stop(self) -> None:
        await self._pull.stop()


class Fetch:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        self._subscription = await self._js.pull_subscribe_bind(DURABLE, stream=EVENTS_STREAM)

    async def take(self, limit: int, timeout: float) -> list[Msg]:
        assert self._subscription is not None
        try:
            return await self._subscription.fetch(limit, timeout=timeout)
        except TimeoutError:  # nats-py's own, or asyncio's when the deadline passed between batches
            return []
        except ServiceUnavailableError as exc:  # no responders: nobody serves the consumer
            raise ConsumerGone(repr(exc)) from exc

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()


PullerFactory = Callable[[], Awaitable[Puller]]


@pytest.fixture(params=["pipelined", "fetch"])
async def start_puller(
    request: pytest.FixtureRequest, nats_client: NatsClient, js: JetStreamContext
) -> AsyncIterator[PullerFactory]:
    """Start a puller of the durable consumer (create it first): the pipelined pull, or fetch."""
    started: list[Pipelined | Fetch] = []

    async def start() -> Puller:
        puller = Pipelined(nats_client) if request.param == "pipelined" else Fetch(js)
        await puller.start()
        started.append(puller)
        return puller

    yield start
    for puller in started:
        await puller.stop()


async def publish(js: JetStreamContext, count: int) -> list[tuple[str, bytes, str]]:
    """`count` messages over three subjects; (subject, data, Nats-Msg-Id) of each, in order."""
    sent = []
    for n in range(count):
        subject, data, msg_id = f"hw.events.p{n % 3}", b"event %d" % n, f"m{n}"
        await js.publish(subject, data, headers={MSG_ID_HEADER: msg_id, "Hw-N": str(n)})
        sent.append((subject, data, msg_id))
    return sent


async def durable(js: JetStreamContext, ack_wait: float = 30.0) -> None:
    config = ConsumerConfig(
        durable_name=DURABLE, filter_subject="hw.events.>", ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait
    )
    await js.add_consumer(EVENTS_STREAM, config)


async def take_until(puller: Puller, count: int, limit: int = 64, ack: bool = True) -> list[Msg]:
    """Take (and ack) until `count` messages came; fails after 10 s."""
    taken: list[Msg] = []

    async def more() -> int:
        messages = await puller.take(limit, timeout=0.2)
        assert len(messages) <= limit
        for message in messages if ack else ():
            await message.ack()
        taken.extend(messages)
        return len(taken)

    await eventually(more, lambda n: n >= count, timeout=10, interval=0)
    return taken


def described(message: Msg) -> tuple[str, bytes, str]:
    return message.subject, message.data, (message.headers or {})[MSG_ID_HEADER]


async def test_every_message_arrives_once_in_stream_order(
    start_puller: PullerFactory, js: JetStreamContext
) -> None:
    sent = await publish(js, 60)
    await durable(js)
    taken = await take_until(await start_puller(), 60)
    assert [described(m) for m in taken] == sent
    assert [m.metadata.sequence.stream for m in taken] == list(range(1, 61))
    assert [(m.headers or {})["Hw-N"] for m in taken] == [str(n) for n in range(60)]
    assert all(m.metadata.num_delivered == 1 for m in taken)

    async def outstanding() -> tuple[int, int]:
        info = await js.consumer_info(EVENTS_STREAM, DURABLE)
        return info.num_pending, info.num_ack_pending

    await eventually(outstanding, lambda o: o == (0, 0))  # acks travel asynchronously


async def test_a_take_returns_at_most_its_limit(start_puller: PullerFactory, js: JetStreamContext) -> None:
    await publish(js, 20)
    await durable(js)
    puller = await start_puller()
    taken = await take_until(puller, 20, limit=3)  # (take_until checks each take's size)
    assert len(taken) == 20
    assert await puller.take(3, timeout=0.3) == []  # nothing more: an empty answer, no error


async def test_a_nakked_message_comes_again(start_puller: PullerFactory, js: JetStreamContext) -> None:
    sent = await publish(js, 5)
    await durable(js)
    puller = await start_puller()
    first = await take_until(puller, 5, ack=False)
    for message in first:
        await (message.nak() if message.data == b"event 2" else message.ack())
    [again] = await take_until(puller, 1)
    assert described(again) == sent[2]
    assert again.metadata.num_delivered == 2


async def test_an_unacknowledged_message_comes_again_after_the_ack_wait(
    start_puller: PullerFactory, js: JetStreamContext
) -> None:
    sent = await publish(js, 3)
    await durable(js, ack_wait=1.0)
    puller = await start_puller()
    first = await take_until(puller, 3, ack=False)
    assert [described(m) for m in first] == sent
    again = await take_until(puller, 3)
    # Each comes again once its own ack wait ran out, in an order timing decides (under a loaded
    # CI run it differed from the sending order).
    assert sorted(described(m) for m in again) == sorted(sent)
    assert all(m.metadata.num_delivered == 2 for m in again)


async def test_a_deleted_consumer_is_reported(start_puller: PullerFactory, js: JetStreamContext) -> None:
    await durable(js)
    puller = await start_puller()
    assert await puller.take(10, timeout=0.3) == []
    await js.delete_consumer(EVENTS_STREAM, DURABLE)

    async def gone() -> bool:
        try:
            await puller.take(10, timeout=0.25)
        except ConsumerGone:
            return True
        return False

    assert await eventually(gone, bool, timeout=5)
