"""The watermarks, usable from a cycle that runs in a worker thread's event loop.

A cycle makes blocking ClickHouse calls; run on the role's event loop they would stall whatever
shares it (in `headwater up`: the edge, the control API and the consumer). So each cycle runs in a
thread of its own, and its KV calls are sent back to the loop that owns the NATS connection: the
two the others are built on, reading the entry and writing it by compare-and-set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .watermarks import Watermark, Watermarks

_T = TypeVar("_T")


class WatermarksOnLoop(Watermarks):
    def __init__(self, inner: Watermarks, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    async def get(self, project_id: str) -> Watermark:
        return await self._on_loop(self._inner.get(project_id))

    async def compare_and_set(self, project_id: str, current: Watermark, new: Watermark) -> int | None:
        return await self._on_loop(self._inner.compare_and_set(project_id, current, new))

    async def reset(self, project_id: str) -> None:
        await self._on_loop(self._inner.reset(project_id))

    async def _on_loop(self, call: Coroutine[Any, Any, _T]) -> _T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self._loop))
