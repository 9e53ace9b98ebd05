"""A batch's top-level `context` travels once in the envelope (version 3) and consumers apply it to
the events that have none; it is validated like an event's context, and what one request may
expand to is bounded. Real nats-server and chdb, through the edge."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from hw_testing import basic_auth, create_project, eventually

from headwater.consumers.enrich import Enricher
from headwater.consumers.rows import COLUMNS, envelope_rows
from headwater.consumers.wire import decode_envelope
from headwater.core.wire.envelope import Envelope, unpack
from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.ops.runtime import Stack


async def messages(stack: Stack, project_id: str) -> list[bytes]:
    assert stack.nats is not None
    js = stack.nats.jetstream()
    found, seq = [], 0
    while True:
        try:
            raw = await js.get_msg(EVENTS_STREAM, seq=seq + 1, subject=events_subject(project_id), next=True)
        except Exception:
            return found
        assert raw.data is not None and raw.seq is not None
        found.append(raw.data)
        seq = raw.seq


async def contexts(stack: Stack, project_id: str) -> dict[str, Any]:
    assert stack.clickhouse is not None
    client = stack.clickhouse
    sql = f"SELECT message_id, context FROM hw_{project_id}.events FINAL"
    rows = await asyncio.to_thread(lambda: client.query(sql).result_rows)
    return {str(m): orjson.loads(c) for m, c in rows}


def tiny(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "T", "userId": "u", "messageId": f"t-{n}", **extra}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=True, control=True, consumer=True)  # type: ignore[no-any-return]


@pytest.mark.services
async def test_the_batch_context_is_kept_once_and_applied_by_the_consumer(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    key = str((await create_project(http, stack, project_id))["secret_key"])
    shared = {"library": {"name": "lib", "version": "1"}, "note": "x" * 2000, "ip": "198.51.100.7"}
    events = [tiny(n) for n in range(200)] + [tiny(200, context={"own": True})]
    body = {"batch": events, "context": shared}
    answer = await http.post(f"{stack.edge_url}/v1/batch", json=body, headers=basic_auth(key))
    assert answer.status_code == 200, answer.text
    [data] = await messages(stack, project_id)
    envelope = Envelope.decode(data)
    assert envelope.v == 3 and envelope.context == shared
    assert len(unpack(data)) < len(orjson.dumps(body)) + 1000, "the batch context was copied into events"
    stored = await eventually(lambda: contexts(stack, project_id), lambda c: len(c) == 201, timeout=20)
    assert stored["t-0"]["library"] == {"name": "lib", "version": "1"}
    assert stored["t-199"]["note"] == "x" * 2000
    assert stored["t-200"] == {"own": True}


@pytest.mark.services
async def test_a_public_keys_batch_context_loses_its_ip(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    created = await create_project(http, stack, project_id, allowed_origins=["https://shop.example.com"])
    headers = basic_auth(str(created["public_key"])) | {"Origin": "https://shop.example.com"}
    body = {"batch": [tiny(0)], "context": {"ip": "203.0.113.9", "locale": "de"}}
    answer = await http.post(f"{stack.edge_url}/v1/batch", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    [data] = await messages(stack, project_id)
    assert Envelope.decode(data).context == {"locale": "de"}


@pytest.mark.services
async def test_the_batch_context_is_validated_like_an_events(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    key = str((await create_project(http, stack, project_id))["secret_key"])
    url = f"{stack.edge_url}/v1/batch"
    too_deep = await http.post(url, json={"batch": [tiny(0)], "context": nested(40)}, headers=basic_auth(key))
    assert too_deep.status_code == 400, too_deep.text
    assert (too_deep.json()["code"], too_deep.json()["field"]) == ("too_deep", "context")
    # As deep as an event's own context may be: accepted.
    ok = await http.post(url, json={"batch": [tiny(1)], "context": nested(30)}, headers=basic_auth(key))
    assert ok.status_code == 200, ok.text
    too_large = await http.post(
        url, json={"batch": [tiny(2)], "context": {"x": "y" * 40_000}}, headers=basic_auth(key)
    )
    assert too_large.status_code == 413, too_large.text
    assert (too_large.json()["code"], too_large.json()["field"]) == ("context_too_large", "context")


@pytest.mark.services
async def test_what_a_request_expands_to_is_bounded(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    """The issue's request: 2,500 tiny events and a large batch context."""
    key = str((await create_project(http, stack, project_id))["secret_key"])
    body = {"batch": [tiny(n) for n in range(2500)], "context": {"blob": "z" * 20_000}}
    answer = await http.post(f"{stack.edge_url}/v1/batch", json=body, headers=basic_auth(key))
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "request_too_expensive"
    assert await messages(stack, project_id) == []


def test_a_version_2_envelope_and_its_version_3_form_make_the_same_rows() -> None:
    """Consumers still read version 2, where the edge copied the batch context into each event."""
    shared = {"library": {"name": "lib"}, "page": {"url": "https://example.com/a?utm_source=x"}}
    own = {"userAgent": "curl/8"}
    v3 = Envelope(
        "p",
        "r",
        "2026-01-01T00:00:00.000Z",
        [tiny(0), tiny(1, context=own), tiny(2, context=None)],
        context=shared,
    )
    v2 = Envelope(
        "p", "r", "2026-01-01T00:00:00.000Z",
        [tiny(0, context=shared), tiny(1, context=own), tiny(2, context=None)], v=2,
    )  # fmt: skip
    rows = [envelope_rows(decode_envelope(e.encode()), Enricher(None)) for e in (v2, v3)]
    assert rows[0] == rows[1]
    assert orjson.loads(rows[1][0][COLUMNS.index("context")]) == shared
    assert rows[1][2][COLUMNS.index("context")] == "{}"  # an explicit null is not "absent"
