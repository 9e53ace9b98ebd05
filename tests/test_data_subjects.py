"""Data subjects on real NATS and the embedded ClickHouse, through the edge: a deletion job removes a
person from events, sessions and the sessionizer's recent copy and leaves everyone else as they
were; a `headwater replay` of the whole stream afterwards does not bring the person back (their
tombstones), nor does a new event of theirs; the export holds their events and sessions; bad bodies
and unknown jobs get their documented answers; an unfinished job is taken up by a new control
plane."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson
import pytest
from hw_sessions import post_batch, send_events, wait_stored
from hw_testing import (
    ADMIN_TOKEN,
    StackFactory,
    admin_headers,
    cli_env,
    create_project,
    eventually,
    run_cli,
    stored_copies,
)
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from headwater.consumers.enrich import Enricher
from headwater.consumers.replay import ClickHouseSink, ReplayWindow
from headwater.control.audit import AUDIT_STREAM, AUDIT_SUBJECT, AuditLog
from headwater.control.settings import AdminToken, ControlSettings
from headwater.control.store import BucketSettings, ProjectStore, ensure_projects_bucket
from headwater.control.subjects import JobSettings, SubjectJobs, ensure_jobs_bucket
from headwater.core.projects.settings import Sessions
from headwater.core.projects.tombstones import ensure_tombstones_bucket, read_tombstones
from headwater.ops.replay import run_replay
from headwater.ops.runtime import Stack
from headwater.sessionizer.cycle import run_cycle
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket

pytestmark = pytest.mark.services

P_USER, P_ANON, P_OTHER_DEVICE = "p-user", "p-anon-1", "p-anon-2"
Q_USER, Q_ANON = "q-user", "q-anon"
PERSON_TABLES = ("events", "sessions", "sessionizer_recent")


def page(message_id: str, anonymous_id: str, path: str, user_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "page",
        "messageId": message_id,
        "anonymousId": anonymous_id,
        "properties": {"path": path},
        "context": {"page": {"url": f"https://shop.example{path}", "path": path}},
    }
    if user_id is not None:
        event["userId"] = user_id
    return event


def identify(message_id: str, anonymous_id: str, user_id: str) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, "anonymousId": anonymous_id, "userId": user_id}


# P: a user id and two anonymous ids; the second (another device) is linked to the user id only
# through an identify. Q: someone else.
P_EVENTS = [
    page("p-1", P_ANON, "/"),
    page("p-2", P_ANON, "/pricing"),
    identify("p-3", P_ANON, P_USER),
    page("p-4", P_ANON, "/account", P_USER),
    page("p-5", P_OTHER_DEVICE, "/"),
    page("p-6", P_OTHER_DEVICE, "/blog"),
    identify("p-7", P_OTHER_DEVICE, P_USER),
]
Q_EVENTS = [
    page("q-1", Q_ANON, "/"),
    page("q-2", Q_ANON, "/pricing"),
    identify("q-3", Q_ANON, Q_USER),
    page("q-4", Q_ANON, "/checkout", Q_USER),
]
P_IDS = [P_USER, P_ANON, P_OTHER_DEVICE]
Q_IDS = [Q_USER, Q_ANON]


def control_settings(clickhouse_url: str) -> ControlSettings:
    """A control plane whose deletion passes wait 0.5 s beyond the project's batching span."""
    return ControlSettings(
        clickhouse_url=clickhouse_url,
        admin_tokens=(AdminToken("tests", ADMIN_TOKEN),),
        port=0,
        subjects_settle_margin_seconds=0.5,
    )


@pytest.fixture
async def pipeline(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, clickhouse_url: str
) -> tuple[Stack, str]:
    stack = await make_stack(edge=True, control=control_settings(clickhouse_url), consumer=True)
    created = await create_project(http, stack, project_id, settings={"batching": {"span_seconds": 0.2}})
    return stack, str(created["secret_key"])


async def rows_of(stack: Stack, project_id: str, table: str, ids: list[str]) -> int:
    """Rows (every stored copy and version) of `table` naming one of `ids` in a person column."""
    assert stack.clickhouse is not None
    clickhouse = stack.clickhouse
    columns = "(user_id, anonymous_id, identity)" if table == "sessions" else "(user_id, anonymous_id)"
    sql = (
        f"SELECT count() FROM hw_{project_id}.{table} WHERE hasAny({{ids:Array(String)}}, [{columns[1:-1]}])"
    )
    result = await asyncio.to_thread(clickhouse.query, sql, parameters={"ids": ids})
    return int(result.result_rows[0][0])


async def census(stack: Stack, project_id: str, ids: list[str]) -> dict[str, int]:
    return {table: await rows_of(stack, project_id, table, ids) for table in PERSON_TABLES}


async def sessionize(stack: Stack, js: JetStreamContext, project_id: str) -> None:
    """One sessionizer cycle over everything inserted so far."""
    assert stack.clickhouse is not None
    watermarks = Watermarks(await ensure_sessions_bucket(js))
    await run_cycle(stack.clickhouse, watermarks, project_id, Sessions(), settle_seconds=0)


async def finished(http: httpx.AsyncClient, stack: Stack, project_id: str, job_id: str) -> dict[str, Any]:
    url = f"{stack.control_url}/v1/projects/{project_id}/data-subjects/jobs/{job_id}"

    async def job() -> dict[str, Any]:
        response = await http.get(url, headers=admin_headers())
        assert response.status_code == 200, response.text
        return dict(response.json())

    return await eventually(job, lambda j: j["state"] in ("done", "failed"), timeout=60, interval=0.2)


async def export(http: httpx.AsyncClient, stack: Stack, project_id: str, body: dict[str, Any]) -> list[Any]:
    url = f"{stack.control_url}/v1/projects/{project_id}/data-subjects/export"
    response = await http.post(url, json=body, headers=admin_headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


async def audit_records(js: JetStreamContext) -> list[dict[str, Any]]:
    info = await js.stream_info(AUDIT_STREAM)
    subscription = await js.pull_subscribe(
        AUDIT_SUBJECT, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL), stream=AUDIT_STREAM
    )
    messages = await subscription.fetch(int(info.state.messages), timeout=5)
    await subscription.unsubscribe()
    return [orjson.loads(message.data) for message in messages]


async def test_a_deleted_person_is_gone_and_stays_gone_through_a_replay(
    pipeline: tuple[Stack, str], http: httpx.AsyncClient, js: JetStreamContext, project_id: str
) -> None:
    stack, key = pipeline
    await send_events(http, stack, key, project_id, P_EVENTS + Q_EVENTS)
    await sessionize(stack, js, project_id)
    p_before, q_before = await census(stack, project_id, P_IDS), await census(stack, project_id, Q_IDS)
    assert p_before["events"] == len(P_EVENTS) and q_before["events"] == len(Q_EVENTS)
    assert p_before["sessions"] > 0 and p_before["sessionizer_recent"] == len(P_EVENTS), p_before
    assert q_before["sessions"] > 0 and q_before["sessionizer_recent"] == len(Q_EVENTS), q_before

    # The export, before: every event of P (the other device's too) and their sessions.
    lines = await export(http, stack, project_id, {"user_id": P_USER, "anonymous_ids": [P_ANON]})
    exported = {line["row"]["message_id"] for line in lines if line["table"] == "events"}
    assert exported == {event["messageId"] for event in P_EVENTS}
    sessions = [line["row"] for line in lines if line["table"] == "sessions"]
    assert sessions and {s["identity"] for s in sessions} <= set(P_IDS)

    url = f"{stack.control_url}/v1/projects/{project_id}/data-subjects/delete"
    response = await http.post(
        url, json={"user_id": P_USER, "anonymous_ids": [P_ANON]}, headers=admin_headers()
    )
    assert response.status_code == 202, response.text
    job = await finished(http, stack, project_id, response.json()["job_id"])
    assert job["state"] == "done", job
    assert job["tombstones"] == 3 and job["linked_anonymous_ids"] == 1
    assert job["rows_deleted"]["events"] == len(P_EVENTS)
    assert job["passes"] >= 2 and job["error"] is None

    assert await census(stack, project_id, P_IDS) == dict.fromkeys(PERSON_TABLES, 0)
    assert await census(stack, project_id, Q_IDS) == q_before
    q_copies = {event["messageId"]: 1 for event in Q_EVENTS}
    assert await stored_copies(stack, project_id) == q_copies

    # The audit trail names the job and a digest, never an id.
    records = [r for r in await audit_records(js) if r["action"].startswith("data_subject.")]
    assert [r["action"] for r in records] == ["data_subject.export", "data_subject.delete"]
    assert not any(person_id in json.dumps(records) for person_id in P_IDS)

    # The operator replays the whole stream, as `headwater replay --project` does: P stays gone,
    # Q's events are each there once.
    window = ReplayWindow(project_id)
    assert stack.clickhouse is not None
    progress = await run_replay(
        stack.settings.nats_url, window, ClickHouseSink(stack.clickhouse), None, enricher=Enricher(None)
    )
    assert progress.suppressed == len(P_EVENTS) and progress.events == len(Q_EVENTS)
    assert await rows_of(stack, project_id, "events", P_IDS) == 0
    assert await stored_copies(stack, project_id) == q_copies
    # A sessionizer cycle after the replay brings no session of P back.
    await sessionize(stack, js, project_id)
    assert await census(stack, project_id, P_IDS) == dict.fromkeys(PERSON_TABLES, 0)

    # A new event of P (by the user id, on a new device; by the other device's anonymous id) is not
    # stored; Q's beside it is.
    later = [
        page("p-8", "p-anon-3", "/again", P_USER),
        page("p-9", P_OTHER_DEVICE, "/"),
        page("q-5", Q_ANON, "/"),
    ]
    await post_batch(http, stack, key, later)
    await wait_stored(stack, project_id, ["q-5"])  # in the same message as P's
    assert await rows_of(stack, project_id, "events", [*P_IDS, "p-anon-3"]) == 0
    assert stack.consumer is not None
    metrics = stack.consumer.metrics.render().decode()
    assert f'headwater_consumer_events_suppressed_total{{project="{project_id}"}} 2.0' in metrics

    # The export, after: nothing of P.
    assert await export(http, stack, project_id, {"user_id": P_USER, "anonymous_ids": [P_ANON]}) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"anonymous_ids": []}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "u" * 201}, "user_id"),
        ({"user_id": 7}, "user_id"),
        ({"anonymous_ids": ["a"] * 101}, "anonymous_ids"),
        ({"anonymous_ids": ["a", ""]}, "anonymous_ids[1]"),
        ({"anonymous_ids": "a"}, "anonymous_ids"),
        ({"user_id": "u", "email": "u@example.com"}, "email"),
    ],
)
async def test_a_bad_body_is_refused_naming_the_field(
    pipeline: tuple[Stack, str], http: httpx.AsyncClient, project_id: str, body: dict[str, Any], field: str
) -> None:
    stack, _ = pipeline
    for action in ("delete", "export"):
        url = f"{stack.control_url}/v1/projects/{project_id}/data-subjects/{action}"
        response = await http.post(url, json=body, headers=admin_headers())
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_field" and response.json()["field"] == field


async def test_unknown_jobs_and_projects_are_404(
    pipeline: tuple[Stack, str], http: httpx.AsyncClient, project_id: str
) -> None:
    stack, _ = pipeline
    base = f"{stack.control_url}/v1/projects"
    unknown_job = await http.get(
        f"{base}/{project_id}/data-subjects/jobs/{'a' * 16}", headers=admin_headers()
    )
    assert unknown_job.status_code == 404 and unknown_job.json()["code"] == "job_not_found"
    malformed = await http.get(f"{base}/{project_id}/data-subjects/jobs/not-a-job", headers=admin_headers())
    assert malformed.status_code == 404 and malformed.json()["code"] == "not_found"
    for action in ("delete", "export"):
        response = await http.post(
            f"{base}/nosuchproject/data-subjects/{action}", json={"user_id": "u"}, headers=admin_headers()
        )
        assert response.status_code == 404 and response.json()["code"] == "project_not_found"


async def test_a_job_left_unfinished_is_taken_up_by_the_next_control_plane(
    pipeline: tuple[Stack, str], http: httpx.AsyncClient, js: JetStreamContext, project_id: str
) -> None:
    stack, key = pipeline
    await send_events(http, stack, key, project_id, P_EVENTS + Q_EVENTS)
    assert stack.clickhouse is not None
    clickhouse = stack.clickhouse
    # A table added later (an import) with a user id column only: found by its columns.
    await asyncio.to_thread(
        clickhouse.command,
        f"CREATE TABLE hw_{project_id}.imported_orders (order_id String, user_id String) "
        "ENGINE = MergeTree ORDER BY order_id",
    )
    await asyncio.to_thread(
        clickhouse.command,
        f"INSERT INTO hw_{project_id}.imported_orders VALUES ('o1', '{P_USER}'), ('o2', '{Q_USER}')",
    )
    store = ProjectStore(await ensure_projects_bucket(js, BucketSettings()))
    jobs_kv, tombstones_kv = await ensure_jobs_bucket(js, 1), await ensure_tombstones_bucket(js, 1)

    def jobs() -> SubjectJobs:
        return SubjectJobs(jobs_kv, tombstones_kv, stack.clickhouse, store, AuditLog(js), JobSettings(0.5))

    # One control plane takes the request and stops before running it; another marks it running
    # and stops at once (both as a crash would leave them).
    queued = await jobs().submit(project_id, {"anonymous_ids": [Q_ANON]}, "tests")
    running = await jobs().submit(project_id, {"user_id": P_USER}, "tests")
    entry = await jobs_kv.get(f"{project_id}.{running}")
    await jobs_kv.put(
        f"{project_id}.{running}", orjson.dumps({**orjson.loads(entry.value), "state": "running"})
    )

    restarted = jobs()
    await restarted.start()
    try:
        for job_id in (queued, running):
            job = await eventually(
                lambda job_id=job_id: restarted.get(project_id, job_id),
                lambda j: j["state"] in ("done", "failed"),
                timeout=60,
                interval=0.2,
            )
            assert job["state"] == "done", job
    finally:
        await restarted.stop()
    assert await rows_of(stack, project_id, "events", [*P_IDS, *Q_IDS]) == 0
    left = await asyncio.to_thread(clickhouse.query, f"SELECT order_id FROM hw_{project_id}.imported_orders")
    assert left.result_rows == [("o2",)]  # Q was deleted by an anonymous id, which the table lacks
    assert len((await read_tombstones(js))[project_id]) == 4  # Q's anonymous id, P's three ids

    # A purged project leaves no tombstone nor job behind (one created again under its id starts
    # afresh), and the consumers' view forgets them.
    purged = await http.delete(
        f"{stack.control_url}/v1/projects/{project_id}",
        params={"purge": "true", "confirm": project_id},
        headers=admin_headers(),
    )
    assert purged.status_code == 200, purged.text
    assert project_id not in await read_tombstones(js)
    registry = stack.tombstones
    assert registry is not None

    async def followed() -> frozenset[bytes]:
        return registry.digests(project_id)

    await eventually(followed, lambda digests: not digests)
    assert (await jobs_kv.status()).values == 0


async def test_the_subjects_command_deletes_follows_and_exports(
    pipeline: tuple[Stack, str], http: httpx.AsyncClient, project_id: str
) -> None:
    stack, key = pipeline
    await send_events(http, stack, key, project_id, P_EVENTS + Q_EVENTS)
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    where = ("--control-url", str(stack.control_url), "--project", project_id)

    exported = await run_cli("subjects", "export", *where, "--anonymous-id", Q_ANON, env=env)
    assert exported.code == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {row["row"]["message_id"] for row in rows if row["table"] == "events"} == {
        event["messageId"] for event in Q_EVENTS
    }

    deleted = await run_cli(
        "subjects",
        "delete",
        *where,
        "--user-id",
        P_USER,
        "--anonymous-id",
        P_ANON,
        "--wait",
        "--json",
        env=env,
    )
    assert deleted.code == 0, deleted.stderr
    job = deleted.json()
    assert job["state"] == "done" and job["rows_deleted"]["events"] == len(P_EVENTS)
    assert f"job {job['job_id']}: done:" in deleted.stderr  # the progress, on stderr
    shown = await run_cli("subjects", "status", *where, job["job_id"], env=env)
    assert shown.code == 0 and "done" in shown.stdout and f"events: {len(P_EVENTS)}" in shown.stdout
    assert await rows_of(stack, project_id, "events", P_IDS) == 0

    nobody = await run_cli("subjects", "delete", *where, env=env)
    assert nobody.code == 2 and "--user-id" in nobody.stderr
    unknown = await run_cli("subjects", "status", *where, "a" * 16, env=env)
    assert unknown.code == 1 and "job_not_found" in unknown.stderr
