"""The local disk spool on a real diskcache directory (no NATS): order, group commit, durability
before the acknowledgement, bounds, quarantine, drain leases and locks, SIGKILL safety."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from headwater.spool import (
    DiskUsage,
    DrainLockNotHeld,
    Spool,
    SpoolClosed,
    SpoolConfig,
    SpooledEnvelope,
    SpoolFull,
    list_spool_dirs,
    worker_spool_dir,
)
from headwater.spool.backend import open_cache
from headwater.spool.format import HEADER_SIZE, KeyClock, RecordError, decode, encode, parse_key
from headwater.spool.store import Store

SUBJECT = "hw.events.p1"
GIB = 1 << 30


class FakeDisk:
    """An injectable `shutil.disk_usage`: a 100 GiB filesystem whose free space the test sets;
    `gate` lets a test hold the writer thread inside its per-group disk sample."""

    def __init__(self, free: int = 50 * GIB) -> None:
        self.total = 100 * GIB
        self.free = free
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, path: str) -> DiskUsage:
        assert self.gate.wait(10), "gate never opened"
        return DiskUsage(self.total, self.total - self.free, self.free)


def config(**overrides: Any) -> SpoolConfig:
    settings: dict[str, Any] = {"disk_usage": FakeDisk()}
    settings.update(overrides)
    return SpoolConfig(**settings)


async def drain_all(spool: Spool, n: int = 10_000) -> list[SpooledEnvelope]:
    assert spool.try_acquire_drain_lock()
    return await spool.peek_batch(n)


async def exported_keys(directory: Path) -> set[str]:
    """The keys another Spool instance (its own SQLite connection) sees committed."""
    async with Spool(directory, config()) as other:
        return {record.key async for record in other.export()}


# -- record format and keys ------------------------------------------------------------------------


def test_record_round_trip_and_every_corruption_is_detected() -> None:
    key = "00000000000000000001-00000000-1"
    value = encode(key, SUBJECT, "m-1", b'{"event":"x"}')
    assert decode(key, value) == SpooledEnvelope(key, SUBJECT, "m-1", b'{"event":"x"}')
    for i in range(len(value)):
        flipped = bytearray(value)
        flipped[i] ^= 0x01
        with pytest.raises(RecordError):
            decode(key, bytes(flipped))
    with pytest.raises(RecordError, match="checksum"):
        decode("00000000000000000002-00000000-1", value)  # a value under another row's key
    with pytest.raises(RecordError, match="shorter"):
        decode(key, value[: HEADER_SIZE - 1])
    with pytest.raises(RecordError, match="not bytes"):
        decode(key, {"a": 1})


def test_keys_keep_increasing_across_restarts_and_clock_steps_back() -> None:
    clock = KeyClock(pid=7, newest_key=None)
    first = clock.next(now_ns=2_000)
    second = clock.next(now_ns=1_000)  # the wall clock stepped back
    assert first < second
    restarted = KeyClock(pid=8, newest_key=second)  # another process, a clock further behind
    third = restarted.next(now_ns=500)
    assert second < third
    assert parse_key(third) == (2_000, 2)


def test_appenders_sharing_a_directory_never_overwrite_each_other(tmp_path: Path) -> None:
    # Same pid, a frozen clock: both key clocks produce the same keys; `add` skips taken ones.
    first, second = (Store(tmp_path, 5, clock_ns=lambda: 1_000) for _ in range(2))
    try:
        keys = first.append_batch([(SUBJECT, "a-0", b"a")]) + second.append_batch([(SUBJECT, "b-0", b"b")])
        keys += first.append_batch([(SUBJECT, "a-1", b"a")]) + second.append_batch([(SUBJECT, "b-1", b"b")])
        assert len(set(keys)) == 4
        assert sorted(e.msg_id for e in first.peek(10, exclude=())) == ["a-0", "a-1", "b-0", "b-1"]
    finally:
        first.close()
        second.close()


# -- appending ---------------------------------------------------------------------------------------


async def test_concurrent_appends_come_back_in_call_order(tmp_path: Path) -> None:
    async with Spool(tmp_path, config()) as spool:
        keys = await asyncio.gather(*(spool.append(SUBJECT, f"m-{i}", b"x" * 100) for i in range(300)))
        assert keys == sorted(keys) and len(set(keys)) == 300
        drained = await drain_all(spool)
    assert [e.msg_id for e in drained] == [f"m-{i}" for i in range(300)]
    assert [e.key for e in drained] == keys


async def test_fifo_per_producer_and_by_commit_across_many_producers(tmp_path: Path) -> None:
    acked: list[str] = []

    async def producer(spool: Spool, p: int) -> None:
        for i in range(20):
            acked.append(await spool.append(SUBJECT, f"{p}-{i}", os.urandom(random.randint(10, 2000))))

    async with Spool(tmp_path, config()) as spool:
        await asyncio.gather(*(producer(spool, p) for p in range(64)))
        drained = await drain_all(spool)
    assert len(drained) == 64 * 20
    assert [e.key for e in drained] == sorted(acked)
    for p in range(64):
        mine = [int(e.msg_id.split("-")[1]) for e in drained if e.msg_id.startswith(f"{p}-")]
        assert mine == list(range(20))


async def test_group_commit_writes_many_appends_per_transaction(tmp_path: Path) -> None:
    async with Spool(tmp_path, config(max_batch=32)) as spool:
        await asyncio.gather(*(spool.append(SUBJECT, f"m-{i}", b"x" * 1000) for i in range(512)))
        stats = spool.stats()
    assert stats.appended == 512 and stats.entries == 512
    assert stats.largest_group == 32
    assert stats.transactions <= 512 // 8, stats  # not one transaction (one fsync) per append


async def test_append_returns_only_after_the_transaction_committed(tmp_path: Path) -> None:
    async with Spool(tmp_path, config()) as spool:
        reader = sqlite3.connect(f"file:{tmp_path / 'cache.db'}?mode=ro", uri=True)

        def committed(key: str) -> bool:
            # Another connection sees only committed transactions.
            return reader.execute("SELECT 1 FROM Cache WHERE key = ?", (key,)).fetchone() is not None

        async def append_and_check(i: int) -> None:
            key = await spool.append(SUBJECT, f"m-{i}", b"y" * 700)
            assert committed(key), key  # checked before yielding to the loop again

        try:
            await asyncio.gather(*(append_and_check(i) for i in range(200)))
        finally:
            reader.close()
        for i in range(5):
            key = await spool.append(SUBJECT, f"single-{i}", b"z")
            assert key in await exported_keys(tmp_path)  # a new Spool on the directory finds it


async def test_entries_survive_close_and_reopen_in_order(tmp_path: Path) -> None:
    async with Spool(tmp_path, config()) as spool:
        for i in range(10):
            await spool.append(SUBJECT, f"a-{i}", b"1")
    async with Spool(tmp_path, config()) as spool:
        assert spool.stats().entries == 10
        for i in range(10):
            await spool.append(SUBJECT, f"b-{i}", b"2")
        drained = await drain_all(spool)
    assert [e.msg_id for e in drained] == [f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)]


async def test_closed_spool_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, config())
    with pytest.raises(SpoolClosed):
        await spool.append(SUBJECT, "m", b"x")
    await spool.open()
    await spool.close()
    with pytest.raises(SpoolClosed):
        await spool.append(SUBJECT, "m", b"x")
    assert not spool.writable()


# -- bounds ------------------------------------------------------------------------------------------


async def test_byte_bound_refuses_and_never_evicts(tmp_path: Path) -> None:
    body = b"b" * 1000
    record = HEADER_SIZE + len(SUBJECT) + len("m-00") + len(body)
    async with Spool(tmp_path, config(max_bytes=10 * record)) as spool:
        keys = [await spool.append(SUBJECT, f"m-{i:02d}", body) for i in range(10)]
        assert spool.stats().bytes == 10 * record
        assert not spool.writable()
        for i in range(3):
            with pytest.raises(SpoolFull) as full:
                await spool.append(SUBJECT, f"x-{i:02d}", body)
            assert full.value.reason == "max_bytes"
        stats = spool.stats()
        assert stats.entries == 10 and stats.rejected == 3
        assert await exported_keys(tmp_path) == set(keys)  # the oldest are all still there

        drained = await drain_all(spool, 2)
        assert [e.key for e in drained] == keys[:2]
        await spool.remove(e.key for e in drained)
        assert spool.writable()
        await spool.append(SUBJECT, "m-10", body)
        await spool.append(SUBJECT, "m-11", body)
        with pytest.raises(SpoolFull):
            await spool.append(SUBJECT, "m-12", body)


async def test_free_space_watermark_refuses_before_the_disk_fills(tmp_path: Path) -> None:
    disk = FakeDisk()
    floor = max(int(disk.total * 0.05), 256 << 20)  # 5 GiB of 100 GiB
    cfg = config(disk_usage=disk, min_free_ratio=0.05, min_free_bytes=256 << 20, disk_check_interval=0)
    async with Spool(tmp_path, cfg) as spool:
        disk.free = floor + 10_000
        await spool.append(SUBJECT, "fits", b"x" * 1000)
        disk.free = floor + 500  # this envelope would cross the watermark
        with pytest.raises(SpoolFull) as full:
            await spool.append(SUBJECT, "too-big", b"x" * 1000)
        assert full.value.reason == "disk"
        disk.free = floor
        assert not spool.writable() and not spool.stats().writable
        disk.free = floor + 1_000_000
        assert spool.writable()
        await spool.append(SUBJECT, "after", b"x" * 1000)
        assert [e.msg_id for e in await drain_all(spool)] == ["fits", "after"]


async def test_each_group_samples_the_disk_afresh(tmp_path: Path) -> None:
    disk = FakeDisk()
    async with Spool(tmp_path, config(disk_usage=disk, disk_check_interval=3600)) as spool:
        await spool.append(SUBJECT, "ok", b"x")  # the append path's sample is now an hour "fresh"
        disk.free = 0
        with pytest.raises(SpoolFull) as full:
            await spool.append(SUBJECT, "refused-by-the-writer", b"x")
        assert full.value.reason == "disk"
        assert spool.stats().entries == 1


async def test_a_full_write_queue_pushes_back(tmp_path: Path) -> None:
    disk = FakeDisk()
    async with Spool(
        tmp_path, config(disk_usage=disk, max_pending=3, queue_timeout=0.05, disk_check_interval=3600)
    ) as spool:
        await spool.append(SUBJECT, "warm-up", b"x")
        disk.gate.clear()  # the writer thread now stalls in its next group's disk sample
        queued = [asyncio.create_task(spool.append(SUBJECT, f"q-{i}", b"x")) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(SpoolFull) as full:
            await spool.append(SUBJECT, "one-too-many", b"x")
        assert full.value.reason == "queue"
        disk.gate.set()
        await asyncio.gather(*queued)
        assert spool.stats().entries == 4 and spool.stats().rejected == 1


# -- integrity ---------------------------------------------------------------------------------------


async def test_corrupt_entries_are_quarantined_and_the_rest_drains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Spool(tmp_path, config()) as spool:
        keys = [await spool.append(SUBJECT, f"m-{i}", f"body-{i}".encode()) for i in range(6)]

        raw = open_cache(tmp_path, timeout=5)  # same settings as the spool: see backend.py
        try:
            raw.set(keys[1], b"garbage bytes")
            flipped = bytearray(raw.get(keys[3]))
            flipped[-1] ^= 0x20  # one bit of the body
            raw.set(keys[3], bytes(flipped))
            raw.set(keys[4], {"not": "an envelope"})  # pickled by diskcache
        finally:
            raw.close()

        with caplog.at_level(logging.WARNING, logger="headwater.spool"):
            batch = await drain_all(spool, 10)
        assert [e.msg_id for e in batch] == ["m-0", "m-2", "m-5"]
        assert sum("quarantining" in r.getMessage() for r in caplog.records) == 3
        stats = spool.stats()
        assert stats.quarantined == 3 and stats.entries == 3

        records = [r async for r in spool.export()]
        quarantined = {r.key: r for r in records if r.quarantined}
        assert set(quarantined) == {keys[1], keys[3], keys[4]}
        assert quarantined[keys[3]].error == "checksum mismatch"
        assert quarantined[keys[1]].body == b"garbage bytes"
        assert "not bytes" in (quarantined[keys[4]].error or "")
        assert quarantined[keys[4]].body == repr({"not": "an envelope"}).encode()

        assert await spool.remove(e.key for e in batch) == 3
        assert spool.stats().entries == 0 and spool.stats().quarantined == 3


async def test_export_gives_text_or_base64_bodies(tmp_path: Path) -> None:
    async with Spool(tmp_path, config()) as spool:
        await spool.append(SUBJECT, "text", '{"é":1}'.encode())
        await spool.append(SUBJECT, "binary", b"\xff\x00\xfe")
        rows = [json.loads(json.dumps(r.to_json())) async for r in spool.export()]
    assert [(r["msg_id"], r["body_encoding"], r["body"]) for r in rows] == [
        ("text", "utf-8", '{"é":1}'),
        ("binary", "base64", "/wD+"),
    ]
    assert rows[0]["size"] == HEADER_SIZE + len(SUBJECT) + len("text") + len('{"é":1}'.encode())


# -- draining ----------------------------------------------------------------------------------------


async def test_peek_leases_release_returns_and_remove_deletes(tmp_path: Path) -> None:
    async with Spool(tmp_path, config()) as spool:
        for i in range(10):
            await spool.append(SUBJECT, f"m-{i}", b"x")
        with pytest.raises(DrainLockNotHeld):
            await spool.peek_batch(3)
        assert spool.try_acquire_drain_lock()
        first = await spool.peek_batch(3)
        second = await spool.peek_batch(3)
        assert [e.msg_id for e in first] == ["m-0", "m-1", "m-2"]
        assert [e.msg_id for e in second] == ["m-3", "m-4", "m-5"]  # the first three are leased
        spool.release(e.key for e in first)  # their publish failed
        assert [e.msg_id for e in await spool.peek_batch(3)] == ["m-0", "m-1", "m-2"]
        assert await spool.remove(e.key for e in first + second) == 6
        assert spool.stats().drained == 6 and spool.stats().entries == 4 and spool.stats().leased == 0
        assert [e.msg_id for e in await spool.peek_batch(100)] == ["m-6", "m-7", "m-8", "m-9"]
        spool.release_drain_lock()  # forgets the leases
        assert spool.try_acquire_drain_lock()
        assert len(await spool.peek_batch(100)) == 4


async def test_two_drainers_in_one_process_never_get_the_same_envelope(tmp_path: Path) -> None:
    async with Spool(tmp_path, config()) as spool:
        await asyncio.gather(*(spool.append(SUBJECT, f"m-{i}", b"x" * 50) for i in range(600)))
        assert spool.try_acquire_drain_lock()
        handed_out: list[str] = []

        async def drainer() -> None:
            while batch := await spool.peek_batch(random.randint(1, 32)):
                handed_out.extend(e.msg_id for e in batch)
                await asyncio.sleep(random.random() / 1000)  # publish, await the acks
                await spool.remove(e.key for e in batch)

        await asyncio.gather(drainer(), drainer(), drainer())
        assert spool.stats().entries == 0
    assert len(handed_out) == 600 and set(handed_out) == {f"m-{i}" for i in range(600)}


async def test_drain_lock_excludes_other_processes_and_other_instances(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import asyncio, sys
        from headwater.spool import Spool

        async def main():
            async with Spool(sys.argv[1]) as spool:
                print(spool.try_acquire_drain_lock())

        asyncio.run(main())
        """
    )

    def other_process_acquires() -> bool:
        result = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip() == "True"

    async with Spool(tmp_path, config()) as first, Spool(tmp_path, config()) as second:
        assert first.try_acquire_drain_lock()
        assert first.try_acquire_drain_lock()  # re-entrant for drainers sharing the instance
        assert not second.try_acquire_drain_lock()
        assert not other_process_acquires()
        first.release_drain_lock()
        assert other_process_acquires()  # released again when that process exited
        assert second.try_acquire_drain_lock()
        with pytest.raises(DrainLockNotHeld):
            await first.remove(["any"])
    assert (tmp_path / "drain.lock").exists()


def test_spool_directories_per_worker(tmp_path: Path) -> None:
    async def make(worker: str) -> None:
        async with Spool(worker_spool_dir(tmp_path, worker), config()) as spool:
            await spool.append(SUBJECT, worker, b"x")

    for worker in ("1", "0", "edge-2"):
        asyncio.run(make(worker))
    (tmp_path / "not-a-spool").mkdir()
    assert [p.name for p in list_spool_dirs(tmp_path)] == ["0", "1", "edge-2"]
    assert list_spool_dirs(tmp_path / "missing") == []
    for bad in ("", "..", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="worker id"):
            worker_spool_dir(tmp_path, bad)


# -- crash safety ------------------------------------------------------------------------------------

APPENDER = textwrap.dedent(
    """
    import asyncio, os, sys
    from headwater.spool import Spool

    async def main():
        async with Spool(sys.argv[1]) as spool:
            async def producer(p):
                for i in range(1_000_000):
                    key = await spool.append("hw.events.p1", f"{os.getpid()}-{p}-{i}", b"e" * 600)
                    sys.stdout.write(key + "\\n")
                    sys.stdout.flush()
            await asyncio.gather(*(producer(p) for p in range(16)))

    asyncio.run(main())
    """
)


def test_sigkill_mid_write_loses_no_acknowledged_envelope(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    for _ in range(10):
        child = subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        target, seen = random.randint(1, 400), 0
        while seen < target and (line := child.stdout.readline()):
            acknowledged.append(line.strip())
            seen += 1
        child.send_signal(signal.SIGKILL)
        acknowledged.extend(line.strip() for line in child.stdout)  # printed before the kill
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL and seen == target

    async def check() -> None:
        stored = await exported_keys(tmp_path)
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged envelopes lost"
        async with Spool(tmp_path, config()) as spool:
            drained = await drain_all(spool, 1_000_000)
        assert [e.key for e in drained] == sorted(stored)

    asyncio.run(check())
