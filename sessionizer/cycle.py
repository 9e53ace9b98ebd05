"""One sessionizer cycle for one project: sessionize what was inserted since the watermark.

1. The cycle's snapshot: events inserted in (W, U], W the watermark, U ClickHouse's clock minus a
   margin longer than any insert takes (an insert's rows carry the time it started). They are
   appended to the sessionizer's copy of recent events (`sessionizer_recent`, sorted by hour),
   which the cycle reads instead of `events` for identities whose recomputation starts within it.
2. The identities those events belong to, each with its earliest new event. An event that arrived
   later than its session's close plus the allowed lateness is counted, and does not re-open it.
3. For each identity, where to recompute from: the visit start of its last session before that
   earliest event, in the table as the settled writers left it (rows of unfinished cycles, which
   carry a version above the last settled, and of writers not settled are not trusted).
   Everything of the identity from there on is recomputed. So is every identity a lost writer
   wrote for that a later writer wrote for too (step 5). The same read keeps the sessions that
   may lie in those ranges, with their newest rows.
4. The recomputed sessions are written with version U, then every session of the recomputed
   ranges that this cycle did not produce (merged away by a late event, or left by a cycle that
   crashed) gets a tombstone with version U: found from what step 3 kept and the rows of the
   parts written since it began, not from a second read of the table. The newest snapshot wins:
   docs/sessions.md.
5. The watermark moves to U, with the time from which the recent copy is complete, when U is still
   the highest version announced (sessionizer/watermarks.py: the cycle announced it before step 1's
   copy). Otherwise another writer announced a later snapshot meanwhile, and one of the two may
   have written after the other's tombstones: U is marked lost, and a later cycle recomputes the
   identities both wrote for before it settles U (docs/sessions.md, "Two writers at once").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from headwater.analytics.sessions.query import (
    DEFAULT_COPY_SPREAD,
    EVENTS,
    FAR_FUTURE,
    RECENT,
    THE_EARLIEST,
    EventSource,
    SessionsQuery,
    copy_to_recent,
    from_unix_milliseconds,
    identity_expression,
    sessions_query,
    string_set,
    time_lookup_milliseconds,
    time_map_parameters,
    unix_milliseconds,
)
from headwater.core.clickhouse_errors import error_code
from headwater.core.long_lists import LONG_LIST_SETTINGS, long_list, long_list_parameter
from headwater.core.migrations.m0003_sessions import SESSION_COLUMNS, VERSION_COLUMNS
from headwater.core.migrations.m0004_sessionizer_recent import RECENT_KEEP
from headwater.core.projects.project import database_name
from headwater.core.projects.settings import Sessions

from .watermarks import Refused, Watermark, Watermarks, version_of

log = logging.getLogger(__name__)

# How long before ClickHouse's now a cycle's snapshot ends: rows become visible when their insert
# commits, but carry the time it started; no insert of the consumers takes this long.
DEFAULT_SETTLE_SECONDS = 30.0
_TIME = "DateTime64(3, 'UTC')"
_WRITTEN = ", ".join(name for name, _ in (*SESSION_COLUMNS, *VERSION_COLUMNS))
# Rows written hold one key each (a session, or its tombstone): the insert-time pass that collapses
# equal keys in a block finds nothing, and cost a rebuild of 10M events ~4 of its ~16 s.
_UNIQUE_KEYS = {"optimize_on_insert": 0}
# How far back (from a cycle's snapshot end) the recent copy is filled and trusted: its rows expire
# RECENT_KEEP after their time, a day later, so a cycle that started late still finds them. An
# identity recomputed from before (a visit of days, a lateness of days) is read from `events`.
RECENT_SPAN = RECENT_KEEP - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CycleResult:
    project_id: str
    inserted_through: datetime
    identities: int  # recomputed
    sessions: int  # written
    tombstones: int
    late_events: int  # too late to re-open their session
    advanced: bool  # False: nothing to do, or another writer's later snapshot took over
    reconciled: int = 0  # identities recomputed for a lost writer
    deferred: bool = False  # not run: another writer announced a snapshot moments ago


# By default a cycle runs whatever other writers do: the protocol keeps the table exact (see
# `defer_to_writers` in run_cycle).
NEVER_DEFER = timedelta(0)


def snapshot_end(client: Client, settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> datetime:
    now: datetime = client.query("SELECT now64(3, 'UTC')").result_rows[0][0]
    return utc(now) - timedelta(seconds=settle_seconds)


def utc(moment: datetime) -> datetime:
    """A time ClickHouse returned, in UTC (the embedded engine's driver returns them naive)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def run_cycle(
    client: Client,
    watermarks: Watermarks,
    project_id: str,
    rules: Sessions,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    recent_span: timedelta = RECENT_SPAN,
    defer_to_writers: timedelta = NEVER_DEFER,
) -> CycleResult:
    """`defer_to_writers`: when another writer (a second sessionizer, a rebuild) announced a
    snapshot less than this long ago and has not ended, do nothing this round: its cycle covers
    what this one would take, and running beside it would only cost a reconciliation later. A
    writer that died is waited for that long at most."""
    if recent_span > RECENT_SPAN:
        raise ValueError(f"the recent copy keeps rows for {RECENT_SPAN} at most")
    watermark = await watermarks.get(project_id)
    through = snapshot_end(client, settle_seconds)
    if through <= watermark.inserted_through:
        return CycleResult(project_id, watermark.inserted_through, 0, 0, 0, 0, False)
    version = version_of(through)
    announced = await watermarks.announce(project_id, version, _now(), defer_to_writers)
    if not isinstance(announced, Watermark):  # covered by a later snapshot, or another writer at work
        deferred = announced is Refused.WRITER_AT_WORK
        return CycleResult(project_id, watermark.inserted_through, 0, 0, 0, 0, False, deferred=deferred)
    async with _abandoned_on_failure(watermarks, project_id, version):
        return await _announced_cycle(client, watermarks, project_id, rules, announced, through, recent_span)


async def _announced_cycle(
    client: Client,
    watermarks: Watermarks,
    project_id: str,
    rules: Sessions,
    watermark: Watermark,
    through: datetime,
    recent_span: timedelta,
) -> CycleResult:
    database = database_name(project_id)  # validated: it is spliced into SQL as an identifier
    version = version_of(through)
    reconcile = watermark.to_reconcile(_now())
    recent_from = _keep_recent(client, database, watermark, through, recent_span)
    if not watermark.committed:
        # The first cycle takes everything (history before the sessionizer ran is not late): a
        # full rebuild, one pass per shard rather than a scan per chunk of listed identities. Its
        # tombstones cover every row a lost writer left.
        identities, sessions, tombstones = _rebuild_everything(
            client, database, rules, through, None, REBUILD_SHARD_EVENTS
        )
        advanced = await watermarks.finish(project_id, version, _now(), through, recent_from, reconcile)
        return CycleResult(project_id, through, identities, sessions, tombstones, 0, advanced)
    lateness = rules.inactivity_timeout_seconds + rules.lateness_seconds
    earliest, late = _touched(client, database, rules, watermark.inserted_through, through, lateness)
    lost = _written_by_lost_writers(client, database, list(reconcile)) if reconcile else {}
    for identity, first in lost.items():
        earliest[identity] = min(earliest.get(identity, first), first)
    if lost:
        log.info("%s: recomputing %d identities a lost writer wrote for", database, len(lost))
    sessions, tombstones = _recompute(client, database, rules, earliest, watermark, through, recent_from)
    advanced = await watermarks.finish(project_id, version, _now(), through, recent_from, reconcile)
    return CycleResult(project_id, through, len(earliest), sessions, tombstones, late, advanced, len(lost))


@contextlib.asynccontextmanager
async def _abandoned_on_failure(watermarks: Watermarks, project_id: str, version: int) -> AsyncIterator[None]:
    """A writer that fails after announcing marks its version lost (if NATS lets it: otherwise
    it is presumed dead later), so that the next cycle settles it."""
    try:
        yield
    except Exception:
        try:
            await watermarks.abandon(project_id, version, _now())
        except Exception as error:  # the failure that brought us here matters more
            log.warning("project %s: could not mark version %d lost: %r", project_id, version, error)
        raise


def _now() -> datetime:
    return datetime.now(UTC)


# How long a rebuild waits for the writers whose later snapshots stand in its way.
_ANNOUNCE_WAIT_SECONDS = 120.0


async def _announce_a_snapshot(
    client: Client, watermarks: Watermarks, project_id: str, settle_seconds: float
) -> tuple[datetime, Watermark]:
    """A rebuild's snapshot end, announced: a later one while a cycle's is the highest announced."""
    deadline = time.monotonic() + _ANNOUNCE_WAIT_SECONDS
    while True:
        through = snapshot_end(client, settle_seconds)
        announced = await watermarks.announce(project_id, version_of(through), _now())
        if isinstance(announced, Watermark):
            return through, announced
        if time.monotonic() > deadline:
            raise RuntimeError(f"project {project_id}: other writers kept announcing later snapshots")
        await asyncio.sleep(0.5)


def _written_by_lost_writers(client: Client, database: str, versions: list[int]) -> dict[str, datetime]:
    """The identities that writers of `versions` (lost, or presumed dead) wrote rows for and that
    a writer of a higher version wrote for too, each with the earliest start of those rows: the
    only ones whose rows may be out of date (another writer's computation covered more events
    and may have missed them). The others' rows are their writer's exact computation."""
    sql = f"""
        SELECT identity, toUnixTimestamp64Milli(minIf(started_at, is_lost))
        FROM (
            SELECT identity, started_at, version, has({{lost:Array(UInt64)}}, version) AS is_lost
            FROM `{database}`.sessions
            WHERE version >= {{lowest:UInt64}}
        )
        GROUP BY identity
        HAVING countIf(is_lost) > 0 AND max(version) > minIf(version, is_lost)
    """
    parameters = {"lost": versions, "lowest": min(versions)}
    rows = client.query(sql, parameters=parameters).result_rows
    return {identity: from_unix_milliseconds(first) for identity, first in rows}


def _keep_recent(
    client: Client, database: str, watermark: Watermark, through: datetime, span: timedelta
) -> datetime:
    """Append what was inserted in (watermark, through] to the recent copy, or, when there is none
    yet, copy every event inserted up to `through` of the last `span`; the time from which the
    copy then holds every event inserted up to `through`. Rows appended twice (a cycle redone)
    are one once merged, and count once in any case."""
    span_from = (through - span).replace(minute=0, second=0, microsecond=0)
    parameters: dict[str, Any] = {"through": through}
    condition = f"inserted_at <= {{through:{_TIME}}} AND timestamp >= {{recent_from:{_TIME}}}"
    if watermark.recent_from is None:
        recent_from = span_from
    else:
        recent_from = max(watermark.recent_from, span_from)
        condition += f" AND inserted_at > {{after:{_TIME}}}"
        parameters["after"] = watermark.inserted_through
    parameters["recent_from"] = recent_from
    # Without the insert-time pass collapsing equal keys: a redone cycle's second copy of a row is
    # in another insert anyway, and the query reads copies as one (100k rows: ~0.2 → ~0.1 s).
    client.command(copy_to_recent(database, condition), parameters=parameters, settings=_UNIQUE_KEYS)
    return recent_from


# Cycles and rebuilds since a time recompute identities in chunks of this many: memory stays
# bounded by a chunk's events, and a rebuild can report progress.
REBUILD_CHUNK_IDENTITIES = 50_000
# A full rebuild takes the identities in shards (by hash) of about this many events each: one pass
# over the events per shard, memory bounded by a shard's events (~450 bytes an event with the SDK's
# contexts: the embedded engine's process peaked at 4.5 GB for 10M events in one shard, 2.5 GB in
# two, and one pass took ~10% less time than two). Chunks of listed identities would each scan the
# whole table again. A shard ClickHouse refuses for memory is split: _rebuild_everything.
REBUILD_SHARD_EVENTS = 12_000_000
# ClickHouse's refusals for memory (MEMORY_LIMIT_EXCEEDED, CANNOT_ALLOCATE_MEMORY): a rebuild then
# splits its shards in two and goes on, down to shards of this many.
_MEMORY_ERRORS = frozenset({173, 241})
_MOST_SHARDS = 1024
# (done, in all, unit): identities, or for a full rebuild shards of them.
Progress = Callable[[int, int, str], None]


async def rebuild(
    client: Client,
    watermarks: Watermarks,
    project_id: str,
    rules: Sessions,
    since: datetime | None = None,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    progress: Progress | None = None,
    chunk_identities: int = REBUILD_CHUNK_IDENTITIES,
    shard_events: int = REBUILD_SHARD_EVENTS,
    max_memory: int | None = None,
) -> CycleResult:
    """Recompute the sessions of every identity with events since `since` (all when None), late
    events included: after a rule change, a replay or an import. The watermark stays (the next
    cycle redoes what arrived meanwhile, which changes nothing). `max_memory`: bytes a full
    rebuild's statements may take in ClickHouse (its `max_memory_usage`); the shards are split
    until each fits."""
    database = database_name(project_id)  # validated: it is spliced into SQL as an identifier
    through, watermark = await _announce_a_snapshot(client, watermarks, project_id, settle_seconds)
    version = version_of(through)
    async with _abandoned_on_failure(watermarks, project_id, version):
        if since is None:
            identities, sessions, tombstones = _rebuild_everything(
                client, database, rules, through, progress, shard_events, max_memory
            )
        else:
            identities, sessions, tombstones = _rebuild_since(
                client, database, rules, since, watermark, through, progress, chunk_identities
            )
        await watermarks.finish(project_id, version, _now())
    return CycleResult(project_id, through, identities, sessions, tombstones, 0, False)


def _rebuild_since(
    client: Client,
    database: str,
    rules: Sessions,
    since: datetime,
    watermark: Watermark,
    through: datetime,
    progress: Progress | None,
    chunk_identities: int,
) -> tuple[int, int, int]:
    """Every identity with events since `since`, recomputed as a cycle would: the identities, the
    sessions and the tombstones written."""
    identity = identity_expression(rules)
    sql = f"""
        SELECT {identity} AS identity, min(timestamp) FROM `{database}`.events
        WHERE identity != '' AND inserted_at <= {{through:{_TIME}}}
            AND timestamp >= {{since:{_TIME}}}
        GROUP BY identity ORDER BY identity
    """
    rows = client.query(sql, parameters={"through": through, "since": since}).result_rows
    earliest = {name: utc(first) for name, first in rows}
    sessions, tombstones = _recompute(
        client, database, rules, earliest, watermark, through, None, progress, chunk_identities
    )
    return len(earliest), sessions, tombstones


def _rebuild_everything(
    client: Client,
    database: str,
    rules: Sessions,
    through: datetime,
    progress: Progress | None,
    shard_events: int,
    max_memory: int | None = None,
) -> tuple[int, int, int]:
    """Every session from every event inserted up to `through`, shard by shard; every older session
    row gets a tombstone (those of identities no event names any more too). The identities, the
    sessions written and the tombstones. Progress is reported in shards: counting each shard's
    identities up front took ~4% of a rebuild (0.33-0.44 s of 10M events).

    A shard ClickHouse refuses for memory is split in two, and so is every shard not done yet
    (the shard of hash residue r of n becomes those of r and r + n of 2n); the shards done stay
    done. Whatever the refused statement had written is written again, the same rows with the
    same version."""
    parameters: dict[str, Any] = {"through": through}
    events_sql = f"SELECT count() FROM `{database}`.events WHERE inserted_at <= {{through:{_TIME}}}"
    events = int(client.query(events_sql, parameters=parameters).result_rows[0][0])
    shards = max(1, math.ceil(events / shard_events))
    todo = list(range(shards))
    version = version_of(through)
    limits = {} if max_memory is None else {"max_memory_usage": max_memory}
    if progress is not None:
        progress(0, shards, "shards")
    while todo:
        shard = todo[0]
        try:
            query = sessions_query(
                database,
                rules,
                None,
                FAR_FUTURE,
                inserted_through=through,
                ordered=False,
                shard=(shard, shards),
            )
            _insert_sessions(client, database, query, version, limits)
            if _holds_other_versions(client, database, version):
                _write_shard_tombstones(client, database, (shard, shards), version, limits)
        except DatabaseError as error:
            if error_code(error) not in _MEMORY_ERRORS or shards * 2 > _MOST_SHARDS:
                raise
            todo, shards = split_shards(todo, shards)
            log.warning("%s: shard refused for memory (%s); going on in %d shards", database, error, shards)
        else:
            todo.pop(0)
        if progress is not None:
            progress(shards - len(todo), shards, "shards")
    sessions, tombstones = _written(client, database, version)
    return _identities_written(client, database, version), sessions, tombstones


def split_shards(todo: list[int], shards: int) -> tuple[list[int], int]:
    """The shards left to do (hash residues of `shards`), each split in two: residue r of n is
    residues r and r + n of 2n."""
    return sorted([*todo, *(residue + shards for residue in todo)]), shards * 2


def _holds_other_versions(client: Client, database: str, version: int) -> bool:
    """Whether `sessions` holds any row of a version other than `version`: when it holds none (a
    first build), a tombstone pass would find nothing to remove (one column read: milliseconds,
    where the pass reads the table's keys, ~0.12 s per shard of 10M events)."""
    sql = f"SELECT count() > 0 FROM `{database}`.sessions WHERE version != {{version:UInt64}}"
    return bool(client.query(sql, parameters={"version": version}).result_rows[0][0])


def _identities_written(client: Client, database: str, version: int) -> int:
    """The identities with a session of `version`: after a full rebuild, every identity with an
    event (each has at least one session)."""
    sql = f"""
        SELECT uniqExact(identity) FROM `{database}`.sessions
        WHERE version = {{version:UInt64}} AND NOT is_deleted
    """
    return int(client.query(sql, parameters={"version": version}).result_rows[0][0])


def _recompute(
    client: Client,
    database: str,
    rules: Sessions,
    earliest: Mapping[str, datetime],
    watermark: Watermark,
    through: datetime,
    recent_from: datetime | None,
    progress: Progress | None = None,
    chunk_identities: int = REBUILD_CHUNK_IDENTITIES,
) -> tuple[int, int]:
    """Steps 3 and 4 for the identities of `earliest`, in chunks; the sessions and the tombstones
    written. `recent_from`: from when the recent copy holds every event up to `through` (None: read
    `events` only)."""
    names = list(earliest)
    version = version_of(through)
    if progress is not None:
        progress(0, len(names), "identities")
    for offset in range(0, len(names), chunk_identities):
        chunk = {name: earliest[name] for name in names[offset : offset + chunk_identities]}
        parts_before = _active_parts(client, database)
        starts, seen, known = _recompute_from(client, database, rules, chunk, watermark)
        for source, their_starts in _by_source(starts, recent_from).items():
            _write_sessions(client, database, rules, their_starts, through, version, seen, source)
        _write_tombstones(client, database, starts, version, known, parts_before)
        if progress is not None:
            progress(offset + len(chunk), len(names), "identities")
    return _written(client, database, version) if names else (0, 0)


def _by_source(
    starts: Mapping[str, datetime], recent_from: datetime | None
) -> dict[EventSource, dict[str, datetime]]:
    """The starts whose events (from a copy spread before them) the recent copy holds, and the
    others, which are read from `events`; the empty groups left out."""
    groups: dict[EventSource, dict[str, datetime]] = {}
    for identity, start in starts.items():
        within = recent_from is not None and start - DEFAULT_COPY_SPREAD >= recent_from
        groups.setdefault(RECENT if within else EVENTS, {})[identity] = start
    return groups


def _written(client: Client, database: str, version: int) -> tuple[int, int]:
    """The sessions and the tombstones written with `version`. Counted afterwards: the embedded
    engine's driver reports no written rows."""
    sql = f"""
        SELECT countIf(NOT is_deleted), countIf(is_deleted) FROM `{database}`.sessions
        WHERE version = {{version:UInt64}}
    """
    sessions, tombstones = client.query(sql, parameters={"version": version}).result_rows[0]
    return int(sessions), int(tombstones)


def _touched(
    client: Client,
    database: str,
    rules: Sessions,
    after: datetime,
    through: datetime,
    too_late_seconds: int,
) -> tuple[dict[str, datetime], int]:
    """Each identity with events inserted in (after, through], with its earliest such event that
    is not too late (inserted more than `too_late_seconds` after its timestamp); and how many were."""
    identity = identity_expression(rules)
    too_late = "dateDiff('second', timestamp, inserted_at) > {too_late_seconds:Int64}"
    sql = f"""
        SELECT {identity} AS identity, minIf(timestamp, NOT ({too_late})), countIf({too_late}), count()
        FROM `{database}`.events
        WHERE inserted_at > {{after:{_TIME}}} AND inserted_at <= {{through:{_TIME}}} AND identity != ''
        GROUP BY identity
    """
    parameters = {
        "after": after,
        "through": through,
        "too_late_seconds": too_late_seconds,
    }
    earliest: dict[str, datetime] = {}
    late = 0
    for name, first, too_late_count, count in client.query(sql, parameters=parameters).result_rows:
        late += too_late_count
        if too_late_count < count:
            earliest[name] = utc(first)
    return earliest, late


# Per session (identity, session_id), its newest row of any version as a cycle read it: its start
# (Unix ms), whether it is a tombstone, and its version. Of the sessions whose newest row starts
# where the identity is recomputed from or later (every session of an identity that may be
# recomputed from the beginning): the tombstones are found from these and the rows written since
# (_write_tombstones). Most identities have none: a returning visitor's new visit starts later.
SessionKey = tuple[str, str]
# A row of the table as the settled writers left it: of a version up to the highest settled (the
# watermark's, or a rebuild's since: its rows, for rules changed, are the ones to start from), and
# not of a writer that has not settled (sessionizer/watermarks.py): a lost or dead writer's session
# may begin in the middle of a visit, its events split by another's (docs/sessions.md).
_TRUSTED = "version <= {trusted_through:UInt64} AND NOT has({untrusted:Array(UInt64)}, version)"
NewestRows = dict[SessionKey, tuple[int, int, int]]


def _active_parts(client: Client, database: str) -> list[str]:
    """The names of the parts `sessions` has now: a part not among them holds rows written (or
    merged, or mutated) since."""
    sql = """
        SELECT name FROM system.parts
        WHERE database = {database:String} AND table = 'sessions' AND active
    """
    return [name for (name,) in client.query(sql, parameters={"database": database}).result_rows]


def _recompute_from(
    client: Client,
    database: str,
    rules: Sessions,
    earliest: Mapping[str, datetime],
    watermark: Watermark,
) -> tuple[dict[str, datetime], list[str], NewestRows]:
    """Per identity, where its new events can change anything. From B, a copy spread before its
    earliest new event: a new copy of a message that was received before the copy stored displaces
    it, and copies lie within the spread of each other. Its last committed session before B (of
    those that started before B, the one that ended last): when an event at B would come within
    the inactivity timeout of the session's end (or inside it), the session's visit is recomputed
    from its start; otherwise every event from B on begins a visit of its own and nothing before
    B changes: recomputed from B. From B too when there is no such session.

    The table is read as the settled writers left it: per session its row of the highest version
    not above the last settled (the watermark's, or a rebuild's) and not pending (_TRUSTED: rows of
    unfinished cycles, and of writers not settled, are not trusted to say where a visit starts).
    First one aggregate per identity (_clear_of_their_sessions); only the identities it cannot
    settle are read session by session.
    A session with no such row but rows above (a cycle that died, or one running beside) that
    started before where the identity would be recomputed from means the table as the watermark
    left it may be incomplete: a merge keeps only a session's newest row, so a dead cycle's
    rewrite of a session can take its committed row away. Such an identity is recomputed from the
    beginning.

    And the identities with a committed session that started before their start: they have events
    before it (committed sessions hold every event inserted up to the watermark but those that
    came too late), so none of their recomputed sessions is a new visitor's, which spares the
    query a look back over every older event.

    And, from the same read, the sessions that may lie in the recomputed ranges (NewestRows): the
    tombstones are found from them and the rows written since, not from a second read of the
    whole table."""

    # Times as Unix milliseconds and one argMax per column: argMax of a tuple, or of DateTime64,
    # keeps its values the generic way, and the aggregation of ~40k rows took ~0.05 s more. The
    # argMaxes of one row pick one row: they see the same keys in the same order, and keep the
    # first of equal keys alike.
    def committed_value(column: str) -> str:
        return f"argMaxIf({column}, version, {_TRUSTED})"

    sql = f"""
        SELECT identity,
            countIf(live_before) > 0 AS has_before,
            -- the last session before the bound: the one that ended last (an identity's sessions
            -- follow one another; two can start in one millisecond, where its client session id
            -- changes); of two that ended together, the one whose visit started first
            -- (recomputing from earlier is always right). Int128: the end, then the visit start
            maxIf(ended_ms, live_before) AS last_ended_ms,
            argMaxIf(visit_started_ms,
                toInt128(ended_ms) * toInt128('18446744073709551616') - visit_started_ms, live_before)
                AS last_visit_ms,
            any(bound_ms) AS bound,
            -- within the timeout of the last session's end: from its visit's start
            if(has_before AND bound - last_ended_ms <= {{timeout_ms:Int64}}, last_visit_ms, bound)
                AS from_last_ms,
            countIf(NOT committed_row) > 0 AS has_orphan,
            has_orphan AND minIf(newest_started_ms, NOT committed_row) < from_last_ms
                AS from_the_beginning,
            if(from_the_beginning, {{the_earliest_ms:Int64}}, from_last_ms) AS start_ms,
            has_before AND minIf(started_ms, live_before) < start_ms,
            -- the sessions whose newest row starts there or later; all of them when the identity
            -- might be recomputed from the beginning
            arrayFilter(
                s -> has_orphan OR s.2 >= start_ms,
                groupArray((session_id, newest_started_ms, newest_deleted, top))
            )
        FROM (
            SELECT identity, session_id,
                -- looked up once per row inside the aggregation: after it, the look-up's hash
                -- table would be built again for each of the small blocks it hands on
                any({time_lookup_milliseconds("affected", "identity")}) AS bound_ms,
                countIf({_TRUSTED}) > 0 AS committed_row,
                toUnixTimestamp64Milli({committed_value("started_at")}) AS started_ms,
                toUnixTimestamp64Milli({committed_value("visit_started_at")})
                    AS visit_started_ms,
                toUnixTimestamp64Milli({committed_value("ended_at")}) AS ended_ms,
                {committed_value("is_deleted")} AS committed_deleted,
                committed_row AND NOT committed_deleted AND started_ms < bound_ms AS live_before,
                toUnixTimestamp64Milli(argMax(started_at, version)) AS newest_started_ms,
                argMax(is_deleted, version) AS newest_deleted,
                max(version) AS top
            FROM `{database}`.sessions
            WHERE identity IN {string_set("affected_keys")}
            GROUP BY identity, session_id
        )
        GROUP BY identity
    """
    affected = {
        identity: max(moment - DEFAULT_COPY_SPREAD, THE_EARLIEST) for identity, moment in earliest.items()
    }
    timeout_ms = rules.inactivity_timeout_seconds * 1000
    trust = {"trusted_through": watermark.trusted_through, "untrusted": sorted(watermark.pending)}
    # An identity with no session starts at its bound; its events all came after the watermark.
    starts = dict(affected)
    seen, near = _clear_of_their_sessions(client, database, affected, trust, timeout_ms)
    known: NewestRows = {}
    if not near:
        return starts, seen, known
    # The identities are the map's keys: bound once (binding ~12k strings costs ~0.03 s).
    parameters = {
        **trust,
        "timeout_ms": timeout_ms,
        "the_earliest_ms": unix_milliseconds(THE_EARLIEST),
        **time_map_parameters("affected", {identity: affected[identity] for identity in near}),
    }
    rows = client.query(sql, parameters=parameters, settings=LONG_LIST_SETTINGS).result_rows
    for identity, *_, start_ms, seen_before_start, sessions in rows:
        starts[identity] = from_unix_milliseconds(start_ms)
        if seen_before_start:
            seen.append(identity)
        for session_id, started_ms, deleted, version in sessions:
            known[identity, session_id] = (started_ms, deleted, version)
    return starts, seen, known


def _clear_of_their_sessions(
    client: Client, database: str, bounds: Mapping[str, datetime], trust: dict[str, Any], timeout_ms: int
) -> tuple[list[str], list[str]]:
    """Of the identities of `bounds` with rows in `sessions`: those clear of their sessions, and
    the others. Clear: every row trusted (_TRUSTED) and none a tombstone, and every row ended more
    than the inactivity timeout before the identity's bound. The full read would find for such an
    identity what is known without it: it is recomputed from its bound (no session of its own
    reaches there), it was seen before that, and none of its sessions lies in the range. Most
    identities of a cycle are clear (a returning visitor's new visit), and this read of one
    aggregate per identity costs a fraction of the full one (~0.04 against ~0.25 s for ~10k
    identities: bench/sessions_floor.py)."""
    sql = f"""
        SELECT identity, countIf(NOT ({_TRUSTED}) OR is_deleted) = 0, toUnixTimestamp64Milli(max(ended_at))
        FROM `{database}`.sessions
        WHERE identity IN {string_set("identities")}
        GROUP BY identity
    """
    parameters = {**trust, **long_list_parameter("identities", list(bounds))}
    clear: list[str] = []
    near: list[str] = []
    rows = client.query(sql, parameters=parameters, settings=LONG_LIST_SETTINGS).result_rows
    for identity, trusted_and_live, last_end_ms in rows:
        if trusted_and_live and unix_milliseconds(bounds[identity]) - last_end_ms > timeout_ms:
            clear.append(identity)
        else:
            near.append(identity)
    return clear, near


def _write_sessions(
    client: Client,
    database: str,
    rules: Sessions,
    starts: Mapping[str, datetime],
    through: datetime,
    version: int,
    seen_before_start: list[str],
    source: EventSource,
) -> None:
    """The sessions of `starts`' identities from their start on (the query's per-identity form,
    whatever the start, the beginning of time included), their events read from `source`.
    `seen_before_start`: _recompute_from's."""
    query = sessions_query(
        database,
        rules,
        starts=starts,
        inserted_through=through,
        ordered=False,
        seen_before_start=seen_before_start,
        source=source,
    )
    _insert_sessions(client, database, query, version)


def _insert_sessions(
    client: Client,
    database: str,
    query: SessionsQuery,
    version: int,
    limits: Mapping[str, Any] | None = None,
) -> None:
    names = ", ".join(name for name, _ in SESSION_COLUMNS)
    sql = f"""
        INSERT INTO `{database}`.sessions ({_WRITTEN})
        SELECT {names}, {{version:UInt64}}, 0 FROM ({query.sql})
    """
    parameters = {**query.parameters, "version": version}
    settings = {**query.settings, **_UNIQUE_KEYS, **(limits or {})}
    client.command(sql, parameters=parameters, settings=settings)


def _write_tombstones(
    client: Client,
    database: str,
    starts: Mapping[str, datetime],
    version: int,
    known: NewestRows,
    parts_before: list[str],
) -> None:
    """A tombstone for every session of the recomputed ranges whose newest row is older than this
    cycle's version: sessions it did not write (merged away by a late event, or left by a cycle
    that died or ran beside). Found without reading the whole table again (~10k identities of
    300k touch every granule: ~0.25 s of a cycle): a session's newest row is the newest of
    what `_recompute_from` read (`known`) and of the identity's rows in the parts `sessions`
    gained since `parts_before`, taken before that read: this cycle's own rows, any another
    sessionizer wrote meanwhile, any a merge or a mutation moved. A session found there that
    `known` lacks, in a row older than this cycle's, may have an older row `known` left out as
    outside the range: its identity's sessions are read again whole (rare: another writer, or a
    merge during the cycle)."""
    in_new_parts = f"_part NOT IN {string_set('parts_before')}"
    parts = long_list_parameter("parts_before", parts_before)
    written_since = _rows_of(client, database, list(starts), in_new_parts, parts)
    unsure = {
        identity
        for identity, session_id, _, _, row_version in written_since
        if row_version < version and (identity, session_id) not in known
    }
    newest = {key: row for key, row in known.items() if key[0] not in unsure}
    if unsure:
        written_since = [row for row in written_since if row[0] not in unsure]
        written_since += _rows_of(client, database, sorted(unsure), "1", {})
    for identity, session_id, started_ms, deleted, row_version in written_since:
        current = newest.get((identity, session_id))
        if current is None or row_version > current[2]:
            newest[identity, session_id] = (started_ms, deleted, row_version)
    starts_ms = {identity: unix_milliseconds(start) for identity, start in starts.items()}
    tombstones = [
        (identity, session_id, started_ms)
        for (identity, session_id), (started_ms, deleted, row_version) in newest.items()
        if row_version < version and not deleted and started_ms >= starts_ms[identity]
    ]
    if tombstones:
        _insert_tombstones(client, database, tombstones, version)


def _insert_tombstones(
    client: Client, database: str, sessions: list[tuple[str, str, int]], version: int
) -> None:
    """A tombstone of `version` for each of `sessions` (identity, session_id, started_at in Unix
    ms): few, most cycles none."""
    sql = f"""
        INSERT INTO `{database}`.sessions (identity, session_id, started_at, version, is_deleted)
        SELECT t.1, t.2, fromUnixTimestamp64Milli(t.3, 'UTC'), {{version:UInt64}}, 1
        FROM (
            SELECT arrayJoin(arrayZip({long_list("identities", "String")},
                {long_list("session_ids", "String")}, {long_list("started", "Int64")})) AS t
        )
    """
    identities, session_ids, started = zip(*sessions, strict=True)
    parameters = {
        "version": version,
        **long_list_parameter("identities", identities),
        **long_list_parameter("session_ids", session_ids),
        **long_list_parameter("started", started),
    }
    client.command(sql, parameters=parameters, settings={**_UNIQUE_KEYS, **LONG_LIST_SETTINGS})


def _rows_of(
    client: Client, database: str, identities: list[str], condition: str, parameters: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """The `sessions` rows of `identities` matching `condition`: identity, session_id, started_at
    (Unix ms), is_deleted, version."""
    sql = f"""
        SELECT identity, session_id, toUnixTimestamp64Milli(started_at), is_deleted, version
        FROM `{database}`.sessions
        WHERE identity IN {string_set("identities")} AND {condition}
    """
    parameters = {**parameters, **long_list_parameter("identities", identities)}
    rows = client.query(sql, parameters=parameters, settings=LONG_LIST_SETTINGS).result_rows
    return [tuple(row) for row in rows]


def _tombstones_sql(database: str, sessions_of: str) -> str:
    """Insert a tombstone for every live session matching `sessions_of` (a condition on the
    identity) whose newest row is older than the version written."""
    return f"""
        INSERT INTO `{database}`.sessions (identity, session_id, started_at, version, is_deleted)
        SELECT identity, session_id, newest.1, {{version:UInt64}}, 1
        FROM (
            SELECT identity, session_id, argMax((started_at, is_deleted), version) AS newest,
                max(version) AS top
            FROM `{database}`.sessions
            WHERE {sessions_of}
            GROUP BY identity, session_id
        )
        WHERE top < {{version:UInt64}} AND NOT newest.2
    """


def _write_shard_tombstones(
    client: Client, database: str, shard: tuple[int, int], version: int, limits: Mapping[str, Any]
) -> None:
    """A full rebuild's tombstones: every live session of the shard (by the hash of the identity
    it was written under) that this rebuild did not write."""
    sql = _tombstones_sql(database, "cityHash64(identity) % {shards:UInt64} = {shard:UInt64}")
    parameters = {"version": version, "shard": shard[0], "shards": shard[1]}
    client.command(sql, parameters=parameters, settings={**_UNIQUE_KEYS, **limits})
