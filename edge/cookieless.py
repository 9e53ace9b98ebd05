"""Cookieless visitor ids at the edge (docs/privacy.md#cookieless-visitors): the daily salts and
the visits carried across midnight, both in JetStream KV so every edge behind a load balancer
makes the same id for the same visitor. The id itself is pure code (privacy/cookieless.py).

- Salts (`HW_SALTS`, key: the UTC day): 32 random bytes, created by whichever edge needs the day's
  first (KV create: the first writer wins, the others read the winner). The bucket's max age is
  48 hours, and an edge purges every salt older than yesterday when its day changes. Each edge
  holds today's and yesterday's in memory.
- Carried visitors (`HW_CARRIED_VISITORS`, key: a visitor's id of the day): in the last
  inactivity timeout of a day (the project's `sessions.inactivity_timeout_seconds`) an edge notes
  each visitor it makes an id for. On the next day a visitor whose id under yesterday's salt was
  noted keeps that id for the whole day, so a visit across midnight stays one visitor and one
  session; everyone else gets today's id. An edge asks the bucket once per visitor and day and
  remembers the answer (the set is complete at midnight: later notes are of the new day's ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from headwater.core.service.kvbuckets import ensure_bucket
from headwater.privacy.cookieless import (
    SALT_BYTES,
    SALT_MAX_AGE,
    before_midnight,
    utc_day,
    visitor_id,
)

log = logging.getLogger(__name__)

SALTS_BUCKET = "HW_SALTS"
CARRIED_BUCKET = "HW_CARRIED_VISITORS"
# A note is written at most an inactivity timeout (10 h at most) before midnight and read during
# the whole next day: 36 h covers both, and the bucket forgets it by itself afterwards.
CARRIED_MAX_AGE = timedelta(hours=36)
# Visitors an edge remembers per day (noted, or looked up): beyond, it forgets and asks again.
MAX_REMEMBERED_VISITORS = 200_000

BucketOpener = Callable[[], Awaitable[KeyValue]]


class CookielessUnavailable(Exception):
    """No salt for today can be had (NATS unreachable and none in memory)."""


def bucket_openers(js: JetStreamContext, replicas: int = 1) -> tuple[BucketOpener, BucketOpener]:
    """Openers of the salts bucket and the carried-visitors bucket, created when missing."""

    async def salts() -> KeyValue:
        config = KeyValueConfig(
            SALTS_BUCKET,
            description="Cookieless visitor ids: one random salt per UTC day (docs/privacy.md)",
            history=1,
            ttl=SALT_MAX_AGE.total_seconds(),
            max_value_size=1024,  # (counts the headers too)
            replicas=replicas,
        )
        return await ensure_bucket(js, config)

    async def carried() -> KeyValue:
        config = KeyValueConfig(
            CARRIED_BUCKET,
            description="Cookieless visitors seen just before midnight (docs/privacy.md)",
            history=1,
            ttl=CARRIED_MAX_AGE.total_seconds(),
            max_value_size=1024,
            replicas=replicas,
        )
        return await ensure_bucket(js, config)

    return salts, carried


class _Bucket:
    """A KV bucket opened on first use (an edge may start before NATS answers)."""

    def __init__(self, opener: BucketOpener, timeout: float) -> None:
        self._opener = opener
        self._kv: KeyValue | None = None
        self.timeout = timeout

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await asyncio.wait_for(self._opener(), self.timeout)
        return self._kv


def salt_key(day: date) -> str:
    return day.isoformat()  # sorts as the days do


class DailySalts:
    """Today's and yesterday's salt, from the bucket (today's created when missing)."""

    def __init__(self, opener: BucketOpener, timeout: float = 5.0) -> None:
        self._bucket = _Bucket(opener, timeout)
        self._day: date | None = None
        self._today = b""
        self._yesterday: bytes | None = None
        self._lock = asyncio.Lock()

    async def of(self, day: date) -> tuple[bytes, bytes | None]:
        """The salt of `day` and of the day before (None when no edge made one that day)."""
        if self._day != day:
            async with self._lock:
                if self._day != day:
                    try:
                        await self._load(day)
                    except (NatsError, TimeoutError) as exc:
                        raise CookielessUnavailable(f"the salt of {day} cannot be read: {exc!r}") from exc
        return self._today, self._yesterday

    async def _load(self, day: date) -> None:
        kv = await self._bucket.kv()
        timeout = self._bucket.timeout
        today = await asyncio.wait_for(_created_or_read(kv, salt_key(day)), timeout)
        yesterday = await asyncio.wait_for(_read(kv, salt_key(day - timedelta(days=1))), timeout)
        self._day, self._today, self._yesterday = day, today, yesterday
        try:
            await asyncio.wait_for(purge_before(kv, day - timedelta(days=1)), timeout)
        except (NatsError, TimeoutError):  # the next day's change, or the bucket's max age, does it
            log.warning("could not delete the salts older than yesterday", exc_info=True)


async def purge_before(kv: KeyValue, first_kept: date) -> list[str]:
    """Purge every salt of a day before `first_kept` (a purge leaves no earlier value in the
    stream); the keys purged."""
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    old = sorted(key for key in keys if key < salt_key(first_kept))
    for key in old:
        await kv.purge(key)
    return old


async def _created_or_read(kv: KeyValue, key: str) -> bytes:
    with contextlib.suppress(KeyWrongLastSequenceError):  # another edge made it first: its salt is the day's
        await kv.create(key, secrets.token_bytes(SALT_BYTES))
    salt = await _read(kv, key)
    if salt is None:  # purged between the two calls: only a clock far ahead could do that
        raise CookielessUnavailable(f"the salt of {key} vanished as it was made")
    return salt


async def _read(kv: KeyValue, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # (and KeyDeletedError, its subclass)
        return None
    value = entry.value
    return value if value and len(value) == SALT_BYTES else None


class CarriedVisitors:
    """Visitors seen in the last inactivity timeout of a day, for the next day's ids."""

    def __init__(self, opener: BucketOpener, timeout: float = 5.0) -> None:
        self._bucket = _Bucket(opener, timeout)
        self._noted: set[str] = set()
        self._known: dict[str, bool] = {}
        self._day: date | None = None

    async def note(self, day: date, visitor: str) -> None:
        """Remember `visitor` (an id of `day`) for the next day. A failure is logged, not raised:
        the visit then splits at midnight, no event is lost."""
        self._forget_other_days(day)
        if visitor in self._noted:
            return
        try:
            kv = await self._bucket.kv()
            await asyncio.wait_for(kv.put(visitor, b"1"), self._bucket.timeout)
        except (NatsError, TimeoutError):
            log.warning("could not note a cookieless visitor before midnight", exc_info=True)
            return
        _bounded_add(self._noted, visitor)

    async def was_noted(self, day: date, visitor: str) -> bool:
        """Whether `visitor` (an id under the salt of the day before `day`) was noted; False when
        the bucket cannot be asked (not remembered then: the next event asks again)."""
        self._forget_other_days(day)
        known = self._known.get(visitor)
        if known is not None:
            return known
        try:
            kv = await self._bucket.kv()
            await asyncio.wait_for(kv.get(visitor), self._bucket.timeout)
            found = True
        except KeyNotFoundError:
            found = False
        except (NatsError, TimeoutError):
            log.warning("could not ask whether a cookieless visitor was seen before midnight", exc_info=True)
            return False
        if len(self._known) >= MAX_REMEMBERED_VISITORS:
            self._known.clear()
        self._known[visitor] = found
        return found

    def _forget_other_days(self, day: date) -> None:
        if self._day != day:
            self._day = day
            self._noted.clear()
            self._known.clear()


def _bounded_add(remembered: set[str], visitor: str) -> None:
    if len(remembered) >= MAX_REMEMBERED_VISITORS:
        remembered.clear()
    remembered.add(visitor)


class CookielessIds:
    """The id of a visitor of a project at a moment, as every edge makes it."""

    def __init__(self, salts: DailySalts, carried: CarriedVisitors) -> None:
        self._salts = salts
        self._carried = carried

    @classmethod
    def on_jetstream(cls, js: JetStreamContext, replicas: int = 1, timeout: float = 5.0) -> CookielessIds:
        salts, carried = bucket_openers(js, replicas)
        return cls(DailySalts(salts, timeout), CarriedVisitors(carried, timeout))

    async def visitor(
        self,
        project: str,
        address: str | None,
        user_agent: str | None,
        host: str,
        now: datetime,
        inactivity_timeout_seconds: float,
    ) -> str:
        """CookielessUnavailable when today's salt cannot be had."""
        day = utc_day(now)
        today, yesterday = await self._salts.of(day)
        if yesterday is not None:
            carried = visitor_id(yesterday, project, address, user_agent, host)
            if await self._carried.was_noted(day, carried):
                return carried
        visitor = visitor_id(today, project, address, user_agent, host)
        if before_midnight(now, inactivity_timeout_seconds):
            await self._carried.note(day, visitor)
        return visitor
