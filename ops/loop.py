"""Running a role's main coroutine: uvloop when available, SIGINT/SIGTERM as a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class StackFailure(RuntimeError):
    """A role of a running stack died; the stack is stopped and the command exits non-zero."""


def run(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run `main(stop)`; `stop` is set by SIGINT or SIGTERM."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        factory = asyncio.new_event_loop

    async def with_signals() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(with_signals())


async def wait_until_stopped(stop: asyncio.Event, failed: Callable[[], str | None]) -> None:
    """Return when `stop` is set; raise if a role died first."""
    while not stop.is_set():
        problem = failed()
        if problem is not None:
            raise StackFailure(problem)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
