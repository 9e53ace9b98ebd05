"""Envelopes and NATS's limits, on a real nats-server started with a small `max_payload`, and chdb:
a request whose envelope would exceed the server's max payload (or the stream's max message size)
is split into several envelopes or refused before it is acknowledged, never spooled as if
JetStream were away; a spooled envelope JetStream can never take is quarantined and the spool
drains on. Every acknowledged event is counted in ClickHouse."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hw_testing import SpoolingStackFactory, StackFactory, basic_auth, eventually
from nats.js.errors import KeyNotFoundError

from headwater.core.projects.project import utc_now_iso
from headwater.core.service.nodereports import ensure_nodes_bucket, report_key
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.edge.errors import MessageTooLarge
from headwater.edge.split import split
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack

MAX_PAYLOAD = 16 * 1024


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    """A server whose max payload is 16 KB (the default is 1 MB)."""
    store = tmp_path / "nats"
    store.mkdir()
    config = tmp_path / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:-1"\nserver_name: "small"\nmax_payload: {MAX_PAYLOAD}\n'
        f'jetstream {{ store_dir: "{store}" }}\n'
    )
    server = NatsServerProcess(store, config_file=config)
    server.start()
    yield server
    server.stop()


def noise(size: int) -> str:
    """Text LZ4 cannot shrink much, so envelopes stay large once compressed."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


def event(message_id: str, size: int = 0) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "E",
        "userId": "u",
        "messageId": message_id,
        "properties": {"n": noise(size)},
    }


async def stored_ids(stack: Stack, project_id: str) -> set[str]:
    assert stack.clickhouse is not None
    client = stack.clickhouse
    sql = f"SELECT DISTINCT message_id FROM hw_{project_id}.events"
    return {str(r[0]) for r in await asyncio.to_thread(lambda: client.query(sql).result_rows)}


@pytest.mark.services
async def test_a_batch_larger_than_the_max_payload_is_split_and_stored_whole(
    make_spooling_stack: SpoolingStackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack, key = await make_spooling_stack()
    batch = {"batch": [event(f"b-{n}", 2000) for n in range(40)]}  # ~80 KB of envelope
    answer = await http.post(f"{stack.edge_url}/v1/batch", json=batch, headers=basic_auth(key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 40
    expected = {f"b-{n}" for n in range(40)}
    assert await eventually(lambda: stored_ids(stack, project_id), lambda s: s == expected, timeout=20)
    assert stack.spool is not None and stack.spool.stats().appended == 0, "split envelopes went to the spool"
    assert stack.breaker is not None and stack.breaker.trips == 0


@pytest.mark.services
async def test_an_event_no_envelope_can_carry_is_refused_before_it_is_acknowledged(
    make_spooling_stack: SpoolingStackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack, key = await make_spooling_stack()
    answer = await http.post(
        f"{stack.edge_url}/v1/track", json=event("huge", 20_000), headers=basic_auth(key)
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "envelope_too_large"
    assert stack.spool is not None and stack.spool.stats().appended == 0
    assert stack.breaker is not None and stack.breaker.trips == 0
    # Live traffic still flows.
    ok = await http.post(f"{stack.edge_url}/v1/track", json=event("small"), headers=basic_auth(key))
    assert ok.status_code == 200, ok.text
    assert await eventually(lambda: stored_ids(stack, project_id), lambda s: s == {"small"}, timeout=20)


@pytest.mark.services
async def test_the_streams_max_message_size_is_honoured_even_when_it_changes(
    make_spooling_stack: SpoolingStackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack, key = await make_spooling_stack()
    assert stack.nats is not None
    js = stack.nats.jetstream()
    info = await js.stream_info(EVENTS_STREAM)
    await js.update_stream(info.config.evolve(max_msg_size=8 * 1024))  # after the edge started
    batch = {"batch": [event(f"s-{n}", 1500) for n in range(20)]}
    answer = await http.post(f"{stack.edge_url}/v1/batch", json=batch, headers=basic_auth(key))
    assert answer.status_code == 200, answer.text
    expected = {f"s-{n}" for n in range(20)}
    assert await eventually(lambda: stored_ids(stack, project_id), lambda s: s == expected, timeout=20)
    assert stack.spool is not None and stack.spool.stats().appended == 0
    assert stack.breaker is not None and stack.breaker.trips == 0


@pytest.mark.services
async def test_a_spooled_envelope_over_the_limit_is_split_or_quarantined_and_the_rest_drains(
    make_spooling_stack: SpoolingStackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack, _ = await make_spooling_stack()
    spool = stack.spool
    assert spool is not None and stack.breaker is not None and stack.drainer is not None
    subject = events_subject(project_id)

    def envelope(request_id: str, *events: dict[str, Any]) -> bytes:
        # Received now: consumers discard what was received before its project was created.
        return Envelope(project_id, request_id, utc_now_iso(), list(events)).encode()

    # As an edge connected to a server with a larger max payload would have spooled them: one
    # event too large for any message, and a batch that fits once split.
    await spool.append(subject, "too-big", envelope("too-big", event("big", 40_000)))
    await spool.append(subject, "splits", envelope("splits", *(event(f"p-{n}", 2000) for n in range(30))))
    for n in range(20):
        await spool.append(subject, f"r-{n}", envelope(f"r-{n}", event(f"d-{n}")))
    expected = {f"d-{n}" for n in range(20)} | {f"p-{n}" for n in range(30)}
    assert await eventually(lambda: stored_ids(stack, project_id), lambda s: s == expected, timeout=30)

    async def stats() -> Any:
        return spool.stats()

    drained = await eventually(stats, lambda s: s.entries == 0, timeout=10)
    assert drained.quarantined == 1
    assert stack.breaker.trips == 0
    assert b"headwater_edge_spool_undeliverable_total 1.0" in await metrics(http, stack)


async def metrics(http: httpx.AsyncClient, stack: Stack) -> bytes:
    return (await http.get(f"{stack.edge_operator_url}/metrics")).content


@pytest.mark.parametrize("compress_above", [0, 4096])
def test_split_keeps_every_event_once_in_order_within_the_limit(compress_above: int) -> None:
    events = [event(f"e-{n}", 300 + 37 * n) for n in range(60)]
    whole = Envelope("p", "r", "2026-01-01T00:00:00.000Z", events, context={"shared": noise(500)})
    parts = split(whole, 8000, compress_above)
    assert len(parts) > 1
    assert all(len(part.body) <= 8000 for part in parts)
    assert [e for part in parts for e in part.envelope.events] == events
    assert [part.offset for part in parts] == [events.index(part.envelope.events[0]) for part in parts]
    assert all(part.envelope.context == whole.context for part in parts)
    assert len({part.msg_id("r", whole=False) for part in parts}) == len(parts)
    assert split(whole, 10**7, compress_above)[0].msg_id("r", whole=True) == "r"
    with pytest.raises(MessageTooLarge):
        split(Envelope("p", "r", "2026-01-01T00:00:00.000Z", [event("big", 9000)]), 8000, compress_above)


@pytest.mark.services
async def test_an_edge_s_node_report_stays_under_the_max_payload(make_stack: StackFactory) -> None:
    """Refusals for many projects: the edge's report keeps the most recent that fit under the
    server's 16 KB and says how many it left out; its readiness is reported all the same."""
    stack = await make_stack(edge=True, node_report_seconds=0.2)
    for number in range(400):
        stack.refusals.record(
            f"project_{number}", "origin_not_allowed", None, "origin 'https://x' is not allowed"
        )
    assert stack.nats is not None and stack.reporter is not None
    kv = await ensure_nodes_bucket(stack.nats.jetstream())
    key = report_key("edge", stack.reporter.node)

    async def report() -> dict[str, Any]:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # not published yet
            return {}
        assert entry.value is not None and len(entry.value) <= MAX_PAYLOAD
        return dict(orjson.loads(entry.value))

    published = await eventually(report, lambda r: bool(r) and r["refusals"]["projects"] != {})
    assert published["ready"] is True and published["checks"]["nats"] is True
    refusals = published["refusals"]
    assert refusals["projects_left_out"] > 0
    assert len(refusals["projects"]) + refusals["projects_left_out"] == 400
    assert "project_399" in refusals["projects"]  # the most recent first
