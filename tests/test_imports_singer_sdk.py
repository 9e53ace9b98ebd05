"""singer-sdk's standard target test suite against `target-headwater`, writing through a real
control plane and consumer role (NATS + the embedded engine). The suite runs the target in the
test's own thread, so the stack runs on an event loop of its own, in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_TOKEN
from hw_testing import admin_headers
from singer_sdk.testing import get_target_test_class

from headwater.consumers.settings import ConsumerSettings
from headwater.control.settings import AdminToken, ControlSettings
from headwater.edge.streams import StreamSettings
from headwater.loaders.singer.target import HeadwaterTarget
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack, StackSettings

PROJECT = "singer_sdk_suite"
# Filled in by the `resource` fixture before the suite's runner reads it.
CONFIG: dict[str, Any] = {"token": ADMIN_TOKEN, "project": PROJECT, "state_interval_seconds": 0}


class ThreadedStack:
    """A control plane and a consumer role on an event loop in a thread of their own."""

    def __init__(self, nats_url: str, clickhouse_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stack-loop", daemon=True)
        self.thread.start()
        settings = StackSettings(
            nats_url=nats_url,
            streams=StreamSettings(),
            clickhouse_url=clickhouse_url,
            control=ControlSettings(
                clickhouse_url=clickhouse_url, admin_tokens=(AdminToken("tests", ADMIN_TOKEN),), port=0
            ),
            consumer=ConsumerSettings(clickhouse_url=clickhouse_url, workers=0, flush_interval_seconds=0.2),
        )
        self.stack = Stack(settings)
        self._run(self.stack.start())

    def _run(self, work: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout=120)

    def close(self) -> None:
        self._run(self.stack.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def threaded_stack(tmp_path_factory: pytest.TempPathFactory, clickhouse_url: str) -> Iterator[ThreadedStack]:
    nats = NatsServerProcess(Path(tmp_path_factory.mktemp("nats")), port=0)
    nats.start()
    stack = ThreadedStack(nats.url, clickhouse_url)
    assert stack.stack.control_url is not None
    response = httpx.post(
        f"{stack.stack.control_url}/v1/projects", json={"id": PROJECT}, headers=admin_headers(), timeout=30
    )
    assert response.status_code == 201, response.text
    CONFIG["control_url"] = stack.stack.control_url
    yield stack
    stack.close()
    nats.stop()


StandardTargetTests = get_target_test_class(HeadwaterTarget, config=CONFIG)


class TestHeadwaterTarget(StandardTargetTests):  # type: ignore[misc,valid-type]
    @pytest.fixture
    def resource(self, threaded_stack: ThreadedStack) -> ThreadedStack:
        return threaded_stack


def test_the_suites_streams_were_written(threaded_stack: ThreadedStack) -> None:
    """Runs after the suite (same module, in order): its streams reached ClickHouse, each record
    once per key."""
    control_url = threaded_stack.stack.control_url
    deadline = time.monotonic() + 20
    while True:
        listing = httpx.get(f"{control_url}/v1/projects/{PROJECT}/imports", headers=admin_headers()).json()
        rows = {table["stream"]: table["rows"] for table in listing["tables"]}
        if rows.get("test:SpecialChars!in?attributes") and rows.get("test_schema_updates") == 6:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert listing["tables"][0]["columns"]
