"""Consumers as processes: killed mid-stream and restarted, each event lands once; several
consumers share the durable consumer; the consumer's health and metrics endpoints."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from hw_testing import BIN, cli_env, eventually, migrate_in_a_process, publish_tracks, query_in_a_process
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from headwater.consumers.processing import Processor, WorkerPool
from headwater.consumers.pull import PipelinedPull
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.control.clickhouse import connect
from headwater.core.migrations import apply_migrations
from headwater.core.wire.subjects import EVENTS_STREAM
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services


def env() -> dict[str, str]:
    return cli_env()


async def take_and_ack_what_is_left(nats: NatsClient, durable: str, seconds: float) -> None:
    pull = PipelinedPull(nats, EVENTS_STREAM, durable, batch=500)
    await pull.start()
    try:
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            for message in await pull.take(500, timeout=0.2):
                await message.ack()
    finally:
        await pull.stop()


async def publish_envelopes(js: JetStreamContext, project_id: str, count: int, per_envelope: int) -> set[str]:
    ids: set[str] = set()
    for n in range(count):
        message_ids = [f"e{n}-{i}" for i in range(per_envelope)]
        ids.update(message_ids)
        await publish_tracks(js, project_id, f"r{n}", *message_ids)
    return ids


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*command, "--port", "0"], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def acked_through(js: JetStreamContext) -> Callable[[], Awaitable[int]]:
    """A probe of the stream sequence the consumer processes have acknowledged up to."""

    async def acked() -> int:
        try:
            info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
        except NotFoundError:  # the consumer process has not created the durable consumer yet
            return 0
        return int(info.ack_floor.stream_seq)

    return acked


@pytest.mark.slow
async def test_a_consumer_killed_mid_stream_loses_and_doubles_nothing(
    js: JetStreamContext, nats_server: NatsServerProcess, tmp_path: Path, project_id: str
) -> None:
    # The database is prepared and finally read by short-lived processes of their own.
    url = f"chdb://{tmp_path / 'clickhouse'}"
    await migrate_in_a_process(url, project_id)
    sent = await publish_envelopes(js, project_id, count=3000, per_envelope=10)  # three batches of 10,000
    # A short ack wait: the killed process's unacknowledged messages come back soon after it.
    command = [
        str(BIN / "headwater"), "serve", "consumer", "--nats-url", nats_server.url, "--clickhouse-url", url,
        "--ack-wait", "3", "--max-batch-rows", "10000",
    ]  # fmt: skip

    first = await asyncio.to_thread(start, command)
    acked = acked_through(js)
    await eventually(acked, lambda n: n > 0, timeout=60, interval=0.05)
    workers = children_of(first.pid)
    first.send_signal(signal.SIGKILL)  # mid-stream: some batches written, some not, some in flight
    await asyncio.to_thread(first.wait, 10)
    assert await acked() < 3000, "the consumer finished before it could be killed"
    assert workers, "the consumer ran without worker processes"

    async def orphans() -> list[int]:
        return [pid for pid in workers if alive(pid)]

    # Its worker processes do not outlive it.
    assert await eventually(orphans, lambda alive: not alive, timeout=10) == []

    second = await asyncio.to_thread(start, command)
    try:
        await eventually(acked, lambda n: n == 3000, timeout=120, interval=0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 30) == 0
    sql = "SELECT count(), uniqExact(message_id) FROM events FINAL"
    assert await query_in_a_process(url, project_id, sql) == [str(len(sent)), str(len(sent))]


async def test_two_consumers_share_the_stream_and_each_event_lands_once(
    nats_client: NatsClient, js: JetStreamContext, clickhouse_url: str, project_id: str, processor: Processor
) -> None:
    client = connect(clickhouse_url)
    apply_migrations(client, f"hw_{project_id}")
    sent = await publish_envelopes(js, project_id, count=200, per_envelope=5)
    settings = ConsumerSettings(clickhouse_url=clickhouse_url, fetch_batch=20, flush_interval_seconds=0.1)
    consumers = [EventConsumer(nats_client, ClickHouseWriter(client), settings, processor) for _ in range(2)]
    for consumer in consumers:
        await consumer.start()
    try:

        async def written() -> int:
            return sum(c.rows_written for c in consumers)

        await eventually(written, lambda n: n >= len(sent), timeout=30)
    finally:
        for consumer in consumers:
            await consumer.stop()
    assert all(c.rows_written > 0 for c in consumers), "one consumer did all the work"
    assert sum(c.rows_written for c in consumers) == len(sent)  # nothing was written twice
    rows = client.query(f"SELECT count(), uniqExact(message_id) FROM hw_{project_id}.events").result_rows
    assert rows == [(len(sent), len(sent))]
    client.close()


async def test_consumer_health_and_metrics(
    make_stack,
    http: httpx.AsyncClient,
    js: JetStreamContext,
    clickhouse_url: str,
    project_id: str,  # type: ignore[no-untyped-def]
) -> None:
    client = connect(clickhouse_url)
    apply_migrations(client, f"hw_{project_id}")
    client.close()
    stack: Stack = await make_stack(consumer=ConsumerSettings(clickhouse_url=clickhouse_url, port=0))
    await publish_envelopes(js, project_id, count=3, per_envelope=2)
    assert stack.consumer is not None
    consumer = stack.consumer

    async def written() -> int:
        return consumer.rows_written

    await eventually(written, lambda n: n == 6, timeout=10)
    ready = await http.get(f"{stack.consumer_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": True, "consuming": True, "healthy": True}
    scraped = await http.get(f"{stack.consumer_url}/metrics")
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = scraped.text
    assert f'headwater_consumer_rows_total{{project="{project_id}"}} 6.0' in text
    assert "headwater_consumer_lag" in text and "headwater_consumer_insert_seconds_count" in text
    # one freshness observation per request (3 envelopes), each from the edge's receive time
    assert "headwater_consumer_freshness_seconds_count 3.0" in text
    assert 'headwater_consumer_freshness_seconds_bucket{le="300.0"} 3.0' in text


@pytest.mark.slow
async def test_a_worker_killed_mid_stream_loses_and_doubles_nothing(
    nats_client: NatsClient, js: JetStreamContext, clickhouse_url: str, project_id: str
) -> None:
    client = connect(clickhouse_url)
    apply_migrations(client, f"hw_{project_id}")
    sent = await publish_envelopes(js, project_id, count=4000, per_envelope=10)
    settings = ConsumerSettings(
        clickhouse_url=clickhouse_url, fetch_batch=20, max_batch_rows=2000, flush_interval_seconds=0.1
    )
    pool = WorkerPool(2, None)
    await pool.warm_up()
    consumer = EventConsumer(nats_client, ClickHouseWriter(client), settings, pool)
    await consumer.start()
    try:

        async def written() -> int:
            return consumer.rows_written

        await eventually(written, lambda n: n > 0, timeout=30, interval=0.01)
        killed = pool.pids()
        os.kill(killed[0], signal.SIGKILL)  # mid-stream: groups of messages are in its hands
        await eventually(written, lambda n: n >= len(sent), timeout=60)
        assert consumer.failure is None
        assert consumer.metrics.lost_to_workers._value.get() > 0, "the kill hit no work"
        assert not set(pool.pids()) & set(killed), "the dead pool was not replaced"
    finally:
        await consumer.stop()
        await pool.close()
    assert consumer.rows_written == len(sent)  # nothing was written twice
    rows = client.query(f"SELECT count(), uniqExact(message_id) FROM hw_{project_id}.events").result_rows
    assert rows == [(len(sent), len(sent))]
    client.close()


@pytest.mark.slow
async def test_a_ctrl_c_to_the_whole_process_group_leaves_nothing_pending(
    nats_client: NatsClient,
    js: JetStreamContext,
    nats_server: NatsServerProcess,
    tmp_path: Path,
    project_id: str,
) -> None:
    """Ctrl-C in a terminal signals the consumer's workers along with it: the batch they were
    processing must still be finished or handed back, not left pending until the ack wait. (A
    systemd stop signals the consumer alone: the shipped unit sets KillMode=mixed.)"""
    url = f"chdb://{tmp_path / 'clickhouse'}"
    await migrate_in_a_process(url, project_id)
    await publish_envelopes(js, project_id, count=3000, per_envelope=10)
    command = [
        str(BIN / "headwater"), "serve", "consumer", "--nats-url", nats_server.url, "--clickhouse-url", url,
        "--consumer-workers", "2", "--max-batch-rows", "2000",
    ]  # fmt: skip
    process = await asyncio.to_thread(start, command)
    await eventually(acked_through(js), lambda n: n > 0, timeout=60, interval=0.05)
    workers = children_of(process.pid)
    assert workers
    for pid in [process.pid, *workers]:  # as a terminal's Ctrl-C does
        os.kill(pid, signal.SIGINT)
    assert await asyncio.to_thread(process.wait, 60) == 0
    # Handed back means available at once: a nak'ed message counts as ack-pending until someone
    # takes it, so take what is left; only messages dropped in flight wait out the ack wait (120 s).
    await take_and_ack_what_is_left(nats_client, "hw-clickhouse", seconds=3)
    info = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
    assert info.num_ack_pending == 0, f"{info.num_ack_pending} messages left pending until their ack wait"
