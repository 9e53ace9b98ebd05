"""The thinnest real path, end to end in one process: control API → KV → edge → JetStream →
consumer → ClickHouse, over real HTTP ports, real NATS and the embedded ClickHouse engine."""

from __future__ import annotations

import uuid

import httpx
import pytest
from hw_testing import basic_auth, create_project, eventually, query_rows, track_event

from headwater.core.wire.envelope import LZ4_FRAME_MAGIC, Envelope
from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services
ORIGIN = "http://localhost:3000"


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=True, control=True, consumer=True)


@pytest.fixture
async def public_key(stack: Stack, http: httpx.AsyncClient, project_id: str) -> str:
    created = await create_project(http, stack, project_id, name="Pipeline", allowed_origins=[ORIGIN])
    return str(created["public_key"])


async def test_tracked_event_lands_in_clickhouse(
    stack: Stack, http: httpx.AsyncClient, public_key: str, project_id: str
) -> None:
    message_id = str(uuid.uuid4())
    event = track_event(
        messageId=message_id,
        anonymousId="anon-7",
        timestamp="2026-11-28T10:00:00.250+01:00",
        context={"page": {"path": "/pricing"}},
    )
    response = await http.post(
        f"{stack.edge_url}/v1/track",
        json=event,
        headers={**basic_auth(public_key), "Origin": ORIGIN, "User-Agent": "Mozilla/5.0 test"},
    )
    assert response.status_code == 200, response.text

    rows = await eventually(
        lambda: query_rows(
            http,
            stack,
            project_id,
            "SELECT message_id, type, event, user_id, anonymous_id, toString(timestamp), properties, context,"
            " user_agent, origin, request_id FROM events",
        ),
        lambda rows: len(rows) > 0,
        timeout=5,
    )
    assert rows == [
        [
            message_id,
            "track",
            "Signed Up",
            "user-1",
            "anon-7",
            "2026-11-28 09:00:00.250",
            '{"plan":"free"}',
            '{"page":{"path":"/pricing"}}',
            "Mozilla/5.0 test",
            ORIGIN,
            response.json()["request_id"],
        ]
    ]
    # Acknowledged after the insert: nothing is left pending on the durable consumer.
    assert stack.nats is not None
    js = stack.nats.jetstream()

    async def outstanding() -> tuple[int, int]:
        info = await js.consumer_info("HW_EVENTS", "hw-clickhouse")
        return info.num_ack_pending, info.num_pending

    assert await eventually(outstanding, lambda n: n == (0, 0), timeout=5) == (0, 0)


async def test_a_retried_event_shows_once(
    stack: Stack, http: httpx.AsyncClient, public_key: str, project_id: str
) -> None:
    event = track_event(messageId="retry-me", timestamp="2026-11-28T10:00:00Z")
    headers = {**basic_auth(public_key), "Origin": ORIGIN}
    for _ in range(3):  # a client retrying: three requests, three envelopes, one messageId
        assert (await http.post(f"{stack.edge_url}/v1/track", json=event, headers=headers)).status_code == 200
    total = await eventually(
        lambda: query_rows(http, stack, project_id, "SELECT count() FROM events"),
        lambda rows: rows[0][0] >= 1,
        timeout=5,
    )
    assert total[0][0] >= 1
    final = await query_rows(
        http, stack, project_id, "SELECT count(), uniqExact(message_id) FROM events FINAL"
    )
    assert final == [[1, 1]]


async def test_many_events_all_land_exactly_once(
    stack: Stack, http: httpx.AsyncClient, public_key: str, project_id: str
) -> None:
    headers = {**basic_auth(public_key), "Origin": ORIGIN}
    sent = [f"m-{i}" for i in range(200)]
    for message_id in sent:
        response = await http.post(
            f"{stack.edge_url}/v1/track", json=track_event(messageId=message_id), headers=headers
        )
        assert response.status_code == 200
    rows = await eventually(
        lambda: query_rows(http, stack, project_id, "SELECT count(), uniqExact(message_id) FROM events"),
        lambda rows: rows[0][0] >= len(sent),
        timeout=10,
    )
    assert rows == [[len(sent), len(sent)]]


async def test_each_project_is_written_after_its_own_batching_span(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    slow, fast = f"{project_id}_slow", f"{project_id}_fast"
    keys = {}
    for pid, span in ((slow, 4.0), (fast, 0.05)):
        created = await create_project(http, stack, pid, settings={"batching": {"span_seconds": span}})
        keys[pid] = created["secret_key"]
    for pid in (slow, fast):
        response = await http.post(
            f"{stack.edge_url}/v1/track", json=track_event(), headers=basic_auth(keys[pid])
        )
        assert response.status_code == 200

    async def count(pid: str) -> int:
        return int((await query_rows(http, stack, pid, "SELECT count() FROM events"))[0][0])

    await eventually(lambda: count(fast), lambda n: n == 1, timeout=3)
    assert await count(slow) == 0  # still held: its span (4 s) has not ended
    await eventually(lambda: count(slow), lambda n: n == 1, timeout=10)


async def test_events_are_enriched_and_anonymised_on_the_way_to_clickhouse(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    created = await create_project(http, stack, project_id)
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36"
    )
    event = track_event(
        messageId="enriched-1",
        context={
            "ip": "2001:630::1",  # Janet, the UK academic network: GB in the bundled GeoLite2 data
            "userAgent": chrome,
            "page": {
                "url": "https://shop.example.com/p?utm_source=news&utm_medium=email",
                "referrer": "https://www.google.com/",
            },
        },
    )
    sent = await http.post(
        f"{stack.edge_url}/v1/track", json=event, headers=basic_auth(created["secret_key"])
    )
    assert sent.status_code == 200
    sql = (
        "SELECT browser, os, device_type, country_code, ip, page_host, page_path, utm_source, utm_medium,"
        " referrer_host FROM events"
    )
    rows = await eventually(lambda: query_rows(http, stack, project_id, sql), bool, timeout=10)
    assert rows == [
        [
            "Chrome",
            "Windows",
            "desktop",
            "GB",
            "2001:630::",
            "shop.example.com",
            "/p",
            "news",
            "email",
            "www.google.com",
        ]
    ]


async def test_a_batch_travels_lz4_framed_and_lands_once(
    stack: Stack, http: httpx.AsyncClient, public_key: str, project_id: str
) -> None:
    """A batch's envelope is compressed on the stream (a single event's is not), and the consumer
    reads it like any other."""
    headers = {**basic_auth(public_key), "Origin": ORIGIN}
    batch = [
        track_event(type="track", messageId=f"b-{i}", properties={"i": i, "note": "x" * 50})
        for i in range(60)
    ]
    response = await http.post(f"{stack.edge_url}/v1/batch", json={"batch": batch}, headers=headers)
    assert response.status_code == 200 and response.json()["accepted"] == 60
    assert stack.nats is not None
    js = stack.nats.jetstream()
    stored = await js.get_last_msg(EVENTS_STREAM, events_subject(project_id))
    assert stored.data is not None and stored.data.startswith(LZ4_FRAME_MAGIC)
    assert [e["messageId"] for e in Envelope.decode(stored.data).events] == [f"b-{i}" for i in range(60)]

    single = await http.post(f"{stack.edge_url}/v1/track", json=track_event(messageId="s-1"), headers=headers)
    assert single.status_code == 200
    stored = await js.get_last_msg(EVENTS_STREAM, events_subject(project_id))
    assert stored.data is not None and stored.data.startswith(b"{")

    rows = await eventually(
        lambda: query_rows(
            http,
            stack,
            project_id,
            "SELECT count(), uniqExact(message_id), sum(JSONExtractInt(properties, 'i')) FROM events",
        ),
        lambda rows: rows[0][0] >= 61,
        timeout=10,
    )
    assert rows == [[61, 61, sum(range(60))]]
