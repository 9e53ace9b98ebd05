"""Bytes that are not UTF-8 inside an event, and events a consumer cannot read: whatever the edge
acknowledged is stored (repaired with U+FFFD), and an event that cannot become a row is
dead-lettered alone, never with the valid events beside it. Real nats-server and chdb."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from clickhouse_connect.driver.client import Client
from hw_testing import basic_auth, create_project, eventually, publish_envelope, run_cli
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from headwater.consumers.processing import Processor
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.core.projects.project import utc_now_iso
from headwater.core.wire.envelope import Envelope, pack
from headwater.core.wire.subjects import (
    DLQ_ERROR_HEADER,
    DLQ_STREAM,
    dlq_subject,
    events_subject,
)
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

REPLACEMENT = "\ufffd"


def stored(client: Client, project_id: str) -> dict[str, tuple[str, str]]:
    """message_id -> (properties, context) of every stored event."""
    rows = client.query(
        f"SELECT message_id, properties, context FROM hw_{project_id}.events FINAL"
    ).result_rows
    return {str(m): (str(p), str(c)) for m, p, c in rows}


def pre_fix_envelope(project_id: str, request_id: str, events: bytes) -> bytes:
    """An envelope as an edge without UTF-8 checks wrote it: `events` is the JSON list, verbatim."""
    # Received now: consumers discard what was received before its project was created.
    head = Envelope(project_id, request_id, utc_now_iso(), []).encode()
    return head.replace(b'"events":[]', b'"events":' + events)


def consumer_settings(clickhouse_url: str) -> ConsumerSettings:
    return ConsumerSettings(
        clickhouse_url=clickhouse_url, flush_interval_seconds=0.1, retry_delay_seconds=0.3
    )


async def test_an_envelope_holding_bytes_that_are_not_utf8_is_stored_whole(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    events = (
        b'[{"type":"track","event":"a","userId":"u","messageId":"PFX-m1"},'
        b'{"type":"track","event":"b","userId":"u","messageId":"PFX-m2","properties":{"k":"x\xc3\x28y"}},'
        b'{"type":"track","event":"c","userId":"u","messageId":"PFX-m3",'
        b'"context":{"page":{"url":"https://example.com/\xff"}}}]'
    )
    for request_id, compress in (("plain", 0), ("lz4", 1)):
        body = pack(
            pre_fix_envelope(project_id, request_id, events.replace(b"PFX", request_id.encode())), compress
        )
        await publish_envelope(js, project_id, request_id, body)
    consumer = EventConsumer(
        nats_client, ClickHouseWriter(clickhouse), consumer_settings(clickhouse_url), processor
    )
    await consumer.start()
    try:
        rows = await eventually(
            lambda: asyncio.to_thread(stored, clickhouse, project_id), lambda s: len(s) == 6
        )
    finally:
        await consumer.stop()
    assert consumer.dead_lettered == 0
    for prefix in ("plain", "lz4"):
        assert orjson.loads(rows[f"{prefix}-m2"][0]) == {"k": f"x{REPLACEMENT}(y"}
        assert orjson.loads(rows[f"{prefix}-m3"][1])["page"]["url"] == f"https://example.com/{REPLACEMENT}"


async def test_an_event_that_cannot_become_a_row_is_dead_lettered_alone(
    nats_client: NatsClient,
    js: JetStreamContext,
    clickhouse: Client,
    clickhouse_url: str,
    project_id: str,
    processor: Processor,
) -> None:
    events = (
        b'[{"type":"track","event":"a","userId":"u","messageId":"good-1"},'
        b"7,"
        b'{"type":"track","event":"c","userId":"u","messageId":"good-2","timestamp":{"no":"time"}}]'
    )
    await publish_envelope(js, project_id, "mixed", pre_fix_envelope(project_id, "mixed", events))
    consumer = EventConsumer(
        nats_client, ClickHouseWriter(clickhouse), consumer_settings(clickhouse_url), processor
    )
    await consumer.start()
    try:
        rows = await eventually(
            lambda: asyncio.to_thread(stored, clickhouse, project_id), lambda s: len(s) >= 2
        )
        assert set(rows) == {"good-1", "good-2"}
        dead = await js.pull_subscribe(dlq_subject(project_id), stream=DLQ_STREAM)
        [letter] = await dead.fetch(10, timeout=5)
    finally:
        await consumer.stop()
    # The dead letter is an envelope of the one event, with the request's metadata: replayable.
    assert orjson.loads(letter.data)["events"] == [7]
    assert orjson.loads(letter.data)["request_id"] == "mixed"
    assert letter.headers is not None and "events[1]" in letter.headers[DLQ_ERROR_HEADER]
    assert consumer.dead_lettered == 1


async def test_invalid_utf8_sent_to_the_edge_is_stored_repaired(
    make_stack,
    http: httpx.AsyncClient,
    project_id: str,  # type: ignore[no-untyped-def]
) -> None:
    stack: Stack = await make_stack(edge=True, control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    url = f"{stack.edge_url}/v1"
    headers = basic_auth(key) | {"Content-Type": "application/json"}
    batch = (
        b'{"batch":[{"type":"track","event":"a","userId":"u","messageId":"b1"},'
        b'{"type":"track","event":"b","userId":"u","messageId":"b2","properties":{"k":"\xc3\x28"}},'
        b'{"type":"track","event":"c","userId":"u","messageId":"b3"}]}'
    )
    single = (
        b'{"event":"s","userId":"u","messageId":"s1","context":{"page":{"url":"https://example.com/\xff"}}}'
    )
    # A batch too large to read in one pass, whose bad event the fast path does not take.
    padding = b",".join(
        b'{"type":"track","event":"p","userId":"u","messageId":"big-%d","properties":{"pad":"%s"}}'
        % (n, b"x" * 400)
        for n in range(100)
    )
    big = b'{"batch":[' + padding + b',{"type":"track","event":"e\xe9","userId":7,"messageId":"big-bad"}]}'
    answers = [
        await http.post(f"{url}/batch", content=batch, headers=headers),
        await http.post(f"{url}/track", content=single, headers=headers),
        await http.post(f"{url}/batch", content=big, headers=headers),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert [a.json()["accepted"] for a in answers] == [3, 1, 101]
    assert stack.clickhouse is not None
    rows = await eventually(
        lambda: asyncio.to_thread(stored, stack.clickhouse, project_id), lambda s: len(s) == 105, timeout=20
    )
    assert orjson.loads(rows["b2"][0]) == {"k": f"{REPLACEMENT}("}
    assert orjson.loads(rows["s1"][1])["page"]["url"] == f"https://example.com/{REPLACEMENT}"
    assert "big-bad" in rows
    metrics = (await http.get(f"{stack.edge_operator_url}/metrics")).text
    assert f'headwater_edge_utf8_repaired_total{{project="{project_id}"}} 3.0' in metrics
    assert stack.consumer is not None and stack.consumer.dead_lettered == 0


async def test_a_dead_letter_of_invalid_utf8_replays_into_clickhouse(
    make_stack,
    http: httpx.AsyncClient,
    js: JetStreamContext,
    project_id: str,
    nats_server: NatsServerProcess,  # type: ignore[no-untyped-def]
) -> None:
    """What a consumer before the fix dead-lettered (the whole request) is stored by a replay now."""
    stack: Stack = await make_stack(consumer=True, control=True)
    await create_project(http, stack, project_id)
    events = (
        b'[{"type":"track","event":"a","userId":"u","messageId":"r1"},'
        b'{"type":"track","event":"b","userId":"u","messageId":"r2","properties":{"k":"\xc3\x28"}},'
        b'{"type":"track","event":"c","userId":"u","messageId":"r3"}]'
    )
    await js.publish(
        dlq_subject(project_id),
        pre_fix_envelope(project_id, "old", events),
        stream=DLQ_STREAM,
        headers={
            DLQ_ERROR_HEADER: "'utf-8' codec can't decode byte 0xc3 in position 6",
            "Hw-Original-Subject": events_subject(project_id),
            "Hw-Original-Msg-Id": "old",
        },
    )
    run = await run_cli("dlq", "replay", "--yes", "--nats-url", nats_server.url)
    assert run.code == 0, run.stderr
    assert stack.clickhouse is not None
    rows = await eventually(
        lambda: asyncio.to_thread(stored, stack.clickhouse, project_id), lambda s: len(s) == 3, timeout=20
    )
    assert orjson.loads(rows["r2"][0]) == {"k": f"{REPLACEMENT}("}
    assert stack.consumer is not None and stack.consumer.dead_lettered == 0
