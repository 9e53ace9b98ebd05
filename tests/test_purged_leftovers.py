"""A purged project's messages that surface later (from an edge's spool, or in flight during the
purge) are discarded and counted: not retried forever against its dropped database, not
dead-lettered into a purged subject, and not stored in a project created again with its id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from hw_testing import admin_headers, create_project, eventually, track_event

from headwater.core.projects.project import iso, utc_now
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import DLQ_STREAM, MSG_ID_HEADER, events_subject
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services


async def test_a_purged_projects_leftovers_are_discarded_and_not_resurrected(
    make_stack: Callable[..., Awaitable[Stack]], http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(control=True, consumer=True)
    other = project_id + "_other"
    await create_project(http, stack, project_id)
    await create_project(http, stack, other)
    purged = await http.request(
        "DELETE",
        f"{stack.control_url}/v1/projects/{project_id}?purge=true",
        json={"confirm": project_id},
        headers=admin_headers(),
    )
    assert purged.status_code == 200, purged.text
    assert stack.nats is not None and stack.clickhouse is not None and stack.consumer is not None
    js = stack.nats.jetstream()
    consumer, clickhouse = stack.consumer, stack.clickhouse

    async def send(project: str, request_id: str, received_ago: timedelta) -> None:
        event = {**track_event(messageId=request_id), "type": "track"}
        body = Envelope(project, request_id, iso(utc_now() - received_ago), [event]).encode()
        await js.publish(events_subject(project), body, headers={MSG_ID_HEADER: request_id})

    # Accepted by an edge before the purge, drained from its spool after it.
    await send(project_id, "spooled-before-purge", timedelta(minutes=1))
    await send(other, "other-project", timedelta(0))

    async def stored(project: str) -> int:
        sql = f"SELECT count() FROM hw_{project}.events"
        return int(clickhouse.query(sql).result_rows[0][0])

    assert await eventually(lambda: stored(other), lambda n: n == 1, timeout=15) == 1  # not held up

    async def discarded() -> int:
        return int(consumer.leftovers_discarded)

    assert await eventually(discarded, lambda n: n == 1, timeout=10) == 1

    # Created again with the same id: an old spool's envelope does not land in it; new events do.
    await create_project(http, stack, project_id)
    await send(project_id, "spooled-long-ago", timedelta(hours=1))
    await send(project_id, "new", timedelta(0))
    assert await eventually(lambda: stored(project_id), lambda n: n == 1, timeout=15) == 1
    assert await eventually(discarded, lambda n: n == 2, timeout=10) == 2
    ids = clickhouse.query(f"SELECT message_id FROM hw_{project_id}.events").result_rows
    assert ids == [("new",)]
    assert consumer.dead_lettered == 0
    assert (await js.stream_info(DLQ_STREAM)).state.messages == 0
