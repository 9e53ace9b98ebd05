"""Each project's sessionizer watermark, in the JetStream KV bucket HW_SESSIONS (never in memory:
a restarted or second sessionizer carries on from it).

The watermark is an insert time: every event ClickHouse inserted at or before it has been
sessionized. It moves by compare-and-set on the entry's revision, so of two sessionizers that did
the same cycle, one moves it and the other learns that it did (their writes were the same).

Beside it, `recent_from`: the sessionizer's copy of recent events (`sessionizer_recent`) holds
every event inserted up to the watermark whose timestamp is at or after this time (None: no copy
made yet, so the next cycle makes one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from headwater.core.service.kvbuckets import ensure_bucket

SESSIONS_BUCKET = "HW_SESSIONS"
# Before any cycle: everything inserted is new.
THE_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Watermark:
    inserted_through: datetime
    revision: int  # the KV entry's; 0 while the project has none
    recent_from: datetime | None = None

    @property
    def version(self) -> int:
        """The version of the rows a cycle up to here writes: its watermark in milliseconds."""
        return version_of(self.inserted_through)


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
        value = orjson.loads(entry.value)
        through = datetime.fromisoformat(value["inserted_through"])
        recent_from = value.get("recent_from")  # absent: written before the copy existed
        recent = None if recent_from is None else datetime.fromisoformat(recent_from)
        return Watermark(through, int(entry.revision or 0), recent)

    async def advance(
        self, project_id: str, current: Watermark, through: datetime, recent_from: datetime | None = None
    ) -> bool:
        """Move the watermark from `current` to `through` (and the recent copy's start to
        `recent_from`); False when another sessionizer moved it since `current` was read (this
        cycle's writes are then redundant, never harmful)."""
        fields = {"inserted_through": through.isoformat()}
        if recent_from is not None:
            fields["recent_from"] = recent_from.isoformat()
        value = orjson.dumps(fields)
        try:
            if current.revision == 0:
                await self._kv.create(project_id, value)
            else:
                await self._kv.update(project_id, value, last=current.revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def reset(self, project_id: str) -> None:
        """Forget the watermark (a rebuild then starts from the beginning)."""
        await self._kv.purge(project_id)
