"""Project configs in the HW_PROJECTS JetStream KV bucket: one entry per project, keyed by its id."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from .errors import ProjectExists, ProjectNotFound
from .project import Project

PROJECTS_BUCKET = "HW_PROJECTS"


@dataclass(frozen=True, slots=True)
class BucketSettings:
    replicas: int = 1
    history: int = 10


async def ensure_projects_bucket(js: JetStreamContext, settings: BucketSettings) -> KeyValue:
    """Open the bucket, creating it when missing (creating with an identical config is idempotent)."""
    try:
        return await js.key_value(PROJECTS_BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=PROJECTS_BUCKET,
            description="headwater project configs",
            history=settings.history,
            storage=StorageType.FILE,
            replicas=settings.replicas,
        )
        return await js.create_key_value(config)


class ProjectStore:
    """Reads and writes project configs; writes are compare-and-set on the KV revision."""

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

    async def list(self) -> list[Project]:
        try:
            ids = await self._kv.keys()
        except NoKeysError:
            return []
        projects = [await self.find(project_id) for project_id in sorted(ids)]
        return [p for p in projects if p is not None]
