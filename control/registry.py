"""A live in-memory view of every project, kept current by a watcher on the HW_PROJECTS bucket.

Edges resolve a presented key to its project here, in O(1) and without a network round trip: the
index maps the SHA-256 digest of every key to its project. Looking up a digest rather than the
key itself means the dictionary's non-constant-time string comparison only ever sees a hash, which
tells an attacker nothing about any key.

After a NATS reconnect the registry rebuilds itself from a fresh snapshot at once (nats-py's own
watcher only recovers after missed heartbeats, 8-10 s later). While NATS is unreachable the view
is kept but reported stale, with its age, in `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from tenacity import AsyncRetrying, before_sleep_log, wait_exponential, wait_random

from .keys import ApiKey, key_digest
from .kvsnapshot import bucket_is_empty, read_snapshot
from .project import Project
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyMatch:
    project: Project
    key: ApiKey


class _View:
    """Projects and the key index, built from a snapshot and then updated entry by entry."""

    def __init__(self) -> None:
        self.projects: dict[str, Project] = {}
        # ids whose entry was purged (the marker is in the bucket), with the time of the purge
        self.purged: dict[str, float] = {}
        self.by_digest: dict[str, KeyMatch] = {}
        self.origin_answers: dict[str, bool] = {}  # cleared on every change

    def any_project_allows(self, origin: str) -> bool:
        """Whether some enabled project accepts public keys from `origin` (for CORS preflights,
        which carry no key). Answers are cached until the next config change."""
        answer = self.origin_answers.get(origin)
        if answer is None:
            answer = any(p.enabled and p.origin_policy.allows(origin) for p in self.projects.values())
            if len(self.origin_answers) >= 10_000:
                self.origin_answers.clear()
            self.origin_answers[origin] = answer
        return answer

    def apply(self, entry: KeyValue.Entry) -> None:
        self.origin_answers.clear()
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self.remove(entry.key)
            if entry.operation in (KV_DEL, KV_PURGE):
                created: object = entry.created  # a datetime, although nats-py annotates an int
                when = created.timestamp() if isinstance(created, datetime) else time.time()
                self.purged[entry.key] = when
            return
        self.purged.pop(entry.key, None)
        try:
            project = Project.from_json(entry.value)
        except (ValueError, KeyError, TypeError):
            log.exception("ignoring unreadable config for project %r", entry.key)
            return
        self.remove(project.id)
        self.projects[project.id] = project
        for key in project.keys:
            self.by_digest[key.digest] = KeyMatch(project, key)

    def remove(self, project_id: str) -> None:
        old = self.projects.pop(project_id, None)
        if old is not None:
            for key in old.keys:
                self.by_digest.pop(key.digest, None)


class ProjectRegistry:
    def __init__(self, kv: KeyValue, snapshot_timeout: float = 10.0) -> None:
        self._kv = kv
        self._view = _View()
        self._snapshot_timeout = snapshot_timeout
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._resync_lock = asyncio.Lock()
        self._resync_task: asyncio.Task[None] | None = None
        self._disconnected_at: float | None = None
        self._synced_at: float | None = None
        self.failure: BaseException | None = None
        self.resyncs = 0

    # -- lookups (hot path) ---------------------------------------------------------------------

    def get(self, project_id: str) -> Project | None:
        return self._view.projects.get(project_id)

    def purged_at(self, project_id: str) -> float | None:
        """When the project's entry was deleted (purged), if it was and was not created again."""
        return self._view.purged.get(project_id)

    def any_project_allows(self, origin: str) -> bool:
        return self._view.any_project_allows(origin)

    def resolve_key(self, key: str, now: datetime | None = None) -> KeyMatch | None:
        match = self._view.by_digest.get(key_digest(key))
        if match is None:
            return None
        expires_at = match.key.expires_at
        if expires_at is not None and datetime.fromisoformat(expires_at) <= (now or datetime.now(UTC)):
            return None
        return match

    # -- state ----------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a snapshot has been loaded and its watcher is alive."""
        return self._synced_at is not None and self._task is not None and not self._task.done()

    @property
    def stale(self) -> bool:
        return self._disconnected_at is not None or not self.synced

    def status(self) -> dict[str, Any]:
        stale_for = (
            None if self._disconnected_at is None else round(time.monotonic() - self._disconnected_at, 1)
        )
        return {
            "synced": self.synced,
            "stale": self.stale,
            "stale_seconds": stale_for,
            "projects": len(self._view.projects),
            "resyncs": self.resyncs,
        }

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.resync()

    async def stop(self) -> None:
        for task in (self._resync_task, self._task):
            if task is not None:
                await cancel_and_wait(task)
        await self._stop_watcher()

    def on_disconnected(self) -> None:
        if self._disconnected_at is None:
            self._disconnected_at = time.monotonic()

    def on_reconnected(self) -> None:
        """Called from the NATS client's reconnect callback: rebuild in the background."""
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.create_task(self._resync_until_done(), name="project-registry-resync")

    async def _resync_until_done(self) -> None:
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
            before_sleep=before_sleep_log(log, logging.WARNING),
        ):
            with attempt:
                await self.resync()

    async def resync(self) -> None:
        """Load a fresh snapshot of the bucket, swap it in, and follow the new watcher."""
        async with self._resync_lock:
            expect_entries = not await bucket_is_empty(self._kv)
            # A stopped watcher's consumer goes away after 10 s instead of nats-py's default 5 min.
            watcher = await self._kv.watchall(inactive_threshold=10.0)
            view = _View()
            try:
                # Up to the bucket's last entry, not nats-py's end marker, which can come first:
                # then an edge would answer 401 unknown_key for a moment after it started.
                for entry in await read_snapshot(watcher, expect_entries, self._snapshot_timeout):
                    view.apply(entry)
            except BaseException:
                await watcher.stop()  # type: ignore[no-untyped-call]
                raise
            if self._task is not None:
                with contextlib.suppress(Exception):  # a watcher that failed: replaced now
                    await cancel_and_wait(self._task)
            await self._stop_watcher()
            self._view, self._watcher = view, watcher
            self._synced_at = time.monotonic()
            self._disconnected_at = None
            self.failure = None
            self.resyncs += 1
            self._task = asyncio.create_task(self._follow(watcher, view), name="project-registry")
            log.info("project registry synced: %d projects", len(view.projects))

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _follow(self, watcher: KeyValue.KeyWatcher, view: _View) -> None:
        try:
            async for entry in watcher:
                if entry is not None:
                    view.apply(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced through `synced` and readiness, never swallowed
            self.failure = exc
            log.exception("project registry watcher failed")
            raise
