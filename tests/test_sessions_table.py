"""The sessions table and the events' insert time (migration 3) on the embedded ClickHouse: what
the sessionizer's writes rely on."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from headwater.core.migrations import apply_migrations
from headwater.core.migrations.m0003_sessions import SESSION_COLUMNS, VERSION_COLUMNS

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def session(session_id: str, version: int, is_deleted: int = 0, **values: Any) -> list[Any]:
    defaults: dict[str, Any] = {
        "identity": "a1", "session_id": session_id, "started_at": START, "ended_at": START,
        "visit_started_at": START,
        "duration_seconds": 0.0, "events": 1, "pageviews": 1, "is_bounce": True,
        "is_new_visitor": True, "is_bot": False,
    }  # fmt: skip
    row = {**defaults, **values, "version": version, "is_deleted": is_deleted}
    names = [name for name, _ in (*SESSION_COLUMNS, *VERSION_COLUMNS)]
    return [row.get(name, "") for name in names]


def insert(clickhouse: Client, database: str, *rows: list[Any]) -> None:
    names = [name for name, _ in (*SESSION_COLUMNS, *VERSION_COLUMNS)]
    clickhouse.insert(f"{database}.sessions", list(rows), column_names=names)


def visible(clickhouse: Client, database: str) -> list[tuple[str, int]]:
    sql = f"SELECT session_id, events FROM {database}.sessions FINAL ORDER BY session_id"
    return [(row[0], row[1]) for row in clickhouse.query(sql).result_rows]


def test_the_newest_version_of_a_session_wins_whatever_order_writes_land_in(
    clickhouse: Client, project_id: str
) -> None:
    database = f"hw_{project_id}"
    insert(clickhouse, database, session("s1", version=20, events=3), session("s2", version=10))
    insert(clickhouse, database, session("s1", version=10, events=2))  # an older cycle, late
    assert visible(clickhouse, database) == [("s1", 3), ("s2", 1)]


def test_a_tombstone_hides_a_session_and_an_older_write_does_not_bring_it_back(
    clickhouse: Client, project_id: str
) -> None:
    database = f"hw_{project_id}"
    insert(clickhouse, database, session("s1", version=10), session("s2", version=10))
    insert(clickhouse, database, session("s2", version=20, is_deleted=1))  # merged into s1
    insert(clickhouse, database, session("s2", version=15))  # a slower, older cycle
    assert visible(clickhouse, database) == [("s1", 1)]
    clickhouse.command(f"OPTIMIZE TABLE {database}.sessions FINAL")
    assert visible(clickhouse, database) == [("s1", 1)]


def test_events_carry_their_insert_time_which_the_consumers_do_not_send(
    clickhouse: Client, project_id: str
) -> None:
    database = f"hw_{project_id}"
    before = datetime.now(UTC)
    clickhouse.insert(
        f"{database}.events",
        [["m1", "track", "Signed Up", "a1", START, START]],
        column_names=["message_id", "type", "event", "anonymous_id", "timestamp", "received_at"],
    )
    time.sleep(0.01)
    [(inserted_at,)] = clickhouse.query(f"SELECT inserted_at FROM {database}.events").result_rows
    assert before.timestamp() - 1 <= inserted_at.timestamp() <= datetime.now(UTC).timestamp()
    # Stored, not computed at read time (which would make every row look new to every cycle).
    time.sleep(0.05)
    [(again,)] = clickhouse.query(f"SELECT inserted_at FROM {database}.events").result_rows
    assert again == inserted_at


def test_rows_inserted_before_the_migration_get_a_fixed_insert_time(
    clickhouse: Client, project_id: str
) -> None:
    database = f"hw_{project_id}_old"
    apply_migrations(clickhouse, database)
    # The database as migration 2 left it.
    clickhouse.command(f"DROP TABLE {database}.sessionizer_recent SYNC")
    clickhouse.command(f"ALTER TABLE {database}.events DROP INDEX ix_inserted_at")
    clickhouse.command(f"ALTER TABLE {database}.events DROP COLUMN inserted_at")
    clickhouse.command(f"ALTER TABLE {database}.events DROP COLUMN bot_reason")
    clickhouse.command(f"ALTER TABLE {database}.events DROP COLUMN client_session_id")
    clickhouse.command(f"DROP TABLE {database}.sessions SYNC")
    clickhouse.command(
        f"ALTER TABLE {database}.schema_migrations DELETE WHERE number >= 3 SETTINGS mutations_sync = 2"
    )
    clickhouse.insert(
        f"{database}.events",
        [["m1", "track", "Signed Up", "a1", START, START]],
        column_names=["message_id", "type", "event", "anonymous_id", "timestamp", "received_at"],
    )
    assert apply_migrations(clickhouse, database) == [3, 4, 5, 6, 7, 8]
    [(first,)] = clickhouse.query(f"SELECT inserted_at FROM {database}.events").result_rows
    time.sleep(0.05)
    [(again,)] = clickhouse.query(f"SELECT inserted_at FROM {database}.events").result_rows
    assert first == again
    assert visible(clickhouse, database) == []


def test_the_insert_time_index_skips_parts_inserted_before_a_watermark(
    clickhouse: Client, project_id: str
) -> None:
    """Migration 4: a cycle's look for rows inserted after its watermark reads no older part."""
    database = f"hw_{project_id}"
    columns = ["message_id", "type", "event", "anonymous_id", "timestamp", "received_at"]
    for n in range(3):  # three inserts, three parts
        clickhouse.insert(
            f"{database}.events", [[f"m{n}", "track", "x", "a1", START, START]], column_names=columns
        )
        time.sleep(0.01)
    [(last,)] = clickhouse.query(f"SELECT max(inserted_at) FROM {database}.events").result_rows
    sql = f"""
        EXPLAIN indexes = 1 SELECT count() FROM {database}.events
        WHERE inserted_at > {{after:DateTime64(3, 'UTC')}}
    """
    plan = "\n".join(row[0] for row in clickhouse.query(sql, parameters={"after": last}).result_rows)
    skip = plan[plan.index("ix_inserted_at") :]
    assert re.search(r"Granules: 0/[1-9]", skip), plan  # 3, or fewer once the parts merged
