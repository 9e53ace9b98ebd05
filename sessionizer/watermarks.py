"""Each project's sessionizer watermark, in the JetStream KV bucket HW_SESSIONS (never in memory:
a restarted or second sessionizer carries on from it).

The watermark is an insert time: every event ClickHouse inserted at or before it has been
sessionized. Beside it, `recent_from`: the sessionizer's copy of recent events
(`sessionizer_recent`) holds every event inserted up to the watermark whose timestamp is at or
after this time (None: no copy made yet, so the next cycle makes one).

And the writers (docs/sessions.md, "Two writers at once"): a cycle or a rebuild announces the
version it is about to write (its snapshot's end in ms) before it writes, and only above every
version announced before (`high`); the announced versions not yet settled are `pending`, and their
rows are not trusted; the highest version settled is `settled` (a rebuild's can be above the
watermark's: the next cycles read its rows). A writer that ends while its version is still the
highest announced settles it (a cycle also moves the watermark); one that ends after a higher
version was announced may have written rows the other never saw, so it marks its version `lost`:
a later cycle recomputes the identities that both wrote, then settles it. Every change is a
compare-and-set on the entry's revision, retried on a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from headwater.core.service.kvbuckets import ensure_bucket

SESSIONS_BUCKET = "HW_SESSIONS"
# Before any cycle: everything inserted is new.
THE_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


# A writer whose version has been announced this long without ending is presumed dead: its rows
# are then reconciled as a lost writer's (one that was only slow marks itself lost when it ends).
PRESUMED_DEAD_AFTER = timedelta(hours=6)
# Compare-and-set attempts before giving up (each conflict means another writer changed the entry).
_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Pending:
    """An announced version not settled yet: its writer is writing (or died), or it has `lost`."""

    lost: bool
    at: datetime  # when it was announced, or marked lost


@dataclass(frozen=True, slots=True)
class Watermark:
    inserted_through: datetime
    revision: int  # the KV entry's; 0 while the project has none
    recent_from: datetime | None = None
    high: int = 0  # the highest version announced
    pending: Mapping[int, Pending] = field(default_factory=dict)
    settled: int = 0  # the highest version a writer settled (a rebuild's may be above the watermark's)

    @property
    def version(self) -> int:
        """The version of the rows a cycle up to here writes: its watermark in milliseconds."""
        return version_of(self.inserted_through)

    @property
    def trusted_through(self) -> int:
        """The highest version whose rows hold a settled writer's exact computation: the
        watermark's, or a rebuild's settled since (rows of versions still pending aside)."""
        return max(self.version, self.settled)

    @property
    def committed(self) -> bool:
        """Whether a cycle has moved the watermark yet (a first one takes everything)."""
        return self.inserted_through > THE_BEGINNING

    def writing(self, now: datetime, within: timedelta) -> list[int]:
        """The pending versions announced less than `within` ago and not lost: their writers are
        at work, unless they died. Hosts' clocks differ a little, so an announcement that far
        ahead of `now` counts as well."""
        return [
            version
            for version, pending in sorted(self.pending.items())
            if not pending.lost and abs(now - pending.at) < within
        ]

    def to_reconcile(self, now: datetime) -> dict[int, Pending]:
        """The pending versions a cycle must reconcile, lost or presumed dead, as they are now."""
        return {
            version: pending
            for version, pending in sorted(self.pending.items())
            if pending.lost or now - pending.at >= PRESUMED_DEAD_AFTER
        }


class Refused(Enum):
    """Why a writer may not announce its version."""

    COVERED = "covered"  # a version at least as high was announced, or the watermark is there
    WRITER_AT_WORK = "writer at work"  # another writer announced moments ago and has not ended


# What a change of the entry returns when it declines: why (announce), or None.
_Declined = TypeVar("_Declined", Refused, None)


def version_of(inserted_through: datetime) -> int:
    return int(inserted_through.timestamp() * 1000)


async def ensure_sessions_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    return await ensure_bucket(
        js,
        KeyValueConfig(
            bucket=SESSIONS_BUCKET,
            description="headwater sessionizer watermarks, one per project",
            history=5,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


class Watermarks:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, project_id: str) -> Watermark:
        try:
            entry = await self._kv.get(project_id)
        except KeyNotFoundError:
            return Watermark(THE_BEGINNING, 0)
        if entry.value is None:
            return Watermark(THE_BEGINNING, int(entry.revision or 0))
        return _parsed(orjson.loads(entry.value), int(entry.revision or 0))

    async def announce(
        self, project_id: str, version: int, now: datetime, defer_to_writers: timedelta = timedelta(0)
    ) -> Watermark | Refused:
        """Announce that rows of `version` are about to be written: the entry as announced (the
        watermark the writer works from); or refused when a version at least as high has been
        announced or the watermark is there already (a later snapshot covers this one), or when
        another writer announced less than `defer_to_writers` ago and has not ended (decided in
        the same compare-and-set, so two writers reading the entry together do not both go on)."""

        def announced(current: Watermark) -> Watermark | Refused:
            if version <= max(current.high, current.version):
                return Refused.COVERED
            if current.writing(now, defer_to_writers):
                return Refused.WRITER_AT_WORK
            return replace(current, high=version, pending={**current.pending, version: Pending(False, now)})

        return await self._change(project_id, announced)

    async def finish(
        self,
        project_id: str,
        version: int,
        now: datetime,
        through: datetime | None = None,
        recent_from: datetime | None = None,
        reconciled: Mapping[int, Pending] | None = None,
    ) -> bool:
        """The writer of `version` is done. While it is still the highest version announced, it is
        settled, with the versions it `reconciled` (each as it was when this writer announced: one
        whose writer has marked it lost since, having been presumed dead, may have written after
        the reconciliation and stays), and the watermark moves to `through` (and the recent copy's
        start to `recent_from`) when given: True. Otherwise it is marked lost (a later cycle
        reconciles it): False."""
        as_found = dict(reconciled or {})

        def done(current: Watermark) -> Watermark | None:
            mine = current.pending.get(version)
            if current.high != version or mine is None or mine.lost:
                return None
            left = {v: p for v, p in current.pending.items() if v != version and as_found.get(v) != p}
            ended = replace(current, pending=left, settled=max(current.settled, version))
            if through is None or through <= current.inserted_through:
                return ended
            return replace(ended, inserted_through=through, recent_from=recent_from or current.recent_from)

        if await self._change(project_id, done) is not None:
            return True
        await self.abandon(project_id, version, now)
        return False

    async def abandon(self, project_id: str, version: int, now: datetime) -> None:
        """Mark `version` lost: its writer ended without settling it (it lost its turn, or
        failed half-way), and a later cycle reconciles what it wrote."""

        def lost(current: Watermark) -> Watermark:
            return replace(current, pending={**current.pending, version: Pending(True, now)})

        await self._change(project_id, lost)

    async def _change(
        self, project_id: str, change: Callable[[Watermark], Watermark | _Declined]
    ) -> Watermark | _Declined:
        """Apply `change` to the entry by compare-and-set, read again and retried while another
        writer changes it in between: the entry written, or what `change` returned declining."""
        for _ in range(_ATTEMPTS):
            current = await self.get(project_id)
            new = change(current)
            if not isinstance(new, Watermark):
                return new
            revision = await self.compare_and_set(project_id, current, new)
            if revision is not None:
                return replace(new, revision=revision)
        raise RuntimeError(f"project {project_id}: the sessions watermark kept changing")

    async def compare_and_set(self, project_id: str, current: Watermark, new: Watermark) -> int | None:
        """Write `new` if the entry is still at `current`'s revision: the new revision, or None."""
        value = orjson.dumps(_fields(new))
        try:
            if current.revision == 0:
                return int(await self._kv.create(project_id, value))
            return int(await self._kv.update(project_id, value, last=current.revision))
        except KeyWrongLastSequenceError:
            return None

    async def reset(self, project_id: str) -> None:
        """Forget the watermark (a rebuild then starts from the beginning)."""
        await self._kv.purge(project_id)


def _fields(watermark: Watermark) -> dict[str, Any]:
    fields: dict[str, Any] = {"inserted_through": watermark.inserted_through.isoformat()}
    if watermark.recent_from is not None:
        fields["recent_from"] = watermark.recent_from.isoformat()
    fields["high"] = watermark.high
    fields["settled"] = watermark.settled
    fields["pending"] = {
        str(version): {"lost": pending.lost, "at": pending.at.isoformat()}
        for version, pending in watermark.pending.items()
    }
    return fields


def _parsed(value: dict[str, Any], revision: int) -> Watermark:
    through = datetime.fromisoformat(value["inserted_through"])
    recent_from = value.get("recent_from")  # absent: written before the copy existed
    recent = None if recent_from is None else datetime.fromisoformat(recent_from)
    pending = {
        int(version): Pending(bool(fields["lost"]), datetime.fromisoformat(fields["at"]))
        for version, fields in value.get("pending", {}).items()
    }
    # Absent before writers announced: the watermark's own version was the highest, and the last
    # one settled (rows above it were then an unfinished cycle's).
    high = int(value.get("high", version_of(through)))
    settled = int(value.get("settled", version_of(through)))
    return Watermark(through, revision, recent, high, pending, settled)
