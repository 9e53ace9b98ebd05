"""What ClickHouse's catalogue (`system.tables`) says about a table: whether it exists, and its
engine with its arguments and keys."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client


def table_engine(client: Client, database: str, table: str) -> str | None:
    """`engine_full` of `database`.`table` (e.g. `ReplacingMergeTree(copy_rank) PARTITION BY …`);
    None when there is no such table."""
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {table:String}",
        parameters={"db": database, "table": table},
    ).result_rows
    return str(rows[0][0]) if rows else None


def table_exists(client: Client, database: str, table: str) -> bool:
    return table_engine(client, database, table) is not None
