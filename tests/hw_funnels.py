"""Stored rows for the funnel, paths and patterns query tests: `events` and `sessions` written as
given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from clickhouse_connect.driver.client import Client

from headwater.analytics.funnels.reference import FunnelEvent, SessionSpan

_COLUMNS = list(FunnelEvent.__dataclass_fields__)


def store(client: Client, database: str, events: Sequence[FunnelEvent]) -> None:
    """The events table holding exactly `events` (copies of a message as separate rows)."""
    client.command(f"TRUNCATE TABLE `{database}`.events")
    rows = [[asdict(event)[column] for column in _COLUMNS] for event in events]
    if rows:
        # Copies as separate requests store them: one insert block would collapse them.
        client.insert(f"`{database}`.events", rows, column_names=_COLUMNS, settings={"optimize_on_insert": 0})


def store_sessions(client: Client, database: str, spans: Sequence[SessionSpan]) -> None:
    """The sessions table holding exactly `spans` (one version each, none deleted)."""
    client.command(f"TRUNCATE TABLE `{database}`.sessions")
    columns = ["identity", "session_id", "started_at", "ended_at", "version", "is_deleted"]
    rows = [[s.identity, s.session_id, s.started_at, s.ended_at, 1, 0] for s in spans]
    if rows:
        client.insert(f"`{database}`.sessions", rows, column_names=columns)
