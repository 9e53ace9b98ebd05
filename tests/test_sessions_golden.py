"""The golden fixture (tests/sessions_golden.py: 53 sessions worked out by hand) sent through the
edge, stored by the consumer and sessionized by the sessionizer role, on real NATS and the
embedded ClickHouse: the sessions table matches it column by column."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hw_sessions import (
    SESSION_COLUMN_NAMES,
    quick_sessionizer,
    send_events,
    sessionized_through_last_insert,
    table,
)
from hw_testing import StackFactory, create_project
from nats.js import JetStreamContext
from sessions_golden import EVENTS, LATENESS_SECONDS, SENT_AGAIN, SESSIONS

pytestmark = pytest.mark.services

BATCH = 50


def comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, float):
        return round(value, 3)
    return value


def test_the_fixture_is_what_the_issue_asks_for() -> None:
    assert len(SESSIONS) >= 50
    assert len({expected.identity for expected in SESSIONS}) >= 8
    ids = [(expected.identity, expected.first) for expected in SESSIONS]
    assert len(set(ids)) == len(ids)


async def test_the_golden_sessions_match_column_by_column(
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    clickhouse_url: str,
    js: JetStreamContext,
) -> None:
    stack = await make_stack(
        edge=True, control=True, consumer=True, sessionizer=quick_sessionizer(clickhouse_url)
    )
    settings_body = {"sessions": {"lateness_seconds": LATENESS_SECONDS}}
    key = str((await create_project(http, stack, project_id, settings=settings_body))["secret_key"])
    for start in range(0, len(EVENTS), BATCH):
        await send_events(http, stack, key, project_id, EVENTS[start : start + BATCH])
    await send_events(http, stack, key, project_id, SENT_AGAIN)  # a retried request
    assert stack.clickhouse is not None
    await sessionized_through_last_insert(stack.clickhouse, js, project_id)

    stored = [
        dict(zip(SESSION_COLUMN_NAMES, row, strict=True)) for row in await table(stack.clickhouse, project_id)
    ]
    expected = sorted((session.row() for session in SESSIONS), key=lambda r: (r["identity"], r["started_at"]))
    assert [(r["identity"], comparable(r["started_at"])) for r in stored] == [
        (r["identity"], r["started_at"]) for r in expected
    ]
    mismatches = [
        f"{want['identity']} {want['started_at']:%H:%M:%S}: {column} is {comparable(got[column])!r}, "
        f"expected {want[column]!r}"
        for got, want in zip(stored, expected, strict=True)
        for column in SESSION_COLUMN_NAMES
        if comparable(got[column]) != want[column]
    ]
    assert not mismatches, "\n".join(mismatches)
