"""Project life cycle: create, update, rotate keys, disable, purge.

Every write is compare-and-set on the KV revision: with `If-Match` a lost race is a 412; without it,
the update is re-applied to the newest revision until it lands, so no concurrent change is lost.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from clickhouse_connect.driver.client import Client
from msgspec import UnsetType

from headwater.core.migrations import apply_migrations, drop_database
from headwater.core.projects.keys import ApiKey, KeyKind
from headwater.core.projects.origins import normalise_origins
from headwater.core.projects.project import Project, database_name, iso, utc_now, validate_project_id
from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.errors import APIError, ProjectExists
from headwater.core.service.validation import convert_body
from headwater.privacy.hashing import new_hash_key

from .audit import AuditLog
from .idempotency import IdempotencyStore, StoredAnswer
from .query_grants import apply_grants, revoke_grants
from .schemas import CreateProject, ProjectPatch, RotateKey
from .store import ProjectStore, RevisionMismatch

MAX_UPDATE_ATTEMPTS = 50

# Removes a project's messages from the JetStream streams; returns how many were removed.
MessagePurger = Callable[[str], Awaitable[int]]
# Removes what else the project keeps besides its config (its saved funnels).
ProjectDataPurger = Callable[[str], Awaitable[None]]


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


def apply_patch(project: Project, body: dict[str, Any]) -> Project:
    """`project` with the fields of a PATCH body applied; 400 naming the field at fault."""
    patch = convert_body(body, ProjectPatch)
    changes: dict[str, Any] = {}
    if not isinstance(patch.name, UnsetType):
        changes["name"] = patch.name
    if not isinstance(patch.enabled, UnsetType):
        changes["enabled"] = patch.enabled
    allow_any = project.allow_any_origin
    if not isinstance(patch.allow_any_origin, UnsetType):
        changes["allow_any_origin"] = allow_any = patch.allow_any_origin
    if not isinstance(patch.allowed_origins, UnsetType):
        changes["allowed_origins"] = normalise_origins(list(patch.allowed_origins), allow_any)
    elif "*" in project.allowed_origins and not allow_any:
        raise APIError(
            400,
            "invalid_field",
            "allow_any_origin can be false only once '*' is removed from allowed_origins",
            "allow_any_origin",
        )
    if not isinstance(patch.settings, UnsetType):
        changes["settings"] = project.settings.merged(patch.settings)
    return replace(project, **changes)


class ProjectService:
    def __init__(
        self,
        store: ProjectStore,
        clickhouse: Client,
        audit: AuditLog,
        idempotency: IdempotencyStore,
        purge_messages: MessagePurger,
        cluster: str | None = None,
        query_user: str | None = None,
        purge_data: ProjectDataPurger | None = None,
    ) -> None:
        self._store = store
        self._clickhouse = clickhouse
        self._audit = audit
        self._idempotency = idempotency
        self._purge_messages = purge_messages
        self._cluster = cluster
        # The ClickHouse user of the query API, granted each project's reader role (query_grants.py).
        self._query_user = query_user
        self._purge_data = purge_data

    # -- create -------------------------------------------------------------------------------

    async def create(
        self, body: dict[str, Any], actor: str, idempotency_key: str | None = None
    ) -> tuple[StoredAnswer, bool]:
        """The answer to a create, and whether it is a replay of an earlier one."""
        if idempotency_key is None:
            created = await self._create(body, actor)
            return StoredAnswer(201, created.to_dict()), False
        fingerprint = IdempotencyStore.request_fingerprint(body)
        earlier = await self._idempotency.recall(idempotency_key, fingerprint)
        if earlier is not None:
            return earlier, True
        try:
            created = await self._create(body, actor)
        except ProjectExists:
            # A concurrent retry with the same key may have just created it: give its answer.
            await asyncio.sleep(0.2)
            earlier = await self._idempotency.recall(idempotency_key, fingerprint)
            if earlier is not None:
                return earlier, True
            raise
        answer = StoredAnswer(201, created.to_dict())
        await self._idempotency.remember(idempotency_key, fingerprint, answer)
        return answer, False

    async def _create(self, body: dict[str, Any], actor: str) -> CreatedProject:
        request = convert_body(body, CreateProject)
        project_id, name, origins, allow_any = (
            request.id,
            request.project_name,
            request.allowed_origins,
            request.allow_any_origin,
        )
        if await self._store.find(project_id) is not None:
            raise ProjectExists(project_id)
        settings = ProjectSettings().merged(request.settings)
        await self._refuse_claimed_app_ids(project_id, settings)
        now = iso(utc_now())
        public, public_key = ApiKey.issue("public", now)
        secret, secret_key = ApiKey.issue("secret", now)
        project = Project(
            id=project_id,
            name=name,
            allowed_origins=origins,
            allow_any_origin=allow_any,
            keys=(public, secret),
            created_at=now,
            settings=settings,
            anonymisation_key=new_hash_key(),
        )
        # The database exists before the project does: once the KV entry is visible, edges accept
        # its events and consumers write them, so the table must already be there.
        await asyncio.to_thread(apply_migrations, self._clickhouse, project.database, self._cluster)
        if self._query_user is not None:
            await asyncio.to_thread(
                apply_grants, self._clickhouse, project.id, self._query_user, self._cluster
            )
        revision = await self._store.create(project)
        await self._audit.record(
            actor,
            "project.create",
            project_id,
            name=name,
            allowed_origins=list(origins),
            allow_any_origin=allow_any,
        )
        return CreatedProject(project, revision, public_key, secret_key)

    # -- update, rotate, disable ------------------------------------------------------------------

    async def _change(
        self, project_id: str, change: Callable[[Project], Project], if_match: int | None
    ) -> tuple[Project, Project, int]:
        """Apply `change` with compare-and-set; returns (before, after, new revision)."""
        for _ in range(MAX_UPDATE_ATTEMPTS):
            before, revision = await self._store.get(project_id)
            if if_match is not None and revision != if_match:
                raise RevisionMismatch(project_id, if_match)
            after = change(before)
            if after == before:
                return before, after, revision
            after = replace(after, updated_at=iso(utc_now()))
            try:
                return before, after, await self._store.update(after, revision)
            except RevisionMismatch:
                if if_match is not None:
                    raise
                await asyncio.sleep(random.uniform(0, 0.02))  # noqa: S311 - jitter, not crypto
        raise APIError(409, "update_conflict", "the project is being changed concurrently; retry")

    async def update(
        self, project_id: str, patch: dict[str, Any], actor: str, if_match: int | None = None
    ) -> tuple[Project, int]:
        validate_project_id(project_id)
        # Validated inside the loop, so that an unknown project is a 404 whatever the body, and against
        # the newest revision (allow_any_origin may have changed).
        if isinstance(patch.get("settings"), dict) and "snowplow" in patch["settings"]:
            current, _ = await self._store.get(project_id)
            await self._refuse_claimed_app_ids(project_id, apply_patch(current, patch).settings)
        # A project created before anonymisation keys existed gets its key with its first change.
        before, after, revision = await self._change(
            project_id, lambda p: apply_patch(p, patch).with_anonymisation_key(), if_match
        )
        changed = sorted(k for k in patch if getattr(before, k) != getattr(after, k))
        if changed:
            await self._audit.record(actor, "project.update", project_id, changed=changed, patch=patch)
        return after, revision

    async def anonymisation_key(self, project_id: str) -> tuple[Project, bytes]:
        """The project and its anonymisation hash key, created now (compare-and-set, so concurrent
        callers agree on one) when it has none yet. Not audited: the key is no setting and is never
        shown."""
        project, _ = await self._store.get(validate_project_id(project_id))
        if project.anonymisation_key is None:
            _, project, _ = await self._change(project_id, lambda p: p.with_anonymisation_key(), None)
        assert project.anonymisation_key is not None
        return project, project.anonymisation_key

    async def _refuse_claimed_app_ids(self, project_id: str, settings: ProjectSettings) -> None:
        """409 when another project lists one of these Snowplow app ids: an app id must name one
        project (edges ignore an app id two projects list). Checked before the write; two concurrent
        claims can still both pass, which the edge's rule keeps harmless."""
        wanted = set(settings.snowplow.app_ids)
        if not wanted:
            return
        projects, _ = await self._store.list()
        for other in projects:
            if other.id == project_id:
                continue
            taken = sorted(wanted.intersection(other.settings.snowplow.app_ids))
            if taken:
                raise APIError(
                    409,
                    "app_id_taken",
                    f"Snowplow app id {taken[0]!r} is already listed by project {other.id!r}",
                    "settings.snowplow.app_ids",
                )

    async def rotate_key(
        self, project_id: str, request: RotateKey, actor: str
    ) -> tuple[Project, int, str, str]:
        """A new key of `request.kind`; the old ones expire after the grace period. Returns the
        project, its revision, the new key and when the old keys expire."""
        validate_project_id(project_id)
        key_kind: KeyKind = request.kind
        grace = request.grace
        now = utc_now()
        new_keys: list[str] = []

        def rotate(project: Project) -> Project:
            rotated, clear = project.rotated(key_kind, float(grace), now)
            new_keys[:] = [clear]
            return rotated

        _, after, revision = await self._change(project_id, rotate, None)
        # When the last of the earlier keys stops working (one may already have had an earlier expiry).
        previous = [k.expires_at for k in after.keys[:-1] if k.kind == key_kind and k.expires_at]
        old_expiry = max(previous, default=iso(now))
        await self._audit.record(actor, "project.rotate_key", project_id, kind=key_kind, grace_seconds=grace)
        return after, revision, new_keys[0], old_expiry

    async def disable(self, project_id: str, actor: str) -> tuple[Project, int]:
        validate_project_id(project_id)
        before, after, revision = await self._change(project_id, lambda p: replace(p, enabled=False), None)
        if before.enabled:
            await self._audit.record(actor, "project.disable", project_id)
        return after, revision

    # -- purge ------------------------------------------------------------------------------------

    async def purge(self, project_id: str, confirm: object, actor: str) -> dict[str, Any]:
        """Disable, remove the project's messages from JetStream, drop its database, delete it."""
        validate_project_id(project_id)
        if confirm != project_id:
            raise APIError(
                400,
                "confirmation_required",
                "purging deletes every event of the project; pass confirm=<project id> to proceed",
                "confirm",
            )
        await self.disable(project_id, actor)
        messages = await self._purge_messages(project_id)
        database = database_name(project_id)
        await asyncio.to_thread(drop_database, self._clickhouse, database, self._cluster)
        if self._query_user is not None:
            await asyncio.to_thread(revoke_grants, self._clickhouse, project_id, self._cluster)
        if self._purge_data is not None:  # before the config: a failed purge can be retried
            await self._purge_data(project_id)
        await self._store.delete(project_id)
        await self._audit.record(
            actor, "project.purge", project_id, messages_purged=messages, database=database
        )
        return {"id": project_id, "purged": True, "messages_purged": messages, "database_dropped": database}
