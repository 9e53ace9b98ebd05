"""The consumer against real JetStream and embedded ClickHouse: ack after insert, redelivery on a
ClickHouse failure, dead-lettering of poison messages."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from hw_testing import eventually, publish_envelope, publish_tracks
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from headwater.consumers.enrich import Enricher
from headwater.consumers.processing import InlineProcessor, Item, Processed, Processor
from headwater.consumers.rows import COLUMN_TYPES, COLUMNS
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.subjects import (
    DLQ_ERROR_HEADER,
    DLQ_STREAM,
    EVENTS_STREAM,
    dlq_subject,
)

pytestmark = pytest.mark.services


class FlakyWriter(ClickHouseWriter):
    """The real writer, failing its first `failures` inserts as an unreachable ClickHouse would."""

    def __init__(self, client: Client, failures: int) -> None:
        super().__init__(client)
        self.failures = failures
        self.attempts = 0

    def insert_native(self, project_id: str, blocks: bytes, token: str) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("ClickHouse is unreachable (injected)")
        super().insert_native(project_id, blocks, token)


def settings(clickhouse_url: str) -> ConsumerSettings:
    return ConsumerSettings(
        clickhouse_url=clickhouse_url, flush_interval_seconds=0.1, retry_delay_seconds=0.3
    )


def count(client: Client, project_id: str) -> int:
    return int(client.query(f"SELECT count() FROM hw_{project_id}.events FINAL").result_rows[0][0])


async def test_failed_inserts_are_not_acked_and_land_once_after_recovery(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    writer = FlakyWriter(clickhouse, failures=3)
    consumer = EventConsumer(nats_client, writer, settings(clickhouse_url), processor)
    for i in range(5):
        await publish_tracks(js, project_id, f"r{i}", f"m{i}a", f"m{i}b")
    await consumer.start()
    try:

        async def landed() -> int:
            return count(clickhouse, project_id)

        assert await eventually(landed, lambda n: n == 10, timeout=15) == 10
        assert writer.attempts > 3  # it failed, then retried

        async def outstanding() -> tuple[int, int]:
            info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
            return info.num_ack_pending, info.num_pending

        # Acks follow the insert; all of them arrive.
        assert await eventually(outstanding, lambda n: n == (0, 0), timeout=5) == (0, 0)
        rows = clickhouse.query(
            f"SELECT count(), uniqExact(message_id) FROM hw_{project_id}.events"
        ).result_rows
        assert rows == [(10, 10)]  # not even an un-merged duplicate
    finally:
        await consumer.stop()


async def test_nothing_is_acked_while_clickhouse_is_down(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    writer = FlakyWriter(clickhouse, failures=10**9)
    consumer = EventConsumer(nats_client, writer, settings(clickhouse_url), processor)
    await publish_tracks(js, project_id, "r1", "only")
    await consumer.start()
    try:

        async def attempts() -> int:
            return writer.attempts

        await eventually(attempts, lambda n: n >= 2, timeout=10)
    finally:
        await consumer.stop()
    info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
    assert info.ack_floor.stream_seq == 0  # never acknowledged
    assert count(clickhouse, project_id) == 0


async def test_poison_messages_go_to_the_dead_letter_stream_and_the_rest_flows(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    await publish_tracks(js, project_id, "good-1", "g1")
    await publish_envelope(js, project_id, "bad-json", b"{not json")
    await publish_envelope(js, project_id, "bad-version", b'{"v": 99, "events": []}')
    await publish_tracks(js, project_id, "good-2", "g2")
    consumer = EventConsumer(nats_client, ClickHouseWriter(clickhouse), settings(clickhouse_url), processor)
    await consumer.start()
    try:

        async def landed() -> int:
            return count(clickhouse, project_id)

        assert await eventually(landed, lambda n: n == 2, timeout=10) == 2
    finally:
        await consumer.stop()
    dead = await js.pull_subscribe(dlq_subject(project_id), stream=DLQ_STREAM)
    messages = await dead.fetch(10, timeout=2)
    assert sorted(m.data for m in messages) == sorted([b"{not json", b'{"v": 99, "events": []}'])
    errors = [m.headers[DLQ_ERROR_HEADER] for m in messages if m.headers]
    assert any("not JSON" in e for e in errors) and any("version 99" in e for e in errors)


class RefusingWriter(ClickHouseWriter):
    """The real writer, except that ClickHouse 'refuses' any insert holding a row of message
    'poison' (as it would a row it cannot store)."""

    def insert_native(self, project_id: str, blocks: bytes, token: str) -> None:
        if b"poison" in blocks:  # the message id, as the Native encoding holds it
            raise DatabaseError("Code: 53. DB::Exception: Type mismatch (injected)")
        super().insert_native(project_id, blocks, token)


async def test_rows_clickhouse_refuses_are_dead_lettered_and_the_rest_land(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    await publish_tracks(js, project_id, "a", "good-a1", "good-a2")
    await publish_tracks(js, project_id, "b", "poison")
    await publish_tracks(js, project_id, "c", "good-c")
    consumer = EventConsumer(nats_client, RefusingWriter(clickhouse), settings(clickhouse_url), processor)
    await consumer.start()
    try:

        async def landed() -> int:
            return count(clickhouse, project_id)

        assert await eventually(landed, lambda n: n == 3, timeout=10) == 3
    finally:
        await consumer.stop()
    assert consumer.dead_lettered == 1
    dead = await js.pull_subscribe(dlq_subject(project_id), stream=DLQ_STREAM)
    [message] = await dead.fetch(10, timeout=2)
    assert message.headers is not None
    assert "Type mismatch" in message.headers[DLQ_ERROR_HEADER]
    assert message.headers["Hw-Original-Msg-Id"] == "b"


async def test_an_outage_holds_one_batch_in_progress_and_fetches_no_more(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    for i in range(100):
        await publish_tracks(js, project_id, f"r{i}", f"m{i}")
    writer = FlakyWriter(clickhouse, failures=10**9)
    slow = ConsumerSettings(
        clickhouse_url=clickhouse_url,
        fetch_batch=10,
        max_batch_rows=10,
        flush_interval_seconds=0.1,
        retry_delay_seconds=0.3,
        ack_wait_seconds=1.0,
    )
    consumer = EventConsumer(nats_client, writer, slow, processor)
    await consumer.start()
    try:

        async def held() -> tuple[int, int]:
            info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
            return writer.attempts, info.num_ack_pending

        # several retries, the pipeline filled behind the batch that cannot be written
        await eventually(held, lambda h: h[0] >= 3 and h[1] >= 40)
        before = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
        # What must not happen within twice the ack wait: a fetch beyond the bound, a redelivery.
        await asyncio.sleep(2.0)
        info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
        # Backpressure: one batch held, the next one built behind it (each at most the row limit
        # plus one group's overshoot: 10 + 9), the groups of messages queued for processing (one
        # per worker, one waiting, one the feed holds on to; a group is at most fetch_batch), and
        # the pull window (2 x fetch_batch). How full each is depends on how the pull's takes
        # fell, so the bound, and that nothing more is asked for once it is reached.
        bound = 2 * (10 + 9) + (processor.capacity + 2) * 10 + 20
        assert 40 <= info.num_ack_pending <= bound
        assert info.num_ack_pending == before.num_ack_pending
        assert info.num_pending == 100 - info.num_ack_pending
        # in_progress kept JetStream from redelivering any of them
        assert info.num_redelivered == 0
        assert writer.attempts >= 3
    finally:
        writer.failures = 0  # ClickHouse is back
        await consumer.stop()


async def test_a_message_on_its_last_delivery_goes_to_the_dead_letter_stream(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    # Two deliveries that ended without an ack, as if a consumer had died on the message twice.
    await publish_tracks(js, project_id, "crashy", "c1")
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_deliver=3, ack_wait=60)
    earlier = await js.pull_subscribe(
        "hw.events.>", durable="hw-clickhouse", stream=EVENTS_STREAM, config=config
    )
    for _ in range(2):
        [message] = await earlier.fetch(1, timeout=5)
        await message.nak()
    await earlier.unsubscribe()
    limited = ConsumerSettings(clickhouse_url=clickhouse_url, flush_interval_seconds=0.1, max_deliver=3)
    consumer = EventConsumer(nats_client, ClickHouseWriter(clickhouse), limited, processor)
    await consumer.start()
    try:

        async def dead() -> int:
            return consumer.dead_lettered

        assert await eventually(dead, lambda n: n == 1, timeout=10) == 1
    finally:
        await consumer.stop()
    dead_letters = await js.pull_subscribe(dlq_subject(project_id), stream=DLQ_STREAM)
    [message] = await dead_letters.fetch(1, timeout=2)
    assert message.headers is not None
    assert message.headers[DLQ_ERROR_HEADER] == "delivered 3 times"
    assert message.headers["Hw-Deliveries"] == "3"
    assert count(clickhouse, project_id) == 0


async def test_a_deleted_durable_consumer_is_recreated_and_the_stream_flows_on(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    consumer = EventConsumer(nats_client, ClickHouseWriter(clickhouse), settings(clickhouse_url), processor)
    await publish_tracks(js, project_id, "before", "b1")
    await consumer.start()
    try:

        async def landed() -> int:
            return count(clickhouse, project_id)

        assert await eventually(landed, lambda n: n == 1, timeout=10) == 1
        await js.delete_consumer(EVENTS_STREAM, "hw-clickhouse")  # an operator's mistake
        await publish_tracks(js, project_id, "after", "a1")
        # Recreated from the start of the stream: "before" again, which collapses on messageId.
        assert await eventually(landed, lambda n: n == 2, timeout=10) == 2
        info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
        assert info.config.ack_policy == AckPolicy.EXPLICIT
    finally:
        await consumer.stop()


def test_the_encoded_column_types_are_the_migrated_tables(clickhouse: Client, project_id: str) -> None:
    """Workers encode rows with the schema's types without asking ClickHouse: they must be the
    types the migrations give the table."""
    described = clickhouse.query(f"DESCRIBE TABLE hw_{project_id}.events").result_rows
    # ClickHouse's own, filled at insert: inserted_at (migration 3, its default), client_session_id
    # (migration 6, computed from context) and copy_rank (migration 7, from received_at and
    # request_id).
    own = {"inserted_at", "client_session_id", "copy_rank"}
    written = [(name, kind) for name, kind, *_ in described if name not in own]
    assert written == list(zip(COLUMNS, COLUMN_TYPES, strict=True))
    assert not own & set(COLUMNS)


class BrokenProcessor(InlineProcessor):
    """Processing with a bug: every group raises what no message explains."""

    async def process(self, items: Sequence[Item], settings: Mapping[str, ProjectSettings]) -> Processed:
        raise RuntimeError("a bug in processing (injected)")


async def test_an_unexpected_error_in_processing_stops_the_consumer_without_acking(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, clickhouse_url: str, project_id: str
) -> None:
    await publish_tracks(js, project_id, "r1", "m1")
    processor = BrokenProcessor(Enricher(None))
    consumer = EventConsumer(nats_client, ClickHouseWriter(clickhouse), settings(clickhouse_url), processor)
    await consumer.start()
    try:

        async def failure() -> BaseException | None:
            return consumer.failure

        failed = await eventually(failure, lambda f: f is not None, timeout=10)
        assert isinstance(failed, RuntimeError) and "injected" in str(failed)
        assert not consumer.running  # stopped, not hanging: the supervisor sees it (readiness)
    finally:
        with pytest.raises(RuntimeError, match="injected"):
            await consumer.stop()  # stop() reports how the consumer ended
    info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
    assert info.ack_floor.stream_seq == 0 and count(clickhouse, project_id) == 0


class FirstGroupBreaksProcessor(InlineProcessor):
    """The first group raises a bug; the groups after it never finish (they stay queued)."""

    def __init__(self, enricher: Enricher) -> None:
        super().__init__(enricher)
        self.tasks: list[asyncio.Task[object]] = []

    async def process(self, items: Sequence[Item], settings: Mapping[str, ProjectSettings]) -> Processed:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        if len(self.tasks) == 1:
            await asyncio.sleep(0.3)  # the feed queues the next groups meanwhile
            raise RuntimeError("a bug in processing (injected)")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_failed_consume_loop_leaves_no_group_behind_and_hands_its_messages_back(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, clickhouse_url: str, project_id: str
) -> None:
    for i in range(6):
        await publish_tracks(js, project_id, f"r{i}", f"m{i}")
    processor = FirstGroupBreaksProcessor(Enricher(None))
    consumer_settings = ConsumerSettings(
        clickhouse_url=clickhouse_url, fetch_batch=1, group_linger_seconds=0, flush_interval_seconds=0.1
    )
    consumer = EventConsumer(nats_client, ClickHouseWriter(clickhouse), consumer_settings, processor)
    await consumer.start()
    try:

        async def failure() -> BaseException | None:
            return consumer.failure

        await eventually(failure, lambda f: f is not None, timeout=10)
    finally:
        with pytest.raises(RuntimeError, match="injected"):
            await consumer.stop()
    assert len(processor.tasks) > 1
    assert all(task.done() for task in processor.tasks)  # none left running unseen

    # Handed back at once: a consumer started now stores them all, long before the 120 s ack wait.
    healthy = EventConsumer(
        nats_client, ClickHouseWriter(clickhouse), consumer_settings, InlineProcessor(Enricher(None))
    )
    await healthy.start()
    try:

        async def landed() -> int:
            return count(clickhouse, project_id)

        assert await eventually(landed, lambda n: n == 6, timeout=10) == 6
    finally:
        await healthy.stop()


class LagWatcherWithABug(EventConsumer):
    async def _refresh_lag(self) -> None:
        raise RuntimeError("a bug in the lag watcher (injected)")


async def test_a_dead_lag_watcher_makes_the_consumer_not_ready(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    processor: Processor,
) -> None:
    consumer = LagWatcherWithABug(
        nats_client, ClickHouseWriter(clickhouse), settings(clickhouse_url), processor
    )
    await consumer.start()
    try:

        async def health() -> tuple[bool, str | None]:
            return consumer.health()

        _, reason = await eventually(health, lambda h: not h[0], timeout=5)
        assert reason is not None and "lag watcher" in reason and "injected" in reason
    finally:
        await consumer.stop()
