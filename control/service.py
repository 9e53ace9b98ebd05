"""Project life cycle: validation, ClickHouse database and migrations, the KV entry, first keys."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from .errors import APIError, ProjectExists
from .keys import ApiKey
from .migrations import apply_migrations
from .origins import normalise_origins
from .project import Project, utc_now_iso, validate_project_id
from .store import ProjectStore


@dataclass(frozen=True, slots=True)
class CreatedProject:
    project: Project
    revision: int
    public_key: str
    secret_key: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project.public_view(),
            "revision": self.revision,
            "public_key": self.public_key,
            "secret_key": self.secret_key,
        }


def parse_create_request(body: dict[str, Any]) -> tuple[str, str, tuple[str, ...], dict[str, Any]]:
    project_id = validate_project_id(body.get("id"))
    name = body.get("name", project_id)
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise APIError(
            400, "invalid_field", "name must be a non-empty string of at most 200 characters", "name"
        )
    origins = normalise_origins(body.get("allowed_origins", []))
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        raise APIError(400, "invalid_field", "settings must be an object", "settings")
    return project_id, name.strip(), origins, settings


class ProjectService:
    def __init__(self, store: ProjectStore, clickhouse: Client, cluster: str | None = None) -> None:
        self._store = store
        self._clickhouse = clickhouse
        self._cluster = cluster

    async def create(self, body: dict[str, Any]) -> CreatedProject:
        project_id, name, origins, settings = parse_create_request(body)
        if await self._store.find(project_id) is not None:
            raise ProjectExists(project_id)
        now = utc_now_iso()
        public, public_key = ApiKey.issue("public", now)
        secret, secret_key = ApiKey.issue("secret", now)
        project = Project(
            id=project_id,
            name=name,
            allowed_origins=origins,
            keys=(public, secret),
            created_at=now,
            settings=settings,
        )
        # The database exists before the project does: once the KV entry is visible, edges accept
        # its events and consumers write them, so the table must already be there.
        await asyncio.to_thread(apply_migrations, self._clickhouse, project.database, self._cluster)
        revision = await self._store.create(project)
        return CreatedProject(project, revision, public_key, secret_key)
