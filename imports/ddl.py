"""The DDL of an imported table (pure: statements, no I/O). Identifiers are names imports/names.py
made (letters, digits, `_`), quoted; no value is ever spliced in.

A stream with key properties: ReplacingMergeTree ordered by them, versioned by the HW_IMPORTS
sequence, so a row sent again replaces the earlier one (at merge time; exact under FINAL). A keyless
stream appends (MergeTree ordered by the sequence): every row sent is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from headwater.core.migrations.ddl import REPLICA_PATH, deduplication_window, on_cluster, replacing_engine

from .names import SEQUENCE_COLUMN, TABLE_VERSION_COLUMN, quoted
from .types import Column


def _append_engine(cluster: str | None) -> str:
    return f"ReplicatedMergeTree({REPLICA_PATH})" if cluster else "MergeTree"


def qualified(database: str, table: str) -> str:
    return f"{quoted(database)}.{quoted(table)}"


def create_table(
    database: str, table: str, columns: Sequence[Column], key: Sequence[str], cluster: str | None
) -> str:
    by_prop = {c.prop: c.name for c in columns}
    order = [quoted(by_prop[k]) for k in key] or [quoted(SEQUENCE_COLUMN)]
    engine = replacing_engine(cluster, quoted(SEQUENCE_COLUMN)) if key else _append_engine(cluster)
    defined = [
        f"{quoted(SEQUENCE_COLUMN)} UInt64",
        f"{quoted(TABLE_VERSION_COLUMN)} UInt64",
        *(f"{quoted(c.name)} {c.clickhouse_type}" for c in columns),
    ]
    body = ",\n    ".join(defined)
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(database, table)}{on_cluster(cluster)}\n(\n    {body}\n)\n"
        f"ENGINE = {engine}\n"
        f"ORDER BY ({', '.join(order)})\n"
        f"SETTINGS {deduplication_window(cluster)}"
    )


def add_column(database: str, table: str, column: Column, cluster: str | None) -> str:
    return (
        f"ALTER TABLE {qualified(database, table)}{on_cluster(cluster)} "
        f"ADD COLUMN IF NOT EXISTS {quoted(column.name)} {column.clickhouse_type}"
    )


def delete_older_versions(database: str, table: str, cluster: str | None) -> str:
    """Rows of table versions before `{version:UInt64}` (ACTIVATE_VERSION); rows imported
    without a version (0) go too, as a full-table sync replaces the whole table."""
    return (
        f"DELETE FROM {qualified(database, table)}{on_cluster(cluster)} "
        f"WHERE {quoted(TABLE_VERSION_COLUMN)} < {{version:UInt64}}"
    )
