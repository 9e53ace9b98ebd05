"""Saved funnels: a project's named funnel definitions, in the HW_FUNNELS JetStream KV bucket.

A bucket of their own, not keys in HW_PROJECTS: every edge, consumer and sessionizer watches the
whole projects bucket and reads each entry as a project, so funnel entries there would be sent to
every node and refused by each of them. Keys here:

- `<project>.<funnel id>`: one saved funnel (JSON, without its revision: that is the KV revision);
- `<project>`: the project's index, the list of its funnel ids. A create claims a place in it by
  compare-and-set before the funnel is written, so the limit holds under concurrent creates; a
  place left by a create that failed half-way is reclaimed when the index is full.

Every write is compare-and-set on the KV revision; `If-Match` on a PUT is a 412 when the funnel
changed since. A purge of the project removes its keys (`purge_project`).
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from headwater.core.projects.project import utc_now_iso, validate_project_id
from headwater.core.projects.settings import Sessions
from headwater.core.service.errors import APIError
from headwater.core.service.kvbuckets import ensure_bucket
from headwater.core.service.validation import convert_body

from .anomalies import anomalies_of_trend, band_settings
from .audit import AuditLog
from .funnels import check_regexes, funnel_of, run_funnel, run_trend
from .query import ReadOnlyQueries
from .schemas import (
    FunnelDefinitionSpec,
    FunnelPeopleRequest,
    FunnelRequest,
    FunnelTrendRequest,
    SavedFunnel,
    SavedFunnelAnomaliesRun,
    SavedFunnelRequest,
    SavedFunnelRun,
    SavedFunnelTrendRun,
)
from .store import ProjectStore

FUNNELS_BUCKET = "HW_FUNNELS"
MAX_SAVED_FUNNELS = 100
MAX_ATTEMPTS = 50
FORMAT_VERSION = 1
# Any valid range: a definition is checked as a query over it would be.
_SOME_START = datetime(2000, 1, 1, tzinfo=UTC)
_SOME_END = _SOME_START + timedelta(days=1)


async def ensure_funnels_bucket(js: JetStreamContext, replicas: int) -> KeyValue:
    return await ensure_bucket(
        js,
        KeyValueConfig(
            bucket=FUNNELS_BUCKET,
            description="headwater saved funnels, per project",
            history=1,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


def new_funnel_id() -> str:
    """12 characters of lowercase base32 (60 random bits): URL- and subject-safe, and never a word
    of the API's paths (`query` is 5 characters)."""
    return base64.b32encode(secrets.token_bytes(8)).decode().lower()[:12]


class FunnelNotFound(APIError):
    def __init__(self, project_id: str, funnel_id: str) -> None:
        super().__init__(404, "funnel_not_found", f"project {project_id!r} has no saved funnel {funnel_id!r}")


class FunnelRevisionMismatch(APIError):
    def __init__(self, funnel_id: str, expected: int) -> None:
        super().__init__(
            412,
            "revision_mismatch",
            f"saved funnel {funnel_id!r} changed since revision {expected}; read it again and retry",
        )


def _definition(request: SavedFunnelRequest) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(request)
    return body


def as_query(
    funnel: SavedFunnel | SavedFunnelRequest,
    start: datetime,
    end: datetime,
    people: FunnelPeopleRequest | None = None,
) -> FunnelRequest:
    """The funnel query that `funnel`'s definition over [start, end) is."""
    return FunnelRequest(
        **definition_fields(funnel), start=start, end=end, people=people, breakdown=funnel.breakdown
    )


def definition_fields(funnel: FunnelDefinitionSpec) -> dict[str, Any]:
    """The fields of `funnel` that define it (those of every funnel request)."""
    return {name: getattr(funnel, name) for name in FunnelDefinitionSpec.__struct_fields__}


class SavedFunnelService:
    def __init__(
        self, kv: KeyValue, projects: ProjectStore, audit: AuditLog, queries: ReadOnlyQueries
    ) -> None:
        self._kv = kv
        self._projects = projects
        self._audit = audit
        self._queries = queries

    # -- reading ----------------------------------------------------------------------------------

    async def _entry(self, project_id: str, funnel_id: str) -> tuple[SavedFunnel, int]:
        try:
            entry = await self._kv.get(f"{project_id}.{funnel_id}")
        except KeyNotFoundError:
            raise FunnelNotFound(project_id, funnel_id) from None
        if entry.value is None:
            raise FunnelNotFound(project_id, funnel_id)
        revision = int(entry.revision or 0)
        stored = orjson.loads(entry.value)
        stored.pop("v", None)
        return msgspec.convert({**stored, "revision": revision}, SavedFunnel), revision

    async def _index(self, project_id: str) -> tuple[list[str], int | None]:
        """The project's funnel ids and the index's revision (None: no index yet)."""
        try:
            entry = await self._kv.get(project_id)
        except KeyNotFoundError:
            return [], None
        if entry.value is None:
            return [], None
        return list(orjson.loads(entry.value)), int(entry.revision or 0)

    async def get(self, project_id: str, funnel_id: str) -> SavedFunnel:
        await self._projects.get(validate_project_id(project_id))  # 404 for an unknown project
        funnel, _ = await self._entry(project_id, funnel_id)
        return funnel

    async def list_all(self, project_id: str) -> list[SavedFunnel]:
        await self._projects.get(validate_project_id(project_id))
        ids, _ = await self._index(project_id)
        found = await asyncio.gather(*(self._find(project_id, funnel_id) for funnel_id in ids))
        # None: deleted meanwhile, or a create that never finished.
        return sorted((f for f in found if f is not None), key=lambda f: (f.name, f.id))

    async def _find(self, project_id: str, funnel_id: str) -> SavedFunnel | None:
        try:
            funnel, _ = await self._entry(project_id, funnel_id)
        except FunnelNotFound:
            return None
        return funnel

    # -- checking ---------------------------------------------------------------------------------

    async def _checked(self, project_id: str, body: dict[str, Any]) -> SavedFunnelRequest:
        """The request, validated as a funnel query is: 400 naming the field otherwise."""
        request = convert_body(body, SavedFunnelRequest)
        funnel, _ = funnel_of(as_query(request, _SOME_START, _SOME_END))
        await asyncio.to_thread(check_regexes, self._queries, project_id, funnel)
        return request

    # -- writing ----------------------------------------------------------------------------------

    async def create(self, project_id: str, body: dict[str, Any], actor: str) -> SavedFunnel:
        await self._projects.get(validate_project_id(project_id))
        request = await self._checked(project_id, body)
        funnel_id = new_funnel_id()
        await self._claim(project_id, funnel_id)
        now = utc_now_iso()
        stored = {"v": FORMAT_VERSION, "id": funnel_id, **_definition(request),
                  "created_at": now, "updated_at": now}  # fmt: skip
        try:
            revision = int(await self._kv.create(f"{project_id}.{funnel_id}", orjson.dumps(stored)))
        except BaseException:
            await self._release(project_id, funnel_id)
            raise
        await self._audit.record(actor, "funnel.create", project_id, funnel_id=funnel_id, name=request.name)
        stored.pop("v")
        return msgspec.convert({**stored, "revision": revision}, SavedFunnel)

    async def _claim(self, project_id: str, funnel_id: str) -> None:
        """Add `funnel_id` to the project's index (compare-and-set); 409 past the limit."""
        for _ in range(MAX_ATTEMPTS):
            ids, revision = await self._index(project_id)
            if len(ids) >= MAX_SAVED_FUNNELS:
                ids = await self._live(project_id, ids)
            if len(ids) >= MAX_SAVED_FUNNELS:
                raise APIError(
                    409,
                    "funnel_limit_reached",
                    f"a project keeps at most {MAX_SAVED_FUNNELS} saved funnels; delete one first",
                )
            value = orjson.dumps([*ids, funnel_id])
            try:
                if revision is None:
                    await self._kv.create(project_id, value)
                else:
                    await self._kv.update(project_id, value, last=revision)
                return
            except KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.02))  # noqa: S311 - jitter, not crypto
        raise APIError(409, "update_conflict", "the saved funnels are being changed concurrently; retry")

    async def _live(self, project_id: str, ids: list[str]) -> list[str]:
        """The ids whose funnel exists (a crash between the claim and the write leaves one behind)."""
        found = await asyncio.gather(*(self._find(project_id, funnel_id) for funnel_id in ids))
        return [funnel_id for funnel_id, funnel in zip(ids, found, strict=True) if funnel is not None]

    async def _release(self, project_id: str, funnel_id: str) -> None:
        """Remove `funnel_id` from the project's index (compare-and-set)."""
        for _ in range(MAX_ATTEMPTS):
            ids, revision = await self._index(project_id)
            if funnel_id not in ids or revision is None:
                return
            value = orjson.dumps([i for i in ids if i != funnel_id])
            try:
                await self._kv.update(project_id, value, last=revision)
                return
            except KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.02))  # noqa: S311 - jitter, not crypto
        # Left in the index: reclaimed by _live when the index is full.

    async def replace(
        self, project_id: str, funnel_id: str, body: dict[str, Any], actor: str, if_match: int | None
    ) -> SavedFunnel:
        await self._projects.get(validate_project_id(project_id))
        await self._entry(project_id, funnel_id)  # 404 before a 400 for an unknown funnel
        request = await self._checked(project_id, body)
        definition = _definition(request)
        for _ in range(MAX_ATTEMPTS):
            before, revision = await self._entry(project_id, funnel_id)
            if if_match is not None and revision != if_match:
                raise FunnelRevisionMismatch(funnel_id, if_match)
            old = {k: v for k, v in msgspec.to_builtins(before).items() if k in definition}
            if old == definition:
                return before  # nothing changes: no write, no audit record
            stored = {"v": FORMAT_VERSION, "id": funnel_id, **definition,
                      "created_at": before.created_at, "updated_at": utc_now_iso()}  # fmt: skip
            try:
                new_revision = await self._kv.update(
                    f"{project_id}.{funnel_id}", orjson.dumps(stored), last=revision
                )
            except KeyWrongLastSequenceError:
                if if_match is not None:
                    raise FunnelRevisionMismatch(funnel_id, if_match) from None
                await asyncio.sleep(random.uniform(0, 0.02))  # noqa: S311 - jitter, not crypto
                continue
            changed = sorted(k for k in definition if old.get(k) != definition[k])
            await self._audit.record(
                actor, "funnel.update", project_id, funnel_id=funnel_id, name=request.name, changed=changed
            )
            stored.pop("v")
            return msgspec.convert({**stored, "revision": int(new_revision)}, SavedFunnel)
        raise APIError(409, "update_conflict", "the saved funnel is being changed concurrently; retry")

    async def delete(self, project_id: str, funnel_id: str, actor: str, if_match: int | None) -> None:
        await self._projects.get(validate_project_id(project_id))
        funnel, revision = await self._entry(project_id, funnel_id)
        if if_match is not None and revision != if_match:
            raise FunnelRevisionMismatch(funnel_id, if_match)
        try:
            await self._kv.delete(f"{project_id}.{funnel_id}", last=revision)
        except KeyWrongLastSequenceError:
            if if_match is not None:
                raise FunnelRevisionMismatch(funnel_id, if_match) from None
            await self._kv.delete(f"{project_id}.{funnel_id}")  # changed meanwhile: deleted all the same
        await self._release(project_id, funnel_id)
        await self._audit.record(actor, "funnel.delete", project_id, funnel_id=funnel_id, name=funnel.name)

    async def run(self, project_id: str, funnel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        funnel = await self.get(project_id, funnel_id)
        asked = convert_body(body, SavedFunnelRun)
        query = as_query(funnel, asked.start, asked.end, asked.people)
        rules = await self._session_rules(project_id)
        return await asyncio.to_thread(run_funnel, self._queries, project_id, query, rules)

    async def _session_rules(self, project_id: str) -> Sessions:
        project, _ = await self._projects.get(validate_project_id(project_id))
        return project.settings.sessions

    async def trend(self, project_id: str, funnel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The saved funnel's daily trend, as `funnels/trend` answers its definition (without the
        breakdown, which a trend does not have)."""
        funnel = await self.get(project_id, funnel_id)
        asked = convert_body(body, SavedFunnelTrendRun)
        request = FunnelTrendRequest(**definition_fields(funnel), start=asked.start, end=asked.end)
        now = datetime.now(UTC)
        rules = await self._session_rules(project_id)
        return await asyncio.to_thread(run_trend, self._queries, project_id, request, now, rules)

    async def anomalies(self, project_id: str, funnel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The saved funnel's daily trend, each day judged against the band of the days before it."""
        funnel = await self.get(project_id, funnel_id)
        asked = convert_body(body, SavedFunnelAnomaliesRun)
        chosen = band_settings(asked)  # 400 before the query runs
        request = FunnelTrendRequest(**definition_fields(funnel), start=asked.start, end=asked.end)
        now = datetime.now(UTC)
        rules = await self._session_rules(project_id)
        trend = await asyncio.to_thread(run_trend, self._queries, project_id, request, now, rules)
        return anomalies_of_trend(trend, chosen)


async def purge_project_funnels(js: JetStreamContext, project_id: str) -> None:
    """Remove every saved funnel of the project and its index, history and markers included."""
    validate_project_id(project_id)  # no wildcard can reach the subject filter
    stream = f"KV_{FUNNELS_BUCKET}"
    await js.purge_stream(stream, subject=f"$KV.{FUNNELS_BUCKET}.{project_id}.>")
    await js.purge_stream(stream, subject=f"$KV.{FUNNELS_BUCKET}.{project_id}")
