"""The sessionizer role on real NATS and the embedded ClickHouse, fed through the edge: in a stack
with the edge and a consumer; as processes (`headwater serve sessionizer`) killed and restarted, or
two at once, leaving the table `headwater sessions rebuild` computes; a project that fails does not
stop the others; and the `headwater sessions` commands.

Processes reach the test's embedded engine through the ClickHouse HTTP stand-in (chstandin.py):
the embedded engine opens its data directory in one process only."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from chstandin import StandIn
from clickhouse_connect.driver.client import Client
from hw_sessions import quick_sessionizer, send_events, sessionized_through_last_insert, table
from hw_testing import (
    ADMIN_TOKEN,
    BIN,
    StackFactory,
    cli_env,
    create_project,
    eventually,
    run_cli,
)
from nats.js import JetStreamContext

from headwater.core.migrations.m0003_sessions import SESSION_COLUMNS
from headwater.core.projects.settings import Sessions
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack
from headwater.sessionizer.runner import Sessionizer
from headwater.sessionizer.settings import SessionizerSettings
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket

pytestmark = pytest.mark.services

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
# (visitor, minutes after BASE) per wave. The third wave is late: a30 joins a's two sessions (gaps
# of 20 minutes, under the 30-minute timeout) and b21 lands inside one.
FIRST = [("a", 0), ("a", 10), ("a", 50), ("b", 5), ("b", 20), ("c", 1)]
SECOND = [("a", 55), ("d", 60), ("d", 65), ("b", 90)]
LATE = [("a", 30), ("b", 21)]
# a: one session; b: two (5-21, 90); c: one; d: one.
EXPECTED_SESSIONS = 5


def page(who: str, minutes: int) -> dict[str, Any]:
    path = f"/{who}/{minutes}"
    return {
        "type": "page",
        "anonymousId": who,
        "messageId": f"{who}-{minutes}",
        "timestamp": (BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
        "properties": {"url": f"https://shop.example{path}", "path": path},
        "context": {"page": {"url": f"https://shop.example{path}", "path": path}},
    }


async def send(
    http: httpx.AsyncClient, stack: Stack, key: str, project_id: str, wave: list[tuple[str, int]]
) -> None:
    """The wave through the edge, then wait until the consumer stored all of it."""
    await send_events(http, stack, key, project_id, [page(who, minutes) for who, minutes in wave])


@pytest.fixture
async def pipeline(make_stack: StackFactory, http: httpx.AsyncClient, project_id: str) -> tuple[Stack, str]:
    """An edge, a control plane and a consumer in this process, and the test's project with its
    secret key (no sessionizer: the test brings its own)."""
    stack = await make_stack(edge=True, control=True, consumer=True)
    created = await create_project(http, stack, project_id)
    return stack, str(created["secret_key"])


@pytest.fixture
def standin(clickhouse_url: str) -> Iterator[StandIn]:
    server = StandIn(clickhouse_url.removeprefix("chdb://")).start()
    yield server
    server.stop()


class SessionizerProcess:
    """`headwater serve sessionizer` with a short interval, settle time and deferral to another
    writer (one killed mid-cycle is waited for that long), health on a free port."""

    def __init__(self, nats_url: str, clickhouse_url: str) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "headwater"), "serve", "sessionizer", "--nats-url", nats_url,
             "--clickhouse-url", clickhouse_url, "--interval", "0.1", "--settle-seconds", "1",
             "--defer-to-writers", "2", "--port", "0", "--log-level", "warning"],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    async def url(self) -> str:
        """The health and metrics URL it prints once running."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 60)
        found = re.search(r"running on (http://\S+)", line)
        assert found, line
        return found[1]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 30)


@pytest.fixture
def sessionizers(nats_server: NatsServerProcess, standin: StandIn) -> Iterator[list[SessionizerProcess]]:
    """`sessionizers.append(...)`-style: every process started through `start` is killed at the end."""
    started: list[SessionizerProcess] = []
    yield started
    for one in started:
        if one.process.poll() is None:
            one.kill()


def start(
    sessionizers: list[SessionizerProcess], nats_server: NatsServerProcess, standin: StandIn
) -> SessionizerProcess:
    one = SessionizerProcess(nats_url=nats_server.url, clickhouse_url=standin.url("default"))
    sessionizers.append(one)
    return one


async def rebuilt(nats_server: NatsServerProcess, standin: StandIn, project_id: str, *more: str) -> str:
    result = await run_cli(
        "sessions", "rebuild", "--project", project_id, "--nats-url", nats_server.url,
        "--clickhouse-url", standin.url("default"), "--settle-seconds", "0", *more,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return result.stdout + result.stderr


async def test_events_sent_through_the_edge_land_as_sessions(
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    clickhouse_url: str,
    js: JetStreamContext,
) -> None:
    stack = await make_stack(
        edge=True, control=True, consumer=True, sessionizer=quick_sessionizer(clickhouse_url)
    )
    key = str((await create_project(http, stack, project_id))["secret_key"])
    for wave in (FIRST, SECOND, LATE):
        await send(http, stack, key, project_id, wave)
    assert stack.clickhouse is not None
    clickhouse = stack.clickhouse

    # Waiting for a count of sessions is not enough: a cycle between two of the consumer's inserts
    # can leave five sessions that are not the final five.
    await sessionized_through_last_insert(clickhouse, js, project_id)
    rows = await table(clickhouse, project_id)
    names = [name for name, _ in SESSION_COLUMNS]
    by_visitor = [(row[names.index("identity")], row[names.index("events")]) for row in rows]
    assert by_visitor == [("a", 5), ("b", 3), ("b", 1), ("c", 1), ("d", 2)]

    ready = await http.get(f"{stack.sessionizer_url}/readyz")
    assert ready.status_code == 200, ready.text
    metrics = (await http.get(f"{stack.sessionizer_url}/metrics")).text
    label = f'project="{project_id}"'
    assert re.search(rf"headwater_sessionizer_sessions_written_total\{{{label}\}} [1-9]", metrics)
    assert re.search(rf"headwater_sessionizer_lag_seconds\{{{label}\}} \d", metrics)
    assert re.search(rf'headwater_sessionizer_cycles_total\{{outcome="advanced",{label}\}} [1-9]', metrics)
    assert "headwater_sessionizer_cycle_seconds_count" in metrics


@pytest.mark.slow
async def test_a_sessionizer_killed_and_restarted_leaves_the_table_a_rebuild_computes(
    pipeline: tuple[Stack, str],
    http: httpx.AsyncClient,
    js: JetStreamContext,
    nats_server: NatsServerProcess,
    standin: StandIn,
    sessionizers: list[SessionizerProcess],
    project_id: str,
) -> None:
    stack, key = pipeline
    assert stack.clickhouse is not None
    await send(http, stack, key, project_id, FIRST)
    first = start(sessionizers, nats_server, standin)
    await first.url()
    await sessionized_through_last_insert(stack.clickhouse, js, project_id)
    await send(http, stack, key, project_id, SECOND)
    await asyncio.sleep(random.uniform(0, 0.3))  # somewhere in its cycles
    assert first.process.poll() is None
    await asyncio.to_thread(first.kill)
    await send(http, stack, key, project_id, LATE)

    second = start(sessionizers, nats_server, standin)
    await second.url()
    await sessionized_through_last_insert(stack.clickhouse, js, project_id)
    assert await second.stop() == 0
    kept = await table(stack.clickhouse, project_id)
    assert len(kept) == EXPECTED_SESSIONS

    output = await rebuilt(nats_server, standin, project_id, "--max-memory", "1GiB")
    assert f"rebuilt project {project_id!r}: 4 identities, {EXPECTED_SESSIONS} sessions written" in output
    assert "shards recomputed: 1 of 1" in output  # progress, as lines when not on a terminal
    assert await table(stack.clickhouse, project_id) == kept
    # A window with no events (they are all older than 30 minutes) recomputes nothing.
    output = await rebuilt(nats_server, standin, project_id, "--since", "30m")
    assert f"rebuilt project {project_id!r}: 0 identities, 0 sessions written" in output
    assert await table(stack.clickhouse, project_id) == kept


@pytest.mark.slow
async def test_two_sessionizers_at_once_leave_the_table_a_rebuild_computes(
    pipeline: tuple[Stack, str],
    http: httpx.AsyncClient,
    js: JetStreamContext,
    nats_server: NatsServerProcess,
    standin: StandIn,
    sessionizers: list[SessionizerProcess],
    project_id: str,
) -> None:
    stack, key = pipeline
    assert stack.clickhouse is not None
    pair = [start(sessionizers, nats_server, standin) for _ in range(2)]
    urls = [await one.url() for one in pair]
    for wave in (FIRST, SECOND, LATE):
        await send(http, stack, key, project_id, wave)
        await asyncio.sleep(0.5)  # a few cycles of each between the waves
    await sessionized_through_last_insert(stack.clickhouse, js, project_id)
    for url in urls:
        assert (await http.get(f"{url}/readyz")).status_code == 200
        metrics = (await http.get(f"{url}/metrics")).text
        assert re.search(
            rf'headwater_sessionizer_cycles_total\{{outcome="\w+",project="{project_id}"\}}', metrics
        )
    assert [await one.stop() for one in pair] == [0, 0]
    kept = await table(stack.clickhouse, project_id)
    assert len(kept) == EXPECTED_SESSIONS

    await rebuilt(nats_server, standin, project_id)
    assert await table(stack.clickhouse, project_id) == kept

    # The status command, as text and JSON.
    where = ("--nats-url", nats_server.url, "--clickhouse-url", standin.url("default"))
    listed = await run_cli("sessions", "status", "--project", project_id, "--json", *where)
    [row] = listed.json()
    assert row["project"] == project_id and row["sessions"] == EXPECTED_SESSIONS and row["enabled"]
    assert row["watermark"] is not None and 0 <= row["lag_seconds"] < 600 and row["error"] is None
    assert row["writing"] == 0  # both stopped once their cycle was done, and the rebuild is done
    text = await run_cli("sessions", "status", *where)
    assert text.code == 0, text.stderr
    line = rf"^{project_id}\s+\S+\s+[\d.,]+\s+{EXPECTED_SESSIONS}\s+0(\+\d+!)?$"
    assert re.search(line, text.stdout, re.MULTILINE)
    # Without --clickhouse-url the counts come through the control API (as with `headwater up`).
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    assert stack.control_url is not None
    through = ("--nats-url", nats_server.url, "--control-url", stack.control_url)
    viacontrol = await run_cli("sessions", "status", "--project", project_id, "--json", *through, env=env)
    assert viacontrol.json()[0]["sessions"] == EXPECTED_SESSIONS


async def test_the_cli_refuses_an_unknown_project(nats_server: NatsServerProcess, standin: StandIn) -> None:
    where = ("--nats-url", nats_server.url, "--clickhouse-url", standin.url("default"))
    result = await run_cli("sessions", "rebuild", "--project", "nosuch", *where)
    assert result.code != 0 and "no project 'nosuch'" in result.stderr


async def test_a_failing_project_is_retried_later_and_does_not_stop_the_others(
    clickhouse: Client, js: JetStreamContext, project_id: str, clickhouse_url: str
) -> None:
    database = f"hw_{project_id}"
    clickhouse.command(
        f"INSERT INTO {database}.events (message_id, type, anonymous_id, timestamp, received_at) "
        "VALUES ('m1', 'page', 'a', now64(3) - 60, now64(3) - 60)"
    )
    await asyncio.sleep(0.05)
    watermarks = Watermarks(await ensure_sessions_bucket(js))
    settings = SessionizerSettings(clickhouse_url, interval_seconds=60, settle_seconds=0)
    # "missing" has no database: every cycle of it fails.
    sessionizer = Sessionizer(
        clickhouse, watermarks, settings, lambda: {"missing": Sessions(), project_id: Sessions()}
    )
    await sessionizer.run_round()
    await sessionizer.run_round()  # "missing" waits for its retry: not tried again yet
    cycles = sessionizer.metrics.cycles
    assert cycles.labels("missing", "failed")._value.get() == 1
    assert cycles.labels(project_id, "advanced")._value.get() == 2
    assert sessionizer.metrics.sessions.labels(project_id)._value.get() == 1
    assert "missing" in (sessionizer.last_error or "")
    healthy, _ = sessionizer.health()
    assert healthy  # failing for less than unready_after_failing_seconds
    assert len(await table(clickhouse, project_id)) == 1


async def test_stopping_lets_the_cycle_in_progress_finish_and_move_the_watermark(
    clickhouse: Client, js: JetStreamContext, project_id: str, clickhouse_url: str
) -> None:
    clickhouse.command(
        f"INSERT INTO hw_{project_id}.events (message_id, type, anonymous_id, timestamp, received_at) "
        "VALUES ('m1', 'page', 'a', now64(3) - 60, now64(3) - 60)"
    )
    await asyncio.sleep(0.05)
    watermarks = Watermarks(await ensure_sessions_bucket(js))
    settings = SessionizerSettings(clickhouse_url, interval_seconds=60, settle_seconds=0)
    sessionizer = Sessionizer(clickhouse, watermarks, settings, lambda: {project_id: Sessions()})
    await sessionizer.start()

    async def in_a_cycle() -> bool:
        return sessionizer.cycle_started is not None

    await eventually(in_a_cycle, bool, timeout=10, interval=0.001)
    await sessionizer.stop()
    assert not sessionizer.running and sessionizer.broken is None
    assert sessionizer.metrics.cycles.labels(project_id, "advanced")._value.get() == 1
    assert (await watermarks.get(project_id)).revision >= 1
    assert len(await table(clickhouse, project_id)) == 1
