"""The watermarks, usable from a cycle that runs in a worker thread's event loop.

A cycle makes blocking ClickHouse calls; run on the role's event loop they would stall whatever
shares it (in `headwater up`: the edge, the control API and the consumer). So each cycle runs in a
thread of its own, and its two KV calls are sent back to the loop that owns the NATS connection.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from .watermarks import Watermark, Watermarks


class WatermarksOnLoop(Watermarks):
    def __init__(self, inner: Watermarks, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    async def get(self, project_id: str) -> Watermark:
        future = asyncio.run_coroutine_threadsafe(self._inner.get(project_id), self._loop)
        return await asyncio.wrap_future(future)

    async def advance(
        self, project_id: str, current: Watermark, through: datetime, recent_from: datetime | None = None
    ) -> bool:
        future = asyncio.run_coroutine_threadsafe(
            self._inner.advance(project_id, current, through, recent_from), self._loop
        )
        return await asyncio.wrap_future(future)

    async def reset(self, project_id: str) -> None:
        future = asyncio.run_coroutine_threadsafe(self._inner.reset(project_id), self._loop)
        await asyncio.wrap_future(future)
