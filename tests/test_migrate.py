"""`headwater migrate` against real NATS and embedded ClickHouse, and the admin-token settings.

migrate runs in this process: the embedded engine opens one data directory per process, and this
process already holds it (a second client in the same process may open the same path).
"""

from __future__ import annotations

import asyncio

import click
import httpx
import pytest
from click.testing import CliRunner
from hw_testing import ADMIN_TOKEN, create_project

from headwater.control.query_grants import grant_statements
from headwater.control.settings import AdminToken
from headwater.core.migrations.ddl import on_cluster, system_table
from headwater.ops.cli import main
from headwater.ops.migrate import ProjectMigration, migrate_all
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.options import admin_tokens_from_env
from headwater.ops.runtime import Stack


def events_table_exists(stack: Stack, project_id: str) -> bool:
    assert stack.clickhouse is not None
    return bool(stack.clickhouse.command(f"EXISTS TABLE hw_{project_id}.events"))


def forget_migration_1(stack: Stack, project_id: str) -> None:
    """A database as if migration 1 had never run: no events table and no record of it."""
    assert stack.clickhouse is not None
    stack.clickhouse.command(f"DROP TABLE hw_{project_id}.events SYNC")
    # A mutation waited for: a lightweight DELETE may still show the row to the next SELECT.
    stack.clickhouse.command(
        f"ALTER TABLE hw_{project_id}.schema_migrations DELETE WHERE number = 1 SETTINGS mutations_sync = 2"
    )


@pytest.mark.services
async def test_migrate_applies_what_is_missing(
    make_stack,  # type: ignore[no-untyped-def]
    nats_server: NatsServerProcess,
    clickhouse_url: str,
    project_id: str,
    http: httpx.AsyncClient,
) -> None:
    stack: Stack = await make_stack(control=True)
    intact = f"{project_id}_ok"
    for new_id in (project_id, intact):
        await create_project(http, stack, new_id)
    forget_migration_1(stack, project_id)
    assert not events_table_exists(stack, project_id)

    lines: list[str] = []
    dry = await migrate_all(nats_server.url, clickhouse_url, dry_run=True, report=lines.append)
    assert dry.projects == [ProjectMigration(project_id, ("0001_events",)), ProjectMigration(intact)]
    assert lines == [f"{project_id}: would apply 0001_events", f"{intact}: up to date"]
    assert not events_table_exists(stack, project_id), "a dry run changed the database"

    args = ["migrate", "--nats-url", nats_server.url, "--clickhouse-url", clickhouse_url]
    # The command runs its own event loop: in a thread, so this test's loop keeps running.
    result = await asyncio.to_thread(CliRunner().invoke, main, args, env={"HEADWATER_CLICKHOUSE_CLUSTER": ""})
    assert result.exit_code == 0, result.output
    assert f"{project_id}: applied 0001_events" in result.output
    assert "2 project(s): 1 migrated, 1 up to date, 0 failed" in result.output
    assert events_table_exists(stack, project_id)

    again = await migrate_all(nats_server.url, clickhouse_url, report=lines.append)
    assert [p.migrations for p in again.projects] == [(), ()]


@pytest.mark.services
async def test_a_failing_project_does_not_stop_the_others(
    make_stack,  # type: ignore[no-untyped-def]
    nats_server: NatsServerProcess,
    clickhouse_url: str,
    project_id: str,
    http: httpx.AsyncClient,
) -> None:
    stack: Stack = await make_stack(control=True)
    await create_project(http, stack, project_id)
    forget_migration_1(stack, project_id)
    # A KV entry whose key is no valid project id cannot name a database: that project fails.
    assert stack.nats is not None
    kv = await stack.nats.jetstream().key_value("HW_PROJECTS")
    await kv.put("Not-A-Project", b"{}")

    args = ["migrate", "--nats-url", nats_server.url, "--clickhouse-url", clickhouse_url]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 1, result.output
    assert "Not-A-Project: FAILED: APIError: id must match" in result.output
    assert f"{project_id}: applied 0001_events" in result.output
    assert "1 project(s) failed: Not-A-Project" in result.output
    assert events_table_exists(stack, project_id)


def test_migrate_needs_nats_and_clickhouse() -> None:
    result = CliRunner().invoke(
        main, ["migrate", "--clickhouse-url", "chdb:///nowhere"], env={"HEADWATER_NATS_URL": ""}
    )
    assert result.exit_code == 2
    assert "--nats-url" in result.output


@pytest.mark.parametrize("name", ["c1`, system.one) --", "two words", "x;DROP", "-dash-first", "a" * 129])
def test_a_cluster_name_that_is_not_a_plain_name_is_refused_before_any_sql(name: str) -> None:
    """The cluster's name is spliced into DDL as an identifier: the option refuses anything else,
    and so do the helpers that splice it."""
    result = CliRunner().invoke(
        main,
        [
            "migrate",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--clickhouse-url",
            "chdb:///nowhere",
            "--on-cluster",
            name,
        ],
    )
    assert result.exit_code == 2
    assert "--on-cluster" in result.output and "cluster's name" in result.output
    for splice in (on_cluster, lambda cluster: system_table("parts", cluster)):
        with pytest.raises(ValueError, match="cluster's name"):
            splice(name)
    assert on_cluster("hw.cluster-1_a") == " ON CLUSTER `hw.cluster-1_a`"
    assert grant_statements("p1", "reader", "hw.cluster-1_a")[0].endswith(" ON CLUSTER `hw.cluster-1_a`")


# -- admin tokens ---------------------------------------------------------------------------------


def test_named_admin_tokens_join_the_default_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("HEADWATER_ADMIN_TOKENS", " ci:" + "c" * 20 + " , backoffice:" + "b:" * 10 + ",")
    assert admin_tokens_from_env() == (
        AdminToken("default", ADMIN_TOKEN),
        AdminToken("ci", "c" * 20),
        AdminToken("backoffice", "b:" * 10),  # the token is everything after the first ':'
    )
    monkeypatch.delenv("HEADWATER_ADMIN_TOKEN")
    assert [t.name for t in admin_tokens_from_env()] == ["ci", "backoffice"]
    assert [t.name for t in admin_tokens_from_env(fallback="f" * 16)] == ["default", "ci", "backoffice"]


@pytest.mark.parametrize(
    ("value", "index"),
    [
        ("ci:" + "c" * 20 + ",justatokenwithoutaname", 1),
        ("ci:" + "c" * 20 + ",,:" + "t" * 20, 2),
        ("bad name:" + "t" * 20, 0),
        ("ci:", 0),
        ("ci:" + "c" * 20 + ",ops:short", 1),
        ("ci:" + "c" * 20 + ",ci:" + "d" * 20, 1),
        ("ci:" + "c" * 20 + ",ops:" + "c" * 20, 1),
    ],
)
def test_a_malformed_admin_token_entry_is_named_by_index_not_echoed(
    monkeypatch: pytest.MonkeyPatch, value: str, index: int
) -> None:
    monkeypatch.delenv("HEADWATER_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("HEADWATER_ADMIN_TOKENS", value)
    with pytest.raises(click.UsageError) as raised:
        admin_tokens_from_env()
    message = raised.value.format_message()
    assert f"HEADWATER_ADMIN_TOKENS[{index}]" in message
    for secret in ("c" * 16, "d" * 16, "t" * 16, "justatoken", "short"):
        assert secret not in message


def test_the_default_name_cannot_be_taken_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("HEADWATER_ADMIN_TOKENS", "default:" + "d" * 20)
    with pytest.raises(click.UsageError, match="default"):
        admin_tokens_from_env()


@pytest.mark.services
async def test_the_control_plane_migrates_every_project_when_it_starts(
    make_stack,  # type: ignore[no-untyped-def]
    project_id: str,
    http: httpx.AsyncClient,
) -> None:
    first: Stack = await make_stack(control=True)
    await create_project(http, first, project_id)
    forget_migration_1(first, project_id)
    # A second control plane starting (a restart, or a new version) brings the schema up to date.
    second: Stack = await make_stack(control=True)
    assert events_table_exists(second, project_id)
