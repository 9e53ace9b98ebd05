"""The sessions table, and the events' insert time that lets the sessionizer find new events.

- `events.inserted_at`: when a row was inserted (ClickHouse's clock, filled by the column's default:
  the consumers do not send it). The sessionizer's watermark is on it, not on `received_at`: a
  consumer or a spool replay may insert an event long after the edge received it. Rows inserted
  before this migration are given the migration's time (MATERIALIZE), so the first cycle sees them.
- `sessions`: one row per session (docs/sessions.md has every column), a ReplacingMergeTree on
  `(identity, session_id)` with a version and an is_deleted flag: a sessionizer cycle writes its
  sessions and, for a session a late event merged away, a tombstone, both with the cycle's version,
  so the newest computation wins whatever order writes land in. Read it with FINAL (which leaves
  out the tombstones). Monthly partitions on `started_at`: a tombstone copies the row it deletes,
  so it lands in the same partition.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ddl import on_cluster, replacing_engine

NUMBER = 3
NAME = "sessions"

_LOW = "LowCardinality(String)"
_TIME = "DateTime64(3, 'UTC')"
SESSION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("session_id", "String"),
    ("identity", "String"),
    ("anonymous_id", "String"),
    ("user_id", "String"),
    ("started_at", _TIME),
    ("ended_at", _TIME),
    # The first event of the visit (a run of events without a gap over the timeout) the session is
    # part of: its started_at unless a visit over the maximum length was cut. Where a cycle
    # recomputes from.
    ("visit_started_at", _TIME),
    ("duration_seconds", "Float64"),
    ("events", "UInt32"),
    ("pageviews", "UInt32"),
    ("entry_url", "String"),
    ("entry_path", "String"),
    ("entry_referrer", "String"),
    ("referrer_host", _LOW),
    ("utm_source", _LOW),
    ("utm_medium", _LOW),
    ("utm_campaign", "String"),
    ("utm_term", "String"),
    ("utm_content", "String"),
    ("exit_path", "String"),
    ("channel", _LOW),
    ("is_bounce", "Bool"),
    ("is_new_visitor", "Bool"),
    ("browser", _LOW),
    ("os", _LOW),
    ("device_type", _LOW),
    ("country", _LOW),
    ("region", _LOW),
    ("city", "String"),
    ("is_bot", "Bool"),
)
# Written by the sessionizer beside the columns above.
VERSION_COLUMNS: tuple[tuple[str, str], ...] = (("version", "UInt64"), ("is_deleted", "UInt8"))


def statements(database: str, cluster: str | None) -> Sequence[str]:
    cluster_clause = on_cluster(cluster)
    columns = ",\n            ".join(f"{name} {kind}" for name, kind in (*SESSION_COLUMNS, *VERSION_COLUMNS))
    return [
        f"ALTER TABLE `{database}`.events{cluster_clause} "
        f"ADD COLUMN IF NOT EXISTS inserted_at {_TIME} DEFAULT now64(3)",
        f"ALTER TABLE `{database}`.events{cluster_clause} MATERIALIZE COLUMN inserted_at "
        "SETTINGS mutations_sync = 2",
        f"""
        CREATE TABLE IF NOT EXISTS `{database}`.sessions{cluster_clause}
        (
            {columns},
            INDEX ix_started_at started_at TYPE minmax GRANULARITY 4
        )
        ENGINE = {replacing_engine(cluster, "version", "is_deleted")}
        PARTITION BY toYYYYMM(started_at)
        ORDER BY (identity, session_id)
        """,
    ]
