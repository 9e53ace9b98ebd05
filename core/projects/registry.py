"""A live in-memory view of every project, kept current by a watcher on the HW_PROJECTS bucket.

Edges resolve a presented key to its project here, in O(1) and without a network round trip: the
index maps the SHA-256 digest of every key to its project. Looking up a digest rather than the
key itself means the dictionary's non-constant-time string comparison only ever sees a hash, which
tells an attacker nothing about any key.

After a NATS reconnect the registry rebuilds itself from a fresh snapshot at once (nats-py's own
watcher only recovers after missed heartbeats, 8-10 s later). While NATS is unreachable the view
is kept but reported stale, with its age, in `/readyz`.

Given a `ConfigCache`, the view is also kept on local disk: an edge restarted (or newly started)
while NATS is unreachable loads it from there and serves, into its spool. Configs older than
`max_age` (counted from the last moment they were known current) are not served: `resolve_key`
raises `StaleConfig` and the edge answers 503 rather than trust keys that may have been revoked.
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

from headwater.core.service.backoff import retry_until_done
from headwater.core.service.tasks import cancel_and_wait

from .configcache import ConfigCache
from .keys import ApiKey, key_digest
from .kvsnapshot import bucket_is_empty, read_snapshot
from .project import Project

log = logging.getLogger(__name__)


class StaleConfig(Exception):
    """The project configs are older than the edge may serve (NATS unreachable for too long)."""

    def __init__(self, age: float, max_age: float) -> None:
        super().__init__(f"the project configs are {age:.0f} s old, more than the {max_age:.0f} s allowed")
        self.age = age


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
        # Snowplow app id → the projects listing it (by id). The control API refuses a second
        # claim, but a race or a hand-written config could make one: then the app id names no one.
        self.by_app_id: dict[str, dict[str, KeyMatch]] = {}
        self.origin_answers: dict[str, bool] = {}  # cleared on every change
        self.values: dict[str, bytes] = {}  # project id → its KV value, for the disk cache

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
        purged_at = None
        if entry.operation in (KV_DEL, KV_PURGE):
            created: object = entry.created  # a datetime, although nats-py annotates an int
            purged_at = created.timestamp() if isinstance(created, datetime) else time.time()
        deleted = purged_at is not None or not entry.value
        self.apply_value(entry.key, None if deleted else entry.value, purged_at)

    def apply_value(self, project_id: str, value: bytes | None, purged_at: float | None = None) -> None:
        """A project's config (None: deleted; `purged_at`: when its purge marker was written)."""
        self.origin_answers.clear()
        if value is None:
            self.remove(project_id)
            if purged_at is not None:
                self.purged[project_id] = purged_at
            return
        self.purged.pop(project_id, None)
        try:
            project = Project.from_json(value)
        except (ValueError, KeyError, TypeError):
            log.exception("ignoring unreadable config for project %r", project_id)
            return
        self.remove(project.id)
        self.projects[project.id] = project
        self.values[project.id] = value
        for key in project.keys:
            self.by_digest[key.digest] = KeyMatch(project, key)
        if project.settings.snowplow.app_ids:
            # An app id is public (it is in the page source): it acts as a public key would.
            as_key = ApiKey(kind="public", digest="", hint="app id", created_at=project.created_at)
            for app_id in project.settings.snowplow.app_ids:
                self.by_app_id.setdefault(app_id, {})[project.id] = KeyMatch(project, as_key)

    def remove(self, project_id: str) -> None:
        old = self.projects.pop(project_id, None)
        self.values.pop(project_id, None)
        if old is not None:
            for key in old.keys:
                self.by_digest.pop(key.digest, None)
            for app_id in old.settings.snowplow.app_ids:
                claims = self.by_app_id.get(app_id)
                if claims is not None:
                    claims.pop(project_id, None)
                    if not claims:
                        del self.by_app_id[app_id]


class ProjectRegistry:
    def __init__(
        self,
        kv: KeyValue | None,
        snapshot_timeout: float = 10.0,
        cache: ConfigCache | None = None,
        max_age: float | None = None,
    ) -> None:
        self._kv = kv
        self._cache = cache
        self._max_age = max_age
        self._known_at: float | None = None  # wall-clock time the view was last known current
        self._from_cache = False
        self._saver: asyncio.Task[None] | None = None
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

    def projects(self) -> list[Project]:
        """Every project known now (enabled or not)."""
        return list(self._view.projects.values())

    def purged_at(self, project_id: str) -> float | None:
        """When the project's entry was deleted (purged), if it was and was not created again."""
        return self._view.purged.get(project_id)

    def any_project_allows(self, origin: str) -> bool:
        return self._view.any_project_allows(origin)

    def resolve_key(self, key: str, now: datetime | None = None) -> KeyMatch | None:
        """The project and key `key` belongs to; None when unknown or expired. Raises StaleConfig
        when the configs are older than `max_age` (served from the disk cache or kept through an
        outage for that long)."""
        self._check_fresh()
        match = self._view.by_digest.get(key_digest(key))
        if match is None:
            return None
        expires_at = match.key.expires_at
        if expires_at is not None and datetime.fromisoformat(expires_at) <= (now or datetime.now(UTC)):
            return None
        return match

    def resolve_app_id(self, app_id: str) -> KeyMatch | None:
        """The project listing Snowplow app id `app_id` in its settings, as a public key of it; None
        when no project, or more than one, lists it. StaleConfig as `resolve_key`."""
        self._check_fresh()
        claims = self._view.by_app_id.get(app_id)
        if claims is None or len(claims) != 1:
            return None
        return next(iter(claims.values()))

    def app_id_owners(self, app_id: str) -> list[str]:
        """The ids of the projects listing `app_id` (more than one: a conflict to resolve)."""
        return sorted(self._view.by_app_id.get(app_id, {}))

    def _check_fresh(self) -> None:
        if self._max_age is not None and self.stale:
            age = self.config_age()
            if age is None or age > self._max_age:
                raise StaleConfig(age or 0.0, self._max_age)

    # -- state ----------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a snapshot has been loaded and its watcher is alive."""
        return self._synced_at is not None and self._task is not None and not self._task.done()

    @property
    def stale(self) -> bool:
        return self._disconnected_at is not None or not self.synced

    @property
    def from_cache(self) -> bool:
        """Serving the disk cache's configs (no snapshot from NATS yet)."""
        return self._from_cache

    @property
    def usable(self) -> bool:
        """There is a view to serve (synced, or loaded from the disk cache) and it is not too old."""
        age = self.config_age()
        if self._known_at is None or age is None:
            return False
        return self._max_age is None or age <= self._max_age

    def config_age(self) -> float | None:
        """Seconds since the view was last known current: 0 while synced and connected; None
        before any config was loaded."""
        if not self.stale:
            return 0.0
        return None if self._known_at is None else max(0.0, time.time() - self._known_at)

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
            "from_cache": self._from_cache,
            "age_seconds": None if (age := self.config_age()) is None else round(age, 1),
            "max_age_seconds": self._max_age,
        }

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.resync()

    def attach(self, kv: KeyValue) -> None:
        """The bucket, once NATS answers, for a registry started from the disk cache."""
        self._kv = kv

    def load_cache(self) -> bool:
        """Serve the configs of the disk cache until a snapshot replaces them; False if none."""
        cached = None if self._cache is None else self._cache.load()
        if cached is None:
            return False
        view = _View()
        for project_id, value in cached.entries.items():
            view.apply_value(project_id, value)
        self._view, self._known_at, self._from_cache = view, cached.saved_at, True
        log.warning(
            "project registry: serving %d projects from the config cache %s, last known current %.0f s "
            "ago, until NATS answers",
            len(view.projects),
            self._cache.path if self._cache is not None else "",
            cached.age(),
        )
        return True

    def _save(self) -> None:
        if self._cache is not None:
            self._cache.save(dict(self._view.values), self._known_at)

    async def _save_in_thread(self) -> None:
        """The file write (with its fsyncs) off the event loop; the values copied on it."""
        if self._cache is not None:
            await asyncio.to_thread(self._cache.save, dict(self._view.values), self._known_at)

    async def _keep_cache_fresh(self, interval: float) -> None:
        """Re-stamp the cache while synced, so that its age counts from the last moment the configs
        were known current, not from the last change."""
        while True:
            await asyncio.sleep(interval)
            if not self.stale:
                self._known_at = time.time()
                await self._save_in_thread()

    async def stop(self) -> None:
        for task in (self._resync_task, self._task, self._saver):
            if task is not None:
                await cancel_and_wait(task)
        await self._stop_watcher()

    def on_disconnected(self) -> None:
        if self._disconnected_at is None:
            if not self.stale:
                self._known_at = time.time()  # current until this moment
            self._disconnected_at = time.monotonic()

    def on_reconnected(self) -> None:
        """Called from the NATS client's reconnect callback: rebuild in the background."""
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.create_task(self._resync_until_done(), name="project-registry-resync")

    async def _resync_until_done(self) -> None:
        await retry_until_done(self.resync, log)

    async def resync(self) -> None:
        """Load a fresh snapshot of the bucket, swap it in, and follow the new watcher."""
        async with self._resync_lock:
            assert self._kv is not None, "attach the bucket first"
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
            self._known_at, self._from_cache = time.time(), False
            self._task = asyncio.create_task(self._follow(watcher, view), name="project-registry")
            if self._cache is not None:
                await self._save_in_thread()
                if self._saver is None:
                    interval = min(600.0, (self._max_age or 86_400.0) / 10)
                    self._saver = asyncio.create_task(self._keep_cache_fresh(interval), name="config-cache")
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
                    if view is self._view:
                        self._known_at = time.time()
                        self._save()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced through `synced` and readiness, never swallowed
            self.failure = exc
            log.exception("project registry watcher failed")
            raise
