"""Migration 7: `events` versioned by `copy_rank`, so a merge keeps the copy of a message the
analytics count (the one received first) and sessions computed before a merge stay what the
definition gives after it. On the embedded ClickHouse."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.analytics.sessions.query import sessions_query
from headwater.analytics.sessions.reference import StoredEvent, sessionize
from headwater.consumers.insert_errors import retryable
from headwater.control.clickhouse import connect
from headwater.core import migrations
from headwater.core.migrations import MIGRATIONS, apply_migrations
from headwater.core.migrations.copy_rank import EXPRESSION, copy_rank
from headwater.core.migrations.m0007_copy_rank import PREVIOUS
from headwater.core.projects.settings import Sessions

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 1, tzinfo=UTC)
_COLUMNS = ["message_id", "type", "event", "anonymous_id", "timestamp", "received_at", "request_id"]


def _row(message: str, at: datetime, received: datetime, request: str) -> list[object]:
    return [message, "track", "Clicked", "visitor", at, received, request]


def _insert(client: Client, database: str, rows: Sequence[list[object]]) -> None:
    """One insert (one part) per call."""
    client.insert(f"`{database}`.events", list(rows), column_names=_COLUMNS)


def _stored(client: Client, database: str) -> list[tuple[str, str]]:
    sql = f"SELECT message_id, request_id FROM `{database}`.events ORDER BY message_id, request_id"
    return [(str(m), str(r)) for m, r in client.query(sql).result_rows]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2299, 12, 31)),
            st.text(max_size=40),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_the_python_rank_is_the_columns(clickhouse: Client, copies: list[tuple[datetime, str]]) -> None:
    times = [round(moment.replace(tzinfo=UTC).timestamp() * 1000) for moment, _ in copies]
    requests = [request for _, request in copies]
    sql = f"""
        SELECT toString({EXPRESSION}) FROM (
            SELECT fromUnixTimestamp64Milli(pair.1, 'UTC') AS received_at, pair.2 AS request_id
            FROM (SELECT arrayJoin(arrayZip({{times:Array(Int64)}}, {{requests:Array(String)}})) AS pair)
        )
    """
    computed = [
        int(r[0])
        for r in clickhouse.query(sql, parameters={"times": times, "requests": requests}).result_rows
    ]
    expected = [
        copy_rank(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms), request)
        for ms, request in zip(times, requests, strict=True)
    ]
    assert computed == expected


def test_the_rank_orders_copies_by_receipt_then_request_hash() -> None:
    earlier, later = T0, T0 + timedelta(milliseconds=1)
    assert copy_rank(earlier, "zzz") > copy_rank(later, "a")
    # MD5("c") = 4a8a… < MD5("b") = 92eb…: in one millisecond, the smaller hash ranks higher.
    assert copy_rank(earlier, "c") > copy_rank(earlier, "b")
    assert copy_rank(datetime(1900, 1, 1, tzinfo=UTC), "") > copy_rank(datetime(2299, 1, 1, tzinfo=UTC), "")


@pytest.mark.parametrize("later_copy_inserted_first", [False, True])
def test_a_merge_keeps_the_copy_received_first(
    clickhouse: Client, project_id: str, later_copy_inserted_first: bool
) -> None:
    database = f"hw_{project_id}"
    first = _row("m1", T0, T0 + timedelta(seconds=1), "received-first")
    retried = _row("m1", T0 + timedelta(seconds=2), T0 + timedelta(seconds=3), "retry")
    for row in [retried, first] if later_copy_inserted_first else [first, retried]:
        _insert(clickhouse, database, [row])
    clickhouse.command(f"OPTIMIZE TABLE `{database}`.events FINAL")
    assert _stored(clickhouse, database) == [("m1", "received-first")]


def _stored_event(message: str, at: datetime, request: str) -> StoredEvent:
    return StoredEvent(message, "track", "visitor", "", at, at, request, "")


def test_sessions_computed_before_a_merge_are_the_sessions_after_it(
    clickhouse: Client, project_id: str
) -> None:
    """The gap this migration closes: a message stored twice, its copies 2 s apart either side of
    the 30-minute timeout, the retry inserted last. Counted by its first copy the visit is one
    session; a merge keeping the copy inserted last made it two."""
    database = f"hw_{project_id}"
    gap = timedelta(minutes=29, seconds=59.4)
    stored = [
        _stored_event("m0", T0, "r0"),
        _stored_event("m1", T0 + gap, "r1"),
        _stored_event("m1", T0 + gap + timedelta(seconds=2), "r2"),
    ]
    for event in stored:
        _insert(
            clickhouse,
            database,
            [_row(event.message_id, event.timestamp, event.received_at, event.request_id)],
        )
    query = sessions_query(database, Sessions(), T0 - timedelta(days=1), T0 + timedelta(days=1))

    def sessions() -> list[tuple[int, float]]:
        rows = clickhouse.query(query.sql, parameters=query.parameters).named_results()
        return [(row["events"], row["duration_seconds"]) for row in rows]

    expected = [(row.events, row.duration_seconds) for row in sessionize(stored, Sessions())]
    assert expected == [(2, gap.total_seconds())]
    assert sessions() == expected
    clickhouse.command(f"OPTIMIZE TABLE `{database}`.events FINAL")
    assert _stored(clickhouse, database) == [("m0", "r0"), ("m1", "r1")]
    assert sessions() == expected


def _as_before_migration_7(client: Client, database: str) -> None:
    """Migrations 1 to 6 as a database created before migration 7 holds them: `events` without a
    version nor `copy_rank` (since migration 7, migration 1 creates it versioned)."""
    events = f"`{database}`.events"
    client.command(f"RENAME TABLE {events} TO `{database}`.versioned")
    client.command(
        f"CREATE TABLE {events} AS `{database}`.versioned ENGINE = ReplacingMergeTree "
        "PARTITION BY toYYYYMM(received_at) ORDER BY (type, event, message_id) "
        "SETTINGS non_replicated_deduplication_window = 1000"
    )
    client.command(f"ALTER TABLE {events} DROP COLUMN copy_rank")
    client.command(f"DROP TABLE `{database}`.versioned SYNC")


@pytest.fixture
def at_migration_6(
    clickhouse_url: str, project_id: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Client, str]]:
    """A database of before migration 7, migrated up to 6, holding copies in two partitions."""
    client = connect(clickhouse_url)
    database = f"hw_{project_id}_before7"
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:6])
    assert apply_migrations(client, database) == [1, 2, 3, 4, 5, 6]
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    _as_before_migration_7(client, database)
    assert not _is_versioned(client, database)
    march, april = T0, T0 + timedelta(days=31)
    _insert(client, database, [_row("m1", march, march, "b"), _row("m2", april, april, "a")])
    _insert(client, database, [_row("m1", march, march + timedelta(seconds=2), "a")])  # m1's retry
    _insert(client, database, [_row("m3", april, april, "c")])
    yield client, database
    client.close()


EXPECTED_AFTER_MERGE = [("m1", "b"), ("m2", "a"), ("m3", "c")]


def _is_versioned(client: Client, database: str) -> bool:
    [(engine,)] = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'",
        parameters={"db": database},
    ).result_rows
    return str(engine).startswith("ReplacingMergeTree(copy_rank)")


def _tables(client: Client, database: str) -> list[str]:
    sql = "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name"
    return [r[0] for r in client.query(sql, parameters={"db": database}).result_rows]


def test_migration_7_moves_every_row_into_the_versioned_table(at_migration_6: tuple[Client, str]) -> None:
    client, database = at_migration_6
    assert not _is_versioned(client, database)
    assert apply_migrations(client, database) == [7, 8]
    assert _is_versioned(client, database)
    assert PREVIOUS not in _tables(client, database)
    assert _stored(client, database) == [("m1", "a"), ("m1", "b"), ("m2", "a"), ("m3", "c")]
    [(indexes,)] = client.query(
        "SELECT groupArray(name) FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = 'events'",
        parameters={"db": database},
    ).result_rows
    assert sorted(indexes) == ["ix_inserted_at", "ix_timestamp", "ix_user_id"]
    client.command(f"OPTIMIZE TABLE `{database}`.events FINAL")
    assert _stored(client, database) == EXPECTED_AFTER_MERGE
    columns = client.query(f"DESCRIBE TABLE `{database}`.sessionizer_recent").named_results()
    assert any(column["name"] == "copy_rank" for column in columns)
    assert apply_migrations(client, database) == []


@pytest.mark.parametrize("stopped_after", ["renamed", "created", "one_partition_moved"])
def test_an_interrupted_migration_7_is_finished_by_the_next_run(
    at_migration_6: tuple[Client, str], stopped_after: str
) -> None:
    """Each step of a run that died (no record of migration 7) is taken up where it stopped:
    every row once, none lost."""
    client, database = at_migration_6
    events, previous = f"`{database}`.events", f"`{database}`.{PREVIOUS}"
    client.command(f"ALTER TABLE {events} ADD COLUMN copy_rank UInt128 MATERIALIZED {EXPRESSION}")
    client.command(f"RENAME TABLE {events} TO {previous}")
    if stopped_after != "renamed":
        client.command(
            f"CREATE TABLE {events} AS {previous} ENGINE = ReplacingMergeTree(copy_rank) "
            "PARTITION BY toYYYYMM(received_at) ORDER BY (type, event, message_id)"
        )
    if stopped_after == "one_partition_moved":
        client.command(f"ALTER TABLE {previous} MOVE PARTITION ID '202603' TO TABLE {events}")
    assert apply_migrations(client, database) == [7, 8]
    assert _is_versioned(client, database)
    assert PREVIOUS not in _tables(client, database)
    assert _stored(client, database) == [("m1", "a"), ("m1", "b"), ("m2", "a"), ("m3", "c")]
    client.command(f"OPTIMIZE TABLE {events} FINAL")
    assert _stored(client, database) == EXPECTED_AFTER_MERGE


def test_an_unversioned_events_beside_a_leftover_previous_table_is_refused(
    at_migration_6: tuple[Client, str],
) -> None:
    """Both at once (not one run's rename seen half-way by another): the migration says what to do."""
    client, database = at_migration_6
    client.command(f"CREATE TABLE `{database}`.{PREVIOUS} AS `{database}`.events")
    with pytest.raises(RuntimeError, match=f"holds both an unversioned `events` and `{PREVIOUS}`"):
        apply_migrations(client, database)


def test_a_new_project_gets_the_versioned_table(clickhouse: Client, project_id: str) -> None:
    assert _is_versioned(clickhouse, f"hw_{project_id}")


def test_runs_at_once_beside_an_inserting_consumer_keep_every_row_once(
    at_migration_6: tuple[Client, str], clickhouse_url: str
) -> None:
    """Three runs of the migrations at once (control planes starting, `headwater migrate`) while a
    writer inserts as a consumer does, retrying what ClickHouse refuses for a moment (a missing
    table): the runs converge and every row inserted is stored once."""
    client, database = at_migration_6
    batches, per_batch = 150, 10
    failures: list[BaseException] = []

    def write() -> None:
        writer = connect(clickhouse_url)
        try:
            for batch in range(batches):
                moment = T0 + timedelta(seconds=batch)
                rows = [_row(f"w{batch}_{n}", moment, moment, f"r{batch}") for n in range(per_batch)]
                while True:
                    try:
                        _insert(writer, database, rows)
                        break
                    except Exception as error:
                        if not retryable(error):
                            failures.append(error)
                            return
                        time.sleep(0.01)
        finally:
            writer.close()

    def migrate() -> None:
        runner = connect(clickhouse_url)
        try:
            apply_migrations(runner, database)
        except BaseException as error:  # reported below
            failures.append(error)
        finally:
            runner.close()

    writer = threading.Thread(target=write)
    writer.start()
    runs = [threading.Thread(target=migrate) for _ in range(3)]
    for run in runs:
        run.start()
    for thread in [*runs, writer]:
        thread.join(timeout=300)
    assert failures == []
    assert _is_versioned(client, database)
    assert PREVIOUS not in _tables(client, database)
    [(written, distinct, earlier)] = client.query(
        f"SELECT countIf(message_id LIKE 'w%'), uniqExactIf(message_id, message_id LIKE 'w%'),"
        f" groupUniqArrayIf(message_id, message_id NOT LIKE 'w%') FROM `{database}`.events"
    ).result_rows
    assert written == distinct == batches * per_batch
    assert sorted(earlier) == ["m1", "m2", "m3"]  # m1's copies may have merged into one since
    applied = client.query(f"SELECT count() FROM `{database}`.schema_migrations FINAL WHERE number = 7")
    assert applied.result_rows == [(1,)]
