"""Migration 8: inserts into the tables written in small steps land as compact parts, however
many bytes a consumer's batch or a cycle's copy holds below the threshold (ClickHouse's default
would write them wide above 10 MiB)."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from headwater.core.migrations import apply_migrations, m0008_compact_parts

# ~24 MB uncompressed: above ClickHouse's default threshold, far below ours.
_ROWS, _PAGE_URL_BYTES = 20_000, 1_200
_PARTS = "FROM system.parts WHERE database = {database:String} AND table = {table:String} AND active"


def _formats_of_parts(clickhouse: Client, database: str, table: str) -> set[str]:
    rows = clickhouse.query(
        f"SELECT DISTINCT part_type {_PARTS}", parameters={"database": database, "table": table}
    )
    return {row[0] for row in rows.result_rows}


def _uncompressed_bytes(clickhouse: Client, database: str, table: str) -> int:
    sql = f"SELECT sum(data_uncompressed_bytes) {_PARTS}"
    return int(clickhouse.query(sql, parameters={"database": database, "table": table}).result_rows[0][0])


def _insert_large_batch(clickhouse: Client, database: str, table: str) -> None:
    clickhouse.command(
        f"""
        INSERT INTO `{database}`.{table} (message_id, type, timestamp, received_at, request_id, page_url)
        SELECT toString(number), 'track', now64(3), now64(3), 'r', repeat('x', {{size:UInt32}})
        FROM numbers({{rows:UInt32}})
        """,
        parameters={"size": _PAGE_URL_BYTES, "rows": _ROWS},
    )


def test_a_large_batch_lands_as_one_compact_part(clickhouse: Client, project_id: str) -> None:
    database = f"hw_{project_id}"
    for table in ("events", "sessionizer_recent"):
        _insert_large_batch(clickhouse, database, table)
        assert _uncompressed_bytes(clickhouse, database, table) > 20 * 1024 * 1024  # wide by default
        assert _formats_of_parts(clickhouse, database, table) == {"Compact"}


def test_migration_8_changes_the_tables_of_a_database_migrated_before_it(
    clickhouse: Client, project_id: str
) -> None:
    database = f"hw_{project_id}"
    for table in m0008_compact_parts.TABLES:
        clickhouse.command(f"ALTER TABLE `{database}`.{table} RESET SETTING min_bytes_for_wide_part")
    clickhouse.command(
        f"ALTER TABLE `{database}`.schema_migrations DELETE WHERE number = 8 SETTINGS mutations_sync = 2"
    )
    _insert_large_batch(clickhouse, database, "events")
    assert _formats_of_parts(clickhouse, database, "events") == {"Wide"}

    assert apply_migrations(clickhouse, database) == [8]
    for statement in m0008_compact_parts.statements(database, None):  # idempotent
        clickhouse.command(statement)
    _insert_large_batch(clickhouse, database, "events")
    assert _formats_of_parts(clickhouse, database, "events") == {"Wide", "Compact"}  # the old part stays
    sql = """
        SELECT count() FROM system.tables
        WHERE database = {database:String} AND create_table_query LIKE {setting:String}
    """
    setting = f"%min_bytes_for_wide_part = {m0008_compact_parts.WIDE_PART_BYTES}%"
    changed = clickhouse.query(sql, parameters={"database": database, "setting": setting}).result_rows[0][0]
    assert changed == len(m0008_compact_parts.TABLES)
