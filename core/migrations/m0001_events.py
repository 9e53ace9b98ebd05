"""The events table: one row per Segment event, de-duplicated on `message_id`.

Why this shape (docs/schema.md has the long form):
- ReplacingMergeTree with `message_id` last in the sorting key: copies of one event collapse at
  merge time (and under FINAL) even when they arrived in different requests, into the copy of
  highest `copy_rank` (the one received first: copy_rank.py). Databases created before migration 7
  had no version (a merge kept the copy inserted last); migration 7 recreates their table, and
  since then this one creates it versioned, so a new database's migration 7 has nothing to move.
  The sorting key holds only what every copy of an event shares (type, event name, message id);
  timestamps are not in it because a retried request gets a new `received_at` and a new
  skew-corrected `timestamp`.
- Monthly partitions on `received_at`: the server's clock, so a client with a broken clock cannot
  scatter rows over hundreds of partitions (and fail the insert), and copies of one event land in
  the same partition unless a retry straddles a month boundary.
- A de-duplication window: a batch re-inserted with the same `insert_deduplication_token` (a
  consumer redelivery) is dropped by ClickHouse at insert time.
- On a cluster (`--on-cluster`) the replicated engine, so every replica holds every row.
"""

from __future__ import annotations

from collections.abc import Sequence

from .copy_rank import COLUMN
from .ddl import deduplication_window, on_cluster, replacing_engine

NUMBER = 1
NAME = "events"


def statements(database: str, cluster: str | None) -> Sequence[str]:
    return [
        f"""
        CREATE TABLE IF NOT EXISTS `{database}`.events{on_cluster(cluster)}
        (
            message_id   String,
            type         LowCardinality(String),
            event        LowCardinality(String),
            anonymous_id String,
            user_id      String,
            group_id     String,
            previous_id  String,
            timestamp    DateTime64(3, 'UTC'),
            sent_at      Nullable(DateTime64(3, 'UTC')),
            received_at  DateTime64(3, 'UTC'),
            request_id   String,
            ip           String,
            user_agent   String,
            origin       String,
            properties   String CODEC(ZSTD(3)),
            traits       String CODEC(ZSTD(3)),
            context      String CODEC(ZSTD(3)),
            {COLUMN},
            INDEX ix_timestamp timestamp TYPE minmax GRANULARITY 4,
            INDEX ix_user_id user_id TYPE bloom_filter GRANULARITY 4
        )
        ENGINE = {replacing_engine(cluster, "copy_rank")}
        PARTITION BY toYYYYMM(received_at)
        ORDER BY (type, event, message_id)
        SETTINGS {deduplication_window(cluster)}
        """
    ]
