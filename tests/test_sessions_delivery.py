"""However the same events arrive, the sessions are the same: the golden fixture's events
(tests/sessions_golden.py) sent through the edge once; every request sent twice (a client
retrying); shuffled and split over many small requests consumed by two consumers; and sent once,
then replayed from the stream (what `headwater replay` runs) so that every event is stored again.
Each way into a project of its own, one stack, the sessionizer role running: the four sessions
tables are identical, every column."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from hw_sessions import (
    post_batch,
    quick_sessionizer,
    send_events,
    sessionized_through_last_insert,
    table,
    wait_stored,
)
from hw_testing import StackFactory, create_project
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sessions_golden import EVENTS, LATENESS_SECONDS, SESSIONS

from headwater.consumers.enrich import Enricher
from headwater.consumers.replay import ClickHouseSink, Replay, ReplayWindow
from headwater.core.projects.settings import ProjectSettings

pytestmark = pytest.mark.services

BATCH = 50


async def test_once_twice_shuffled_over_two_consumers_and_replayed_give_the_same_sessions(
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    clickhouse_url: str,
    js: JetStreamContext,
    nats_client: NatsClient,
) -> None:
    stack = await make_stack(
        edge=True, control=True, consumer=True, sessionizer=quick_sessionizer(clickhouse_url)
    )
    await make_stack(consumer=True)  # a second consumer: the two share the stream's messages
    body = {"settings": {"sessions": {"lateness_seconds": LATENESS_SECONDS}}}
    ways = ("once", "twice", "shuffled", "replayed")
    keys = {
        way: str((await create_project(http, stack, f"{project_id}_{way}", **body))["secret_key"])
        for way in ways
    }
    batches = [EVENTS[start : start + BATCH] for start in range(0, len(EVENTS), BATCH)]
    message_ids = [event["messageId"] for event in EVENTS]

    for batch in batches:
        await send_events(http, stack, keys["once"], f"{project_id}_once", batch)
        await send_events(http, stack, keys["replayed"], f"{project_id}_replayed", batch)
    for batch in batches:
        for _ in range(2):
            await post_batch(http, stack, keys["twice"], batch)
    shuffled = random.Random(19).sample(EVENTS, len(EVENTS))
    small: list[list[dict[str, Any]]] = []
    sizes = random.Random(20)
    while shuffled:
        size = sizes.randint(1, 5)
        small.append(shuffled[:size])
        shuffled = shuffled[size:]
    await asyncio.gather(*(post_batch(http, stack, keys["shuffled"], batch) for batch in small))
    for way in ("twice", "shuffled"):
        await wait_stored(stack, f"{project_id}_{way}", message_ids)

    assert stack.clickhouse is not None
    clickhouse = stack.clickhouse
    # Everything the edge took for the replayed project, stored a second time from the stream.
    replay = Replay(
        nats_client,
        ReplayWindow(f"{project_id}_replayed"),
        ClickHouseSink(clickhouse),
        Enricher(None),
        settings_of=lambda _project: ProjectSettings(),
    )
    last_insert = f"SELECT max(inserted_at) FROM hw_{project_id}_replayed.events"
    before = clickhouse.query(last_insert).result_rows[0][0]
    progress = await replay.run()
    assert progress.events == len(EVENTS)
    # Stored again (whichever copy a merge keeps, the newest is the replay's).
    assert clickhouse.query(last_insert).result_rows[0][0] > before

    tables = {}
    for way in ways:
        await sessionized_through_last_insert(clickhouse, js, f"{project_id}_{way}")
        tables[way] = await table(clickhouse, f"{project_id}_{way}")
    assert len(tables["once"]) == len(SESSIONS)
    for way in ways[1:]:
        assert tables[way] == tables["once"], way
