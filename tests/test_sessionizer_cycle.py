"""Sessionizer cycles on real NATS (the watermark in KV) and the embedded ClickHouse: after any
sequence of inserts and cycles, the sessions table (read with FINAL) equals the reference
sessionizer run once over every event stored — under redelivered copies, late events, a cycle run
twice or by two sessionizers at once, and a cycle that died half-way."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import astuple, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext

from headwater.analytics.sessions.reference import SessionRow, StoredEvent, sessionize
from headwater.core.migrations import apply_migrations
from headwater.core.migrations.m0003_sessions import SESSION_COLUMNS
from headwater.core.projects.settings import Sessions
from headwater.sessionizer import cycle
from headwater.sessionizer import watermarks as watermarks_module
from headwater.sessionizer.cycle import rebuild, run_cycle, utc
from headwater.sessionizer.onloop import WatermarksOnLoop
from headwater.sessionizer.watermarks import (
    SESSIONS_BUCKET,
    Refused,
    Watermark,
    Watermarks,
    ensure_sessions_bucket,
)

pytestmark = pytest.mark.services

RULES = Sessions(inactivity_timeout_seconds=1800, max_length_seconds=4 * 3600)
EVENT_COLUMNS = (
    "message_id", "type", "anonymous_id", "user_id", "timestamp", "received_at", "request_id", "context",
    "page_url", "page_host", "page_path", "referrer", "referrer_host", "utm_source", "utm_medium",
    "utm_campaign", "utm_term", "utm_content", "browser", "os", "device_type", "country", "region",
    "city", "is_bot",
)  # fmt: skip


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def event(message_id: str, who: str, at: datetime, kind: str = "page", **values: object) -> StoredEvent:
    fields: dict[str, object] = {
        "message_id": message_id, "type": kind, "anonymous_id": who, "user_id": "",
        "timestamp": at, "received_at": at, "request_id": f"r-{message_id}", "client_session_id": "",
        "page_url": f"https://shop.example/{message_id}", "page_host": "shop.example",
        "page_path": f"/{message_id}",
    }  # fmt: skip
    fields.update(values)
    return StoredEvent(**fields)  # type: ignore[arg-type]


def insert(client: Client, database: str, events: list[StoredEvent]) -> None:
    rows = []
    for stored in events:
        values = {name: getattr(stored, name, None) for name in EVENT_COLUMNS if name != "context"}
        values["context"] = json.dumps(
            {"sessionId": stored.client_session_id} if stored.client_session_id else {}
        )
        rows.append([values[name] for name in EVENT_COLUMNS])
    client.insert(f"{database}.events", rows, column_names=list(EVENT_COLUMNS))
    time.sleep(0.005)  # the next cycle's snapshot ends after these rows' insert time


def table(client: Client, database: str) -> list[SessionRow]:
    names = [name for name, _ in SESSION_COLUMNS]
    sql = f"SELECT {', '.join(names)} FROM {database}.sessions FINAL ORDER BY identity, started_at"
    rows = []
    for values in client.query(sql).result_rows:
        row = dict(zip(names, values, strict=True))
        for column in ("started_at", "ended_at", "visit_started_at"):
            row[column] = utc(row[column])
        rows.append(SessionRow(**row))
    return rows


def normalized(rows: list[SessionRow]) -> list[tuple[object, ...]]:
    return [astuple(replace(row, duration_seconds=round(row.duration_seconds, 3))) for row in rows]


def stray_session(client: Client, database: str, started: datetime, events: int) -> dict[str, object]:
    """A session row as the table's first, under another id, starting (its visit too) at `started`."""
    row: dict[str, object] = {name: getattr(table(client, database)[0], name) for name, _ in SESSION_COLUMNS}
    row.update(session_id="stray", started_at=started, visit_started_at=started, events=events)
    return row


def write_session(client: Client, database: str, row: dict[str, object], version: int) -> None:
    client.insert(
        f"{database}.sessions", [[*row.values(), version, 0]], column_names=[*row, "version", "is_deleted"]
    )


@pytest.fixture
async def watermarks(js: JetStreamContext) -> Watermarks:
    return Watermarks(await ensure_sessions_bucket(js))


async def settle(
    client: Client,
    watermarks: Watermarks,
    project_id: str,
    rules: Sessions = RULES,
    recent_span: timedelta = cycle.RECENT_SPAN,
) -> cycle.CycleResult:
    result = await run_cycle(client, watermarks, project_id, rules, settle_seconds=0, recent_span=recent_span)
    await asyncio.sleep(0.005)  # later inserts get a later insert time than this snapshot's end
    return result


async def sessionized_visit(
    client: Client, watermarks: Watermarks, project_id: str, base: datetime, count: int, every_minutes: int
) -> list[StoredEvent]:
    """`count` events of identity a from `base`, `every_minutes` apart, stored and sessionized."""
    visit = [event(f"m{n}", "a", base + timedelta(minutes=every_minutes * n)) for n in range(count)]
    insert(client, f"hw_{project_id}", visit)
    await settle(client, watermarks, project_id)
    return visit


async def dies_before_its_tombstones(
    client: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle that writes its sessions and dies (as if killed: it does not get to mark its
    version lost) before its tombstones."""

    def die(*args: object) -> None:
        raise RuntimeError("killed between the sessions and their tombstones")

    async def killed(*args: object) -> None:
        pass

    monkeypatch.setattr(cycle, "_write_tombstones", die)
    monkeypatch.setattr(Watermarks, "abandon", killed)
    with pytest.raises(RuntimeError):
        await run_cycle(client, watermarks, project_id, RULES, settle_seconds=0)
    monkeypatch.undo()


async def test_cycles_between_batches_equal_one_computation_of_everything(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=5)
    stored = [
        event(f"m{n}", who, base + timedelta(minutes=minutes))
        for n, (who, minutes) in enumerate(
            [("a", 0), ("a", 10), ("a", 39), ("a", 80), ("b", 5), ("b", 36), ("b", 66), ("c", 1)]
            + [("a", 81 + 20 * k) for k in range(14)]  # a visit longer than the maximum length
        )
    ]
    random.Random(7).shuffle(stored)
    for batch in (stored[:5], stored[5:9], stored[9:15], stored[15:]):
        insert(clickhouse, database, batch)
        await settle(clickhouse, watermarks, project_id)
    sessions = table(clickhouse, database)
    assert normalized(sessions) == normalized(sessionize(stored, RULES))
    # Each event tied to its session as docs/schema.md shows it.
    tied = f"""
        SELECT s.session_id, count() FROM (SELECT * FROM {database}.events FINAL) AS e
        ASOF JOIN (SELECT identity, session_id, started_at FROM {database}.sessions FINAL) AS s
            ON if(e.anonymous_id != '', e.anonymous_id, e.user_id) = s.identity
            AND e.timestamp >= s.started_at
        GROUP BY s.session_id
    """
    counts = dict(clickhouse.query(tied).result_rows)
    assert counts == {row.session_id: row.events for row in sessions}


async def test_a_late_event_merges_two_sessions_and_the_merged_one_is_gone(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    first = [event("m1", "a", base), event("m2", "a", base + timedelta(minutes=40))]
    insert(clickhouse, database, first)
    await settle(clickhouse, watermarks, project_id)
    assert len(table(clickhouse, database)) == 2
    bridge = event("m3", "a", base + timedelta(minutes=20))
    insert(clickhouse, database, [bridge])
    result = await settle(clickhouse, watermarks, project_id)
    assert (result.sessions, result.tombstones) == (1, 1)
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*first, bridge], RULES))


async def test_redelivered_copies_count_once(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=1)
    original = [event("m1", "a", base), event("m2", "a", base + timedelta(minutes=5))]
    insert(clickhouse, database, original)
    await settle(clickhouse, watermarks, project_id)
    later = base + timedelta(minutes=50)  # a retried request: received later, its time re-corrected
    copy = replace(
        original[1], received_at=later, timestamp=base + timedelta(minutes=6), request_id="r-retry"
    )
    insert(clickhouse, database, [copy])
    await settle(clickhouse, watermarks, project_id)
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*original, copy], RULES))
    assert table(clickhouse, database)[0].events == 2


async def test_a_new_visit_long_after_the_last_session_does_not_rewrite_it(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """A cycle recomputes from where new events can change anything (cycle._recompute_from): a new
    event more than a copy spread plus the timeout after the identity's last session begins a visit
    of its own, and that session's row stays as it was written. One within that reach is
    recomputed with the visit before it."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=5)
    first = [event("m1", "a", base), event("m2", "a", base + timedelta(minutes=10))]
    insert(clickhouse, database, first)
    await settle(clickhouse, watermarks, project_id)

    def versions() -> dict[str, int]:
        sql = f"SELECT session_id, max(version) FROM {database}.sessions GROUP BY session_id"
        return dict(clickhouse.query(sql).result_rows)

    written = versions()
    far = event("m3", "a", base + timedelta(hours=2))
    insert(clickhouse, database, [far])
    await settle(clickhouse, watermarks, project_id)
    assert {key: versions()[key] for key in written} == written
    near = event("m4", "a", base + timedelta(minutes=10) + cycle.DEFAULT_COPY_SPREAD)
    insert(clickhouse, database, [near])
    await settle(clickhouse, watermarks, project_id)
    assert all(versions()[key] > version for key, version in written.items())
    expected = sessionize([*first, far, near], RULES)
    assert [row.events for row in expected] == [2, 1, 1]
    assert normalized(table(clickhouse, database)) == normalized(expected)


async def test_a_copy_received_earlier_displaces_the_stored_one_from_a_closed_session(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """A copy of a message that arrives later but was received before the copy stored (a spool
    replay) is the one kept, even when its time falls past the timeout of the stored copy's
    session: that session is recomputed without it."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=3)
    original = [event("m1", "a", base), event("m2", "a", base + timedelta(minutes=5))]
    insert(clickhouse, database, original)
    await settle(clickhouse, watermarks, project_id)
    earlier_copy = replace(
        original[1],
        received_at=base + timedelta(minutes=4),
        timestamp=base + timedelta(minutes=50),
        request_id="r-spooled",
    )
    insert(clickhouse, database, [earlier_copy])
    await settle(clickhouse, watermarks, project_id)
    expected = sessionize([*original, earlier_copy], RULES)
    assert [row.events for row in expected] == [1, 1]
    assert normalized(table(clickhouse, database)) == normalized(expected)


async def test_two_sessionizers_at_once_and_a_cycle_run_twice_leave_the_same_table(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=3)
    stored = [event(f"m{n}", "ab"[n % 2], base + timedelta(minutes=7 * n)) for n in range(30)]
    insert(clickhouse, database, stored[:10])
    await settle(clickhouse, watermarks, project_id)
    insert(clickhouse, database, stored[10:])
    results = await asyncio.gather(
        *(run_cycle(clickhouse, watermarks, project_id, RULES, 0) for _ in range(2))
    )
    assert sorted(r.advanced for r in results) in ([False, True], [True, True])
    await settle(clickhouse, watermarks, project_id)  # nothing new: changes nothing
    assert normalized(table(clickhouse, database)) == normalized(sessionize(stored, RULES))


async def test_a_cycle_that_died_after_writing_part_of_its_rows_is_redone_exactly(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    first = [event("m1", "a", base), event("m2", "a", base + timedelta(minutes=40))]
    insert(clickhouse, database, first)
    await settle(clickhouse, watermarks, project_id)
    bridge = event("m3", "a", base + timedelta(minutes=20))
    insert(clickhouse, database, [bridge])

    await dies_before_its_tombstones(clickhouse, watermarks, project_id, monkeypatch)
    merged = sessionize([*first, bridge], RULES)
    # The merged session (it keeps the first one's id) beside the second, not yet deleted.
    assert [row.events for row in table(clickhouse, database)] == [3, 1]
    await settle(clickhouse, watermarks, project_id)
    assert normalized(table(clickhouse, database)) == normalized(merged)


async def test_rows_of_an_unfinished_cycle_are_not_trusted_to_find_where_to_recompute(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """A cycle that died left a row above the watermark that would start a recomputation in the
    middle of a visit; the next cycle reads the table as the watermark left it, and deletes it."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 4, every_minutes=10)
    watermark = await watermarks.get(project_id)
    stray = stray_session(clickhouse, database, base + timedelta(minutes=20), events=2)
    write_session(clickhouse, database, stray, watermark.version + 1)
    later = event("m9", "a", base + timedelta(minutes=45))
    insert(clickhouse, database, [later])
    await settle(clickhouse, watermarks, project_id)
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, later], RULES))


async def test_a_session_another_cycle_writes_after_the_table_was_read_is_deleted_too(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sessionizers: an older cycle's session that lands in this cycle's recomputed range after
    this cycle read where to recompute from gets a tombstone all the same (the tombstones are
    found after the cycle's own sessions are written, whatever the version of what they find)."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 3, every_minutes=10)
    watermark = await watermarks.get(project_id)
    stray = stray_session(clickhouse, database, base + timedelta(minutes=21), events=1)
    write_sessions = cycle._write_sessions

    def and_an_older_cycle_writes(*args: Any, **kwargs: Any) -> None:
        write_sessions(*args, **kwargs)
        write_session(clickhouse, database, stray, watermark.version + 1)

    monkeypatch.setattr(cycle, "_write_sessions", and_an_older_cycle_writes)
    later = event("m9", "a", base + timedelta(minutes=25))
    insert(clickhouse, database, [later])
    result = await settle(clickhouse, watermarks, project_id)
    assert result.tombstones == 1
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, later], RULES))


async def test_the_last_session_is_the_one_that_ended_last_when_two_start_together(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """Two sessions of a visitor can start in one millisecond (its client session id changes
    there): one ends at once, the other 90 minutes later. An event 90 minutes after that, within
    the 100-minute timeout of the second's end but not of the first's, continues the second: the
    cycle must take the session that ended last as the last one, whichever the engine lists first
    (eight visitors, so that the order cannot be right for all of them by chance)."""
    database = f"hw_{project_id}"
    rules = Sessions(inactivity_timeout_seconds=6000, max_length_seconds=86_400)
    base = now() - timedelta(hours=4)
    first, later = [], []
    for who in "abcdefgh":
        first += [
            event(f"{who}1", who, base, client_session_id="x"),
            event(f"{who}2", who, base, client_session_id="y"),
            event(f"{who}3", who, base + timedelta(minutes=90), client_session_id="y"),
        ]
        later.append(event(f"{who}4", who, base + timedelta(minutes=180), client_session_id="y"))
    insert(clickhouse, database, first)
    await settle(clickhouse, watermarks, project_id, rules)
    insert(clickhouse, database, later)
    await settle(clickhouse, watermarks, project_id, rules)
    expected = sorted(normalized(sessionize([*first, *later], rules)))  # (two sessions start together)
    assert sorted(normalized(table(clickhouse, database))) == expected


async def test_an_older_row_written_during_a_cycle_does_not_delete_a_session_outside_its_range(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tombstones are found from what the cycle read of the sessions that may lie in its
    range and the rows written since. A row written meanwhile by an older writer (a lower
    version) of a session outside the range, moved inside it, must not make that session look
    like one this cycle left out: its identity is read again whole, and the session stays."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=5)
    first = [event("m1", "a", base), event("m2", "a", base + timedelta(minutes=20))]
    second = [
        event("m3", "a", base + timedelta(hours=2)),
        event("m4", "a", base + timedelta(hours=2, minutes=20)),
    ]
    insert(clickhouse, database, [*first, *second])
    await settle(clickhouse, watermarks, project_id)
    earliest = table(clickhouse, database)[0]
    sql = f"SELECT max(version) FROM {database}.sessions WHERE session_id = {{id:String}}"
    its_version = clickhouse.query(sql, parameters={"id": earliest.session_id}).result_rows[0][0]
    older = {name: getattr(earliest, name) for name, _ in SESSION_COLUMNS}
    older.update(
        started_at=base + timedelta(hours=4, minutes=30),
        visit_started_at=base + timedelta(hours=4, minutes=30),
    )
    write_sessions = cycle._write_sessions

    def and_an_older_writer_writes(*args: Any, **kwargs: Any) -> None:
        write_sessions(*args, **kwargs)
        write_session(clickhouse, database, older, its_version - 1)

    monkeypatch.setattr(cycle, "_write_sessions", and_an_older_writer_writes)
    later = event("m5", "a", base + timedelta(hours=4))  # recomputed from an hour before it
    insert(clickhouse, database, [later])
    result = await settle(clickhouse, watermarks, project_id)
    assert result.tombstones == 0
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*first, *second, later], RULES))


async def test_a_dead_cycles_rewrite_merged_over_the_committed_row_is_not_lost(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle that died after rewriting a long visit's session (same id, a version above the
    watermark): once a merge keeps only that newest row, the table as the watermark left it has no
    such session. The next cycle must not take the visit for gone and start a session in its
    middle: it recomputes the identity from the beginning."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=4)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 7, every_minutes=20)  # 2 hours
    more = event("m7", "a", base + timedelta(minutes=130))
    insert(clickhouse, database, [more])

    await dies_before_its_tombstones(clickhouse, watermarks, project_id, monkeypatch)
    clickhouse.command(f"OPTIMIZE TABLE {database}.sessions FINAL")  # the committed row merged away
    versions = f"SELECT count() FROM {database}.sessions WHERE version <= {{v:UInt64}}"
    committed = (await watermarks.get(project_id)).version
    assert clickhouse.query(versions, parameters={"v": committed}).result_rows[0][0] == 0
    await settle(clickhouse, watermarks, project_id)
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, more], RULES))


class PausedCycle:
    """A cycle run in a thread of its own that stops before writing its sessions (or its
    tombstones) until released: another writer can run whole meanwhile (its snapshot is taken
    before it stops). `dies_before_its_tombstones`: killed there, it does not get to mark its
    version lost."""

    def __init__(
        self,
        client: Client,
        watermarks: Watermarks,
        project_id: str,
        monkeypatch: pytest.MonkeyPatch,
        dies_before_its_tombstones: bool = False,
        stops_before: Literal["sessions", "tombstones"] = "sessions",
        rules: Sessions = RULES,
    ):
        self._stopped_or_ended, self._release = threading.Event(), threading.Event()
        self._stopped = False
        self._here = threading.local()
        write_sessions, write_tombstones = cycle._write_sessions, cycle._write_tombstones

        def stop_here(where: str) -> None:
            if stops_before == where and getattr(self._here, "this_cycle", False) and not self._stopped:
                self._stopped = True
                self._stopped_or_ended.set()
                assert self._release.wait(60)

        def sessions_when_released(*args: Any, **kwargs: Any) -> None:
            stop_here("sessions")
            write_sessions(*args, **kwargs)

        def tombstones_when_released_unless_killed(*args: Any, **kwargs: Any) -> None:
            stop_here("tombstones")
            if dies_before_its_tombstones and getattr(self._here, "this_cycle", False):
                raise RuntimeError("killed between the sessions and their tombstones")
            write_tombstones(*args, **kwargs)

        abandon = Watermarks.abandon  # run by this cycle's thread, on its own loop

        async def abandon_unless_killed(watermarks: Watermarks, *args: Any) -> None:
            if not (dies_before_its_tombstones and getattr(self._here, "this_cycle", False)):
                await abandon(watermarks, *args)

        monkeypatch.setattr(cycle, "_write_sessions", sessions_when_released)
        monkeypatch.setattr(cycle, "_write_tombstones", tombstones_when_released_unless_killed)
        monkeypatch.setattr(Watermarks, "abandon", abandon_unless_killed)
        loop = asyncio.get_running_loop()

        def run() -> cycle.CycleResult:
            self._here.this_cycle = True
            on_loop = WatermarksOnLoop(watermarks, loop)
            try:
                return asyncio.run(run_cycle(client, on_loop, project_id, rules, 0))
            finally:
                self._stopped_or_ended.set()

        self._result = asyncio.create_task(asyncio.to_thread(run))

    async def paused(self) -> bool:
        """Whether it stopped (False: it ended without getting there, having nothing to write)."""
        assert await asyncio.to_thread(self._stopped_or_ended.wait, 60)
        return self._stopped

    async def released(self) -> cycle.CycleResult:
        self._release.set()
        return await self._result


async def test_a_slow_writer_of_an_older_snapshot_leaves_no_session_behind(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sessionizers. The first takes its snapshot, then stalls before writing; an event
    inserted after that snapshot (earlier in time: it becomes the visit's first) is sessionized by
    the second, start to end. The first's session, without that event and under another id, lands
    after the second's tombstones. The first must find it lost its turn, and the next cycle must
    delete what it left (before: a second, overlapping session for ever)."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    other = [event("o1", "b", base)]
    insert(clickhouse, database, other)
    await settle(clickhouse, watermarks, project_id)
    second = event("m2", "a", base + timedelta(minutes=10))
    insert(clickhouse, database, [second])

    slow = PausedCycle(clickhouse, watermarks, project_id, monkeypatch)
    assert await slow.paused()
    first = event("m1", "a", base)  # after the slow cycle's snapshot: it never sees it
    insert(clickhouse, database, [first])
    assert (await settle(clickhouse, watermarks, project_id)).advanced
    assert not (await slow.released()).advanced
    assert len(table(clickhouse, database)) == 3  # its session beside the right one, for now
    assert (await watermarks.get(project_id)).to_reconcile(now())

    result = await settle(clickhouse, watermarks, project_id)
    assert (result.reconciled, result.tombstones) == (1, 1)
    assert not (await watermarks.get(project_id)).pending
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*other, first, second], RULES))


async def test_a_slow_writer_of_a_later_snapshot_takes_over_and_the_other_is_reconciled(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the stalled writer's snapshot is the later one. The writer that ends first
    has lost (a later version was announced before it ended); the stalled one moves the
    watermark, and the next cycle reconciles the first one's identities."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 2, every_minutes=10)
    again = event("m5", "a", base + timedelta(minutes=60))  # a visit of its own, until:
    insert(clickhouse, database, [again])
    early = PausedCycle(clickhouse, watermarks, project_id, monkeypatch)
    assert await early.paused()
    bridge = event("m9", "a", base + timedelta(minutes=40))  # joins the two visits
    insert(clickhouse, database, [bridge])
    await asyncio.sleep(0.005)
    late = PausedCycle(clickhouse, watermarks, project_id, monkeypatch)
    assert await late.paused()
    assert not (await early.released()).advanced
    assert (await late.released()).advanced
    assert (await settle(clickhouse, watermarks, project_id)).reconciled == 1
    assert not (await watermarks.get(project_id)).pending
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, again, bridge], RULES))


@pytest.mark.parametrize("later_after", [timedelta(minutes=75), timedelta(hours=5)], ids=["soon", "hours"])
async def test_rows_a_dead_writer_left_after_anothers_are_not_trusted_before_it_is_presumed_dead(
    clickhouse: Client,
    watermarks: Watermarks,
    project_id: str,
    monkeypatch: pytest.MonkeyPatch,
    later_after: timedelta,
) -> None:
    """As above, but the stalled writer dies after writing its sessions: its version stays
    announced, and its session, now below the watermark, must not be read as the table the
    watermark left. The events it never saw split its session in the true sequence (an earlier
    event of the same visit; an event of another client session in between), so its session
    begins in the middle of a visit: the next cycle, recomputing the visitor for a later event,
    must not start there (which would count m2 in two sessions until the writer is presumed dead).
    Hours later too, when the visit ended long before the new event: the identity is not clear of
    its sessions while it has untrusted rows (_clear_of_their_sessions)."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=6)
    other = [event("o1", "b", base)]
    insert(clickhouse, database, other)
    await settle(clickhouse, watermarks, project_id)
    seen = [
        event("m2", "a", base + timedelta(minutes=10), client_session_id="x"),
        event("m3", "a", base + timedelta(minutes=20), client_session_id="x"),
    ]
    insert(clickhouse, database, seen)
    slow = PausedCycle(clickhouse, watermarks, project_id, monkeypatch, dies_before_its_tombstones=True)
    assert await slow.paused()
    unseen = [
        event("m1", "a", base, client_session_id="x"),
        event("e1", "a", base + timedelta(minutes=15), client_session_id="y"),
    ]
    insert(clickhouse, database, unseen)
    assert (await settle(clickhouse, watermarks, project_id)).advanced
    with pytest.raises(RuntimeError):
        await slow.released()
    assert len((await watermarks.get(project_id)).pending) == 1
    later = event("m4", "a", base + later_after, client_session_id="x")
    insert(clickhouse, database, [later])
    result = await settle(clickhouse, watermarks, project_id)
    assert result.reconciled == 0  # not presumed dead yet
    expected = sessionize([*other, *seen, *unseen, later], RULES)
    assert normalized(table(clickhouse, database)) == normalized(expected)


async def test_a_writer_presumed_dead_is_reconciled_and_one_that_was_only_slow_marks_itself_lost(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle that died after writing stays pending (its rows untrusted) until presumed dead,
    then a cycle reconciles it and settles it. A writer settled that way that then ends (it was
    only slow) marks itself lost, and is reconciled again."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 3, every_minutes=10)
    more = event("m7", "a", base + timedelta(minutes=35))
    insert(clickhouse, database, [more])
    await dies_before_its_tombstones(clickhouse, watermarks, project_id, monkeypatch)
    dead = list((await watermarks.get(project_id)).pending)
    assert len(dead) == 1
    await settle(clickhouse, watermarks, project_id)  # redoes its work; it is not presumed dead yet
    assert list((await watermarks.get(project_id)).pending) == dead

    monkeypatch.setattr(watermarks_module, "PRESUMED_DEAD_AFTER", timedelta(0))
    result = await settle(clickhouse, watermarks, project_id)
    assert result.reconciled == 1 and result.advanced
    assert not (await watermarks.get(project_id)).pending
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, more], RULES))

    assert not await watermarks.finish(project_id, dead[0], now())  # it was alive after all
    assert list((await watermarks.get(project_id)).to_reconcile(now())) == dead
    assert (await settle(clickhouse, watermarks, project_id)).reconciled == 1
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, more], RULES))


async def test_a_cycle_that_fails_half_way_marks_its_version_lost_and_the_next_one_settles_it(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 3, every_minutes=10)
    more = event("m7", "a", base + timedelta(minutes=35))
    insert(clickhouse, database, [more])

    def fail(*args: object) -> None:
        raise RuntimeError("ClickHouse went away")

    monkeypatch.setattr(cycle, "_write_tombstones", fail)
    with pytest.raises(RuntimeError, match="went away"):
        await run_cycle(clickhouse, watermarks, project_id, RULES, settle_seconds=0)
    monkeypatch.undo()
    failed = await watermarks.get(project_id)
    assert list(failed.to_reconcile(now())) == list(failed.pending)
    result = await settle(clickhouse, watermarks, project_id)
    assert result.advanced and not (await watermarks.get(project_id)).pending
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, more], RULES))


async def test_a_cycle_defers_to_a_writer_at_work_and_runs_beside_it_once_the_deferral_is_over(
    clickhouse: Client, watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second sessionizer's cycle, while the first one's announced snapshot is moments old, does
    nothing: the first ends as the only writer, with nothing to reconcile. Past the deferral it
    runs beside it, and the protocol keeps the table exact at the price of a reconciliation."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 3, every_minutes=10)
    more = event("m7", "a", base + timedelta(minutes=35))
    insert(clickhouse, database, [more])
    at_work = PausedCycle(clickhouse, watermarks, project_id, monkeypatch)
    assert await at_work.paused()
    waiting = await run_cycle(
        clickhouse, watermarks, project_id, RULES, settle_seconds=0, defer_to_writers=timedelta(minutes=1)
    )
    assert waiting.deferred and not waiting.advanced and (waiting.identities, waiting.sessions) == (0, 0)
    assert (await at_work.released()).advanced
    assert not (await watermarks.get(project_id)).pending
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, more], RULES))

    later = event("m8", "a", base + timedelta(minutes=45))
    insert(clickhouse, database, [later])
    at_work = PausedCycle(clickhouse, watermarks, project_id, monkeypatch)
    assert await at_work.paused()
    moments = timedelta(milliseconds=1)
    beside = await run_cycle(
        clickhouse, watermarks, project_id, RULES, settle_seconds=0, defer_to_writers=moments
    )
    assert beside.advanced and not beside.deferred
    assert not (await at_work.released()).advanced  # overtaken: lost, and reconciled next
    assert (await settle(clickhouse, watermarks, project_id)).reconciled == 1
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, more, later], RULES))


def test_the_writers_at_work_are_those_announced_within_the_deferral_and_not_lost() -> None:
    moment = now()
    pending = {
        1: watermarks_module.Pending(False, moment - timedelta(seconds=30)),
        2: watermarks_module.Pending(False, moment - timedelta(minutes=2)),  # died, or very slow
        3: watermarks_module.Pending(True, moment),  # lost: ended
        4: watermarks_module.Pending(False, moment + timedelta(seconds=5)),  # a host's clock ahead
    }
    watermark = Watermark(moment, 1, high=4, pending=pending)
    assert watermark.writing(moment, timedelta(minutes=1)) == [1, 4]
    assert watermark.writing(moment, timedelta(minutes=5)) == [1, 2, 4]
    assert watermark.writing(moment, timedelta(0)) == []


async def test_the_first_cycle_after_a_rebuild_for_new_rules_starts_from_the_rebuilt_visits(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """A longer timeout, and a rebuild: three visits become one. The next cycle (the watermark
    still where it was) must find where to recompute from in the rebuilt table, not in the rows
    the rules no longer give: from the third old visit's start, it would write a session of that
    visit's event beside the rebuilt one holding it too."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=5)
    visits = [event(f"m{n}", "a", base + timedelta(minutes=minutes)) for n, minutes in enumerate((0, 45, 95))]
    insert(clickhouse, database, visits)
    await settle(clickhouse, watermarks, project_id)
    assert len(table(clickhouse, database)) == 3
    longer = Sessions(inactivity_timeout_seconds=3600, max_length_seconds=RULES.max_length_seconds)
    await rebuild(clickhouse, watermarks, project_id, longer, settle_seconds=0)
    assert len(table(clickhouse, database)) == 1
    again = event("m3", "a", base + timedelta(minutes=200))  # a visit of its own
    insert(clickhouse, database, [again])
    await settle(clickhouse, watermarks, project_id, longer)
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visits, again], longer))


async def test_an_identity_left_with_only_deleted_sessions_after_a_rebuild_is_a_new_visitor(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """Sessions follow the user id instead of the anonymous id, and a rebuild: the anonymous id's
    session is deleted (its event is the user's now). Hours later that anonymous id comes back
    without a user id: a new visitor, though its only session in the table ended long ago. The
    tombstone means the identity is not clear of its sessions (_clear_of_their_sessions); taken as
    clear, it would count as seen before."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=6)
    signed_in = event("m1", "a", base, user_id="u")
    insert(clickhouse, database, [signed_in])
    await settle(clickhouse, watermarks, project_id)
    by_user = Sessions(identity="user_id", max_length_seconds=RULES.max_length_seconds)
    await rebuild(clickhouse, watermarks, project_id, by_user, settle_seconds=0)
    back = event("m2", "a", base + timedelta(hours=5))
    insert(clickhouse, database, [back])
    await settle(clickhouse, watermarks, project_id, by_user)
    expected = sessionize([signed_in, back], by_user)
    assert [row.is_new_visitor for row in expected] == [True, True]
    assert normalized(table(clickhouse, database)) == normalized(expected)


async def test_a_writer_announces_only_above_every_version_announced(
    watermarks: Watermarks, project_id: str
) -> None:
    moment = now()
    first = await watermarks.announce(project_id, 1_000, moment)
    assert isinstance(first, Watermark) and not first.committed and first.high == 1_000
    assert await watermarks.announce(project_id, 1_000, moment) is Refused.COVERED
    assert await watermarks.announce(project_id, 999, moment) is Refused.COVERED
    at_work = await watermarks.announce(project_id, 2_000, moment, defer_to_writers=timedelta(minutes=1))
    assert at_work is Refused.WRITER_AT_WORK  # 1,000 announced moments ago and not ended
    second = await watermarks.announce(project_id, 2_000, moment)
    assert isinstance(second, Watermark) and set(second.pending) == {1_000, 2_000}
    assert not await watermarks.finish(project_id, 1_000, moment, moment)  # 2,000 came after it
    lost = await watermarks.get(project_id)
    assert await watermarks.finish(project_id, 2_000, moment, moment, reconciled=lost.to_reconcile(moment))
    settled = await watermarks.get(project_id)
    assert settled.committed and not settled.pending and settled.high == 2_000


async def test_a_writer_presumed_dead_that_marks_itself_lost_during_a_reconciliation_stays_pending(
    watermarks: Watermarks, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It may have written after the reconciling cycle read the table: that cycle must not settle
    it, and a later one reconciles it again."""
    moment = now()
    assert isinstance(await watermarks.announce(project_id, 1_000, moment - timedelta(hours=1)), Watermark)
    monkeypatch.setattr(watermarks_module, "PRESUMED_DEAD_AFTER", timedelta(minutes=30))
    reconciling = await watermarks.announce(project_id, 2_000, moment)
    assert isinstance(reconciling, Watermark) and list(reconciling.to_reconcile(moment)) == [1_000]
    assert not await watermarks.finish(project_id, 1_000, moment)  # it was alive after all
    assert await watermarks.finish(
        project_id, 2_000, moment, moment, reconciled=reconciling.to_reconcile(moment)
    )
    left = await watermarks.get(project_id)
    assert list(left.pending) == [1_000] and left.pending[1_000].lost


async def test_events_too_late_are_counted_and_a_rebuild_takes_them(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    database = f"hw_{project_id}"
    rules = Sessions(inactivity_timeout_seconds=60, lateness_seconds=0)
    base = now() - timedelta(minutes=30)
    on_time = [event("m1", "a", base), event("m2", "b", base)]
    insert(clickhouse, database, on_time)
    await settle(clickhouse, watermarks, project_id, rules)
    too_late = event("m3", "a", base - timedelta(hours=2))
    insert(clickhouse, database, [too_late])
    result = await settle(clickhouse, watermarks, project_id, rules)
    assert (result.late_events, result.identities) == (1, 0)
    assert normalized(table(clickhouse, database)) == normalized(sessionize(on_time, rules))
    rebuilt = await rebuild(clickhouse, watermarks, project_id, rules, settle_seconds=0)
    assert rebuilt.identities == 2
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*on_time, too_late], rules))


async def test_a_rebuild_in_shards_or_chunks_computes_the_same_table_and_reports_progress(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """A full rebuild in shards of about three events, and one since a time in chunks of one
    identity: the table a rebuild leaves is the reference's, after sessions of a rule change were
    written (tombstones per shard and per chunk)."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=3)
    events = [
        event(f"m{i}", who, base + timedelta(minutes=minutes))
        for i, (who, minutes) in enumerate(
            [("a", 0), ("a", 20), ("b", 5), ("c", 7), ("c", 50), ("d", 1), ("e", 90), ("e", 100)]
        )
    ]
    insert(clickhouse, database, events)
    await settle(clickhouse, watermarks, project_id)
    shorter = Sessions(inactivity_timeout_seconds=600)
    seen: list[tuple[int, int, str]] = []
    rebuilt = await rebuild(
        clickhouse, watermarks, project_id, shorter, settle_seconds=0,
        progress=lambda done, total, unit: seen.append((done, total, unit)), shard_events=3,
    )  # fmt: skip
    assert seen == [(done, 3, "shards") for done in range(4)]  # 8 events: 3 shards
    assert (rebuilt.identities, rebuilt.sessions) == (5, 7)  # a 2, b 1, c 2, d 1, e 1 (10 min = the timeout)
    assert normalized(table(clickhouse, database)) == normalized(sessionize(events, shorter))
    chunks: list[tuple[int, int, str]] = []
    since = await rebuild(
        clickhouse, watermarks, project_id, RULES, since=base + timedelta(minutes=30),
        settle_seconds=0, chunk_identities=1,
        progress=lambda done, total, unit: chunks.append((done, total, unit)),
    )  # fmt: skip
    assert since.identities == 2  # c and e
    assert chunks == [(done, 2, "identities") for done in range(3)]
    expected = sessionize(events, shorter)
    expected = [row for row in expected if row.identity not in {"c", "e"}] + [
        row for row in sessionize(events, RULES) if row.identity in {"c", "e"}
    ]
    by_identity = sorted(normalized(expected))
    assert sorted(normalized(table(clickhouse, database))) == by_identity
    back = await rebuild(clickhouse, watermarks, project_id, RULES, settle_seconds=0, shard_events=3)
    assert back.tombstones == 1  # a's second session under the shorter timeout
    assert normalized(table(clickhouse, database)) == normalized(sessionize(events, RULES))


async def test_a_rebuild_splits_a_shard_clickhouse_refuses_for_memory(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """400 events of 64 KB URLs (~26 MB) under a 64 MB limit a statement may take: the one shard
    planned is refused (grouping every event takes more), and the rebuild goes on in shards split
    until each fits; the table is the reference's."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=3)
    events = [
        event(f"m{i}", f"v{i % 40}", base + timedelta(seconds=i), page_url=f"https://x/{'u' * 65536}{i}")
        for i in range(400)
    ]
    insert(clickhouse, database, events)
    seen: list[tuple[int, int]] = []
    rebuilt = await rebuild(
        clickhouse, watermarks, project_id, RULES, settle_seconds=0, max_memory=64 * 2**20,
        progress=lambda done, total, unit: seen.append((done, total)),
    )  # fmt: skip
    assert seen[0] == (0, 1)
    assert seen[-1][0] == seen[-1][1] > 1  # split, and every shard done
    assert rebuilt.sessions == 40
    assert normalized(table(clickhouse, database)) == normalized(sessionize(events, RULES))


shards_left = st.integers(1, 64).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1))
)


@given(shards_left)
def test_split_shards_cover_exactly_the_shards_left(case: tuple[int, set[int]]) -> None:
    """Residue r of n becomes residues r and r + n of 2n: an identity of a shard left to do is in
    exactly one shard of the split, and one of a shard done in none."""
    shards, todo = case
    split, doubled = cycle.split_shards(sorted(todo), shards)
    assert doubled == 2 * shards and len(split) == len(set(split)) == 2 * len(todo)
    for hashed in range(4 * shards):
        assert (sum(hashed % doubled == shard for shard in split) == 1) == (hashed % shards in todo)


stream = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 600),  # minutes after the base
        st.sampled_from(["page", "track", "identify"]),
        st.integers(0, 3),  # the insert batch
        st.sampled_from(["", "", "x", "y"]),  # the client's session id
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stream=stream,
    # 100: longer than the copy spread (1 h), so a cycle's bound can fall inside a visit
    timeout_minutes=st.sampled_from([1, 30, 45, 100]),
    max_hours=st.sampled_from([1, 3, 24]),
    # The recent copy's span: the default holds every event; 4 hours leaves the identities
    # recomputed from earlier to be read from `events`, in the same cycle as the others.
    recent_hours=st.sampled_from([None, 4]),
)
async def test_any_insert_order_and_cycles_give_the_reference_sessions(
    clickhouse: Client,
    watermarks: Watermarks,
    stream: list[tuple[str, int, str, int, str]],
    timeout_minutes: int,
    max_hours: int,
    recent_hours: int | None,
) -> None:
    project_id = f"prop{time.monotonic_ns()}"
    database = f"hw_{project_id}"
    apply_migrations(clickhouse, database)
    rules = Sessions(
        inactivity_timeout_seconds=timeout_minutes * 60,
        max_length_seconds=max_hours * 3600,
        lateness_seconds=86_400,
    )
    base = now() - timedelta(hours=11)
    stored = [
        event(f"m{n}", who, base + timedelta(minutes=minutes), kind, client_session_id=session)
        for n, (who, minutes, kind, _, session) in enumerate(stream)
    ]
    span = cycle.RECENT_SPAN if recent_hours is None else timedelta(hours=recent_hours)
    for batch in range(4):
        chosen = [e for e, (_, _, _, b, _) in zip(stored, stream, strict=True) if b == batch]
        if chosen:
            insert(clickhouse, database, chosen)
            await settle(clickhouse, watermarks, project_id, rules, span)
    # sorted: two sessions can start together (where the client's session id changes)
    assert sorted(normalized(table(clickhouse, database))) == sorted(normalized(sessionize(stored, rules)))


# Two visitors' events close together, so that the events one writer never sees often change the
# sessions of those it saw (an earlier first event, a visit joined or split).
close_stream = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.integers(0, 180),
        st.sampled_from(["page", "track"]),
        st.integers(0, 3),
        st.sampled_from(["", "", "x", "y"]),
    ),
    min_size=2,
    max_size=24,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stream=close_stream,
    stops_before=st.sampled_from(["sessions", "tombstones"]),
    killed=st.booleans(),
)
async def test_two_writers_interleaved_any_way_leave_the_reference_sessions(
    clickhouse: Client,
    watermarks: Watermarks,
    stream: list[tuple[str, int, str, int, str]],
    stops_before: Literal["sessions", "tombstones"],
    killed: bool,
) -> None:
    """Batch 0 is sessionized; batch 1 is seen by a writer that stops before its sessions or its
    tombstones; batch 2 (the stream's batches 2 and 3) is inserted then, and another writer runs
    whole; the first goes on (or is killed before its tombstones). Then cycles with nothing new to
    take: the first must leave the reference's table over every event (a stalled writer's stale
    session is touched by nothing after it, so only the reconciliation can remove it), the next
    once a killed writer is presumed dead."""
    project_id = f"two{time.monotonic_ns()}"
    database = f"hw_{project_id}"
    apply_migrations(clickhouse, database)
    rules = Sessions(inactivity_timeout_seconds=1800, max_length_seconds=3 * 3600, lateness_seconds=86_400)
    base = now() - timedelta(hours=11)
    stored = [
        event(f"m{n}", who, base + timedelta(minutes=minutes), kind, client_session_id=session)
        for n, (who, minutes, kind, _, session) in enumerate(stream)
    ]
    batches = [[e for e, (*_, b, _) in zip(stored, stream, strict=True) if min(b, 2) == n] for n in range(3)]
    everything = [*stored, event("o", "other", base)]
    expected = sorted(normalized(sessionize(everything, rules)))
    with pytest.MonkeyPatch.context() as patch:
        insert(clickhouse, database, [*batches[0], everything[-1]])
        await settle(clickhouse, watermarks, project_id, rules)
        if batches[1]:
            insert(clickhouse, database, batches[1])
        first = PausedCycle(clickhouse, watermarks, project_id, patch, killed, stops_before, rules)
        stopped = await first.paused()
        if batches[2]:
            insert(clickhouse, database, batches[2])
        await settle(clickhouse, watermarks, project_id, rules)
        if killed and stopped:
            with pytest.raises(RuntimeError, match="killed"):
                await first.released()
        else:
            await first.released()
            await settle(clickhouse, watermarks, project_id, rules)
            assert sorted(normalized(table(clickhouse, database))) == expected
        patch.setattr(watermarks_module, "PRESUMED_DEAD_AFTER", timedelta(0))
        await settle(clickhouse, watermarks, project_id, rules)
    assert not (await watermarks.get(project_id)).pending
    assert sorted(normalized(table(clickhouse, database))) == expected


async def test_a_cycle_reads_the_recent_copy_within_its_span_and_events_before_it(
    clickhouse: Client, watermarks: Watermarks, project_id: str
) -> None:
    """The copy is what a cycle reads for the identities it recomputes from within its span: a row
    put only there counts, and stops counting once the identity's start lies before the span."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=3)
    first = event("m1", "a", base)
    insert(clickhouse, database, [first])
    await settle(clickhouse, watermarks, project_id)
    copied = f"SELECT message_id FROM {database}.sessionizer_recent"
    assert [row[0] for row in clickhouse.query(copied).result_rows] == ["m1"]
    # In the copy only (inserted "now", within the snapshot): the cycle's reads show it.
    ghost = {"message_id": "ghost", "type": "page", "anonymous_id": "a",
             "timestamp": base + timedelta(minutes=2), "received_at": base, "request_id": "r-ghost",
             "page_path": "/ghost"}  # fmt: skip
    clickhouse.insert(f"{database}.sessionizer_recent", [list(ghost.values())], column_names=list(ghost))
    insert(clickhouse, database, [event("m2", "a", base + timedelta(minutes=5))])
    await settle(clickhouse, watermarks, project_id)
    assert [row.events for row in table(clickhouse, database)] == [3]
    # A span ending after the visit's start: the cycle reads `events`, which has no ghost.
    insert(clickhouse, database, [event("m3", "a", base + timedelta(minutes=9))])
    await settle(clickhouse, watermarks, project_id, recent_span=timedelta(hours=1))
    assert normalized(table(clickhouse, database)) == normalized(
        sessionize(
            [
                first,
                event("m2", "a", base + timedelta(minutes=5)),
                event("m3", "a", base + timedelta(minutes=9)),
            ],
            RULES,
        )
    )
    assert (await watermarks.get(project_id)).recent_from is not None


async def test_a_watermark_from_before_the_recent_copy_makes_the_next_cycle_fill_it(
    clickhouse: Client, watermarks: Watermarks, project_id: str, js: JetStreamContext
) -> None:
    """A project sessionized by a version without the copy: its watermark names no start, and the
    next cycle copies the span's events inserted up to its snapshot before it reads them."""
    database = f"hw_{project_id}"
    base = now() - timedelta(hours=2)
    visit = await sessionized_visit(clickhouse, watermarks, project_id, base, 3, every_minutes=10)
    watermark = await watermarks.get(project_id)
    kv = await js.key_value(SESSIONS_BUCKET)
    await kv.put(
        project_id, json.dumps({"inserted_through": watermark.inserted_through.isoformat()}).encode()
    )
    clickhouse.command(f"TRUNCATE TABLE {database}.sessionizer_recent")
    assert (await watermarks.get(project_id)).recent_from is None
    later = event("m9", "a", base + timedelta(minutes=35))
    insert(clickhouse, database, [later])
    await settle(clickhouse, watermarks, project_id)
    assert normalized(table(clickhouse, database)) == normalized(sessionize([*visit, later], RULES))
    copied = clickhouse.query(f"SELECT count() FROM {database}.sessionizer_recent").result_rows[0][0]
    assert copied == 4
    assert (await watermarks.get(project_id)).recent_from is not None
