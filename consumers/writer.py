"""The ClickHouse write: one INSERT per project batch, de-duplicated by a token on redelivery."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client

from headwater.control.project import database_name

from .rows import COLUMNS, Row


def deduplication_token(project_id: str, stream_sequences: Iterable[int]) -> str:
    """Same messages → same token, so ClickHouse drops a batch that is re-inserted after a crash
    between the insert and the ack."""
    digest = hashlib.sha256(",".join(map(str, sorted(stream_sequences))).encode()).hexdigest()
    return f"{project_id}:{digest}"


class ClickHouseWriter:
    def __init__(self, client: Client) -> None:
        self._client = client
        # Column types per table, read once: otherwise every INSERT first asks ClickHouse to
        # describe the table (~8% of the insert thread's time, bench/consumer.py with py-spy).
        self._column_types: dict[str, Sequence[ClickHouseType]] = {}

    def insert(self, project_id: str, rows: Sequence[Row], token: str) -> None:
        """Returns only once ClickHouse accepted the rows; raises otherwise."""
        table = f"`{database_name(project_id)}`.events"
        settings = {"insert_deduplication_token": token}
        types = self._column_types.get(table)
        try:
            if types is None:
                context = self._client.create_insert_context(table, COLUMNS, settings=settings)
                self._column_types[table] = types = context.column_types
            self._client.insert(table, rows, column_names=COLUMNS, column_types=types, settings=settings)
        except Exception:
            self._column_types.pop(table, None)  # a migrated or re-created table: read them again
            raise
