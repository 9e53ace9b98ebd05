"""The watermarks, usable from a cycle that runs in a worker thread's event loop.

A cycle makes blocking ClickHouse calls; run on the role's event loop they would stall whatever
shares it (in `headwater up`: the edge, the control API and the consumer). So each cycle runs in a
thread of its own, and its KV calls are sent back to the loop that owns the NATS connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from .watermarks import Pending, Watermark, Watermarks


class WatermarksOnLoop(Watermarks):
    def __init__(self, inner: Watermarks, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    async def get(self, project_id: str) -> Watermark:
        future = asyncio.run_coroutine_threadsafe(self._inner.get(project_id), self._loop)
        return await asyncio.wrap_future(future)

    async def announce(self, project_id: str, version: int, now: datetime) -> Watermark | None:
        future = asyncio.run_coroutine_threadsafe(self._inner.announce(project_id, version, now), self._loop)
        return await asyncio.wrap_future(future)

    async def finish(
        self,
        project_id: str,
        version: int,
        now: datetime,
        through: datetime | None = None,
        recent_from: datetime | None = None,
        reconciled: Mapping[int, Pending] | None = None,
    ) -> bool:
        future = asyncio.run_coroutine_threadsafe(
            self._inner.finish(project_id, version, now, through, recent_from, reconciled), self._loop
        )
        return await asyncio.wrap_future(future)

    async def abandon(self, project_id: str, version: int, now: datetime) -> None:
        future = asyncio.run_coroutine_threadsafe(self._inner.abandon(project_id, version, now), self._loop)
        await asyncio.wrap_future(future)

    async def reset(self, project_id: str) -> None:
        future = asyncio.run_coroutine_threadsafe(self._inner.reset(project_id), self._loop)
        await asyncio.wrap_future(future)
