"""`POST /v1/projects/{id}/query` sees its own project's database only, cannot touch ingestion and
has limits; against a real control plane, NATS and the embedded ClickHouse."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from chstandin import ACCESS_DDL, StandIn
from hw_testing import admin_headers, basic_auth, create_project, eventually, query_rows, track_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.control.clickhouse import connect
from headwater.control.query import QueryLimits, ReadOnlyQueries
from headwater.control.query_grants import grant_statements, query_user
from headwater.control.settings import AdminToken, ControlSettings
from headwater.core.migrations import apply_migrations
from headwater.core.service.errors import APIError
from headwater.edge.streams import StreamSettings
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack, StackSettings

pytestmark = pytest.mark.services

OWN = "SELECT count() FROM events"


async def create(http: httpx.AsyncClient, stack: Stack, project_id: str) -> None:
    response = await http.post(
        f"{stack.control_url}/v1/projects", json={"id": project_id}, headers=admin_headers()
    )
    assert response.status_code == 201, response.text


async def post_sql(http: httpx.AsyncClient, stack: Stack, project_id: str, sql: str) -> httpx.Response:
    return await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/query", json={"sql": sql}, headers=admin_headers()
    )


@pytest.fixture
async def pair(make_stack, http: httpx.AsyncClient, project_id: str) -> tuple[Stack, str, str]:  # type: ignore[no-untyped-def]
    """A control plane with two projects; the victim's events table holds one row."""
    stack = await make_stack(control=True)
    victim = f"{project_id}_v"
    await create(http, stack, project_id)
    await create(http, stack, victim)
    assert stack.clickhouse is not None
    stack.clickhouse.command(f"INSERT INTO hw_{victim}.events (message_id, event) VALUES ('secret-row', 'x')")
    return stack, project_id, victim


async def test_own_database_is_readable(pair: tuple[Stack, str, str], http: httpx.AsyncClient) -> None:
    stack, project_id, _ = pair
    assert await query_rows(http, stack, project_id, OWN) == [[0]]
    cte = "WITH t AS (SELECT message_id FROM events) SELECT count() FROM t"
    assert await query_rows(http, stack, project_id, cte) == [[0]]
    qualified = f"SELECT count() FROM hw_{project_id}.events AS e JOIN events USING message_id"
    assert await query_rows(http, stack, project_id, qualified) == [[0]]
    assert await query_rows(http, stack, project_id, "SELECT sum(number) FROM numbers(10)") == [[45]]


BYPASSES = [
    "SELECT * FROM hw_{v}.events",
    "SELECT * FROM `hw_{v}`.`events`",
    'SELECT * FROM "hw_{v}"."events"',
    "SELECT * FROM hw_{v} . events",
    "SELECT * FROM /* own */ hw_{v}.events -- comment",
    "SELECT message_id FROM events UNION ALL SELECT message_id FROM hw_{v}.events",
    "SELECT * FROM (SELECT * FROM hw_{v}.events)",
    "SELECT * FROM events WHERE message_id IN (SELECT message_id FROM hw_{v}.events)",
    "SELECT 1 WHERE 'secret-row' IN hw_{v}.events",
    "SELECT * FROM events AS a JOIN hw_{v}.events AS b USING message_id",
    "WITH t AS (SELECT * FROM hw_{v}.events) SELECT * FROM t",
    "SELECT * FROM view(SELECT * FROM hw_{v}.events)",
    "SELECT * FROM merge('hw_{v}', '.*')",
    "SELECT * FROM merge(REGEXP('hw_.*'), 'events')",
    "SELECT * FROM remote('127.0.0.1', hw_{v}.events)",
    "SELECT * FROM remote('127.0.0.1', 'hw_{v}', 'events')",
    "SELECT * FROM cluster('default', hw_{v}.events)",
    "SELECT * FROM file('/etc/passwd', LineAsString)",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/', LineAsString)",
    "SELECT * FROM s3('http://127.0.0.1:1/x', LineAsString)",
    "SELECT * FROM executable('id', TSV, 'x String')",
    "SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')",
    "SELECT dictGet('hw_{v}.d', 'x', toUInt64(1))",
    "SELECT joinGet('hw_{v}.events', 'event', 'secret-row')",
    "SELECT hasColumnInTable('hw_{v}', 'events', 'event')",
    "SELECT name FROM system.databases",
    "SELECT * FROM system.tables",
    "SELECT * FROM system.settings",
    "SELECT * FROM system.processes",
    "SELECT * FROM INFORMATION_SCHEMA.TABLES",
    "SELECT * FROM information_schema.columns",
    "SELECT getSetting('max_memory_usage')",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_memory_usage = 0",
    "SELECT 1 INTO OUTFILE '/tmp/hw-query-outfile'",
    "SELECT 1 FORMAT JSON",
    "KILL QUERY WHERE query_kind = 'Insert' ASYNC",
    "KILL QUERY WHERE 1 SYNC",
    "KILL MUTATION WHERE 1",
    "SYSTEM STOP MERGES",
    "SYSTEM DROP DNS CACHE",
    "OPTIMIZE TABLE events FINAL",
    "DROP TABLE events",
    "TRUNCATE TABLE events",
    "INSERT INTO events (message_id) VALUES ('x')",
    "ALTER TABLE events DELETE WHERE 1",
    "CREATE TABLE t (a Int8) ENGINE = Memory",
    "SET readonly = 0",
    "USE hw_{v}",
    "SHOW TABLES FROM hw_{v}",
    "SHOW DATABASES",
    "DESCRIBE TABLE hw_{v}.events",
    "EXISTS TABLE hw_{v}.events",
    "EXPLAIN SELECT * FROM hw_{v}.events",
    "EXPLAIN AST SELECT 1",
    "SELECT 1; KILL QUERY WHERE 1 ASYNC",
    "SELECT 'a'; SELECT * FROM hw_{v}.events",
    "SELECT * FROM `hw_{v}.events`",
]


async def test_bypass_attempts_are_refused(pair: tuple[Stack, str, str], http: httpx.AsyncClient) -> None:
    stack, project_id, victim = pair
    for template in BYPASSES:
        sql = template.format(v=victim)
        response = await post_sql(http, stack, project_id, sql)
        assert response.status_code in (400, 403), (sql, response.status_code, response.text)
        assert "secret-row" not in response.text, sql
        body = response.json()
        assert body["code"] in ("query_not_allowed", "query_syntax_error", "query_failed"), (sql, body)
    assert (await post_sql(http, stack, project_id, OWN)).status_code == 200


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("SELECT * FROM hw_{v}.events", "hw_{v}"),
        ("SELECT name FROM system.databases", "system"),
        ("SELECT * FROM file('/etc/passwd', LineAsString)", "file"),
        ("SELECT dictGet('hw_{v}.d', 'x', toUInt64(1))", "dictGet"),
        ("KILL QUERY WHERE query_kind = 'Insert' ASYNC", "KILL"),
        ("SELECT 1 SETTINGS readonly = 0", "SETTINGS"),
    ],
)
async def test_refusals_are_403_and_name_what_was_refused(
    pair: tuple[Stack, str, str], http: httpx.AsyncClient, template: str, named: str
) -> None:
    stack, project_id, victim = pair
    response = await post_sql(http, stack, project_id, template.format(v=victim))
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == "query_not_allowed"
    assert body["field"] == "sql"
    assert named.format(v=victim) in body["message"]


async def test_syntax_error_is_400(pair: tuple[Stack, str, str], http: httpx.AsyncClient) -> None:
    stack, project_id, _ = pair
    for sql in ("SELEC 1", "SELECT (", "", "   "):
        response = await post_sql(http, stack, project_id, sql)
        assert response.status_code == 400, (sql, response.text)
        assert response.json()["code"] in ("query_syntax_error", "invalid_field"), sql


@pytest.fixture
async def capped(make_stack, clickhouse_url: str) -> Stack:  # type: ignore[no-untyped-def]
    settings = ControlSettings(
        clickhouse_url=clickhouse_url,
        admin_tokens=(AdminToken("tests", "test-admin-token-" + "x" * 16),),
        port=0,
        query_max_memory_bytes=200_000_000,
        query_max_rows=50,
        query_timeout_seconds=2,
        query_max_concurrent=2,
    )
    return await make_stack(control=settings)  # type: ignore[no-any-return]


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def test_expensive_queries_are_422_and_the_process_survives(
    capped: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    await create(http, capped, project_id)
    before = _rss_bytes()
    hungry = await post_sql(
        http, capped, project_id, "SELECT length(groupArray(number)) FROM numbers(150000000)"
    )
    assert hungry.status_code == 422, hungry.text
    assert hungry.json()["code"] == "query_too_expensive"
    assert "memory" in hungry.json()["message"].lower()
    assert _rss_bytes() - before < 600_000_000
    many = await post_sql(http, capped, project_id, "SELECT number FROM numbers(1000)")
    assert many.status_code == 422 and many.json()["code"] == "query_too_expensive", many.text
    slow = await post_sql(
        http, capped, project_id, "SELECT count() FROM numbers(10) WHERE sleepEachRow(0.5) = 0"
    )
    assert slow.status_code == 422 and slow.json()["code"] == "query_too_expensive", slow.text
    assert await query_rows(http, capped, project_id, OWN) == [[0]]


async def test_concurrent_queries_beyond_the_cap_are_429(
    capped: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    await create(http, capped, project_id)
    sleeper = "SELECT count() FROM numbers(3) WHERE sleepEachRow(0.5) = 0"
    answers = await asyncio.gather(*(post_sql(http, capped, project_id, sleeper) for _ in range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) >= 1 and 429 in statuses, [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["code"] == "too_many_queries"
    assert "Retry-After" in refused.headers
    assert await query_rows(http, capped, project_id, OWN) == [[0]]


async def test_kill_query_cannot_cancel_the_consumers_inserts(
    make_stack,
    http: httpx.AsyncClient,
    project_id: str,  # type: ignore[no-untyped-def]
) -> None:
    stack = await make_stack(edge=True, control=True, consumer=True)
    created = await create_project(http, stack, project_id)
    headers = basic_auth(created["secret_key"])
    total = 0
    kills: list[httpx.Response] = []
    for round_ in range(20):
        batch = [track_event(type="track", messageId=f"k-{round_}-{i}") for i in range(50)]
        sent = http.post(f"{stack.edge_url}/v1/batch", json={"batch": batch}, headers=headers)
        kill = post_sql(http, stack, project_id, "KILL QUERY WHERE query_kind = 'Insert' ASYNC")
        accepted, killed = await asyncio.gather(sent, kill)
        assert accepted.status_code == 200, accepted.text
        total += len(batch)
        kills.append(killed)
    assert all(k.status_code == 403 for k in kills), [k.text for k in kills[:3]]
    assert all(k.json()["code"] == "query_not_allowed" for k in kills)
    rows = await eventually(
        lambda: query_rows(http, stack, project_id, "SELECT uniqExact(message_id) FROM events"),
        lambda r: r == [[total]],
        timeout=30,
    )
    assert rows == [[total]]


@pytest.fixture
def standin(clickhouse_url: str) -> Iterator[StandIn]:
    server = StandIn(clickhouse_url.removeprefix("chdb://")).start()
    yield server
    server.stop()


@pytest.fixture
async def server_stack(nats_server: NatsServerProcess, standin: StandIn) -> AsyncIterator[Stack]:
    """A control plane whose ClickHouse is a server (the stand-in), queries by user hw_query."""
    settings = ControlSettings(
        clickhouse_url=standin.url("admin"),
        admin_tokens=(AdminToken("tests", "test-admin-token-" + "x" * 16),),
        port=0,
        query_clickhouse_url=standin.url("hw_query"),
    )
    stack = Stack(
        StackSettings(
            nats_url=nats_server.url,
            streams=StreamSettings(),
            clickhouse_url=settings.clickhouse_url,
            control=settings,
        )
    )
    await stack.start()
    yield stack
    await stack.stop()


async def test_on_a_server_each_query_runs_under_its_project_s_reader_role(
    server_stack: Stack, standin: StandIn, http: httpx.AsyncClient, project_id: str
) -> None:
    """With --query-clickhouse-url the control role grants a reader role per project and each query
    names its project's role; the server's ACCESS_DENIED is a 403."""
    stack = server_stack
    await create(http, stack, project_id)
    database, role = f"hw_{project_id}", f"hw_{project_id}_reader"
    ddl = [r.query for r in standin.requests if r.user == "admin" and ACCESS_DDL.match(r.query)]
    assert ddl == [
        f"CREATE ROLE IF NOT EXISTS `{role}`",
        f"GRANT SELECT ON `{database}`.* TO `{role}`",
        f"GRANT `{role}` TO `hw_query`",
        "SET DEFAULT ROLE NONE TO `hw_query`",
    ]

    standin.requests.clear()
    assert await query_rows(http, stack, project_id, OWN) == [[0]]
    sent = [r for r in standin.requests if r.user == "hw_query" and r.database is not None]
    assert len(sent) == 3, sent  # parse, EXPLAIN AST, the query (the rest is the client's handshake)
    assert {(r.role, r.database) for r in sent} == {(role, database)}
    assert not [r for r in standin.requests if r.user == "admin"]

    # What the server's access control refuses is a 403 naming it.
    standin.ungranted_column = "user_id"
    denied = await post_sql(http, stack, project_id, "SELECT count(user_id) FROM events")
    assert denied.status_code == 403, denied.text
    assert denied.json()["code"] == "query_not_allowed"
    assert "ACCESS_DENIED" in denied.json()["message"]

    purged = await http.delete(
        f"{stack.control_url}/v1/projects/{project_id}?purge=true&confirm={project_id}",
        headers=admin_headers(),
    )
    assert purged.status_code == 200, purged.text
    assert f"DROP ROLE IF EXISTS `{role}`" in [r.query for r in standin.requests if r.user == "admin"]


def test_grant_statements_quote_the_user_and_name_the_cluster() -> None:
    assert grant_statements("shop", "q`user", "main") == [
        "CREATE ROLE IF NOT EXISTS `hw_shop_reader` ON CLUSTER `main`",
        "GRANT ON CLUSTER `main` SELECT ON `hw_shop`.* TO `hw_shop_reader`",
        "GRANT ON CLUSTER `main` `hw_shop_reader` TO `q\\`user`",
        "SET DEFAULT ROLE NONE TO `q\\`user`",
    ]
    assert query_user("http://hw_query:secret@ch:8123") == "hw_query"
    assert query_user("https://ch:8443") == "default"


# -- generated bypass attempts, against the embedded engine's own parser (no HTTP) -----------------

_SPELLINGS = st.sampled_from(["{db}", "`{db}`", '"{db}"'])
_DOTS = st.sampled_from([".", " . ", "/* c */./* d */", "\n.\n", "--x\n."])
_TABLES = st.sampled_from(["events", "`events`", '"events"', "schema_migrations"])
_SOURCES = st.sampled_from(
    [
        "system.tables",
        "system.processes",
        "`system`.`databases`",
        "INFORMATION_SCHEMA.TABLES",
        "merge('{db}', '.*')",
        "merge(REGEXP('hw_'), 'events')",
        "remote('127.0.0.1', {db}.events)",
        "cluster('default', {db}, events)",
        "file('/etc/hostname', LineAsString)",
        "url('http://127.0.0.1:1/', LineAsString)",
        "s3('http://127.0.0.1:1/x', LineAsString)",
        "dictionary('{db}.d')",
        "`{db}.events`",
    ]
)
_CONTEXTS = st.sampled_from(
    [
        "SELECT * FROM {ref}",
        "select * from {ref} AS events",
        "SELECT count() FROM events WHERE message_id IN (SELECT message_id FROM {ref})",
        "SELECT 1 FROM events UNION ALL SELECT 1 FROM {ref}",
        "SELECT 1 FROM events INTERSECT SELECT 1 FROM {ref}",
        "WITH x AS (SELECT * FROM {ref}) SELECT * FROM x",
        "SELECT * FROM events AS a LEFT JOIN {ref} AS b USING message_id",
        "SELECT * FROM events, {ref}",
        "SELECT (SELECT count() FROM {ref})",
        "SELECT * FROM view(SELECT * FROM {ref})",
        "SELECT * FROM events WHERE exists(SELECT 1 FROM {ref})",
        "SELECT * FROM (SELECT * FROM (SELECT * FROM {ref}))",
        "SELECT arrayJoin([1]) FROM {ref} ARRAY JOIN [1] AS z",
    ]
)


@st.composite
def bypasses(draw: st.DrawFn, victim_db: str) -> str:
    qualified = draw(st.booleans())
    ref = draw(_SPELLINGS) + draw(_DOTS) + draw(_TABLES) if qualified else draw(_SOURCES)
    sql = draw(_CONTEXTS).replace("{ref}", ref).replace("{db}", victim_db)
    return (
        draw(st.sampled_from(["", "  ", "/* lead */ ", "-- lead\n"]))
        + sql
        + draw(st.sampled_from(["", ";", " -- tail", "\n/* tail */"]))
    )


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, clickhouse_url: str) -> Iterator[ReadOnlyQueries]:
    client = connect(clickhouse_url)
    for database in ("hw_fuzz_own", "hw_fuzz_victim"):
        apply_migrations(client, database)
    client.command("INSERT INTO hw_fuzz_victim.events (message_id, event) VALUES ('secret-row', 'x')")
    queries = ReadOnlyQueries(clickhouse_url)
    yield queries
    queries.close()
    client.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_bypasses_are_refused(guarded: ReadOnlyQueries, data: st.DataObject) -> None:
    sql = data.draw(bypasses("hw_fuzz_victim"))
    with pytest.raises(APIError) as refused:
        guarded.run("fuzz_own", sql)
    assert refused.value.status in (400, 403), (sql, refused.value.to_dict())
    assert refused.value.code in ("query_not_allowed", "query_syntax_error", "query_failed"), sql
    # ClickHouse parses every generated statement: refusals come from the check, not from typos.
    assert refused.value.code == "query_not_allowed", (sql, refused.value.message)


def test_clients_are_pooled_not_kept_per_project(guarded: ReadOnlyQueries, clickhouse_url: str) -> None:
    client = connect(clickhouse_url)
    projects = [f"fuzz_pool_{i}" for i in range(8)]
    for project in projects:
        apply_migrations(client, f"hw_{project}")
    client.close()
    queries = ReadOnlyQueries(clickhouse_url, limits=QueryLimits(max_concurrent=2))
    try:
        for project in projects:
            assert queries.run(project, "SELECT currentDatabase()").rows == [[f"hw_{project}"]]
        assert queries.idle_clients == 1  # one query at a time: one client served all eight
        assert queries.run(projects[0], "SELECT count() FROM events").rows == [[0]]
    finally:
        queries.close()
