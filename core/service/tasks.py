"""Stopping background tasks for good.

On Python 3.11, `asyncio.wait_for` — which nats-py's requests use — can swallow a cancellation
that arrives just as the awaited result does (CPython gh-86296, fixed in 3.12): the task carries
on as if never cancelled. A loop task cancelled at that instant keeps looping, and whoever awaits
it after `cancel()` waits forever (seen once in CI: a consumer's `stop()` hung on its lag watcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_INTERVAL_SECONDS = 0.5


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and return once it has ended, cancelling it again while it has not. An
    exception other than the cancellation is raised here, as awaiting the task would."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_INTERVAL_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def report_end(task: asyncio.Task[Any], what: str, on_end: Callable[[str], None]) -> None:
    """A background loop meant to run until cancelled: should it end otherwise (an exception, or
    returning), log it and tell `on_end` why, so that readiness can say so instead of the task
    dying unseen."""

    def ended(done: asyncio.Task[Any]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        reason = f"{what} stopped: {error!r}" if error is not None else f"{what} ended unexpectedly"
        log.error("%s", reason, exc_info=error)
        on_end(reason)

    task.add_done_callback(ended)
