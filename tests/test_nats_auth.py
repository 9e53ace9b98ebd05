"""NATS users per role (ops/natsauth.py) on a real nats-server: who may do what."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import click
import httpx
import nats
import pytest
from hw_testing import (
    ADMIN_TOKEN,
    BIN,
    admin_headers,
    basic_auth,
    cli_env,
    eventually,
    query_rows,
    track_event,
)
from nats.aio.client import Client

from headwater.consumers.settings import ConsumerSettings
from headwater.control.settings import AdminToken, ControlSettings
from headwater.edge.settings import EdgeSettings
from headwater.edge.streams import StreamSettings
from headwater.ops.loop import StackFailure
from headwater.ops.natsauth import ROLES, NatsAuth, authorization_config, redact_nats_url
from headwater.ops.natsconn import connect_for_command, connect_nats
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.ports import free_ports
from headwater.ops.runtime import Stack, StackSettings
from headwater.sessionizer.settings import SessionizerSettings

pytestmark = [pytest.mark.services]

PASSWORDS = {role: f"{role}-password-0123456789" for role in ROLES}


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[NatsServerProcess]:
    config = tmp_path / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:-1\njetstream {{ store_dir: {str(tmp_path / 'js')!r} }}\n"
        + authorization_config(PASSWORDS)
    )
    server = NatsServerProcess(tmp_path / "nats", config_file=config)
    server.start()
    yield server
    server.stop()


def auth(role: str) -> NatsAuth:
    return NatsAuth(user=role, password=PASSWORDS[role])


async def connect_as(server: NatsServerProcess, role: str) -> Client:
    return await nats.connect(server.url, max_reconnect_attempts=0, **auth(role).connect_options())


@pytest.fixture
async def clients(secured_nats: NatsServerProcess) -> AsyncIterator[dict[str, Client]]:
    made = {role: await connect_as(secured_nats, role) for role in ROLES}
    # The buckets and streams exist, as after any role's start.
    admin = made["admin"].jetstream()
    await admin.create_key_value(bucket="HW_PROJECTS")
    await admin.create_key_value(bucket="HW_IDEMPOTENCY")
    await admin.add_stream(name="HW_EVENTS", subjects=["hw.events.>"])
    await admin.add_stream(name="HW_DLQ", subjects=["hw.dlq.>"])
    yield made
    for client in made.values():
        await client.close()


async def test_a_client_without_credentials_is_refused(secured_nats: NatsServerProcess) -> None:
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(secured_nats.url, max_reconnect_attempts=0, allow_reconnect=False)
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            secured_nats.url, user="edge", password="wrong", max_reconnect_attempts=0, allow_reconnect=False
        )


async def _refused(action: object) -> None:
    """A JetStream request the server refuses gets no answer: it times out (or errs)."""
    assert asyncio.iscoroutine(action)
    with pytest.raises((nats.errors.Error, TimeoutError)):
        await asyncio.wait_for(action, 3)


@pytest.mark.parametrize("role", ["edge", "consumer"])
async def test_only_control_and_admin_write_project_config(clients: dict[str, Client], role: str) -> None:
    kv = await clients[role].jetstream(timeout=2).key_value("HW_PROJECTS")
    await _refused(kv.put("victim", b'{"allowed_origins": ["https://evil.example"]}'))
    control = await clients["control"].jetstream().key_value("HW_PROJECTS")
    await control.put("demo", b"{}")
    # ...while reading it, as edges and consumers must, works.
    assert (await kv.get("demo")).value == b"{}"


@pytest.mark.parametrize("role", ["edge", "consumer"])
async def test_the_idempotency_bucket_is_the_control_planes_alone(
    clients: dict[str, Client], role: str
) -> None:
    control = await clients["control"].jetstream().key_value("HW_IDEMPOTENCY")
    await control.put("create.abc", b"secret")
    js = clients[role].jetstream(timeout=2)
    kv = await js.key_value("HW_IDEMPOTENCY")  # its stream info is no secret, its entries are
    await _refused(kv.get("create.abc"))
    direct_get = "$JS.API.DIRECT.GET.KV_HW_IDEMPOTENCY.$KV.HW_IDEMPOTENCY.create.abc"
    await _refused(clients[role].request(direct_get, b"", timeout=2))
    await _refused(js.subscribe("$KV.HW_IDEMPOTENCY.>", ordered_consumer=True))


async def test_edges_publish_events_and_consumers_dead_letters_only(clients: dict[str, Client]) -> None:
    edge = clients["edge"].jetstream(timeout=2)
    consumer = clients["consumer"].jetstream(timeout=2)
    assert (await edge.publish("hw.events.demo", b"{}")).seq == 1
    await _refused(edge.publish("hw.dlq.demo", b"{}"))
    await _refused(consumer.publish("hw.events.demo", b"{}"))
    assert (await consumer.publish("hw.dlq.demo", b"{}")).seq == 1
    # An edge cannot read the events of any project, nor delete them.
    await _refused(edge.subscribe("hw.events.>", ordered_consumer=True))
    await _refused(edge.purge_stream("HW_EVENTS"))


async def test_the_pipeline_runs_with_one_user_per_role(
    secured_nats: NatsServerProcess, clickhouse_url: str, project_id: str
) -> None:
    def settings(role: str, **roles: object) -> StackSettings:
        return StackSettings(
            nats_url=secured_nats.url,
            streams=StreamSettings(),
            clickhouse_url=clickhouse_url,
            nats_auth=auth(role),
            **roles,  # type: ignore[arg-type]
        )

    control = Stack(
        settings(
            "control",
            control=ControlSettings(
                clickhouse_url=clickhouse_url,
                admin_tokens=(AdminToken("t", ADMIN_TOKEN),),
                port=0,
                subjects_settle_margin_seconds=0.5,
            ),
        )
    )
    edge = Stack(settings("edge", edge=EdgeSettings(port=0)))
    consumer = Stack(
        settings(
            "consumer", consumer=ConsumerSettings(clickhouse_url=clickhouse_url, flush_interval_seconds=0.2)
        )
    )
    sessionizer = Stack(
        settings(
            "sessionizer",
            sessionizer=SessionizerSettings(clickhouse_url, interval_seconds=0.2, settle_seconds=1.0),
        )
    )
    started: list[Stack] = []
    try:
        for stack in (control, edge, consumer, sessionizer):
            await stack.start()
            started.append(stack)
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                f"{control.control_url}/v1/projects",
                # Cookieless ids: the edge keeps the day's salt in KV HW_SALTS with its own user.
                json={
                    "id": project_id,
                    "allowed_origins": ["https://a.example"],
                    "settings": {"cookieless": {"mode": "always"}},
                },
                headers=admin_headers(),
            )
            assert answer.status_code == 201, answer.text
            registry = edge.registry
            assert registry is not None

            async def known() -> bool:
                return registry.get(project_id) is not None

            await eventually(known, bool, timeout=10)
            response = await http.post(
                f"{edge.edge_url}/v1/track",
                json=track_event(),
                headers={**basic_auth(answer.json()["public_key"]), "Origin": "https://a.example"},
            )
            assert response.status_code == 200, response.text
            rows = await eventually(
                lambda: query_rows(http, control, project_id, "SELECT event, anonymous_id FROM events"),
                lambda rows: len(rows) > 0,
                timeout=15,
            )
            assert [row[0] for row in rows] == ["Signed Up"] and rows[0][1].startswith("cl_")
            sessions = await eventually(
                lambda: query_rows(http, control, project_id, "SELECT events FROM sessions FINAL"),
                lambda rows: len(rows) > 0,
                timeout=15,
            )
            assert sessions == [[1]]
            assert consumer.failed() is None and edge.failed() is None and sessionizer.failed() is None
            # A data subject's deletion: tombstones and jobs in KV with the control user's
            # permissions, the tombstones followed by the consumer user.
            subjects = f"{control.control_url}/v1/projects/{project_id}/data-subjects"
            asked = await http.post(f"{subjects}/delete", json={"user_id": "user-1"}, headers=admin_headers())
            assert asked.status_code == 202, asked.text
            job = await eventually(
                lambda: http.get(f"{subjects}/jobs/{asked.json()['job_id']}", headers=admin_headers()),
                lambda answer: answer.json().get("state") in ("done", "failed"),
                timeout=30,
            )
            assert job.json()["state"] == "done", job.text
            assert await query_rows(http, control, project_id, "SELECT count() FROM events") == [[0]]
            # Saved funnels (KV HW_FUNNELS) with the control user's permissions, removed by a purge.
            funnels = f"{control.control_url}/v1/projects/{project_id}/funnels"
            steps = [{"kind": "event", "value": "Signed Up"}, {"kind": "event", "value": "Paid"}]
            saved = await http.post(
                funnels, json={"name": "n", "steps": steps, "window": {"value": 1}}, headers=admin_headers()
            )
            assert saved.status_code == 201, saved.text
            # An import batch: published (HW_IMPORTS) and its table's columns kept (KV HW_IMPORTS)
            # by the control user, written by the consumer user's import writer.
            batch = {
                "stream": "users",
                "batch_id": "b1",
                "schema": {"properties": {"id": {"type": "integer"}}},
                "key_properties": ["id"],
                "records": [{"id": 1}, {"id": 2}],
            }
            imported = await http.post(
                f"{control.control_url}/v1/projects/{project_id}/imports/batches",
                json=batch,
                headers=admin_headers(),
            )
            assert imported.status_code == 200, imported.text
            listing = await eventually(
                lambda: http.get(
                    f"{control.control_url}/v1/projects/{project_id}/imports", headers=admin_headers()
                ),
                lambda answer: [t["rows"] for t in answer.json()["tables"]] == [2],
                timeout=15,
            )
            assert listing.json()["tables"][0]["table"] == "import_users" and consumer.failed() is None
            # Node reports (KV HW_NODES): each role writes its own with its user; the control
            # plane reads them all and lists the streams' consumers (/v1/health).
            health = await eventually(
                lambda: http.get(f"{control.control_url}/v1/health", headers=admin_headers()),
                lambda answer: (
                    answer.status_code == 200
                    and {n["role"] for n in answer.json()["nodes"]}
                    == {"control", "edge", "consumer", "sessionizer"}
                ),
                timeout=15,
            )
            assert {"hw-clickhouse", "hw-imports"} <= {c["name"] for c in health.json()["consumers"]}
            purged = await http.delete(
                f"{control.control_url}/v1/projects/{project_id}",
                params={"purge": "true", "confirm": project_id},
                headers=admin_headers(),
            )
            assert purged.status_code == 200, purged.text
    finally:
        for stack in reversed(started):
            await stack.stop()


def test_passwords_and_tokens_are_redacted_from_nats_urls() -> None:
    url = "nats://edge:s3cret@10.0.0.1:4222,nats://tok3n@10.0.0.2:4222,nats://10.0.0.3:4222"
    redacted = redact_nats_url(url)
    assert "s3cret" not in redacted and "tok3n" not in redacted
    assert redacted == "nats://edge:***@10.0.0.1:4222,nats://***@10.0.0.2:4222,nats://10.0.0.3:4222"


def test_a_command_that_cannot_connect_does_not_echo_the_password(tmp_path: Path) -> None:
    url = f"nats://admin:s3cret-pw@127.0.0.1:{free_ports(1)[0]}"
    result = subprocess.run(
        [
            str(BIN / "headwater"),
            "migrate",
            "--dry-run",
            "--nats-url",
            url,
            "--clickhouse-url",
            f"chdb://{tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert result.returncode != 0
    assert "cannot connect to NATS at nats://admin:***@127.0.0.1" in result.stderr, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


async def test_a_refused_login_is_said_at_once_not_retried(secured_nats: NatsServerProcess) -> None:
    """Wrong credentials are a configuration error, not an outage: no retrying until a timeout."""
    started = asyncio.get_running_loop().time()
    with pytest.raises(click.ClickException, match="refused the login of user 'edge'"):
        await connect_for_command(secured_nats.url, "test", NatsAuth(user="edge", password="wrong"))
    assert asyncio.get_running_loop().time() - started < 5
    with pytest.raises(StackFailure, match="--nats-user"):
        await connect_nats(secured_nats.url, "test", auth=NatsAuth(user="edge", password="wrong"))
