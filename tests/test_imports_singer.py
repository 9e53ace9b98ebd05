"""`headwater import singer` (the Singer target) against a control plane and a consumer role on
real NATS and the embedded engine: STATE comes out once the records before it are durable in
JetStream, whether or not a writer runs; a full re-run stores nothing twice."""

from __future__ import annotations

import json

import httpx
from conftest import ADMIN_TOKEN, StackFactory
from hw_testing import admin_headers, cli_env, create_project, eventually, run_cli

from headwater.core.wire.subjects import IMPORTS_STREAM, imports_project_subjects
from headwater.ops.runtime import Stack

SCHEMA = {
    "type": "SCHEMA",
    "stream": "public-orders",
    "key_properties": ["id"],
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "amount": {"type": ["number", "null"]},
            "placed_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
}


def tap_output(first: int, last: int, bookmark: int) -> str:
    lines = [SCHEMA]
    placed_at = "2026-03-01T10:00:00Z"
    lines += [
        {
            "type": "RECORD",
            "stream": "public-orders",
            "record": {"id": i, "amount": i * 1.5, "placed_at": placed_at},
        }
        for i in range(first, last + 1)
    ]
    lines.append({"type": "STATE", "value": {"bookmarks": {"public-orders": {"id": bookmark}}}})
    return "\n".join(json.dumps(line) for line in lines) + "\n"


async def rows_once_there(
    http: httpx.AsyncClient, stack: Stack, project_id: str, sql: str
) -> list[list[object]]:
    """The query's rows; none while the writer has not made the table yet."""
    response = await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/query", json={"sql": sql}, headers=admin_headers()
    )
    return list(response.json()["rows"]) if response.status_code == 200 else []


async def import_singer(stack: Stack, project_id: str, tap: str) -> list[dict[str, object]]:
    assert stack.control_url is not None
    env = cli_env() | {"HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    run = await run_cli(
        "import", "singer", "--project", project_id, "--control-url", stack.control_url, env=env, stdin=tap
    )
    assert run.code == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


async def test_state_comes_once_jetstream_has_the_records_and_the_rows_follow(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    control = await make_stack(control=True)  # no consumer role: nothing writes to ClickHouse yet
    await create_project(http, control, project_id)

    states = await import_singer(control, project_id, tap_output(1, 300, 300))

    assert states == [{"bookmarks": {"public-orders": {"id": 300}}}]
    assert control.nats is not None
    info = await control.nats.jetstream().stream_info(
        IMPORTS_STREAM, subjects_filter=imports_project_subjects(project_id)
    )
    assert sum((info.state.subjects or {}).values()) == 1  # the 300 records, durable before the STATE

    await make_stack(consumer=True)  # the writer comes: the rows follow
    sql = "SELECT count(), sum(id), round(sum(amount), 1) FROM import_public_orders FINAL"

    rows = await eventually(
        lambda: rows_once_there(http, control, project_id, sql),
        lambda rows: rows == [[300, 45150, 67725.0]],
        timeout=20,
    )
    assert rows == [[300, 45150, 67725.0]]


async def test_a_full_rerun_and_an_update_store_nothing_twice(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(control=True, consumer=True)
    await create_project(http, stack, project_id)
    await import_singer(stack, project_id, tap_output(1, 50, 50))
    await import_singer(stack, project_id, tap_output(1, 50, 50))  # the same run again
    changed = tap_output(40, 60, 60).replace('"amount": 60.0', '"amount": -1')  # id 40..60: one updated
    await import_singer(stack, project_id, changed)
    sql = "SELECT count(), countIf(amount < 0), sum(id) FROM import_public_orders FINAL"
    rows = await eventually(
        lambda: rows_once_there(http, stack, project_id, sql),
        lambda rows: rows == [[60, 1, 1830]],
        timeout=20,
    )
    assert rows == [[60, 1, 1830]]
