"""Stopping background tasks for good.

On Python 3.11, `asyncio.wait_for` — which nats-py's requests use — can swallow a cancellation
that arrives just as the awaited result does (CPython gh-86296, fixed in 3.12): the task carries
on as if never cancelled. A loop task cancelled at that instant keeps looping, and whoever awaits
it after `cancel()` waits forever (seen once in CI: a consumer's `stop()` hung on its lag watcher).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_INTERVAL_SECONDS = 0.5


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and return once it has ended, cancelling it again while it has not. An
    exception other than the cancellation is raised here, as awaiting the task would."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_INTERVAL_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        await task
