"""Imports through the control API into ClickHouse (docs/import.md), on real NATS and the embedded
engine: a control plane that checks and publishes batches, a consumer role whose import writer
stores them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN, StackFactory
from hw_testing import (
    BIN,
    admin_headers,
    cli_env,
    create_project,
    eventually,
    migrate_in_a_process,
    query_in_a_process,
    query_rows,
)
from nats.js.errors import NotFoundError

from headwater.consumers.settings import ConsumerSettings
from headwater.control.imports_schemas import ImportBatchRequest
from headwater.core.migrations import apply_migrations
from headwater.core.wire.subjects import IMPORTS_STREAM
from headwater.loaders.http import HttpImportLoader, ImportRefused
from headwater.ops.runtime import Stack

USERS = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"]},
        "signed_up_at": {"type": "string", "format": "date-time"},
        "org": {"type": ["object", "null"]},
    },
}


@pytest.fixture
async def stack(make_stack: StackFactory, http: httpx.AsyncClient, project_id: str) -> Stack:
    stack = await make_stack(control=True, consumer=True)
    await create_project(http, stack, project_id)
    return stack


def clickhouse_url_of(stack: Stack) -> str:
    assert stack.settings.clickhouse_url is not None
    return stack.settings.clickhouse_url


def loader(stack: Stack, project_id: str, **options: Any) -> HttpImportLoader:
    assert stack.control_url is not None
    return HttpImportLoader(stack.control_url, ADMIN_TOKEN, project_id, **options)


async def test_records_land_typed_and_a_resent_record_replaces(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    def send() -> None:
        target = loader(stack, project_id)
        target.declare("public-users", USERS, ["id"])
        target.add(
            "public-users", {"id": 1, "email": "a@example.com", "signed_up_at": "2026-01-02T03:04:05.5Z"}
        )
        target.add(
            "public-users",
            {"id": 2, "email": None, "signed_up_at": "2026-01-03T00:00:00+01:00", "org": {"n": 1}},
        )
        target.flush()
        target.add(
            "public-users", {"id": 1, "email": "b@example.com", "signed_up_at": "2026-01-02T03:04:05Z"}
        )
        target.close()

    await asyncio.to_thread(send)
    sql = "SELECT id, email, toString(signed_up_at), org FROM import_public_users FINAL ORDER BY id"
    rows = await eventually(
        lambda: query_rows(http, stack, project_id, sql), lambda rows: rows and rows[0][1] == "b@example.com"
    )
    assert rows == [
        [1, "b@example.com", "2026-01-02 03:04:05.000000", None],
        [2, None, "2026-01-02 23:00:00.000000", '{"n":1}'],
    ]
    clickhouse = stack.clickhouse
    assert clickhouse is not None
    described = await asyncio.to_thread(
        lambda: clickhouse.query(f"DESCRIBE TABLE hw_{project_id}.import_public_users").result_rows
    )
    assert [[row[0], row[1]] for row in described] == [
        ["_hw_sequence", "UInt64"],
        ["_hw_table_version", "UInt64"],
        ["id", "Int64"],
        ["email", "Nullable(String)"],
        ["signed_up_at", "DateTime64(6, 'UTC')"],
        ["org", "Nullable(String)"],
    ]


async def test_a_bad_record_is_refused_with_its_index_and_field(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    body = {
        "stream": "users",
        "schema": USERS,
        "key_properties": ["id"],
        "batch_id": "b-1",
        "records": [{"id": 1, "signed_up_at": "2026-01-01T00:00:00Z"}, {"id": "two", "signed_up_at": "x"}],
    }
    response = await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/imports/batches", json=body, headers=admin_headers()
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_record"
    assert response.json()["field"] == "records[1].id"

    def send_bad() -> None:
        target = loader(stack, project_id)
        target.declare("users", USERS, ["id"])
        target.add("users", {"id": 3, "signed_up_at": "not a time"})
        target.flush()

    with pytest.raises(ImportRefused) as refused:
        await asyncio.to_thread(send_bad)
    assert (refused.value.status, refused.value.field) == (400, "records[0].signed_up_at")


async def test_a_grown_schema_adds_columns_and_the_listing_shows_it(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    grown = {**USERS, "properties": {**USERS["properties"], "plan": {"type": ["string", "null"]}}}

    def send() -> None:
        target = loader(stack, project_id)
        target.declare("users", USERS, ["id"])
        target.add("users", {"id": 1, "signed_up_at": "2026-01-01T00:00:00Z"})
        target.declare("users", grown, ["id"])
        target.add("users", {"id": 2, "signed_up_at": "2026-01-01T00:00:00Z", "plan": "pro"})
        target.save_state({"bookmarks": {"users": {"replication_key_value": 2}}})
        target.close()

    await asyncio.to_thread(send)

    async def listing() -> dict[str, Any]:
        url = f"{stack.control_url}/v1/projects/{project_id}/imports"
        response = await http.get(url, headers=admin_headers())
        assert response.status_code == 200, response.text
        return dict(response.json())

    body = await eventually(listing, lambda body: body["tables"] and body["tables"][0]["rows"] == 2)
    assert body["state"] == {"bookmarks": {"users": {"replication_key_value": 2}}}
    [table] = body["tables"]
    assert (table["stream"], table["table"], table["rows"], table["schema_version"]) == (
        "users",
        "import_users",
        2,
        2,
    )
    assert table["key_properties"] == ["id"]
    assert table["columns"][-1] == {"name": "plan", "type": "Nullable(String)"}
    rows = await query_rows(http, stack, project_id, "SELECT id, plan FROM import_users FINAL ORDER BY id")
    assert rows == [[1, None], [2, "pro"]]


async def test_activate_version_removes_older_table_versions(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    def send() -> None:
        target = loader(stack, project_id)
        target.declare("orgs", USERS, ["id"])
        for version, ids in ((1, (1, 2, 3)), (2, (2, 3))):
            for i in ids:
                target.add("orgs", {"id": i, "signed_up_at": "2026-01-01T00:00:00Z"}, table_version=version)
            target.activate_version("orgs", version)
        target.close()

    await asyncio.to_thread(send)
    sql = "SELECT id, _hw_table_version FROM import_orgs FINAL ORDER BY id"
    rows = await eventually(
        lambda: query_rows(http, stack, project_id, sql), lambda rows: rows == [[2, 2], [3, 2]]
    )
    assert rows == [[2, 2], [3, 2]]


async def test_the_documented_example_batch_is_accepted(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    [example] = ImportBatchRequest.json_schema_extra["examples"]
    url = f"{stack.control_url}/v1/projects/{project_id}/imports/batches"
    first = await http.post(url, json=example, headers=admin_headers())
    again = await http.post(url, json=example, headers=admin_headers())
    assert first.status_code == 200, first.text
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)


async def test_the_writer_waits_out_a_clickhouse_failure_and_then_stores_the_batch(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    """A batch JetStream holds is retried, never dropped, while ClickHouse refuses it (here: the
    project's database is gone), and stored once ClickHouse takes it again."""
    settings = ConsumerSettings(clickhouse_url="", workers=0, retry_delay_seconds=0.1)
    control = await make_stack(control=True)
    await create_project(http, control, project_id)
    clickhouse = control.clickhouse
    assert clickhouse is not None
    await asyncio.to_thread(clickhouse.command, f"DROP DATABASE hw_{project_id} SYNC")
    consumer = await make_stack(consumer=replace(settings, clickhouse_url=clickhouse_url_of(control)))
    writer = consumer.import_writer
    assert writer is not None

    def send() -> None:
        target = loader(control, project_id)
        target.declare("users", USERS, ["id"])
        target.add("users", {"id": 1, "signed_up_at": "2026-01-01T00:00:00Z"})
        target.close()

    await asyncio.to_thread(send)  # acknowledged: durable in JetStream
    await eventually(lambda: asyncio.sleep(0, writer.retrying_since), lambda since: since is not None)
    assert writer.batches_written == 0 and "hw_" in (writer.last_error or "")

    await asyncio.to_thread(apply_migrations, clickhouse, f"hw_{project_id}")
    await eventually(
        lambda: asyncio.sleep(0, writer.batches_written), lambda written: written == 1, timeout=20
    )
    rows = await query_rows(http, control, project_id, "SELECT id FROM import_users FINAL")
    assert rows == [[1]] and writer.retrying_since is None


async def test_an_import_writer_killed_midway_loses_and_doubles_nothing(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> None:
    """Batches acknowledged to the loader are in JetStream: a consumer process (its import writer)
    SIGKILLed while writing them, then started again, stores every row once."""
    control = await make_stack(control=True)
    await create_project(http, control, project_id)
    assert control.nats is not None
    # The writer's own embedded ClickHouse: a process owns its data directory while it runs.
    url = f"chdb://{tmp_path / 'writer-clickhouse'}"
    await migrate_in_a_process(url, project_id)
    rows = 40_000

    def send() -> None:
        target = loader(control, project_id, max_rows=100)
        target.declare("users", USERS, ["id"])
        for number in range(rows):
            target.add("users", {"id": number, "signed_up_at": "2026-01-01T00:00:00Z"})
        target.close()

    await asyncio.to_thread(send)  # acknowledged: durable in JetStream
    js = control.nats.jetstream()

    async def acked() -> int:
        try:
            return int((await js.consumer_info(IMPORTS_STREAM, "hw-imports")).ack_floor.stream_seq)
        except NotFoundError:  # the writer has not created its durable yet
            return 0

    last = (await js.stream_info(IMPORTS_STREAM)).state.last_seq
    command = [
        str(BIN / "headwater"), "serve", "consumer", "--nats-url", control.settings.nats_url,
        "--clickhouse-url", url, "--ack-wait", "3",
    ]  # fmt: skip
    first = await asyncio.to_thread(subprocess.Popen, command, env=cli_env())
    try:
        await eventually(acked, lambda n: n > 0, timeout=60, interval=0.05)
    finally:
        first.send_signal(signal.SIGKILL)  # mid-import: some batches written, some not, some in flight
        await asyncio.to_thread(first.wait, 10)
    assert await acked() < last, "the writer finished before it could be killed"

    second = await asyncio.to_thread(subprocess.Popen, command, env=cli_env())
    try:
        await eventually(acked, lambda n: n >= last, timeout=120, interval=0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 30) == 0
    sql = "SELECT count(), uniqExact(id), min(id), max(id) FROM import_users FINAL"
    assert await query_in_a_process(url, project_id, sql) == [str(rows), str(rows), "0", str(rows - 1)]
