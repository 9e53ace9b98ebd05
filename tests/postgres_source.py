"""The host application's database of the import tests: `organisations` and `users` seeded by
generate_series, the tap-postgres run that reads them, and a per-column checksum that PostgreSQL
and ClickHouse compute alike, so an imported table can be compared with its source column by
column.

The checksum of a column is (number of non-null values, sum of a 60-bit hash of each value's
canonical text): order-independent, so neither side has to sort. The canonical text is:

| PostgreSQL type | canonical text | ClickHouse rendering that must match |
|---|---|---|
| integer, bigint | decimal digits | toString of the integer |
| numeric | trim_scale(value)::text (no trailing zeros) | toString of the Decimal or Float64 |
| text | the text | the String |
| boolean | `true` / `false` | if(value, 'true', 'false') of the Bool or UInt8 |
| timestamptz | UTC `YYYY-MM-DD HH:MM:SS.ffffff` | formatDateTime(value, '%Y-%m-%d %H:%i:%S.%f', 'UTC') |
| date | `YYYY-MM-DD` | toString of the Date or Date32 |
| jsonb | jsonb::text without spaces | the stored JSON text without spaces |

The seeded JSON keeps that last rule exact: its object keys have equal lengths (so jsonb's key
order, by length then bytes, is also the alphabetical one and the order in which the tap emits
them) and its strings hold no spaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postgres import PostgresDatabase

TABLES = ("organisations", "users")
TAP_STREAMS = {"public-organisations": "organisations", "public-users": "users"}
REPLICATION_KEY = "updated_at"
TAP = str(Path(sys.executable).parent / "tap-postgres")
BIG_ORGANISATION_PEOPLE = 600  # users of each of the first `big` organisations
BOUNDARY_ORGANISATION_PEOPLE = 500  # users of the next one: not "more than 500"

SCHEMA = """
CREATE TABLE organisations (
    id integer PRIMARY KEY,
    name text NOT NULL,
    plan text,
    seats integer NOT NULL,
    mrr numeric(12, 2),
    is_active boolean NOT NULL,
    founded_on date,
    settings jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE users (
    id bigint PRIMARY KEY,
    organisation_id integer NOT NULL REFERENCES organisations (id),
    email text NOT NULL,
    full_name text,
    is_admin boolean NOT NULL,
    login_count bigint NOT NULL,
    lifetime_value numeric(14, 4),
    preferences jsonb,
    signup_date date NOT NULL,
    signed_up_at timestamptz NOT NULL,
    last_seen_at timestamptz,
    updated_at timestamptz NOT NULL
);
CREATE INDEX ON organisations (updated_at);
CREATE INDEX ON users (updated_at);
"""

# `base` is a moment of the seed: updated_at values lie before it (later changes come after), and
# signups are whole days plus twelve hours before it, so "signed up in the last 90 days" has a
# twelve-hour margin on either side of its boundary whenever the test asks.
SEED = """
WITH base AS (SELECT date_trunc('second', now()) AS at)
INSERT INTO organisations
SELECT
    id,
    CASE id % 4 WHEN 0 THEN 'Org ' || id WHEN 1 THEN 'Société n°' || id WHEN 2 THEN E'Two\\nlines ' || id
        ELSE 'O''Reilly & ' || id END,
    CASE WHEN id % 9 = 0 THEN NULL ELSE (ARRAY['free', 'team', 'enterprise'])[1 + id % 3] END,
    1 + (id * 7) % 5000,
    CASE WHEN id % 11 = 0 THEN NULL ELSE ((id * 131) % 5000000) / 100.0 END,
    id % 13 <> 0,
    CASE WHEN id % 8 = 0 THEN NULL ELSE DATE '1990-01-01' + (id * 17) % 12000 END,
    CASE WHEN id % 6 = 0 THEN NULL
        ELSE jsonb_build_object('tier', 1 + id % 4, 'sso_', id % 2 = 0,
                                'tags', jsonb_build_array('t' || id % 5, id % 3),
                                'caps', jsonb_build_object('apis', id % 10, 'seat', NULL)) END,
    base.at - interval '400 days' + id * interval '1 minute' + (id % 997) * interval '1 microsecond',
    base.at - interval '30 days' + id * interval '1 second' + (id % 991) * interval '1 microsecond'
FROM generate_series(1, {organisations}) AS id, base;

WITH base AS (SELECT date_trunc('second', now()) AS at),
people AS (
    SELECT
        id,
        CASE WHEN id <= {big_people} THEN 1 + (id - 1) % {big}
             WHEN id <= {big_people} + 500 THEN {big} + 1
             ELSE {big} + 2 + (id - {big_people} - 501) % ({organisations} - {big} - 1)
        END AS organisation_id,
        (id * 7919) % 730 AS days_ago
    FROM generate_series(1, {users}) AS id
)
INSERT INTO users
SELECT
    id,
    organisation_id,
    'user' || id || '@example.org',
    CASE id % 10 WHEN 0 THEN NULL WHEN 1 THEN 'Zoë O''Brien ' || id WHEN 2 THEN E'multi\\nline ' || id
        ELSE 'User ' || id END,
    id % 17 = 0,
    (id::bigint * 104729) % 3000000000,
    CASE WHEN id % 5 = 0 THEN NULL ELSE ((id * 37) % 10000000) / 1000.0 END,
    CASE WHEN id % 7 = 0 THEN NULL
        ELSE jsonb_build_object('lang', (ARRAY['en', 'fr', 'de'])[1 + id % 3], 'mail', id % 2 = 0,
                                'tabs', jsonb_build_array(id % 5, id % 7),
                                'wide', jsonb_build_object('cols', id % 3)) END,
    ((base.at - days_ago * interval '1 day' - interval '12 hours') AT TIME ZONE 'UTC')::date,
    base.at - days_ago * interval '1 day' - interval '12 hours' + (id % 999) * interval '1 microsecond',
    CASE WHEN id % 4 = 0 THEN NULL ELSE base.at - (id % 5000) * interval '1 minute' END,
    base.at - interval '20 days' + id * interval '10 milliseconds' + (id % 997) * interval '1 microsecond'
FROM people, base;
ANALYZE organisations;
ANALYZE users;
"""


@dataclass(frozen=True, slots=True)
class SourceSize:
    """Rows of the seeded tables. Organisations 1 to `big` have 600 users each, the next one
    exactly 500, and the remaining users are spread over the other organisations."""

    organisations: int
    users: int
    big: int

    def __post_init__(self) -> None:
        assert self.organisations > self.big + 1
        assert self.users > self.big * BIG_ORGANISATION_PEOPLE + BOUNDARY_ORGANISATION_PEOPLE

    @property
    def big_organisations(self) -> range:
        return range(1, self.big + 1)

    @property
    def boundary_organisation(self) -> int:
        return self.big + 1


def seed(database: PostgresDatabase, size: SourceSize) -> None:
    """Creates and fills both tables."""
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(SCHEMA)
            cursor.execute(
                SEED.format(
                    organisations=int(size.organisations),
                    users=int(size.users),
                    big=int(size.big),
                    big_people=int(size.big) * BIG_ORGANISATION_PEOPLE,
                )
            )
    finally:
        connection.close()


def _pg_canonical(column: str, data_type: str) -> str:
    quoted = '"' + column.replace('"', '""') + '"'
    if data_type in ("integer", "bigint", "smallint", "text"):
        return f"{quoted}::text"
    if data_type == "numeric":
        return f"trim_scale({quoted})::text"
    if data_type == "boolean":
        return f"CASE WHEN {quoted} THEN 'true' ELSE 'false' END"
    if data_type == "timestamp with time zone":
        return f"to_char({quoted} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    if data_type == "date":
        return f"to_char({quoted}, 'YYYY-MM-DD')"
    if data_type == "jsonb":
        return f"replace({quoted}::text, ' ', '')"
    raise AssertionError(f"no canonical text for PostgreSQL type {data_type} ({column})")


def source_columns(database: PostgresDatabase, table: str) -> dict[str, str]:
    """Column name -> PostgreSQL type of `table`, in the table's order."""
    rows = database.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return {str(name): str(data_type) for name, data_type in rows}


@dataclass(frozen=True, slots=True)
class TableChecksum:
    rows: int
    columns: dict[str, tuple[int, int]]  # column -> (non-null values, sum of 60-bit hashes)


def source_checksum(database: PostgresDatabase, table: str) -> TableChecksum:
    columns = source_columns(database, table)
    parts = []
    for column, data_type in columns.items():
        canonical = _pg_canonical(column, data_type)
        parts.append(f"count({canonical})")
        parts.append(f"coalesce(sum(('x' || substr(md5({canonical}), 1, 15))::bit(60)::bigint), 0)")
    (row,) = database.execute(f"SELECT count(*), {', '.join(parts)} FROM {table}")
    values = [int(value) for value in row]
    return TableChecksum(
        rows=values[0],
        columns={column: (values[1 + 2 * i], values[2 + 2 * i]) for i, column in enumerate(columns)},
    )


def _ch_canonical(column: str, pg_type: str, ch_type: str) -> str:
    quoted = "`" + column.replace("`", "\\`") + "`"
    inner = (
        ch_type.removeprefix("Nullable(").removesuffix(")") if ch_type.startswith("Nullable(") else ch_type
    )
    if pg_type == "boolean":
        return f"if({quoted}, 'true', 'false')"
    if pg_type == "timestamp with time zone":
        assert inner.startswith("DateTime64(6"), f"{column}: {ch_type} does not keep microseconds"
        return f"formatDateTime({quoted}, '%Y-%m-%d %H:%i:%S.%f', 'UTC')"
    if pg_type == "jsonb":
        return f"replaceAll(toString({quoted}), ' ', '')"
    return f"toString({quoted})"


def clickhouse_checksum_sql(table: str, source: Mapping[str, str], target: Mapping[str, str]) -> str:
    """The query of the same checksum over the imported `table` (read FINAL, so a replaced row
    counts once), given the source's column types and the imported table's ClickHouse types."""
    missing = sorted(set(source) - set(target))
    assert not missing, f"{table} lacks the source's columns {missing}"
    parts = []
    for column, pg_type in source.items():
        canonical = _ch_canonical(column, pg_type, target[column])
        hashed = f"bitShiftRight(reinterpretAsUInt64(reverse(substring(MD5({canonical}), 1, 8))), 4)"
        parts.append(f"count({canonical if 'Nullable' in target[column] else '1'})")
        parts.append(f"toString(sum(toUInt128({hashed})))")
    return f"SELECT count(), {', '.join(parts)} FROM {table} FINAL"


def checksum_from_row(source: Sequence[str], row: Sequence[Any]) -> TableChecksum:
    values = [int(value) for value in row]
    return TableChecksum(
        rows=values[0],
        columns={column: (values[1 + 2 * i], values[2 + 2 * i]) for i, column in enumerate(source)},
    )


def tap_config(database: PostgresDatabase) -> dict[str, Any]:
    """The tap's settings: the source database, only its public schema, and each stream renamed
    from tap-postgres' `<schema>-<table>` to the table's own name (Singer SDK stream maps)."""
    return {
        **database.tap_config(),
        "filter_schemas": ["public"],
        "stream_maps": {stream: {"__alias__": table} for stream, table in TAP_STREAMS.items()},
    }


def incremental_catalog(discovered: Mapping[str, Any]) -> dict[str, Any]:
    """The discovered catalog with both tables selected for INCREMENTAL replication on updated_at:
    the stream-level metadata (breadcrumb []) carries `selected`, `replication-method` and
    `replication-key` as Meltano's `select` and `metadata` settings write them, and the names the
    Singer SDK reads (`forced-replication-method`, the entry's `replication_key`)."""
    streams = []
    for entry in discovered["streams"]:
        if entry["tap_stream_id"] not in TAP_STREAMS:
            continue
        entry = dict(entry)
        entry["replication_method"] = "INCREMENTAL"
        entry["replication_key"] = REPLICATION_KEY
        metadata = []
        for item in entry["metadata"]:
            item = {**item, "metadata": dict(item["metadata"])}
            if item["breadcrumb"] == []:
                item["metadata"].update(
                    {
                        "selected": True,
                        "replication-method": "INCREMENTAL",
                        "forced-replication-method": "INCREMENTAL",
                        "replication-key": REPLICATION_KEY,
                    }
                )
            else:
                item["metadata"]["selected"] = True
            metadata.append(item)
        entry["metadata"] = metadata
        streams.append(entry)
    assert sorted(entry["tap_stream_id"] for entry in streams) == sorted(TAP_STREAMS)
    return {"streams": streams}


@dataclass(frozen=True, slots=True)
class TapFiles:
    config: Path
    catalog: Path


def prepare_tap(database: PostgresDatabase, directory: Path) -> TapFiles:
    """Writes the tap's config, runs its discovery and writes the incremental catalog."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tap-config.json"
    config.write_text(json.dumps(tap_config(database)))
    discovered = subprocess.run(
        [TAP, "--config", str(config), "--discover"], capture_output=True, text=True, timeout=120
    )
    assert discovered.returncode == 0, discovered.stderr[-5000:]
    catalog = directory / "catalog.json"
    catalog.write_text(json.dumps(incremental_catalog(json.loads(discovered.stdout))))
    return TapFiles(config, catalog)


def tap_command(files: TapFiles, state: Path | None = None) -> list[str]:
    command = [TAP, "--config", str(files.config), "--catalog", str(files.catalog)]
    return [*command, "--state", str(state)] if state is not None else command


def run_tap_to_file(files: TapFiles, out: Path, state: Path | None = None) -> float:
    """Runs the tap alone, its Singer messages into `out`; the seconds it took."""
    started = time.monotonic()
    with out.open("wb") as stdout:
        ran = subprocess.run(tap_command(files, state), stdout=stdout, stderr=subprocess.PIPE, timeout=600)
    assert ran.returncode == 0, ran.stderr[-5000:].decode(errors="replace")
    return time.monotonic() - started


def read_messages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
