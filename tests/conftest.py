"""Fixtures: a real nats-server per test (free port, temp store), the embedded ClickHouse engine
(one data directory per test session: chdb opens one path per process), and in-process stacks.

Tests that cross NATS or ClickHouse use these real components, never a mock.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from clickhouse_connect.driver.client import Client
from engine_leaks import close_left_open
from hw_browser import browser, chromium, page_servers  # noqa: F401 (fixtures, registered here)
from hw_testing import ADMIN_TOKEN, SpoolingStackFactory, StackFactory, create_project
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from postgres import postgres_cluster, postgres_database  # noqa: F401 (fixtures, registered here)

from headwater.consumers.enrich import Enricher
from headwater.consumers.processing import InlineProcessor, Processor, WorkerPool
from headwater.consumers.settings import ConsumerSettings
from headwater.control.clickhouse import connect
from headwater.control.settings import AdminToken, ControlSettings
from headwater.core.migrations import apply_migrations
from headwater.edge.settings import EdgeSettings
from headwater.edge.streams import StreamSettings, ensure_streams
from headwater.ops.httplimits import HTTPLimits
from headwater.ops.natsconn import connect_nats
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack, StackSettings
from headwater.sessionizer.settings import SessionizerSettings

_project_numbers = itertools.count(1)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], object]]:
    """uvloop, as `headwater up` and `serve` run (the stock loop adds ~40 ms per in-process request)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    server = NatsServerProcess(tmp_path / "nats", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_client(nats_server: NatsServerProcess) -> AsyncIterator[NatsClient]:
    client = await connect_nats(nats_server.url, "test")
    yield client
    await client.close()


@pytest.fixture
async def js(nats_client: NatsClient) -> JetStreamContext:
    context = nats_client.jetstream()
    await ensure_streams(context, StreamSettings())
    return context


@pytest.fixture(scope="module")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[str]:
    """The embedded engine's data directory, one per test module. Not one per session: the engine
    shuts down when its last connection closes, and starting it again loads every database in
    the directory (~0.9 s with 150 projects), which most service tests pay once or more.

    Connections left open on it are closed when the module ends (tests/engine_leaks.py). A module
    whose tests all passed and still left some is a leak to fix: its teardown fails."""
    failed_before = request.session.testsfailed
    path = tmp_path_factory.mktemp("clickhouse")
    yield f"chdb://{path}"
    left = close_left_open(str(path))
    if left and request.session.testsfailed == failed_before:
        pytest.fail(f"{left} embedded ClickHouse connection(s) left open by passing tests: close them")


@pytest.fixture
def clickhouse(clickhouse_url: str, project_id: str) -> Iterator[Client]:
    """A client of the session's ClickHouse with the test project's database migrated."""
    client = connect(clickhouse_url)
    apply_migrations(client, f"hw_{project_id}")
    yield client
    client.close()


@pytest.fixture
def project_id() -> str:
    """A project id no other test of this session uses (a module's tests share its ClickHouse)."""
    return f"p{os.getpid()}_{next(_project_numbers)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(params=["inline", "workers"])
async def processor(request: pytest.FixtureRequest) -> AsyncIterator[Processor]:
    """Each consumer test runs twice: processing in the consumer's process, and in two worker
    processes (the default on a 2-core machine)."""
    made: Processor = InlineProcessor(Enricher(None)) if request.param == "inline" else WorkerPool(2, None)
    await made.warm_up()
    yield made
    await made.close()


@pytest.fixture
async def make_stack(nats_server: NatsServerProcess, clickhouse_url: str) -> AsyncIterator[StackFactory]:
    """Start roles in this process on free ports: `await make_stack(edge=True, control=True, ...)`."""
    stacks: list[Stack] = []

    async def make(
        edge: bool | EdgeSettings = False,
        control: bool | ControlSettings = False,
        consumer: bool | ConsumerSettings = False,
        http: HTTPLimits | None = None,
        sessionizer: SessionizerSettings | None = None,
        node_report_seconds: float = 5.0,
    ) -> Stack:
        edge_settings = edge if isinstance(edge, EdgeSettings) else EdgeSettings(port=0) if edge else None
        if edge_settings is not None and edge_settings.operator_port is None:
            # /metrics and the detailed /readyz, on a free port (stack.edge_operator_url).
            edge_settings = replace(edge_settings, operator_port=0)
        consumer_settings = (
            consumer
            if isinstance(consumer, ConsumerSettings)
            else ConsumerSettings(clickhouse_url=clickhouse_url, flush_interval_seconds=0.2)
            if consumer
            else None
        )
        control_settings = (
            control
            if isinstance(control, ControlSettings)
            else ControlSettings(
                clickhouse_url=clickhouse_url, admin_tokens=(AdminToken("tests", ADMIN_TOKEN),), port=0
            )
            if control
            else None
        )
        stack = Stack(
            StackSettings(
                nats_url=nats_server.url,
                streams=StreamSettings(),
                clickhouse_url=clickhouse_url,
                edge=edge_settings,
                control=control_settings,
                consumer=consumer_settings,
                sessionizer=sessionizer,
                http=http or HTTPLimits(),
                node_report_seconds=node_report_seconds,
            )
        )
        stacks.append(stack)
        await stack.start()
        return stack

    yield make
    for stack in reversed(stacks):
        await stack.stop()


@pytest.fixture
def make_spooling_stack(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> SpoolingStackFactory:
    """`stack, key = await make_spooling_stack(**edge_settings)`: an edge that spools to
    tmp_path/spool/0 (publishes time out after 1 s), a control plane and a consumer; and the test
    project, created, with its secret key."""

    async def make(**edge_settings: Any) -> tuple[Stack, str]:
        spool_dir = str(tmp_path / "spool" / "0")
        edge = EdgeSettings(
            **{"port": 0, "spool_dir": spool_dir, "publish_timeout_seconds": 1.0, **edge_settings}
        )
        stack = await make_stack(edge=edge, control=True, consumer=True)
        created = await create_project(http, stack, project_id)
        return stack, str(created["secret_key"])

    return make


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say aloud that the `long` tests were left out (the README's command deselects them)."""
    if "not long" in (config.getoption("markexpr") or ""):
        terminalreporter.write_line(
            "tests marked `long` were deselected (the README's command); run them with: "
            "pytest -n 2 --dist loadfile -m long",
            yellow=True,
        )
