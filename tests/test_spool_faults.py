"""A spool the edge cannot write or open: faults injected below the spool (a full disk's ENOSPC,
SQLite's "disk I/O error"), with a real nats-server behind the drainer. The edge must keep serving
to JetStream, say what is wrong, and drain once the spool works again."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hw_testing import basic_auth, create_project, eventually, stored_copies
from nats.js import JetStreamContext

from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.edge.drainer import Drainer
from headwater.edge.fallback import CircuitBreaker
from headwater.edge.metrics import EdgeMetrics
from headwater.edge.settings import EdgeSettings
from headwater.edge.streams import StreamSettings
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack, StackSettings
from headwater.spool import Spool, SpoolConfig, SpoolWriteError, locks, store

pytestmark = [pytest.mark.services]

ROOMY = SpoolConfig(min_free_bytes=0, min_free_ratio=0.0)


class _FullDiskOs(SimpleNamespace):
    """`os` for the lock module, whose writes fail as on a full filesystem."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def _failing(times: int, real: Callable[..., Any], error: Exception) -> Callable[..., Any]:
    """`real`, except that its first `times` calls raise `error`."""
    left = [times]

    def call(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise error
        return real(*args, **kwargs)

    return call


def test_the_drain_lock_is_taken_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "os", _FullDiskOs())
    lock = locks.DirLock(tmp_path / "drain.lock")
    assert lock.try_acquire()  # the pid written for diagnosis is a nicety, not the lock
    lock.release()


async def _spool_with(tmp_path: Path, count: int, project: str = "faults") -> Spool:
    spool = await Spool(tmp_path / "spool", ROOMY).open()
    for n in range(count):
        await spool.append(events_subject(project), f"fault-{n}", b'{"v":1}')
    return spool


async def _stream_messages(js: JetStreamContext) -> int:
    return int((await js.stream_info(EVENTS_STREAM)).state.messages)


async def test_a_drainer_survives_a_spool_it_cannot_write_and_drains_once_it_can(
    js: JetStreamContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = await _spool_with(tmp_path, 5)
    full = sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(locks, "os", _FullDiskOs())
    monkeypatch.setattr(store.Store, "remove", _failing(2, store.Store.remove, full))
    metrics = EdgeMetrics()

    async def probe() -> None:
        await js.stream_info(EVENTS_STREAM)

    breaker = CircuitBreaker(probe)
    drainer = Drainer(spool, js, breaker, metrics, idle_interval=0.05, retry_max_seconds=0.2)
    metrics.watch(lambda: {"breaker_open": False, "spool": spool.stats(), "spool_problem": drainer.problem})
    problems: list[str | None] = []
    drainer.start()
    try:

        async def state() -> tuple[int, str | None]:
            problems.append(drainer.problem)
            assert drainer.failure is None, f"the drainer died: {drainer.failure!r}"
            return spool.stats().entries, drainer.problem

        # The spool's count drops in the removing thread before the drainer's coroutine resumes
        # and clears its problem: wait for both, not for the count alone.
        await eventually(state, lambda s: s == (0, None), timeout=20, interval=0.02)
    finally:
        await drainer.stop()
        await breaker.stop()
        await spool.close()
    assert any(p and "disk is full" in p for p in problems), "the fault was never reported"
    assert drainer.problem is None, "still reported after it went away"
    assert await _stream_messages(js) == 5  # republished after a failed delete: deduplicated
    assert b"headwater_edge_spool_failing 0.0" in metrics.render()


async def test_a_spool_that_cannot_open_is_retried_in_the_background(
    js: JetStreamContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = await _spool_with(tmp_path, 3)
    await spool.close()
    io_error = sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(store, "open_cache", _failing(3, store.open_cache, io_error))
    metrics = EdgeMetrics()

    async def probe() -> None:
        await js.stream_info(EVENTS_STREAM)

    breaker = CircuitBreaker(probe)
    drainer = Drainer(spool, js, breaker, metrics, idle_interval=0.05, retry_max_seconds=0.2)
    metrics.watch(lambda: {"breaker_open": False, "spool": spool.stats(), "spool_problem": drainer.problem})
    with caplog.at_level(logging.WARNING, "headwater"):
        assert not await drainer.open_spool()  # logged and reported, not raised
    assert drainer.problem is not None and "disk I/O error" in drainer.problem
    assert b"headwater_edge_spool_failing 1.0" in metrics.render()
    assert not spool.writable()
    drainer.start()
    try:
        await eventually(lambda: _stream_messages(js), lambda n: n == 3, timeout=20)
        await eventually(lambda: _value(lambda: spool.stats().entries), lambda n: n == 0, timeout=20)
    finally:
        await drainer.stop()
        await breaker.stop()
        await spool.close()
    faults = [r for r in caplog.records if "disk I/O error" in r.getMessage()]
    assert len(faults) == 1, "one line per fault, not one per retry"


async def _value(fn: Callable[[], Any]) -> Any:
    return fn()


async def test_an_edge_starts_and_serves_to_jetstream_when_its_spool_cannot_open(
    make_stack: Any, http: httpx.AsyncClient, project_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io_error = sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(store, "open_cache", _failing(1_000_000, store.open_cache, io_error))
    edge = EdgeSettings(port=0, spool_dir=str(tmp_path / "spool" / "0"))
    stack: Stack = await make_stack(edge=edge, control=True, consumer=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    event = {"type": "track", "event": "E", "userId": "u", "messageId": "served-anyway"}
    response = await http.post(f"{stack.edge_url}/v1/track", json=event, headers=basic_auth(key))
    assert response.status_code == 200
    ready = (await http.get(f"{stack.edge_operator_url}/readyz")).json()
    assert "disk I/O error" in ready["spool_problem"]
    monkeypatch.undo()  # the disk is healthy again: the spool opens in the background
    assert stack.spool is not None
    await eventually(lambda: _value(stack.spool.writable), bool, timeout=20)  # type: ignore[union-attr]
    assert (await http.get(f"{stack.edge_operator_url}/readyz")).json()["spool_problem"] is None


async def test_a_spool_full_by_its_byte_cap_is_not_ready(
    make_stack: Any, http: httpx.AsyncClient, project_id: str, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    edge = EdgeSettings(
        port=0, spool_dir=str(tmp_path / "spool" / "0"), spool_max_bytes=20_000, publish_timeout_seconds=1.0
    )
    stack: Stack = await make_stack(edge=edge, control=True)
    key = str((await create_project(http, stack, project_id))["secret_key"])
    nats_server.stop()
    statuses = []
    for n in range(200):
        event = {"type": "track", "event": "E", "userId": "u", "messageId": f"cap-{n}"}
        response = await http.post(f"{stack.edge_url}/v1/track", json=event, headers=basic_auth(key))
        statuses.append(response.status_code)
        if response.status_code == 503:
            break
    assert statuses[-1] == 503, "the spool never filled up"
    ready = await http.get(f"{stack.edge_operator_url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["spool"]["full"] == "max_bytes"
    nats_server.start()


async def test_a_spool_below_the_watermark_at_open_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = SpoolConfig(
        min_free_bytes=1 << 30, disk_usage=lambda _: (2 << 30, (2 << 30) - (100 << 20), 100 << 20)
    )
    with caplog.at_level(logging.WARNING, "headwater"):
        async with Spool(tmp_path / "spool", config):
            pass
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("watermark" in line and "refuses" in line for line in lines), lines


async def test_spool_files_and_lock_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        directory = tmp_path / "base" / "0"
        async with Spool(directory, ROOMY) as spool:
            await spool.append("hw.events.p", "m-1", b"{}")
            assert spool.try_acquire_drain_lock()
            created = [p for p in directory.rglob("*")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [directory, directory.parent, *created]}
    finally:
        os.umask(old)
    assert {name for name in modes if name.endswith("-wal")}, modes  # the WAL exists while open
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if name in {"0", "base", "quarantine"} else 0o600)
    }
    assert not wrong, wrong


def _edge_stack(nats_url: str, spool_dir: Path) -> Stack:
    edge = EdgeSettings(
        port=0,
        operator_port=0,
        spool_dir=str(spool_dir),
        spool_min_free_bytes=0,
        publish_timeout_seconds=1.0,
    )
    return Stack(StackSettings(nats_url=nats_url, streams=StreamSettings(), edge=edge))


def _fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem is full (ENOSPC)."""
    ballast = directory / "ballast"
    stopped_by: int | None = None
    with ballast.open("wb", buffering=0) as out:
        for size in (65536, 1):  # big chunks, then the last bytes one at a time
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                stopped_by = exc.errno
    assert stopped_by == errno.ENOSPC
    return ballast


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_spool_disk_neither_stops_nor_blocks_the_edge_and_loses_nothing(
    make_stack: Any,
    http: httpx.AsyncClient,
    project_id: str,
    nats_server: NatsServerProcess,
    small_disk: Path,
) -> None:
    back: Stack = await make_stack(control=True, consumer=True)
    key = str((await create_project(http, back, project_id))["secret_key"])
    spool_dir = small_disk / "spool" / "0"
    acked: set[str] = set()
    refused: set[str] = set()

    async def send(edge: Stack, message_id: str) -> int:
        event = {"type": "track", "event": "E", "userId": "u", "messageId": message_id}
        try:
            response = await http.post(f"{edge.edge_url}/v1/track", json=event, headers=basic_auth(key))
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        (acked if status == 200 else refused).add(message_id)
        return status

    edge = _edge_stack(nats_server.url, spool_dir)
    await edge.start()
    try:
        assert edge.registry is not None
        await eventually(lambda: _value(lambda: edge.registry.get(project_id)), bool)  # type: ignore[union-attr]
        nats_server.stop()
        assert {await send(edge, f"spooled-{n}") for n in range(40)} == {200}
        ballast = _fill(small_disk)
        assert {await send(edge, f"disk-full-{n}") for n in range(5)} == {503}
        nats_server.start()  # NATS back, the disk still full: the edge serves to JetStream
        await eventually(lambda: send(edge, f"to-nats-{len(acked)}"), lambda s: s == 200, timeout=20)
        await asyncio.sleep(2.0)
        assert edge.failed() is None, edge.failed()
        assert {await send(edge, f"to-nats-b-{n}") for n in range(10)} == {200}
        nats_server.stop()
    finally:
        await edge.stop()
    nats_server.start()

    restarted = _edge_stack(nats_server.url, spool_dir)  # on the full disk, NATS up
    await restarted.start()
    try:
        assert restarted.registry is not None
        await eventually(lambda: _value(lambda: restarted.registry.get(project_id)), bool)  # type: ignore[union-attr]
        assert {await send(restarted, f"after-restart-{n}") for n in range(10)} == {200}
        assert restarted.failed() is None, restarted.failed()
        ready = await http.get(f"{restarted.edge_operator_url}/readyz")
        assert ready.status_code == 200  # JetStream takes the events
        assert "full" in ready.json()["spool_problem"], ready.json()  # and the spool is reported
        ballast.unlink()  # space again: whatever is left in the spool drains
        assert restarted.spool is not None
        await eventually(
            lambda: _value(lambda: restarted.spool.stats()),
            lambda s: s.opened and s.entries == 0,
            timeout=30,  # type: ignore[union-attr]
        )
    finally:
        await restarted.stop()
    found = await eventually(
        lambda: stored_copies(back, project_id), lambda s: acked <= set(s), timeout=60, interval=0.5
    )
    assert all(copies == 1 for copies in found.values()), "an event shows twice"
    assert set(found) - acked <= refused


async def test_failing_spool_writes_log_once_not_per_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    io_error = sqlite3.OperationalError("disk I/O error")
    async with Spool(tmp_path / "spool", ROOMY) as spool:
        monkeypatch.setattr(store.Store, "append_batch", _failing(5, store.Store.append_batch, io_error))
        with caplog.at_level(logging.INFO, "headwater"):
            for n in range(5):
                with pytest.raises(SpoolWriteError):
                    await spool.append("hw.events.p", f"m-{n}", b"{}")
            await spool.append("hw.events.p", "m-ok", b"{}")
    failures = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "disk I/O error" in r.getMessage()
    ]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert any("writes succeed again" in r.getMessage() for r in caplog.records)
