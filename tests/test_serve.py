"""`headwater serve ROLE` in its own process: an edge process resolves keys created through a
control plane in another process (through the KV bucket) and its events land in ClickHouse."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from hw_testing import BIN, admin_headers, basic_auth, cli_env, eventually, track_event

from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack

pytestmark = [pytest.mark.services, pytest.mark.slow]


def role_env() -> dict[str, str]:
    return cli_env()


@pytest.fixture
def edge_process(nats_server: NatsServerProcess) -> Iterator[str]:
    process = subprocess.Popen(
        [
            str(BIN / "headwater"),
            "serve",
            "edge",
            "--port",
            "0",
            "--operator-port",
            "0",
            "--nats-url",
            nats_server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=role_env(),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"running on (http://\S+)", line)
    assert match, f"unexpected first line from serve edge: {line!r}"
    yield match.group(1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


async def test_edge_in_another_process_serves_a_new_project(
    edge_process: str,
    make_stack,
    http: httpx.AsyncClient,
    project_id: str,  # type: ignore[no-untyped-def]
) -> None:
    stack: Stack = await make_stack(control=True, consumer=True)
    created = await http.post(
        f"{stack.control_url}/v1/projects", json={"id": project_id}, headers=admin_headers()
    )
    assert created.status_code == 201
    secret_key = created.json()["secret_key"]

    async def send() -> int:
        response = await http.post(
            f"{edge_process}/v1/track",
            json=track_event(messageId="from-serve"),
            headers=basic_auth(secret_key),
        )
        return response.status_code

    # The other process learns of the project through its KV watcher, within a moment.
    assert await eventually(send, lambda status: status == 200, timeout=5) == 200

    async def rows() -> list[list[object]]:
        response = await http.post(
            f"{stack.control_url}/v1/projects/{project_id}/query",
            json={"sql": "SELECT message_id FROM events FINAL"},
            headers=admin_headers(),
        )
        return list(response.json()["rows"])

    assert await eventually(rows, bool, timeout=5) == [["from-serve"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "edge"], "--nats-url"),
        (["serve", "consumer", "--nats-url", "nats://127.0.0.1:1"], "--clickhouse-url"),
        (["serve", "sessionizer", "--nats-url", "nats://127.0.0.1:1"], "--clickhouse-url"),
        (
            ["serve", "control", "--nats-url", "nats://127.0.0.1:1", "--clickhouse-url", "chdb:///x"],
            "ADMIN_TOKEN",
        ),
    ],
)
def test_serve_refuses_an_incomplete_configuration(args: list[str], message: str) -> None:
    result = subprocess.run(
        [str(BIN / "headwater"), *args], capture_output=True, text=True, env=role_env(), timeout=60
    )
    assert result.returncode == 2
    assert message in result.stderr
