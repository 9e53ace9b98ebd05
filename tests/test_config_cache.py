"""An edge restarted while NATS is down starts from its config cache on disk and spools; once NATS
is back, every event it acknowledged is stored exactly once. Configs older than --config-max-age
are not served (503). Real nats-server and the embedded ClickHouse engine."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_testing import basic_auth, create_project, eventually, stored_copies

from headwater.control.store import BucketSettings, ensure_projects_bucket
from headwater.core.projects.configcache import ConfigCache
from headwater.core.projects.registry import ProjectRegistry, StaleConfig
from headwater.edge.settings import EdgeSettings
from headwater.edge.streams import StreamSettings
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack, StackSettings

pytestmark = [pytest.mark.services]


def test_the_cache_is_written_atomically_and_privately(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        cache = ConfigCache(tmp_path / "edge" / "projects-cache.json")
        cache.save({"p": b'{"id":"p"}'}, saved_at=1000.0)
        cache.save({"p": b'{"id":"p"}', "q": b'{"id":"q"}'}, saved_at=2000.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert [p.name for p in cache.path.parent.iterdir()] == [cache.path.name]  # no temporary left
    loaded = cache.load()
    assert loaded is not None and loaded.saved_at == 2000.0
    assert loaded.entries == {"p": b'{"id":"p"}', "q": b'{"id":"q"}'}
    cache.path.write_text("{half a fi")
    assert cache.load() is None  # unreadable: ignored (logged), never a crash


def _edge(nats_url: str, tmp_path: Path, **overrides: Any) -> Stack:
    settings: dict[str, Any] = {
        "port": 0,
        "operator_port": 0,
        "spool_dir": str(tmp_path / "spool" / "0"),
        "config_cache": str(tmp_path / "spool" / "projects-cache.json"),
        "publish_timeout_seconds": 1.0,
    }
    settings.update(overrides)
    return Stack(StackSettings(nats_url=nats_url, streams=StreamSettings(), edge=EdgeSettings(**settings)))


async def _known(stack: Stack, project_id: str) -> None:
    async def known() -> bool:
        return stack.registry is not None and stack.registry.get(project_id) is not None

    await eventually(known, bool)


async def test_an_edge_restarted_while_nats_is_down_serves_from_its_config_cache(
    make_stack: Any, http: httpx.AsyncClient, project_id: str, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    back: Stack = await make_stack(control=True, consumer=True)
    created = await create_project(http, back, project_id)
    key = str(created["secret_key"])
    acked: set[str] = set()

    async def send(edge: Stack, message_id: str) -> httpx.Response:
        event = {"type": "track", "event": "E", "userId": "u", "messageId": message_id}
        response = await http.post(f"{edge.edge_url}/v1/track", json=event, headers=basic_auth(key))
        if response.status_code == 200:
            acked.add(message_id)
        return response

    edge = _edge(nats_server.url, tmp_path)
    await edge.start()
    try:
        await _known(edge, project_id)
        assert (await send(edge, "before")).status_code == 200
    finally:
        await edge.stop()
    cached = (tmp_path / "spool" / "projects-cache.json").read_text()
    assert key not in cached and project_id in json.loads(cached)["projects"]  # digests only
    assert stat.S_IMODE((tmp_path / "spool" / "projects-cache.json").stat().st_mode) == 0o600

    nats_server.stop()
    restarted = _edge(nats_server.url, tmp_path)
    try:
        await asyncio.wait_for(restarted.start(), 20)  # NATS still down
        for n in range(5):
            response = await send(restarted, f"offline-{n}")
            assert response.status_code == 200, response.text
        ready = (await http.get(f"{restarted.edge_operator_url}/readyz")).json()
        assert ready["ready"] and ready["config"]["from_cache"], ready
        assert restarted.spool is not None and restarted.spool.stats().entries == 5
        nats_server.start()
        await eventually(
            lambda: _now(lambda: restarted.spool.stats().entries),
            lambda n: n == 0,
            timeout=30,  # type: ignore[union-attr]
        )
        await eventually(lambda: _now(lambda: restarted.registry.from_cache), lambda f: not f, timeout=30)  # type: ignore[union-attr]
        assert (await send(restarted, "online-again")).status_code == 200
        assert restarted.failed() is None
    finally:
        await restarted.stop()

    found = await eventually(
        lambda: stored_copies(back, project_id), lambda s: acked <= set(s), timeout=60, interval=0.5
    )
    assert set(found) == acked and all(c == 1 for c in found.values()), found


async def test_configs_older_than_the_max_age_are_not_served(
    make_stack: Any, http: httpx.AsyncClient, project_id: str, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    back: Stack = await make_stack(control=True, consumer=True)
    key = str((await create_project(http, back, project_id))["secret_key"])
    edge = _edge(nats_server.url, tmp_path, config_max_age_seconds=1.0)
    await edge.start()
    await _known(edge, project_id)
    await edge.stop()
    nats_server.stop()
    await asyncio.sleep(1.5)
    restarted = _edge(nats_server.url, tmp_path, config_max_age_seconds=1.0)
    try:
        await asyncio.wait_for(restarted.start(), 20)
        event = {"type": "track", "event": "E", "userId": "u"}
        response = await http.post(f"{restarted.edge_url}/v1/track", json=event, headers=basic_auth(key))
        assert response.status_code == 503 and response.json()["code"] == "config_stale", response.text
        assert "Retry-After" in response.headers
        ready = await http.get(f"{restarted.edge_operator_url}/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["projects"]
    finally:
        await restarted.stop()
        nats_server.start()


async def _now(fn: Any) -> Any:
    return fn()


async def test_a_running_edge_stops_serving_configs_kept_through_an_outage_past_the_max_age(
    js: Any, tmp_path: Path
) -> None:
    kv = await ensure_projects_bucket(js, BucketSettings())
    registry = ProjectRegistry(kv, cache=ConfigCache(tmp_path / "cache.json"), max_age=0.5)
    await registry.start()
    try:
        assert registry.resolve_key("hw_unknown") is None and registry.usable
        registry.on_disconnected()  # as the NATS client reports an outage
        assert registry.resolve_key("hw_unknown") is None  # within the max age: served
        await asyncio.sleep(0.7)
        with pytest.raises(StaleConfig):
            registry.resolve_key("hw_unknown")
        assert not registry.usable
    finally:
        await registry.stop()
    assert (tmp_path / "cache.json").is_file()
