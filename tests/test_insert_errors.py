"""ClickHouse's error answers to an INSERT: those that say nothing about the rows (space, memory,
parts, time-outs, a cancelled query, a server shutting down, a missing database) are retried with
backpressure and never dead-lettered; only rows ClickHouse refuses for what they hold are.

Server answers come from clickhouse-connect's HTTP client against tests/clickhouse_standin.py
(no ClickHouse server installs here); the embedded engine's own answer is a real full disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_standin import (
    ABORTED,
    MEMORY_LIMIT_EXCEEDED,
    NOT_ENOUGH_SPACE,
    QUERY_WAS_CANCELLED,
    TABLE_IS_READ_ONLY,
    TIMEOUT_EXCEEDED,
    TOO_MANY_PARTS,
    TYPE_MISMATCH,
    UNKNOWN_DATABASE,
    ClickHouseStandIn,
    ErrorAnswer,
)
from hw_testing import BIN, cli_env, eventually, migrate_in_a_process, publish_tracks
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from headwater.consumers.insert_errors import InsertFailure, classify
from headwater.consumers.processing import Processor
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.control.clickhouse import connect
from headwater.core.wire.subjects import DLQ_STREAM, EVENTS_STREAM
from headwater.ops.natsserver import NatsServerProcess

TRANSIENT_ANSWERS = [
    NOT_ENOUGH_SPACE,
    TOO_MANY_PARTS,
    MEMORY_LIMIT_EXCEEDED,
    TABLE_IS_READ_ONLY,
    UNKNOWN_DATABASE,
    TIMEOUT_EXCEEDED,
    QUERY_WAS_CANCELLED,
    ABORTED,
]


@pytest.fixture
def standin() -> Iterator[ClickHouseStandIn]:
    with ClickHouseStandIn() as server:
        yield server


def insert_error(client: Client, standin: ClickHouseStandIn, answer: ErrorAnswer) -> Exception:
    standin.errors.append(answer)
    with pytest.raises(DatabaseError) as caught:
        ClickHouseWriter(client).insert_native("x", b"block", "token")
    return caught.value


@pytest.mark.parametrize("answer", TRANSIENT_ANSWERS, ids=lambda a: a.name)
def test_server_answers_about_the_server_are_transient(
    standin: ClickHouseStandIn, answer: ErrorAnswer
) -> None:
    client = connect(standin.url)
    assert classify(insert_error(client, standin, answer)) is InsertFailure.TRANSIENT


def test_a_refused_row_is_about_the_rows_and_an_unknown_code_is_retried(standin: ClickHouseStandIn) -> None:
    client = connect(standin.url)
    assert classify(insert_error(client, standin, TYPE_MISMATCH)) is InsertFailure.ROWS
    odd = ErrorAnswer(99999, "SOMETHING_NEW", "A code this release does not know")
    assert classify(insert_error(client, standin, odd)) is InsertFailure.UNKNOWN


def test_chdb_own_exception_is_classified_by_the_code_in_its_message() -> None:
    from chdb import ChdbError

    full = ChdbError(
        "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"
    )
    assert classify(full) is InsertFailure.TRANSIENT
    assert (
        classify(ChdbError("Code: 6. DB::Exception: Cannot parse. (CANNOT_PARSE_TEXT)")) is InsertFailure.ROWS
    )


@pytest.mark.services
async def test_server_errors_are_retried_not_dead_lettered_and_readiness_reports_them(
    nats_client: NatsClient,
    js: JetStreamContext,
    standin: ClickHouseStandIn,
    project_id: str,
    processor: Processor,
) -> None:
    settings = ConsumerSettings(
        clickhouse_url=standin.url,
        flush_interval_seconds=0.1,
        retry_delay_seconds=0.05,
        unready_after_retrying_seconds=0.0,
    )
    standin.errors.extend(
        [NOT_ENOUGH_SPACE, TOO_MANY_PARTS, MEMORY_LIMIT_EXCEEDED, UNKNOWN_DATABASE, ABORTED]
    )
    await publish_tracks(js, project_id, "r1", *(f"msg-{i}" for i in range(3)))
    consumer = EventConsumer(nats_client, ClickHouseWriter(connect(standin.url)), settings, processor)
    seen_unready: list[str] = []
    await consumer.start()
    try:

        async def state() -> tuple[int, bool]:
            ready, reason = consumer.health()
            if not ready and reason:
                seen_unready.append(reason)
            return len(standin.inserts), ready

        assert await eventually(state, lambda s: s == (1, True), timeout=30, interval=0.02) == (1, True)
    finally:
        await consumer.stop()
    assert consumer.dead_lettered == 0
    assert standin.refused == 5
    assert all(f"msg-{i}".encode() in standin.inserts[0] for i in range(3))
    assert any("ClickHouse" in reason for reason in seen_unready)
    info = await js.consumer_info(EVENTS_STREAM, settings.durable_name)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # acked once stored


@pytest.mark.services
async def test_rows_a_server_refuses_are_still_dead_lettered(
    nats_client: NatsClient,
    js: JetStreamContext,
    standin: ClickHouseStandIn,
    project_id: str,
    processor: Processor,
) -> None:
    settings = ConsumerSettings(
        clickhouse_url=standin.url, flush_interval_seconds=0.1, retry_delay_seconds=0.05
    )
    standin.errors.append(TYPE_MISMATCH)
    await publish_tracks(js, project_id, "r1", "m1")
    consumer = EventConsumer(nats_client, ClickHouseWriter(connect(standin.url)), settings, processor)
    await consumer.start()
    try:

        async def dead() -> int:
            return consumer.dead_lettered

        assert await eventually(dead, lambda n: n == 1, timeout=15) == 1
    finally:
        await consumer.stop()
    assert standin.inserts == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB tmpfs that the test can fill (needs root, as in the project's CI container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Take all the free space of `disk`; returns the ballast to remove."""
    ballast = disk / "ballast"
    stat = os.statvfs(disk)
    with ballast.open("wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * (stat.f_bavail * stat.f_frsize))
    return ballast


@pytest.mark.services
@pytest.mark.slow
async def test_a_full_disk_under_the_embedded_engine_dead_letters_nothing(
    js: JetStreamContext, nats_server: NatsServerProcess, small_disk: Path, project_id: str
) -> None:
    url = f"chdb://{small_disk / 'clickhouse'}"
    run_python = [sys.executable, "-c"]
    await migrate_in_a_process(url, project_id)
    ballast = fill(small_disk)
    ids = [f"m{n}" for n in range(20)]
    for n in range(0, 20, 5):
        await publish_tracks(js, project_id, f"r{n}", *ids[n : n + 5])
    command = [
        str(BIN / "headwater"), "serve", "consumer", "--nats-url", nats_server.url, "--clickhouse-url", url,
        "--port", "0", "--consumer-workers", "0", "--consumer-unready-after", "1",
    ]  # fmt: skip
    process = await asyncio.to_thread(
        subprocess.Popen, command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env()
    )
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        match = re.search(r"(http://\S+)", line)
        assert match, f"unexpected first line from serve consumer: {line!r}"
        async with httpx.AsyncClient(base_url=match.group(1)) as http:

            async def readyz() -> httpx.Response:
                return await http.get("/readyz")

            unready = await eventually(readyz, lambda r: r.status_code == 503, timeout=60)
            assert "ClickHouse inserts failing" in unready.json()["not_ready_because"]
            assert unready.json()["dead_lettered"] == 0
            ballast.unlink()  # space again: the held batch goes in
            ready = await eventually(readyz, lambda r: r.status_code == 200, timeout=60)
            assert ready.json()["rows_written"] == 20 and ready.json()["dead_lettered"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    dead = await js.stream_info(DLQ_STREAM)
    assert dead.state.messages == 0
    count = f"from headwater.control.clickhouse import connect\nprint(connect({url!r}).query('SELECT uniqExact(message_id) FROM hw_{project_id}.events').result_rows[0][0])"  # noqa: E501
    result = await asyncio.to_thread(
        subprocess.run, [*run_python, count], capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert result.stdout.strip() == "20", result.stderr
