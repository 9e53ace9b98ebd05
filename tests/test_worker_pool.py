"""The consumer's worker pool when CPython's own pool stalls: a worker killed half-way through
writing its result leaves the pool's manager thread reading a message that never ends, so the pool
neither notices the death nor fails its work (reproduced on 3.11 with large results)."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
from concurrent.futures import ProcessPoolExecutor

import pytest
from hw_testing import eventually

from headwater.consumers.processing import STUCK_POOL_GRACE_SECONDS, Processed, WorkerLost, WorkerPool


def start_a_half_written_result(pool: ProcessPoolExecutor) -> None:
    """What a worker killed mid-write leaves in the results pipe: a message header promising 1 MiB
    and one byte of it."""
    writer = pool._result_queue._writer  # type: ignore[attr-defined]
    os.write(writer.fileno(), struct.pack("!i", 1 << 20) + b"\x80")


async def test_a_pool_stalled_on_a_dead_worker_is_given_up_and_its_work_handed_back() -> None:
    pool = WorkerPool(2, None)
    await pool.warm_up()
    stalled = pool._pool
    try:
        start_a_half_written_result(stalled)
        processing = asyncio.create_task(pool.process([], {}))
        await asyncio.sleep(1)
        assert not processing.done(), "the pool answered: the stall was not reproduced"
        os.kill(pool.pids()[0], signal.SIGKILL)
        with pytest.raises(WorkerLost):
            await asyncio.wait_for(processing, STUCK_POOL_GRACE_SECONDS + 10)
        assert pool._pool is not stalled, "the stalled pool was not replaced"
        assert isinstance(await pool.process([], {}), Processed), "the new pool does not work"

        async def manager_alive() -> bool:
            thread = stalled._executor_manager_thread  # type: ignore[attr-defined]
            return thread is not None and thread.is_alive()

        # freed, the old manager thread ends: it would otherwise hold up the interpreter's exit
        await eventually(manager_alive, lambda alive: not alive, timeout=10)
    finally:
        await asyncio.wait_for(pool.close(), 30)


async def test_closing_a_pool_stalled_on_a_dead_worker_returns() -> None:
    pool = WorkerPool(2, None)
    await pool.warm_up()
    start_a_half_written_result(pool._pool)
    os.kill(pool.pids()[0], signal.SIGKILL)
    await asyncio.sleep(0.5)
    await asyncio.wait_for(pool.close(), 30)
