"""The ClickHouse write: one INSERT per project batch, de-duplicated by a token on redelivery."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from clickhouse_connect.driver.client import Client

from headwater.core.projects.project import database_name

from .blocks import encode_rows
from .rows import COLUMNS, Row


def deduplication_token(project_id: str, stream_sequences: Iterable[int]) -> str:
    """Same messages → same token, so ClickHouse drops a batch that is re-inserted after a crash
    between the insert and the ack."""
    digest = hashlib.sha256(",".join(map(str, sorted(stream_sequences))).encode()).hexdigest()
    return f"{project_id}:{digest}"


class ClickHouseWriter:
    def __init__(self, client: Client) -> None:
        self._client = client

    def insert_native(self, project_id: str, blocks: bytes, token: str) -> None:
        """Insert Native blocks of rows in COLUMNS order (consumers/blocks.py). Returns only once
        ClickHouse accepted them; raises otherwise."""
        table = f"`{database_name(project_id)}`.events"
        settings = {"insert_deduplication_token": token}
        self._client.raw_insert(table, COLUMNS, blocks, settings=settings, fmt="Native")

    def insert(self, project_id: str, rows: Sequence[Row], token: str) -> None:
        self.insert_native(project_id, encode_rows(rows), token)
