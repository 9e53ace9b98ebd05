"""Helpers of the sessions tests that go through the edge: send events and wait until they are
stored, wait until the sessionizer has taken them, and read a project's sessions table."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from clickhouse_connect.driver.client import Client
from hw_testing import basic_auth, eventually
from nats.js import JetStreamContext

from headwater.core.migrations.m0003_sessions import SESSION_COLUMNS
from headwater.ops.runtime import Stack
from headwater.sessionizer.settings import SessionizerSettings
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket

SESSION_COLUMN_NAMES = tuple(name for name, _ in SESSION_COLUMNS)


def quick_sessionizer(clickhouse_url: str) -> SessionizerSettings:
    """A sessionizer for a test stack: a cycle every 0.2 s on what was inserted up to 1 s ago."""
    return SessionizerSettings(clickhouse_url, interval_seconds=0.2, settle_seconds=1.0, port=0)


async def send_events(
    http: httpx.AsyncClient, stack: Stack, key: str, project_id: str, events: Sequence[dict[str, Any]]
) -> None:
    """`events` through the edge in one batch request, then wait until the consumer stored all."""
    await post_batch(http, stack, key, events)
    await wait_stored(stack, project_id, [event["messageId"] for event in events])


async def post_batch(
    http: httpx.AsyncClient, stack: Stack, key: str, events: Sequence[dict[str, Any]]
) -> None:
    """`events` through the edge in one batch request, accepted."""
    response = await http.post(
        f"{stack.edge_url}/v1/batch", json={"batch": list(events)}, headers=basic_auth(key)
    )
    assert response.status_code == 200, response.text


async def wait_stored(stack: Stack, project_id: str, message_ids: Sequence[str]) -> None:
    """Wait until every one of `message_ids` is in the project's events table."""
    assert stack.clickhouse is not None
    clickhouse = stack.clickhouse
    ids = sorted(set(message_ids))

    async def stored() -> int:
        sql = (
            "SELECT uniqExact(message_id) FROM {db:Identifier}.events WHERE message_id IN {ids:Array(String)}"
        )
        parameters = {"db": f"hw_{project_id}", "ids": ids}
        return int((await asyncio.to_thread(clickhouse.query, sql, parameters=parameters)).result_rows[0][0])

    await eventually(stored, lambda n: n == len(ids), timeout=20)


async def table(clickhouse: Client, project_id: str) -> list[tuple[Any, ...]]:
    """The project's sessions (read with FINAL), every column, by identity and start."""
    names = ", ".join(SESSION_COLUMN_NAMES)
    sql = f"SELECT {names} FROM hw_{project_id}.sessions FINAL ORDER BY identity, started_at"
    return [tuple(row) for row in (await asyncio.to_thread(clickhouse.query, sql)).result_rows]


async def sessionized_through_last_insert(clickhouse: Client, js: JetStreamContext, project_id: str) -> None:
    """Wait until the project's watermark has passed its last inserted event."""
    sql = f"SELECT max(inserted_at) FROM hw_{project_id}.events"
    last = (await asyncio.to_thread(clickhouse.query, sql)).result_rows[0][0].replace(tzinfo=UTC)
    watermarks = Watermarks(await ensure_sessions_bucket(js))

    async def through() -> datetime:
        return (await watermarks.get(project_id)).inserted_through

    await eventually(through, lambda moment: moment >= last, timeout=60, interval=0.1)
