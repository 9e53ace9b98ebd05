"""Stored events for the funnel and paths query tests: rows of `events` written as given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from clickhouse_connect.driver.client import Client

from headwater.analytics.funnels.reference import FunnelEvent

_COLUMNS = list(FunnelEvent.__dataclass_fields__)


def store(client: Client, database: str, events: Sequence[FunnelEvent]) -> None:
    """The events table holding exactly `events` (copies of a message as separate rows)."""
    client.command(f"TRUNCATE TABLE `{database}`.events")
    rows = [[asdict(event)[column] for column in _COLUMNS] for event in events]
    if rows:
        # Copies as separate requests store them: one insert block would collapse them.
        client.insert(f"`{database}`.events", rows, column_names=_COLUMNS, settings={"optimize_on_insert": 0})
