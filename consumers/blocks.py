"""Rows → a ClickHouse Native block, with clickhouse-connect's own encoder, in whichever process
builds the rows (consumers/processing.py). Native blocks can be concatenated: the consumer inserts
the blocks of one project's batch as one body (`ClickHouseWriter.insert_native`), so the process
that owns the ClickHouse client only hands bytes over."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform

from .rows import COLUMN_TYPES, COLUMNS, Row


@cache
def _column_types() -> tuple[ClickHouseType, ...]:
    return tuple(get_from_name(name) for name in COLUMN_TYPES)


def encode_rows(rows: Sequence[Row]) -> bytes:
    """The rows as one Native block. Raises what clickhouse-connect raises for a value its column
    cannot hold."""
    if not rows:
        return b""
    # Handed over column by column (zip transposes in C) and as one block: ~15% less time than
    # letting clickhouse-connect pivot the rows and size blocks itself.
    columns = list(zip(*rows, strict=True))
    context = InsertContext(
        "events", COLUMNS, _column_types(), columns, column_oriented=True, block_size=len(rows)
    )
    body = bytearray()
    for chunk in NativeTransform.build_insert(context):
        if context.insert_exception is not None:
            raise context.insert_exception
        body += chunk
    if context.insert_exception is not None:
        raise context.insert_exception
    # The block opens with the INSERT statement an HTTP request would carry.
    statement_end = body.index(b"\n") + 1 if body.startswith(b"INSERT INTO ") else 0
    return bytes(body[statement_end:])
