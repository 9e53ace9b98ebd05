"""The pipelined pull against a real nats-server: every message once, bounded, and requests renewed
after they expire, after a server restart and after the consumer is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hw_testing import eventually
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from headwater.consumers.pull import PipelinedPull, PullConsumerGone
from headwater.core.wire.subjects import EVENTS_STREAM, MSG_ID_HEADER
from headwater.ops.natsserver import NatsServerProcess

DURABLE = "pull-test"


async def publish(js: JetStreamContext, first: int, count: int) -> None:
    for i in range(first, first + count):
        # Retried while a restarted server recovers its streams; Nats-Msg-Id makes that safe.
        for attempt in range(50):
            try:
                await js.publish(f"hw.events.p{i % 3}", str(i).encode(), headers={MSG_ID_HEADER: f"m{i}"})
                break
            except (NatsError, TimeoutError):
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)


async def durable(js: JetStreamContext, ack_wait: float = 30.0) -> None:
    config = ConsumerConfig(
        durable_name=DURABLE, filter_subject="hw.events.>", ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait
    )
    await js.add_consumer(EVENTS_STREAM, config)


async def take_all(pull: PipelinedPull, count: int, timeout: float = 10.0) -> list[Msg]:
    taken: list[Msg] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(taken) < count and asyncio.get_running_loop().time() < deadline:
        messages = await pull.take(64, timeout=0.2)
        for message in messages:
            await message.ack()
        taken.extend(messages)
    return taken


async def taken_by_another(nats: NatsClient, count: int) -> list[int]:
    """What a second taker gets within 5 s (a message left pending would wait out its ack wait)."""
    other = PipelinedPull(nats, EVENTS_STREAM, DURABLE, batch=100)
    await other.start()
    try:
        taken = await take_all(other, count, timeout=5)
    finally:
        await other.stop()
    return sorted(int(m.data) for m in taken)


def buffered(pull: PipelinedPull) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return len(pull.buffered)

    return count


async def requests_seen(nats: NatsClient) -> Callable[[], Awaitable[int]]:
    """A probe of how many pull requests (MSG.NEXT) the server has been sent from now on."""
    seen = 0

    async def heard(_message: Msg) -> None:
        nonlocal seen
        seen += 1

    await nats.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{DURABLE}", cb=heard)
    await nats.flush()

    async def count() -> int:
        return seen

    return count


async def failure_of(pull: PipelinedPull) -> PullConsumerGone | None:
    for _ in range(20):
        try:
            await pull.take(10, timeout=0.25)
        except PullConsumerGone as exc:
            return exc
    return None


async def test_every_message_arrives_once_in_stream_order(
    nats_client: NatsClient, js: JetStreamContext
) -> None:
    await publish(js, 0, 1000)
    await durable(js)
    pull = PipelinedPull(nats_client, EVENTS_STREAM, DURABLE, batch=7)  # many small requests in flight
    await pull.start()
    try:
        taken = await take_all(pull, 1000)
    finally:
        await pull.stop()
    assert [int(m.data) for m in taken] == list(range(1000))

    async def state() -> tuple[int, int, int]:
        info = await js.consumer_info(EVENTS_STREAM, DURABLE)
        return info.num_pending, info.num_ack_pending, info.num_redelivered

    # acks travel asynchronously: wait until the server has counted them all
    assert await eventually(state, lambda s: s == (0, 0, 0), timeout=10) == (0, 0, 0)


async def test_a_caller_that_stops_taking_holds_at_most_the_window(
    nats_client: NatsClient, js: JetStreamContext
) -> None:
    await publish(js, 0, 500)
    await durable(js)
    pull = PipelinedPull(nats_client, EVENTS_STREAM, DURABLE, batch=20, window=60)
    await pull.start()
    try:
        await eventually(buffered(pull), lambda n: n == 60)
        await asyncio.sleep(0.5)  # and no more arrive: held, nothing is asked for beyond the window
        info = await js.consumer_info(EVENTS_STREAM, DURABLE)
        assert info.num_ack_pending == 60
        assert len(pull.buffered) == 60
        assert info.num_pending == 440
        taken = await pull.take(50, timeout=1)  # room again: it asks for more
        assert len(taken) == 50
        # refilled in whole requests, within the window
        await eventually(buffered(pull), lambda n: n == 10 + 2 * 20)
        await asyncio.sleep(0.3)  # and no more arrive
        assert len(pull.buffered) == 10 + 2 * 20
    finally:
        await pull.stop()


async def test_expired_requests_are_renewed(nats_client: NatsClient, js: JetStreamContext) -> None:
    await durable(js)
    pull = PipelinedPull(
        nats_client, EVENTS_STREAM, DURABLE, batch=10, expires_seconds=0.3, heartbeat_seconds=0.1
    )
    requests = await requests_seen(nats_client)
    await pull.start()
    try:
        # several generations of requests expire on an empty stream (two are out at a time)
        await eventually(requests, lambda n: n >= 6, timeout=5)
        await publish(js, 0, 25)
        taken = await take_all(pull, 25, timeout=3)
    finally:
        await pull.stop()
    assert sorted(int(m.data) for m in taken) == list(range(25))


async def test_pulling_resumes_after_a_server_restart(
    nats_server: NatsServerProcess, nats_client: NatsClient, js: JetStreamContext
) -> None:
    await publish(js, 0, 100)
    await durable(js)
    pull = PipelinedPull(nats_client, EVENTS_STREAM, DURABLE, batch=10, heartbeat_seconds=0.5)
    await pull.start()
    try:
        first = await take_all(pull, 100)
        nats_server.restart()  # the server forgets the outstanding requests

        async def connected() -> bool:
            return nats_client.is_connected

        assert await eventually(connected, bool, timeout=15)
        await publish(js, 100, 100)
        # No reconnect hook is called here: the heartbeat watchdog alone notices and asks again.
        second = await take_all(pull, 100, timeout=15)
    finally:
        await pull.stop()
    assert sorted(int(m.data) for m in first + second) == list(range(200))


async def test_stop_hands_buffered_messages_back_at_once(
    nats_client: NatsClient, js: JetStreamContext
) -> None:
    await publish(js, 0, 40)
    await durable(js, ack_wait=60)  # without the nak, a second taker would wait a minute
    pull = PipelinedPull(nats_client, EVENTS_STREAM, DURABLE, batch=20)
    await pull.start()
    await eventually(buffered(pull), lambda n: n == 40)
    await pull.stop()
    assert await taken_by_another(nats_client, 40) == list(range(40))


async def test_stop_while_messages_are_in_flight_hands_every_one_back(
    nats_client: NatsClient, js: JetStreamContext
) -> None:
    """Naks sent while pull requests are still open come straight back; stopping right after must
    still catch them (and everything else on its way) and hand them back, not drop them on an
    unsubscribed inbox where they would wait out the ack wait."""
    await publish(js, 0, 400)
    await durable(js, ack_wait=60)
    pull = PipelinedPull(nats_client, EVENTS_STREAM, DURABLE, batch=100, window=400)
    await pull.start()
    naked = await pull.take(100, timeout=5)
    assert naked
    for message in naked:  # redelivered at once to the requests still open
        await message.nak()
    await pull.stop()
    assert await taken_by_another(nats_client, 400) == list(range(400))


async def test_a_deleted_consumer_is_reported(nats_client: NatsClient, js: JetStreamContext) -> None:
    await durable(js)
    pull = PipelinedPull(nats_client, EVENTS_STREAM, DURABLE, batch=10)
    await pull.start()
    try:

        async def waiting() -> int:
            return (await js.consumer_info(EVENTS_STREAM, DURABLE)).num_waiting or 0

        await eventually(waiting, bool)  # the requests are waiting on the server
        await js.delete_consumer(EVENTS_STREAM, DURABLE)
        assert str(await failure_of(pull)) == "409 Consumer Deleted"
    finally:
        await pull.stop()


async def test_pulling_from_a_missing_consumer_is_reported(
    nats_client: NatsClient, js: JetStreamContext
) -> None:
    pull = PipelinedPull(nats_client, EVENTS_STREAM, "never-created", batch=10)
    await pull.start()
    try:
        assert str(await failure_of(pull)).startswith("503")  # no responders: nobody serves it
    finally:
        await pull.stop()


class PullWithABug(PipelinedPull):
    """Renewing requests raises what no NATS error explains, once the first ones are out; and it
    hears nothing (as after a network partition), so its watchdog renews them."""

    started = False

    @property
    def _last_heard(self) -> float:
        return 0.0

    @_last_heard.setter
    def _last_heard(self, _value: float) -> None:
        pass

    async def _top_up(self) -> None:
        if self.started:
            raise RuntimeError("a bug in renewing pull requests (injected)")
        await super()._top_up()
        self.started = True


async def test_a_dead_watchdog_says_so(nats_client: NatsClient, js: JetStreamContext) -> None:
    await durable(js)
    pull = PullWithABug(nats_client, EVENTS_STREAM, DURABLE, batch=5, heartbeat_seconds=0.2)
    await pull.start()
    try:

        async def broken() -> str | None:
            return pull.broken

        reason = await eventually(broken, lambda r: r is not None, timeout=5)
        assert reason is not None and "watchdog" in reason and "injected" in reason
    finally:
        await pull.stop()
