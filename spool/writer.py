"""Group commit: one thread owns the database; appends queued meanwhile share one transaction.

Callers on the event loop enqueue a job and await an asyncio future; the writer thread takes the
first job plus whatever appends queued behind it (up to `max_batch`), writes them in one
transaction (one fsync), and resolves the whole group's futures with a single
`loop.call_soon_threadsafe`. No linger timer: while one transaction commits the next group
queues up, so groups grow with load by themselves. Other database work (peek, remove, export,
open, close) runs as single jobs on the same thread, which keeps SQLite single-writer and every
connection confined to its thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import SpoolClosed, SpoolWriteError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class AppendJob:
    subject: str
    msg_id: str
    body: bytes
    size: int
    loop: asyncio.AbstractEventLoop = field(repr=False)
    future: asyncio.Future[str] = field(repr=False)


@dataclass(slots=True)
class _CallJob:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop = field(repr=False)
    future: asyncio.Future[Any] = field(repr=False)
    last: bool = False


# Writes one group; returns, per job, its key or the exception to raise in its caller.
BatchFn = Callable[[list[AppendJob]], list["str | BaseException"]]
# Tells the owner that jobs were dropped (cancelled callers) so it can release what they reserved.
DropFn = Callable[[list[AppendJob]], None]


class GroupWriter:
    def __init__(self, name: str, write_batch: BatchFn, drop: DropFn, max_batch: int) -> None:
        self._write_batch = write_batch
        self._drop = drop
        self._max_batch = max_batch
        self._jobs: deque[AppendJob | _CallJob] = deque()
        self._cond = threading.Condition()
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._jobs)

    async def append(self, subject: str, msg_id: str, body: bytes, size: int) -> str:
        """Queue one envelope; returns its key once the transaction holding it has committed."""
        loop = asyncio.get_running_loop()
        job = AppendJob(subject, msg_id, body, size, loop, loop.create_future())
        self._submit(job)
        return await job.future

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer thread, after everything queued before it."""
        loop = asyncio.get_running_loop()
        job = _CallJob(fn, loop, loop.create_future())
        self._submit(job)
        result: T = await job.future
        return result

    async def stop(self, fn: Callable[[], None]) -> None:
        """Finish the queued jobs, run `fn` (closing what the thread opened), end the thread."""
        loop = asyncio.get_running_loop()
        job = _CallJob(fn, loop, loop.create_future(), last=True)
        self._submit(job)
        try:
            await job.future
        finally:
            await asyncio.to_thread(self._thread.join)

    def _submit(self, job: AppendJob | _CallJob) -> None:
        with self._cond:
            if not self._accepting:
                raise SpoolClosed("the spool is closed")
            if isinstance(job, _CallJob) and job.last:
                self._accepting = False
            self._jobs.append(job)
            self._cond.notify()

    def _next(self) -> list[AppendJob] | _CallJob:
        with self._cond:
            while not self._jobs:
                self._cond.wait()
            first = self._jobs.popleft()
            if isinstance(first, _CallJob):
                return first
            group = [first]
            while self._jobs and len(group) < self._max_batch and isinstance(self._jobs[0], AppendJob):
                group.append(self._jobs.popleft())  # type: ignore[arg-type]
            return group

    def _run(self) -> None:
        while True:
            work = self._next()
            if isinstance(work, _CallJob):
                try:
                    outcome: Any = work.fn()
                except BaseException as exc:
                    outcome = exc
                _settle(work.loop, [(work.future, outcome)])
                if work.last:
                    return
            else:
                self._run_group(work)

    def _run_group(self, group: list[AppendJob]) -> None:
        live = [job for job in group if not job.future.cancelled()]
        if len(live) < len(group):
            self._drop([job for job in group if job.future.cancelled()])
        if not live:
            return
        try:
            outcomes: list[str | BaseException] = self._write_batch(live)
        except BaseException as exc:  # a bug in the batch function: fail the group, keep serving
            log.exception("spool writer: group of %d failed", len(live))
            outcomes = [SpoolWriteError(f"spool write failed: {exc!r}") for _ in live]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], object]]] = {}
        for job, outcome in zip(live, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, outcome))
        for loop, pairs in by_loop.items():
            _settle(loop, pairs)


def _settle(loop: asyncio.AbstractEventLoop, pairs: list[tuple[asyncio.Future[Any], object]]) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, pairs)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.debug("spool writer: loop closed, %d results dropped", len(pairs))


def _resolve(pairs: list[tuple[asyncio.Future[Any], object]]) -> None:
    for future, outcome in pairs:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
