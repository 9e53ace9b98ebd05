"""A live in-memory view of every project, kept current by a watcher on the HW_PROJECTS bucket.

Edges resolve a presented key to its project here, in O(1) and without a network round trip: the
index maps the SHA-256 digest of every key to its project. Looking up a digest rather than the
key itself means the dictionary's non-constant-time string comparison only ever sees a hash, which
tells an attacker nothing about any key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from .keys import ApiKey, key_digest
from .project import Project

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyMatch:
    project: Project
    key: ApiKey


class ProjectRegistry:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._projects: dict[str, Project] = {}
        self._by_digest: dict[str, KeyMatch] = {}
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self.failure: BaseException | None = None

    @property
    def synced(self) -> bool:
        """True once the initial snapshot has been loaded and the watcher is alive."""
        return self._synced.is_set() and self._task is not None and not self._task.done()

    def get(self, project_id: str) -> Project | None:
        return self._projects.get(project_id)

    def resolve_key(self, key: str, now: datetime | None = None) -> KeyMatch | None:
        match = self._by_digest.get(key_digest(key))
        if match is None:
            return None
        expires_at = match.key.expires_at
        if expires_at is not None and datetime.fromisoformat(expires_at) <= (now or datetime.now(UTC)):
            return None
        return match

    async def start(self, timeout: float = 10.0) -> None:
        watcher = await self._kv.watchall()
        self._task = asyncio.create_task(self._follow(watcher), name="project-registry")
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial snapshot
                    self._synced.set()
                    continue
                self._apply(entry)
        except asyncio.CancelledError:
            await watcher.stop()  # type: ignore[no-untyped-call]
            raise
        except Exception as exc:  # surfaced through `synced` and readiness, never swallowed
            self.failure = exc
            log.exception("project registry watcher failed")
            raise

    def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self._remove(entry.key)
            return
        try:
            project = Project.from_json(entry.value)
        except (ValueError, KeyError, TypeError):
            log.exception("ignoring unreadable config for project %r", entry.key)
            return
        self._remove(project.id)
        self._projects[project.id] = project
        for key in project.keys:
            self._by_digest[key.digest] = KeyMatch(project, key)

    def _remove(self, project_id: str) -> None:
        old = self._projects.pop(project_id, None)
        if old is not None:
            for key in old.keys:
                self._by_digest.pop(key.digest, None)
