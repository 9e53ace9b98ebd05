"""The official Segment Python library (`segment-analytics-python`) against the real edge: all six
call types, sent with a project's secret key and gzip, end up as rows in ClickHouse.

The stack serves on this test's event loop and the library blocks (requests), so every library
call goes through `asyncio.to_thread`: the loop keeps serving while the library waits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hw_testing import create_project, eventually, query_rows
from segment.analytics import Client as SegmentClient  # type: ignore[import-untyped]
from segment.analytics.version import VERSION as LIBRARY_VERSION  # type: ignore[import-untyped]

from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

LIBRARY_NAME = "analytics-python"
# Name in the test → expression in the SELECT (timestamps as integer milliseconds since the epoch).
COLUMNS = {
    **{name: name for name in ("message_id", "type", "event", "user_id", "anonymous_id", "group_id")},
    **{name: name for name in ("previous_id", "properties", "traits", "context", "user_agent")},
    "timestamp": "toUnixTimestamp64Milli(timestamp)",
    "received_at": "toUnixTimestamp64Milli(received_at)",
}
Message = dict[str, Any]


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = await make_stack(edge=True, control=True, consumer=True)
    return stack


@pytest.fixture
async def secret_key(stack: Stack, http: httpx.AsyncClient, project_id: str) -> str:
    return str((await create_project(http, stack, project_id, name="Segment library"))["secret_key"])


def six_calls(client: SegmentClient) -> list[Callable[[], tuple[bool, Message]]]:
    """One call of each type, as an application would make them."""
    return [
        lambda: client.track(
            user_id="user-42",
            event="Order Completed",
            properties={"total": 42.5, "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}]},
            context={"locale": "de-DE"},
        ),
        lambda: client.page(
            anonymous_id="anon-9", category="Docs", name="Pricing", properties={"path": "/pricing"}
        ),
        lambda: client.screen(user_id="user-42", name="Home", properties={"variant": "b"}),
        lambda: client.identify(user_id="user-42", traits={"email": "ada@example.com", "plan": "pro"}),
        lambda: client.group(user_id="user-42", group_id="org-7", traits={"name": "Acme", "seats": 12}),
        lambda: client.alias(previous_id="anon-9", user_id="user-42"),
    ]


async def send_six(client: SegmentClient) -> list[Message]:
    """The messages as the library built them (with the messageId and timestamp it generated)."""
    sent: list[Message] = []
    for call in six_calls(client):
        ok, message = await asyncio.to_thread(call)
        assert ok, message
        sent.append(message)
    return sent


async def stored_rows(
    http: httpx.AsyncClient, stack: Stack, project_id: str, expected: int
) -> dict[str, dict[str, Any]]:
    sql = f"SELECT {', '.join(COLUMNS.values())} FROM events"
    rows = await eventually(
        lambda: query_rows(http, stack, project_id, sql),
        lambda rows: len(rows) >= expected,
        timeout=15,
        interval=0.2,
    )
    assert len(rows) == expected, rows
    records = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    return {record["type"]: record for record in records}


def check_rows(by_type: dict[str, dict[str, Any]], sent: list[Message], started_ms: int) -> None:
    assert set(by_type) == {"track", "page", "screen", "identify", "group", "alias"}
    # messageId: the library's own, one per call, unchanged by the edge.
    assert len({m["messageId"] for m in sent}) == 6
    for message in sent:
        row = by_type[message["type"]]
        assert row["message_id"] == message["messageId"], message["type"]
        context = json.loads(row["context"])
        assert context["library"] == {"name": LIBRARY_NAME, "version": LIBRARY_VERSION}, message["type"]
        assert row["user_agent"] == f"{LIBRARY_NAME}/{LIBRARY_VERSION}"
        # The library stamps `timestamp` and the batch's `sentAt` from this machine's clock; after
        # the edge's skew correction (receivedAt - (sentAt - timestamp)) the event is at most a
        # few ms before it was received, and both are within a minute of the test.
        timestamp, received_at = row["timestamp"], row["received_at"]
        now_ms = int(time.time() * 1000)
        assert started_ms - 60_000 <= timestamp <= now_ms + 60_000, (message["type"], timestamp, now_ms)
        assert started_ms - 60_000 <= received_at <= now_ms + 60_000
        assert received_at - 60_000 <= timestamp <= received_at + 2, (message["type"], timestamp, received_at)

    track = by_type["track"]
    assert (track["event"], track["user_id"], track["anonymous_id"]) == ("Order Completed", "user-42", "")
    assert json.loads(track["properties"]) == {
        "total": 42.5,
        "currency": "EUR",
        "items": [{"sku": "A-1", "qty": 2}],
    }
    assert json.loads(track["traits"]) == {}
    assert json.loads(track["context"])["locale"] == "de-DE"

    page = by_type["page"]
    assert (page["event"], page["user_id"], page["anonymous_id"]) == ("Pricing", "", "anon-9")
    assert json.loads(page["properties"]) == {"path": "/pricing"}

    screen = by_type["screen"]
    assert (screen["event"], screen["user_id"]) == ("Home", "user-42")
    assert json.loads(screen["properties"]) == {"variant": "b"}

    identify = by_type["identify"]
    assert (identify["event"], identify["user_id"]) == ("", "user-42")
    assert json.loads(identify["traits"]) == {"email": "ada@example.com", "plan": "pro"}
    assert json.loads(identify["properties"]) == {}

    group = by_type["group"]
    assert (group["user_id"], group["group_id"]) == ("user-42", "org-7")
    assert json.loads(group["traits"]) == {"name": "Acme", "seats": 12}

    alias = by_type["alias"]
    assert (alias["user_id"], alias["previous_id"], alias["group_id"]) == ("user-42", "anon-9", "")


async def test_sync_mode_delivers_every_call_type(
    stack: Stack, http: httpx.AsyncClient, secret_key: str, project_id: str
) -> None:
    """sync_mode: each call is one gzipped POST /v1/batch, answered before the call returns. The
    library raises on a refused request (on_error serves its background thread only), so any
    error surfaces from the call itself; on_error is still wired to catch a stray report."""
    errors: list[tuple[Exception, object]] = []
    client = SegmentClient(
        write_key=secret_key,
        host=stack.edge_url,
        gzip=True,
        sync_mode=True,
        max_retries=0,
        timeout=10,
        on_error=lambda error, batch: errors.append((error, batch)),
    )
    started_ms = int(time.time() * 1000)
    sent = await send_six(client)
    await asyncio.to_thread(client.flush)
    assert errors == []
    check_rows(await stored_rows(http, stack, project_id, len(sent)), sent, started_ms)


async def test_threaded_mode_delivers_every_call_type(
    stack: Stack, http: httpx.AsyncClient, secret_key: str, project_id: str
) -> None:
    """The library's default mode: calls queue, its consumer thread sends them batched (gzip);
    failures are reported through on_error only, so an empty error list is the assertion."""
    errors: list[tuple[Exception, object]] = []
    client = SegmentClient(
        write_key=secret_key,
        host=stack.edge_url,
        gzip=True,
        max_retries=1,
        timeout=10,
        upload_interval=0.05,
        on_error=lambda error, batch: errors.append((error, batch)),
    )
    started_ms = int(time.time() * 1000)
    try:
        sent = await send_six(client)
        await asyncio.to_thread(client.flush)
    finally:
        await asyncio.to_thread(client.shutdown)
    assert errors == []
    check_rows(await stored_rows(http, stack, project_id, len(sent)), sent, started_ms)
