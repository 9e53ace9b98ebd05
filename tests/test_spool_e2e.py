"""The spool end to end: real nats-server processes stopped, flapping and restarted, an edge killed
with SIGKILL while spooling, a full spool, a corrupt entry. Every event that got a 2xx must be in
ClickHouse exactly once, counted by messageId."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from hw_testing import (
    BIN,
    SpoolingStackFactory,
    StackFactory,
    basic_auth,
    cli_env,
    create_project,
    eventually,
    stored_copies,
)

from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.ports import free_ports
from headwater.ops.runtime import Stack
from headwater.spool.backend import open_cache

pytestmark = [pytest.mark.services, pytest.mark.slow]


class Load:
    """Sends single events with unique messageIds from `concurrency` clients; records outcomes."""

    def __init__(self, http: httpx.AsyncClient, url: str, key: str, concurrency: int = 8) -> None:
        self._http, self._url, self._key = http, url, key
        self._concurrency = concurrency
        self._ids = (f"m-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())
        self.acked: set[str] = set()
        self.failed: set[str] = set()
        self.statuses: dict[int, int] = {}
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []

    async def send(self, message_id: str) -> int:
        event = {"type": "track", "event": "Load", "userId": "u", "messageId": message_id}
        try:
            response = await self._http.post(
                f"{self._url}/v1/track", json=event, headers=basic_auth(self._key)
            )
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        except AttributeError:
            # anyio on uvloop: a connection the killed edge reset before the client asked for its
            # peer has no socket left, and the client raises this instead of a ConnectError. Not
            # acknowledged either way.
            status = 0
        self.statuses[status] = self.statuses.get(status, 0) + 1
        (self.acked if status == 200 else self.failed).add(message_id)
        return status

    async def _client(self) -> None:
        while self._running:
            await self.send(next(self._ids))

    def start(self) -> None:
        self._running = True
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self._concurrency)]

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)


async def assert_exactly_once(
    stack: Stack, project_id: str, load: Load, timeout: float = 90
) -> dict[str, int]:
    async def probe() -> dict[str, int]:
        return await stored_copies(stack, project_id)

    stored = await eventually(probe, lambda s: load.acked <= set(s), timeout=timeout, interval=0.5)
    assert all(copies == 1 for copies in stored.values()), "an event shows twice"
    # Anything stored beyond the acknowledged came from a request that got an error: one event per
    # request, so it is whole, never half of one (and the client was told to retry it).
    assert set(stored) - load.acked <= load.failed
    return stored


@pytest.fixture
async def under_load(
    make_spooling_stack: SpoolingStackFactory, http: httpx.AsyncClient
) -> tuple[Stack, Load]:
    """An edge with a spool, a control plane and a consumer, and a load on the edge, started."""
    stack, key = await make_spooling_stack()
    assert stack.edge_url is not None
    load = Load(http, stack.edge_url, key)
    load.start()
    return stack, load


async def more_acked(load: Load, count: int, timeout: float = 15) -> None:
    """Wait until `count` more events than now got a 2xx."""
    target = len(load.acked) + count

    async def acked() -> int:
        return len(load.acked)

    await eventually(acked, lambda n: n >= target, timeout=timeout)


async def breaker_open(stack: Stack, is_open: bool, timeout: float = 15) -> None:
    breaker = stack.breaker
    assert breaker is not None

    async def state() -> bool:
        return breaker.is_open

    await eventually(state, lambda state: state == is_open, timeout=timeout)


async def test_nats_outage_under_load_loses_nothing_and_doubles_nothing(
    under_load: tuple[Stack, Load], project_id: str, nats_server: NatsServerProcess
) -> None:
    stack, load = under_load
    await more_acked(load, 20)
    nats_server.stop()
    spool = stack.spool
    assert spool is not None

    async def appended() -> int:
        return spool.stats().appended

    # the edge keeps saying yes: into the spool
    await eventually(appended, lambda n: n >= 50, timeout=15)
    nats_server.start()
    await breaker_open(stack, False)
    await more_acked(load, 20)
    await load.stop()
    stored = await assert_exactly_once(stack, project_id, load)
    assert len(stored) >= len(load.acked) > 0
    spooled = stack.spool.stats().appended
    print(f"\noutage: {len(load.acked)} acknowledged, statuses {load.statuses}, spooled {spooled}")


async def test_nats_flapping_loses_nothing_and_doubles_nothing(
    under_load: tuple[Stack, Load], project_id: str, nats_server: NatsServerProcess
) -> None:
    stack, load = under_load
    for _ in range(3):
        await more_acked(load, 20)
        nats_server.stop()
        await breaker_open(stack, True)  # the edge noticed: spooling
        await more_acked(load, 10)
        nats_server.start()
        await breaker_open(stack, False)
    await more_acked(load, 20)
    await load.stop()
    await assert_exactly_once(stack, project_id, load)
    assert stack.breaker is not None and stack.breaker.trips >= 3


async def test_a_full_spool_answers_503_and_evicts_nothing(
    make_spooling_stack: SpoolingStackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    nats_server: NatsServerProcess,
) -> None:
    stack, key = await make_spooling_stack(spool_max_bytes=30_000)
    assert stack.edge_url is not None and stack.spool is not None
    load = Load(http, stack.edge_url, key, concurrency=1)
    nats_server.stop()
    statuses = [await load.send(f"full-{n}") for n in range(400)]
    assert 503 in statuses, "the spool never filled up"
    first_refusal = statuses.index(503)
    assert set(statuses[:first_refusal]) == {200}
    spooled = stack.spool.stats().entries
    assert spooled == len(load.acked)  # everything acknowledged is still there: nothing evicted
    nats_server.start()
    await assert_exactly_once(stack, project_id, load)


async def test_a_corrupt_entry_is_quarantined_and_the_rest_drains(
    make_spooling_stack: SpoolingStackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    nats_server: NatsServerProcess,
) -> None:
    stack, key = await make_spooling_stack()
    edge = stack.settings.edge
    assert stack.edge_url is not None and stack.spool is not None
    load = Load(http, stack.edge_url, key, concurrency=1)
    nats_server.stop()
    for n in range(5):
        assert await load.send(f"c-{n}") == 200
    assert edge is not None and edge.spool_dir is not None
    raw = open_cache(Path(edge.spool_dir), timeout=5)
    try:
        victim = sorted(raw.iterkeys())[2]
        raw.set(victim, b"bit rot")
    finally:
        raw.close()
    nats_server.start()

    async def drained() -> int:
        assert stack.spool is not None
        return stack.spool.stats().entries

    await eventually(drained, lambda n: n == 0, timeout=30)
    assert stack.spool.stats().quarantined == 1
    stored = await eventually(
        lambda: stored_copies(stack, project_id), lambda s: len(s) == 4, timeout=30, interval=0.5
    )
    assert set(stored) == load.acked - {"c-2"}


def start_edge(port: int, nats_url: str, spool_dir: Path) -> subprocess.Popen[str]:
    env = cli_env()
    process = subprocess.Popen(
        [str(BIN / "headwater"), "serve", "edge", "--port", str(port),
         "--operator-port", "0", "--nats-url", nats_url,
         "--spool-dir", str(spool_dir), "--publish-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    assert "running" in process.stdout.readline()
    return process


async def test_an_edge_killed_while_spooling_drains_after_restart(
    make_stack,
    http: httpx.AsyncClient,
    project_id: str,
    nats_server: NatsServerProcess,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    stack: Stack = await make_stack(control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    port, spool_dir = free_ports(1)[0], tmp_path / "edge-spool"
    edge = await asyncio.to_thread(start_edge, port, nats_server.url, spool_dir)
    load = Load(http, f"http://127.0.0.1:{port}", key)
    try:

        async def probe() -> int:
            return await load.send(f"probe-{uuid.uuid4().hex[:6]}")

        await eventually(probe, lambda status: status == 200, timeout=10)
        nats_server.stop()
        load.start()
        await more_acked(load, 50)  # into the spool
        edge.send_signal(signal.SIGKILL)  # mid-stream, while it spools
        await load.stop()
        edge.wait(10)
        spooled = [e for e in load.acked if not e.startswith("probe-")]
        assert spooled, "nothing was spooled before the kill"
        nats_server.start()
        edge = await asyncio.to_thread(start_edge, port, nats_server.url, spool_dir)
        await assert_exactly_once(stack, project_id, load)
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(30)


async def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    command = [str(BIN / "headwater"), *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env, timeout=120
    )


async def test_spool_cli_status_export_and_manual_drain(
    make_stack: StackFactory,
    make_spooling_stack: SpoolingStackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    nats_server: NatsServerProcess,
    tmp_path: Path,
) -> None:
    edge_stack, key = await make_spooling_stack()
    assert edge_stack.edge_url is not None
    load = Load(http, edge_stack.edge_url, key, concurrency=1)
    nats_server.stop()
    for n in range(20):
        assert await load.send(f"cli-{n}") == 200
    await edge_stack.stop()  # the edge goes away with its spool full: drain it by hand
    base = str(tmp_path / "spool")

    status = await run_cli("spool", "status", "--spool-dir", base, "--json")
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)
    assert (row["entries"], row["quarantined"], row["drained_by"]) == (20, 0, "nobody")

    exported = await run_cli("spool", "export", "--spool-dir", base)
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == 20 and all(line["subject"] == f"hw.events.{project_id}" for line in lines)

    nats_server.start()
    drained = await run_cli("spool", "drain", "--spool-dir", base, "--nats-url", nats_server.url)
    assert drained.returncode == 0, drained.stderr
    assert "drained 20 envelopes" in drained.stdout

    consumer_stack: Stack = await make_stack(control=True, consumer=True)
    await assert_exactly_once(consumer_stack, project_id, load)
    after = await run_cli("spool", "status", "--spool-dir", base, "--json")
    assert json.loads(after.stdout)[0]["entries"] == 0
