"""Data-subject tombstones in JetStream KV (bucket HW_TOMBSTONES), and a live view of them.

One entry per project and deleted identity, keyed `<project>.<digest>` (privacy/tombstones.py: the
SHA-256 of project, kind and id, in hex), so the bucket holds no id in clear. Its value says which
kind of id, which deletion job wrote it and when. Written by the control plane's deletion jobs;
followed live by every consumer and by `headwater replay` (`TombstoneRegistry`, as the project
registry follows HW_PROJECTS; `follow_tombstones` starts one); `read_tombstones` reads them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from headwater.core.service.backoff import retry_until_done
from headwater.core.service.kvbuckets import ensure_bucket
from headwater.core.service.tasks import cancel_and_wait
from headwater.privacy.tombstones import NO_TOMBSTONES, IdKind, Tombstones, tombstone_digest

from .kvsnapshot import bucket_is_empty, read_snapshot
from .project import utc_now_iso

log = logging.getLogger(__name__)

TOMBSTONES_BUCKET = "HW_TOMBSTONES"


async def ensure_tombstones_bucket(js: JetStreamContext, replicas: int) -> KeyValue:
    return await ensure_bucket(
        js,
        KeyValueConfig(
            bucket=TOMBSTONES_BUCKET,
            description="headwater data-subject tombstones (digests of deleted ids), per project",
            history=1,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


def tombstone_key(project_id: str, digest: bytes) -> str:
    return f"{project_id}.{digest.hex()}"


def _parse_key(key: str) -> tuple[str, bytes] | None:
    project_id, _, digest = key.partition(".")
    try:
        value = bytes.fromhex(digest)
    except ValueError:
        return None
    return (project_id, value) if project_id and len(value) == 32 else None


async def write_tombstones(
    kv: KeyValue, project_id: str, ids: Iterable[tuple[IdKind, str]], job_id: str
) -> int:
    """One entry per identity (a put: writing one again is harmless); how many were written."""
    written = 0
    for kind, value in ids:
        record = orjson.dumps({"kind": kind, "job_id": job_id, "at": utc_now_iso()})
        await kv.put(tombstone_key(project_id, tombstone_digest(project_id, kind, value)), record)
        written += 1
    return written


async def purge_project_tombstones(js: JetStreamContext, project_id: str, timeout: float = 10.0) -> int:
    """Remove a purged project's tombstones (a project created again under its id starts without
    any), each with a purge marker that the consumers' watchers see; how many there were."""
    try:
        kv = await js.key_value(TOMBSTONES_BUCKET)
    except BucketNotFoundError:
        return 0
    view, watcher = await _snapshot(kv, timeout)  # a filtered key listing can end early
    await watcher.stop()  # type: ignore[no-untyped-call]
    digests = view.digests.get(project_id, set())
    for digest in digests:
        await kv.purge(tombstone_key(project_id, digest))
    return len(digests)


class _View:
    def __init__(self) -> None:
        self.digests: dict[str, set[bytes]] = {}
        self.frozen: dict[str, frozenset[bytes]] = {}  # handed out; rebuilt after a change

    def apply(self, entry: KeyValue.Entry) -> None:
        parsed = _parse_key(entry.key)
        if parsed is None:
            return
        project_id, digest = parsed
        self.frozen.pop(project_id, None)
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            held = self.digests.get(project_id)
            if held is not None:
                held.discard(digest)
                if not held:
                    del self.digests[project_id]
            return
        self.digests.setdefault(project_id, set()).add(digest)

    def of(self, project_id: str) -> frozenset[bytes]:
        frozen = self.frozen.get(project_id)
        if frozen is None:
            held = self.digests.get(project_id)
            if held is None:
                return NO_TOMBSTONES
            frozen = self.frozen[project_id] = frozenset(held)
        return frozen


async def _snapshot(kv: KeyValue, timeout: float) -> tuple[_View, KeyValue.KeyWatcher]:
    expect_entries = not await bucket_is_empty(kv)
    watcher = await kv.watchall(inactive_threshold=10.0)
    view = _View()
    try:
        for entry in await read_snapshot(watcher, expect_entries, timeout):
            view.apply(entry)
    except BaseException:
        await watcher.stop()  # type: ignore[no-untyped-call]
        raise
    return view, watcher


async def read_tombstones(js: JetStreamContext, timeout: float = 10.0) -> dict[str, frozenset[bytes]]:
    """Every project's tombstones now (none when the bucket does not exist yet)."""
    try:
        kv = await js.key_value(TOMBSTONES_BUCKET)
    except BucketNotFoundError:
        return {}
    view, watcher = await _snapshot(kv, timeout)
    await watcher.stop()  # type: ignore[no-untyped-call]
    return {project_id: view.of(project_id) for project_id in view.digests}


async def follow_tombstones(js: JetStreamContext) -> TombstoneRegistry | None:
    """A started registry following every project's tombstones (None when the bucket does not
    exist yet: no deletion was ever asked for)."""
    try:
        kv = await js.key_value(TOMBSTONES_BUCKET)
    except BucketNotFoundError:
        return None
    registry = TombstoneRegistry(kv)
    await registry.start()
    return registry


class TombstoneRegistry:
    """Every project's tombstones, kept current by a watcher on the bucket; rebuilt from a fresh
    snapshot after a NATS reconnect. A project without tombstones costs a dictionary miss."""

    def __init__(self, kv: KeyValue, snapshot_timeout: float = 10.0) -> None:
        self._kv = kv
        self._timeout = snapshot_timeout
        self._view = _View()
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.failure: BaseException | None = None

    def digests(self, project_id: str) -> frozenset[bytes]:
        return self._view.of(project_id)

    def of(self, project_id: str) -> Tombstones | None:
        """The project's tombstones; None when it has none."""
        digests = self._view.of(project_id)
        return Tombstones(project_id, digests) if digests else None

    async def start(self) -> None:
        await self.resync()

    async def resync(self) -> None:
        async with self._lock:
            view, watcher = await _snapshot(self._kv, self._timeout)
            await self._stop_following()
            self._view, self._watcher, self.failure = view, watcher, None
            self._task = asyncio.create_task(self._follow(watcher, view), name="tombstone-registry")
            log.info("tombstones synced: %d projects have some", len(view.digests))

    async def _follow(self, watcher: KeyValue.KeyWatcher, view: _View) -> None:
        try:
            async for entry in watcher:
                if entry is not None:
                    view.apply(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surfaced through `failure` (the stack reports it), never swallowed
            self.failure = exc
            log.exception("tombstone watcher failed")
            raise

    async def _stop_following(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await cancel_and_wait(self._task)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def on_disconnected(self) -> None:
        pass

    def on_reconnected(self) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.create_task(self._resync_until_done(), name="tombstones-resync")

    async def _resync_until_done(self) -> None:
        await retry_until_done(self.resync, log)

    async def stop(self) -> None:
        if self._resync_task is not None:
            await cancel_and_wait(self._resync_task)
        await self._stop_following()
