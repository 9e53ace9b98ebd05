"""Project configs in the HW_PROJECTS JetStream KV bucket: one entry per project, keyed by its id.

Every write is compare-and-set on the entry's KV revision, so concurrent writers cannot lose each
other's changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from headwater.core.projects.kvsnapshot import bucket_is_empty, read_snapshot
from headwater.core.projects.project import Project
from headwater.core.service.errors import APIError, ProjectExists, ProjectNotFound
from headwater.core.service.kvbuckets import ensure_bucket

PROJECTS_BUCKET = "HW_PROJECTS"
# Reading every key of the bucket: past this, the consumer or the server is not answering.
SNAPSHOT_TIMEOUT_SECONDS = 30.0


class RevisionMismatch(APIError):
    def __init__(self, project_id: str, expected: int) -> None:
        super().__init__(
            412,
            "revision_mismatch",
            f"project {project_id!r} changed since revision {expected}; read it again and retry",
        )


@dataclass(frozen=True, slots=True)
class BucketSettings:
    replicas: int = 1
    history: int = 10


async def ensure_projects_bucket(js: JetStreamContext, settings: BucketSettings) -> KeyValue:
    return await ensure_bucket(
        js,
        KeyValueConfig(
            bucket=PROJECTS_BUCKET,
            description="headwater project configs",
            history=settings.history,
            storage=StorageType.FILE,
            replicas=settings.replicas,
        ),
    )


class ProjectStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def create(self, project: Project) -> int:
        try:
            return int(await self._kv.create(project.id, project.to_json()))
        except KeyWrongLastSequenceError:
            raise ProjectExists(project.id) from None

    async def get(self, project_id: str) -> tuple[Project, int]:
        try:
            entry = await self._kv.get(project_id)
        except KeyNotFoundError:
            raise ProjectNotFound(project_id) from None
        if entry.value is None:
            raise ProjectNotFound(project_id)
        return Project.from_json(entry.value), int(entry.revision or 0)

    async def find(self, project_id: str) -> Project | None:
        try:
            project, _ = await self.get(project_id)
        except ProjectNotFound:
            return None
        return project

    async def update(self, project: Project, revision: int) -> int:
        """Write `project` if the entry is still at `revision`; RevisionMismatch otherwise."""
        try:
            return int(await self._kv.update(project.id, project.to_json(), last=revision))
        except KeyWrongLastSequenceError:
            raise RevisionMismatch(project.id, revision) from None

    async def delete(self, project_id: str) -> None:
        """Remove the entry and its history (a purge marker tells watchers it is gone)."""
        await self._kv.purge(project_id)

    async def ids(self) -> list[str]:
        """Every project id. A watcher of our own rather than nats-py's `kv.keys()`: that one leaves
        its consumer behind for 5 minutes, and a busy API ran into the server's consumer limit.
        The snapshot ends where the bucket does, not at nats-py's end marker (kvsnapshot.py)."""
        if await bucket_is_empty(self._kv):
            return []
        watcher = await self._kv.watchall(meta_only=True, inactive_threshold=2.0)
        try:
            entries = await read_snapshot(watcher, True, SNAPSHOT_TIMEOUT_SECONDS)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        latest = {entry.key: entry.operation for entry in entries}
        return sorted(key for key, operation in latest.items() if operation not in (KV_DEL, KV_PURGE))

    async def list(
        self, after: str | None = None, limit: int | None = None
    ) -> tuple[list[Project], str | None]:
        """Projects in id order after `after`, at most `limit`, and the `after` of the next page
        (None on the last one). A project deleted meanwhile leaves a gap, not an early end."""
        remaining = [i for i in await self.ids() if after is None or i > after]
        selected = remaining if limit is None else remaining[:limit]
        next_after = selected[-1] if limit is not None and len(remaining) > limit else None
        projects = [await self.find(project_id) for project_id in selected]
        return [p for p in projects if p is not None], next_after
