"""The sessionizer loop: every interval, one cycle (sessionizer/cycle.py) per enabled project.

A cycle runs in a worker thread (sessionizer/onloop.py says why), projects one after the other:
the cycles of one sessionizer never compete with each other for the ClickHouse it shares with the
consumers. A project whose cycle fails (ClickHouse down, a query error, a database not migrated
yet) is logged, counted and retried after a growing delay; the others go on.

Stopping lets the cycle in progress finish: a thread cannot be interrupted, and closing the
ClickHouse client under it would only turn it into a failed cycle. Abandoning it would be as safe
(a cycle that dies half-way leaves rows the next one corrects: docs/sessions.md), but finishing it
also moves the watermark. Cycles are short once caught up; a first cycle over a long history is
the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from headwater.core.projects.settings import Sessions
from headwater.core.service.backoff import Backoff

from .cycle import CycleResult, run_cycle
from .metrics import SessionizerMetrics
from .onloop import WatermarksOnLoop
from .settings import SessionizerSettings
from .watermarks import Watermarks

log = logging.getLogger(__name__)

# The enabled projects now, each with its session rules.
ProjectRules = Callable[[], Mapping[str, Sessions]]


@dataclass
class _Retry:
    failures: int
    at: float  # monotonic


def pause_after(round_seconds: float, settings: SessionizerSettings) -> float:
    """Seconds to wait after a round that took `round_seconds`: the rest of the interval, and at
    least long enough that cycles take no more than `max_busy_fraction` of the time. A cycle's
    cost is mostly fixed (docs/benchmarks.md), so fewer, larger cycles also cost less in all."""
    fraction = settings.max_busy_fraction
    paced = round_seconds * (1 - fraction) / fraction
    return max(settings.interval_seconds - round_seconds, paced, 0.0)


class Sessionizer:
    def __init__(
        self,
        clickhouse: Client,
        watermarks: Watermarks,
        settings: SessionizerSettings,
        projects: ProjectRules,
        metrics: SessionizerMetrics | None = None,
    ) -> None:
        self._clickhouse = clickhouse
        self._watermarks = watermarks
        self._settings = settings
        self._projects = projects
        self.metrics = metrics or SessionizerMetrics()
        self._backoff = Backoff(settings.interval_seconds, settings.max_backoff_seconds, jitter=1.0)
        self._retries: dict[str, _Retry] = {}
        self._known: set[str] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cycle_started: float | None = None  # monotonic, while a cycle runs
        # Monotonic, from the first failure after a success of any project: all failing since then.
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.rounds = 0
        self.broken: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sessionizer")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Returning is how the loop ends once stopped; ending otherwise is reported, so that
        readiness (and `up`) can say so instead of the loop dying unseen."""
        if task.cancelled():
            return
        error = task.exception()
        if error is None and self._stopping.is_set():
            return
        self.broken = f"the sessionizer stopped: {error!r}" if error else "the sessionizer ended unexpectedly"
        log.error("%s", self.broken, exc_info=error)

    async def stop(self) -> None:
        """Finish the cycle in progress, if any, and return."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def health(self) -> tuple[bool, str | None]:
        """Ready, or not and why: the loop ended, a cycle has run too long, or cycles have been
        failing for too long (nothing is lost meanwhile: the next cycle takes over from the
        watermark)."""
        if self.broken is not None:
            return False, self.broken
        limit = self._settings.unready_after_failing_seconds
        now = time.monotonic()
        if self.cycle_started is not None and now - self.cycle_started >= limit:
            return False, f"a cycle has been running for {now - self.cycle_started:.0f}s"
        if self.failing_since is not None and now - self.failing_since >= limit:
            return False, f"cycles failing for {now - self.failing_since:.0f}s ({self.last_error})"
        return True, None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            await self.run_round()
            pause = pause_after(time.monotonic() - started, self._settings)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)

    async def run_round(self) -> None:
        """One cycle for each enabled project that is not waiting to retry."""
        projects = dict(self._projects())
        for gone in self._known - projects.keys():
            self.metrics.forget(gone)
            self._retries.pop(gone, None)
        self._known = set(projects)
        for project_id, rules in projects.items():
            if self._stopping.is_set():
                break
            retry = self._retries.get(project_id)
            if retry is not None and retry.at > time.monotonic():
                continue
            await self._cycle(project_id, rules)
        self.rounds += 1

    async def _cycle(self, project_id: str, rules: Sessions) -> None:
        watermarks = WatermarksOnLoop(self._watermarks, asyncio.get_running_loop())
        cycle = run_cycle(
            self._clickhouse,
            watermarks,
            project_id,
            rules,
            self._settings.settle_seconds,
            defer_to_writers=timedelta(seconds=self._settings.defer_to_writers_seconds),
        )
        self.cycle_started = started = time.monotonic()
        try:
            result: CycleResult = await asyncio.to_thread(asyncio.run, cycle)
        except Exception as exc:
            self.cycle_started = None
            self._failed(project_id, exc)
            await self._lag_from_kv(project_id)
            return
        finally:
            self.cycle_started = None
            self.metrics.cycle_seconds.observe(time.monotonic() - started)
        self._retries.pop(project_id, None)
        self.failing_since = None
        outcome = "deferred" if result.deferred else "advanced" if result.advanced else "skipped"
        self.metrics.cycles.labels(project_id, outcome).inc()
        self.metrics.sessions.labels(project_id).inc(result.sessions)
        self.metrics.tombstones.labels(project_id).inc(result.tombstones)
        self.metrics.reconciled.labels(project_id).inc(result.reconciled)
        self.metrics.late_events.labels(project_id).inc(result.late_events)
        self._set_lag(project_id, result.inserted_through)
        if result.late_events:
            log.info("project %s: %d events too late to sessionize", project_id, result.late_events)

    def _set_lag(self, project_id: str, watermark: datetime) -> None:
        lag = (datetime.now(UTC) - watermark).total_seconds()
        self.metrics.lag.labels(project_id).set(max(lag, 0.0))

    async def _lag_from_kv(self, project_id: str) -> None:
        """After a failed cycle the lag still grows: read it from the watermark, if it has one."""
        try:
            watermark = await self._watermarks.get(project_id)
        except Exception:  # NATS is away too: the gauge keeps its last value
            return
        if watermark.committed:
            self._set_lag(project_id, watermark.inserted_through)

    def _failed(self, project_id: str, error: Exception) -> None:
        retry = self._retries.get(project_id)
        failures = 1 if retry is None else retry.failures + 1
        delay = self._backoff.delay(failures)
        self._retries[project_id] = _Retry(failures, time.monotonic() + delay)
        self.metrics.cycles.labels(project_id, "failed").inc()
        self.last_error = f"{project_id}: {error!r}"
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        log.warning(
            "sessionizer cycle of project %s failed (%d in a row); retrying in %.0fs: %r",
            project_id,
            failures,
            delay,
            error,
        )
