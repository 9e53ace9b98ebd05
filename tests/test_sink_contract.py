"""One set of cases for the edge's sink (edge/sink.py), run against the real JetStream sink on a real
nats-server and against its in-memory twin (tests/memory_sink.py): what a publish promises, and
the exceptions the fallback sink (edge/fallback.py) tells apart, SinkUnavailable (retryable: to
the spool) and MessageTooLarge (never retryable)."""

from __future__ import annotations

import asyncio
from typing import Protocol

import pytest
from memory_sink import MemorySink, Stored
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy

from headwater.core.wire.subjects import EVENTS_STREAM, MSG_ID_HEADER, events_subject
from headwater.edge.errors import MessageTooLarge, SinkUnavailable
from headwater.edge.sink import JetStreamSink, Sink
from headwater.ops.natsserver import NatsServerProcess

pytestmark = pytest.mark.services
PUBLISH_TIMEOUT = 1.0


class SinkUnderTest(Protocol):
    """A sink and the means to see what it stored and to break what it stores into."""

    sink: Sink

    async def stored(self) -> list[Stored]: ...
    async def remove_stream(self) -> None: ...
    async def fill_stream(self) -> None: ...
    async def limit_message_size(self, size: int) -> None: ...
    async def disconnect(self) -> None: ...


class RealSink:
    def __init__(self, nats_server: NatsServerProcess, nats: NatsClient, js: JetStreamContext) -> None:
        self._server, self._js = nats_server, js
        self.sink = JetStreamSink(nats, PUBLISH_TIMEOUT)

    async def stored(self) -> list[Stored]:
        state = (await self._js.stream_info(EVENTS_STREAM)).state
        messages = []
        for sequence in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            message = await self._js.get_msg(EVENTS_STREAM, sequence)
            assert message.subject is not None and message.headers is not None
            messages.append(Stored(message.subject, message.headers[MSG_ID_HEADER], message.data or b""))
        return messages

    async def remove_stream(self) -> None:
        await self._js.delete_stream(EVENTS_STREAM)

    async def fill_stream(self) -> None:
        config = (await self._js.stream_info(EVENTS_STREAM)).config
        config.max_msgs, config.discard = 1, DiscardPolicy.NEW
        await self._js.update_stream(config)
        await self.sink.publish(events_subject("p"), "filler", b"{}")

    async def limit_message_size(self, size: int) -> None:
        config = (await self._js.stream_info(EVENTS_STREAM)).config
        config.max_msg_size = size
        await self._js.update_stream(config)

    async def disconnect(self) -> None:
        self._server.stop()


class TwinSink:
    def __init__(self) -> None:
        self.sink = MemorySink()

    async def stored(self) -> list[Stored]:
        return list(self.sink.messages)

    async def remove_stream(self) -> None:
        self.sink.stream_exists = False

    async def fill_stream(self) -> None:
        self.sink.max_messages = 1
        await self.sink.publish(events_subject("p"), "filler", b"{}")

    async def limit_message_size(self, size: int) -> None:
        self.sink.max_message_size = size

    async def disconnect(self) -> None:
        self.sink.connected = False


@pytest.fixture
async def real_sink(
    nats_server: NatsServerProcess, nats_client: NatsClient, js: JetStreamContext
) -> RealSink:
    real = RealSink(nats_server, nats_client, js)
    await real.sink.refresh_limit()  # as the edge does at start
    return real


@pytest.fixture
def twin_sink() -> TwinSink:
    return TwinSink()


@pytest.fixture(params=["real_sink", "twin_sink"])
def under_test(request: pytest.FixtureRequest) -> SinkUnderTest:
    """Each case twice: the real sink (on its own nats-server) and the twin (no server)."""
    chosen: SinkUnderTest = request.getfixturevalue(request.param)
    return chosen


def envelope(n: int) -> tuple[str, str, bytes]:
    return events_subject(f"p{n % 3}"), f"m{n}", b'{"n": %d}' % n


async def test_a_publish_returns_once_the_message_is_stored(under_test: SinkUnderTest) -> None:
    for n in range(3):
        await under_test.sink.publish(*envelope(n))
        assert (await under_test.stored())[-1] == Stored(*envelope(n))
    assert await under_test.stored() == [Stored(*envelope(n)) for n in range(3)]


async def test_concurrent_publishes_are_each_stored(under_test: SinkUnderTest) -> None:
    await asyncio.gather(*(under_test.sink.publish(*envelope(n)) for n in range(50)))
    stored = await under_test.stored()
    assert sorted(stored, key=lambda m: int(m.msg_id[1:])) == [Stored(*envelope(n)) for n in range(50)]


async def test_a_repeated_message_id_is_acknowledged_and_stored_once(under_test: SinkUnderTest) -> None:
    subject, msg_id, body = envelope(1)
    await under_test.sink.publish(subject, msg_id, body)
    await under_test.sink.publish(subject, msg_id, b'{"a": "retry"}')  # e.g. from the spool
    assert await under_test.stored() == [Stored(subject, msg_id, body)]


async def test_a_missing_stream_is_retryable(under_test: SinkUnderTest) -> None:
    await under_test.remove_stream()
    with pytest.raises(SinkUnavailable):
        await under_test.sink.publish(*envelope(1))


async def test_a_full_stream_is_retryable(under_test: SinkUnderTest) -> None:
    await under_test.fill_stream()
    with pytest.raises(SinkUnavailable):
        await under_test.sink.publish(*envelope(1))
    assert [m.msg_id for m in await under_test.stored()] == ["filler"]


async def test_nats_gone_is_retryable(under_test: SinkUnderTest) -> None:
    await under_test.disconnect()
    with pytest.raises(SinkUnavailable):
        await asyncio.wait_for(under_test.sink.publish(*envelope(1)), 5 * PUBLISH_TIMEOUT)


async def test_a_body_over_the_max_payload_is_too_large(under_test: SinkUnderTest) -> None:
    subject, msg_id, _ = envelope(1)
    body = b"x" * (under_test.sink.max_body_bytes() + 2 * 1024)  # past the server's max payload
    with pytest.raises(MessageTooLarge):
        await under_test.sink.publish(subject, msg_id, body)
    assert await under_test.stored() == []


async def test_a_body_over_the_streams_message_size_is_too_large_and_lowers_the_limit(
    under_test: SinkUnderTest,
) -> None:
    await under_test.limit_message_size(4096)
    subject, msg_id, _ = envelope(1)
    with pytest.raises(MessageTooLarge):
        await under_test.sink.publish(subject, msg_id, b"x" * 5000)
    assert under_test.sink.max_body_bytes() < 4096  # the edge splits envelopes to fit from now on
    await under_test.sink.publish(subject, msg_id, b"x" * under_test.sink.max_body_bytes())
    assert len(await under_test.stored()) == 1
