"""The host application's PostgreSQL imported through PyPI's meltanolabs-tap-postgres piped into
target-headwater, against a real stack (JetStream, the import consumer, embedded ClickHouse).

One scenario, at two sizes (the issue's 10k organisations and 100k users, marked slow; and a small
variant): a full import whose row counts and per-column checksums equal the source's; an
incremental run from the first run's last state, after rows were inserted and updated, that hands
the target exactly the changes and leaves the tables equal to the source again; a run killed
midway (target and tap SIGKILLed after half of the changed rows) resumed from the last state the
target released, after which nothing is missing and nothing doubled; and the issue's join —
users in organisations of more than 500 people who signed up in the last 90 days, with the events
the edge received from them — answered by the control API's query endpoint.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_testing import ADMIN_TOKEN, StackFactory, basic_auth, create_project, eventually, query_rows
from postgres import PostgresDatabase
from postgres_source import (
    REPLICATION_KEY,
    TABLES,
    TAP_STREAMS,
    SourceSize,
    TableChecksum,
    checksum_from_row,
    clickhouse_checksum_sql,
    prepare_tap,
    read_messages,
    run_tap_to_file,
    seed,
    source_checksum,
    source_columns,
    tap_command,
)
from singer_pipeline import TARGET, PipelineRun, run_pipeline, write_state, write_target_config

from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

SMALL = SourceSize(organisations=100, users=2_000, big=2)
# The issue's: 10,000 organisations and 100,000 users, twenty organisations of 600 people.
ISSUE_SIZE = SourceSize(organisations=10_000, users=100_000, big=20)
STREAM_OF_TABLE = {table: stream for stream, table in TAP_STREAMS.items()}
STORED_SECONDS = 180.0  # the consumer's writes after the target's last state (a timeout, not a measure)


def test_tap_postgres_emits_every_row_and_a_bookmark(
    postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    """What the pipeline starts from: the tap, with the incremental catalog, hands out every row
    of both tables under the aliased stream names, keyed by id, and ends on a state whose bookmarks
    are the tables' greatest updated_at."""
    seed(postgres_database, SMALL)
    files = prepare_tap(postgres_database, tmp_path)
    out = tmp_path / "messages.jsonl"
    run_tap_to_file(files, out)
    messages = read_messages(out)

    schemas = {m["stream"]: m for m in messages if m["type"] == "SCHEMA"}
    assert sorted(schemas) == sorted(TABLES)
    assert all(m["key_properties"] == ["id"] for m in schemas.values())
    assert all(m["bookmark_properties"] == [REPLICATION_KEY] for m in schemas.values())
    for table in TABLES:
        ids = [m["record"]["id"] for m in messages if m["type"] == "RECORD" and m["stream"] == table]
        assert len(ids) == len(set(ids)) == source_checksum(postgres_database, table).rows
    bookmarks = next(m for m in reversed(messages) if m["type"] == "STATE")["value"]["bookmarks"]
    for table in TABLES:
        (greatest,) = postgres_database.execute(
            f"SELECT max(updated_at) = %s::timestamptz FROM {table}",
            (bookmarks[STREAM_OF_TABLE[table]]["replication_key_value"],),
        )[0]
        assert greatest is True


def _require_target() -> None:
    if not Path(TARGET).exists():
        message = f"{TARGET} is missing: it is installed with headwater (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def _clickhouse(stack: Stack, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
    client = stack.clickhouse
    assert client is not None
    return list(await asyncio.to_thread(lambda: client.query(sql, parameters=parameters).result_rows))


async def _imported_checksum(
    stack: Stack, project_id: str, table: str, source: dict[str, str]
) -> TableChecksum:
    types = await _clickhouse(
        stack,
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {table:String}",
        {"db": f"hw_{project_id}", "table": f"import_{table}"},
    )
    sql = clickhouse_checksum_sql(f"hw_{project_id}.import_{table}", source, {n: t for n, t in types})
    (row,) = await _clickhouse(stack, sql)
    return checksum_from_row(list(source), row)


async def _table_exists(stack: Stack, project_id: str, table: str) -> bool:
    (row,) = await _clickhouse(
        stack,
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {table:String}",
        {"db": f"hw_{project_id}", "table": f"import_{table}"},
    )
    return bool(row[0])


async def _assert_tables_equal_source(stack: Stack, project_id: str, database: PostgresDatabase) -> None:
    """Every imported table comes to hold the source's rows (read FINAL: a re-sent row counts once)
    and, column by column, the source's values. The consumer writes what the target sent after
    JetStream acknowledged it, so the comparison is repeated until it holds or time is up."""
    for table in TABLES:
        source = await asyncio.to_thread(source_checksum, database, table)
        columns = await asyncio.to_thread(source_columns, database, table)
        deadline = time.monotonic() + STORED_SECONDS
        while True:
            imported = None
            if await _table_exists(stack, project_id, table):
                imported = await _imported_checksum(stack, project_id, table, columns)
            if imported == source or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert imported is not None, f"import_{table} was never created"
        assert imported.rows == source.rows, f"import_{table}: {imported.rows} rows, the source {source.rows}"
        differing = {
            c: (imported.columns[c], v) for c, v in source.columns.items() if imported.columns[c] != v
        }
        assert not differing, (
            f"import_{table}: columns whose (values, checksum) differ from the source: {differing}"
        )


def _bookmark(state: dict[str, Any] | None, table: str) -> str:
    assert state is not None, "the target released no state"
    return str(state["bookmarks"][STREAM_OF_TABLE[table]]["replication_key_value"])


def _change_rows(
    database: PostgresDatabase, update_every: int, new_users: int, new_organisations: int
) -> dict[str, set[int]]:
    """Updates one row in `update_every` of each table (NULLs among the new values) and inserts
    rows; updated_at moves past every earlier value. The ids changed, per table."""
    changed: dict[str, set[int]] = {}
    (max_org,), (max_user,) = (database.execute(f"SELECT max(id) FROM {t}")[0] for t in TABLES)
    organisations = database.execute(
        "UPDATE organisations SET plan = CASE WHEN mod(id, 2) = 0 THEN NULL ELSE 'enterprise' END,"
        " seats = seats + 1, mrr = 999.99, settings = '{\"tier\": 9}', updated_at = clock_timestamp()"
        " WHERE mod(id, %s) = 1 RETURNING id",
        (update_every,),
    )
    organisations += database.execute(
        "INSERT INTO organisations SELECT id, 'New org ' || id, 'team', 3, 10.5, true, NULL, NULL,"
        " clock_timestamp(), clock_timestamp() FROM generate_series(%s::int, %s::int) AS id RETURNING id",
        (max_org + 1, max_org + new_organisations),
    )
    changed["organisations"] = {int(row[0]) for row in organisations}
    users = database.execute(
        "UPDATE users SET login_count = login_count + 1000,"
        " full_name = CASE WHEN mod(id, 2) = 0 THEN NULL ELSE 'Renamed ' || id END,"
        " lifetime_value = CASE WHEN mod(id, 3) = 0 THEN NULL ELSE 12345.6789 END,"
        ' preferences = \'{"lang": "xx", "tabs": []}\', is_admin = NOT is_admin,'
        " updated_at = clock_timestamp() WHERE mod(id, %s) = 1 RETURNING id",
        (update_every,),
    )
    # New people of the first (big) organisation who signed up a day and a half ago.
    users += database.execute(
        "INSERT INTO users SELECT id, 1, 'new' || id || '@example.org', 'New ' || id, false, 0, 1.5, NULL,"
        " ((date_trunc('second', now()) - interval '36 hours') AT TIME ZONE 'UTC')::date,"
        " date_trunc('second', now()) - interval '36 hours', NULL, clock_timestamp()"
        " FROM generate_series(%s::bigint, %s::bigint) AS id RETURNING id",
        (max_user + 1, max_user + new_users),
    )
    changed["users"] = {int(row[0]) for row in users}
    return changed


def _assert_handed_only_changes(
    database: PostgresDatabase,
    run: PipelineRun,
    changed: dict[str, set[int]],
    previous: dict[str, Any] | None,
) -> None:
    """The incremental run handed the target every changed row, and besides them at most the rows
    at the previous bookmark itself (Singer's replication key is inclusive: `>=` the bookmark)."""
    for table in TABLES:
        handed = run.keys[table]
        assert changed[table] <= handed, (
            f"{table}: changes not handed over: {sorted(changed[table] - handed)[:10]}"
        )
        at_bookmark = {
            int(row[0])
            for row in database.execute(
                f"SELECT id FROM {table} WHERE updated_at = %s::timestamptz", (_bookmark(previous, table),)
            )
        }
        assert handed - changed[table] <= at_bookmark, f"{table}: unchanged rows handed over again"
        assert run.records[table] == len(handed), f"{table}: a row handed twice in one run"


JOIN_SQL = """
SELECT u.id AS user_id, o.name AS organisation, count() AS reports
FROM import_users AS u FINAL
INNER JOIN import_organisations AS o FINAL ON o.id = u.organisation_id
INNER JOIN events AS e FINAL ON e.user_id = toString(u.id)
WHERE u.organisation_id IN (
        SELECT organisation_id FROM import_users FINAL GROUP BY organisation_id HAVING count() > 500)
  AND u.signed_up_at >= now() - INTERVAL 90 DAY
  AND e.event = 'Report Created'
GROUP BY user_id, organisation
ORDER BY user_id
"""


def _people_for_the_join(database: PostgresDatabase, size: SourceSize) -> dict[str, list[int]]:
    """Users of each kind the join must tell apart, three of each."""

    def three(condition: str) -> list[int]:
        rows = database.execute(f"SELECT id FROM users WHERE {condition} ORDER BY id LIMIT 3")
        assert len(rows) == 3, condition
        return [int(row[0]) for row in rows]

    big = ", ".join(str(o) for o in size.big_organisations)
    recent, old = "signed_up_at >= now() - interval '90 days'", "signed_up_at < now() - interval '90 days'"
    return {
        "recent_in_big": three(f"organisation_id IN ({big}) AND {recent}"),
        "old_in_big": three(f"organisation_id IN ({big}) AND {old}"),
        "recent_in_500": three(f"organisation_id = {size.boundary_organisation} AND {recent}"),
        "recent_in_small": three(f"organisation_id > {size.boundary_organisation} AND {recent}"),
    }


async def _check_the_join(
    http: httpx.AsyncClient,
    stack: Stack,
    project_id: str,
    secret_key: str,
    database: PostgresDatabase,
    size: SourceSize,
) -> None:
    people = await asyncio.to_thread(_people_for_the_join, database, size)
    sent: dict[int, int] = {}
    batch = []
    for ids in people.values():
        for n, user_id in enumerate(ids):
            sent[user_id] = 1 + n  # 1, 2 and 3 reports
            batch += [
                {
                    "type": "track",
                    "event": "Report Created",
                    "userId": str(user_id),
                    "messageId": uuid.uuid4().hex,
                }
                for _ in range(sent[user_id])
            ]
            batch.append(
                {
                    "type": "track",
                    "event": "Page Viewed",
                    "userId": str(user_id),
                    "messageId": uuid.uuid4().hex,
                }
            )
    response = await http.post(
        f"{stack.edge_url}/v1/batch", json={"batch": batch}, headers=basic_auth(secret_key)
    )
    assert response.status_code == 200, response.text

    # What PostgreSQL itself says of the people who were sent events.
    qualifying = {
        int(row[0]): str(row[1])
        for row in await asyncio.to_thread(
            database.execute,
            "SELECT u.id, o.name FROM users u JOIN organisations o ON o.id = u.organisation_id"
            " WHERE u.organisation_id IN (SELECT organisation_id FROM users GROUP BY organisation_id"
            " HAVING count(*) > 500) AND u.signed_up_at >= now() - interval '90 days' AND u.id = ANY(%s)",
            (list(sent),),
        )
    }
    assert set(qualifying) == set(people["recent_in_big"])
    expected = [[user_id, qualifying[user_id], sent[user_id]] for user_id in sorted(qualifying)]

    async def answer() -> list[list[Any]]:
        rows = await query_rows(http, stack, project_id, JOIN_SQL)
        return [[int(user_id), organisation, int(reports)] for user_id, organisation, reports in rows]

    await eventually(answer, lambda rows: rows == expected, timeout=60, interval=0.5)


async def _scenario(
    size: SourceSize,
    database: PostgresDatabase,
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    tmp_path: Path,
) -> None:
    _require_target()
    await asyncio.to_thread(seed, database, size)
    stack = await make_stack(edge=True, control=True, consumer=True)
    created = await create_project(http, stack, project_id)
    files = await asyncio.to_thread(prepare_tap, database, tmp_path)
    assert stack.control_url is not None
    target = {"control_url": stack.control_url, "token": ADMIN_TOKEN, "project": project_id}
    config = write_target_config(tmp_path, "target", **target)
    # The run to be killed releases a state at every STATE of the tap (every 10,000 records).
    eager_config = write_target_config(tmp_path, "target-eager", **target, state_interval_seconds=0)
    logs = tmp_path / "logs"

    # A full import: every row, every column.
    first = await run_pipeline(tap_command(files), config, logs)
    assert dict(first.records) == {"organisations": size.organisations, "users": size.users}
    for table in TABLES:
        assert _bookmark(first.last_state, table)
    await _assert_tables_equal_source(stack, project_id, database)

    # An incremental run from the first run's last state brings exactly the changes.
    changed = await asyncio.to_thread(_change_rows, database, 50, 200, 5)
    second = await run_pipeline(
        tap_command(files, write_state(tmp_path, "first", first.last_state)), config, logs
    )
    _assert_handed_only_changes(database, second, changed, first.last_state)
    await _assert_tables_equal_source(stack, project_id, database)
    renamed = min(i for i in changed["users"] if i % 2 == 1 and i <= size.users)
    stored = await _clickhouse(
        stack,
        f"SELECT full_name, login_count FROM hw_{project_id}.import_users FINAL WHERE id = {{id:Int64}}",
        {"id": renamed},
    )
    (expected,) = database.execute("SELECT full_name, login_count FROM users WHERE id = %s", (renamed,))
    assert [tuple(row) for row in stored] == [expected]

    # Killed midway (the target and the tap, SIGKILL), resumed from the last state the target released.
    changed = await asyncio.to_thread(_change_rows, database, 3, size.users // 50, 20)
    halfway = (len(changed["organisations"]) + len(changed["users"])) // 2
    start = write_state(tmp_path, "second", second.last_state)
    killed = await run_pipeline(tap_command(files, start), eager_config, logs, kill_after_records=halfway)
    assert killed.killed
    resume_from = killed.last_state or second.last_state
    resumed = await run_pipeline(
        tap_command(files, write_state(tmp_path, "killed", resume_from)), config, logs
    )
    for table in TABLES:
        # What the killed run's released state did not cover comes again.
        assert changed[table] - killed.keys[table] <= resumed.keys[table], table
    await _assert_tables_equal_source(stack, project_id, database)

    await _check_the_join(http, stack, project_id, str(created["secret_key"]), database, size)


async def test_postgres_import_small(
    postgres_database: PostgresDatabase,
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    tmp_path: Path,
) -> None:
    """The scenario with 100 organisations (two of 600 people) and 2,000 users."""
    await _scenario(SMALL, postgres_database, make_stack, http, project_id, tmp_path)


@pytest.mark.slow
@pytest.mark.long
async def test_postgres_import_issue_size(
    postgres_database: PostgresDatabase,
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    tmp_path: Path,
) -> None:
    """The scenario at the issue's size: 10,000 organisations and 100,000 users."""
    await _scenario(ISSUE_SIZE, postgres_database, make_stack, http, project_id, tmp_path)
