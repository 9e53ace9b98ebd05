"""Helpers shared by the tests (`tests/` is on the pytest pythonpath)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import httpx

    from headwater.ops.runtime import Stack

T = TypeVar("T")

ADMIN_TOKEN = "test-admin-token-" + "x" * 16
BIN = Path(sys.executable).parent  # where `headwater` and `nats-server` are installed


def cli_env() -> dict[str, str]:
    """The environment for a `headwater` subprocess: none of the caller's HEADWATER_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}


@dataclass(frozen=True, slots=True)
class Run:
    """How a `headwater` command ended."""

    code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


async def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = "", cwd: Path | None = None
) -> Run:
    """`headwater ARGS` as an asyncio subprocess (the test's event loop keeps serving meanwhile),
    in `env` (default: cli_env()), with `stdin` as its input; at most 60 s."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "headwater"),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env() if env is None else env,
        cwd=cwd,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode(), stdout)


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic_auth(key: str) -> dict[str, str]:
    """Segment style: the write key is the HTTP Basic username, the password is empty."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 10.0, interval: float = 0.1
) -> T:
    """Poll `probe` until `done(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            shown = getattr(result, "text", None) or result  # an HTTP response: show its body
            raise AssertionError(f"condition not met within {timeout}s; last result: {shown!r}")
        await asyncio.sleep(interval)


def track_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "Signed Up", "userId": "user-1", "properties": {"plan": "free"}}
    event.update(overrides)
    return event


async def create_project(
    http: httpx.AsyncClient, stack: Stack, project_id: str, **body: Any
) -> dict[str, Any]:
    """Create a project through the stack's control API and wait until its registry knows it (so
    its edge accepts the keys); returns the API's answer (with `public_key` and `secret_key`)."""
    response = await http.post(
        f"{stack.control_url}/v1/projects", json={"id": project_id, **body}, headers=admin_headers()
    )
    assert response.status_code == 201, response.text
    registry = stack.registry
    assert registry is not None

    async def known() -> bool:
        return registry.get(project_id) is not None

    await eventually(known, bool, timeout=5)
    return dict(response.json())


async def query_rows(http: httpx.AsyncClient, stack: Stack, project_id: str, sql: str) -> list[list[Any]]:
    """Read-only SQL in the project's database, through the control API."""
    response = await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/query", json={"sql": sql}, headers=admin_headers()
    )
    assert response.status_code == 200, response.text
    return list(response.json()["rows"])
