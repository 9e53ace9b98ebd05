"""The sessions query's speed: N generated events (default 1M) sessionized in the embedded engine.

Prints events/s of the query computed to the end inside ClickHouse (every column hashed, as an
`INSERT … SELECT` into the sessions table would consume it), not of shipping the rows to Python.
Usage: python bench/sessions_query.py [N] [visitors]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime

from headwater.analytics.sessions import query
from headwater.control.clickhouse import connect
from headwater.core.migrations import apply_migrations
from headwater.core.projects.settings import Sessions

DATABASE = "hw_bench"

# `visitors` visitors, each an event every ~20 s on average and a one-hour gap now and then; every
# 50th message stored twice (a retry: another receipt and request id, the timestamp 2 s later).
_EVENTS = f"""
INSERT INTO {DATABASE}.events
    (message_id, type, anonymous_id, user_id, timestamp, received_at, request_id, context,
     page_url, page_host, page_path, referrer_host, utm_source, utm_medium, browser, os, country)
SELECT
    toString(message) AS message_id,
    ['page', 'track', 'identify'][message % 3 + 1],
    concat('anon-', toString(message % {{visitors:UInt64}})),
    if(message % 7 = 0, concat('user-', toString(message % {{visitors:UInt64}})), ''),
    toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + toIntervalMillisecond(
        intDiv(message, {{visitors:UInt64}}) * 20000 + cityHash64(message) % 20000
        + if(cityHash64(message, 1) % 40 = 0, 3600000, 0) + copy * 2000),
    toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(number),
    toString(number % 1000),
    concat('{{"sessionId":"s', toString(intDiv(message, {{visitors:UInt64}} * 500)), '"}}'),
    if(message % 3 = 0, concat('https://example.com/p', toString(message % 97)), ''),
    'example.com',
    if(message % 3 = 0, concat('/p', toString(message % 97)), ''),
    ['', 'google.com', 't.co'][message % 3 + 1],
    ['', 'newsletter'][message % 2 + 1],
    ['', 'email'][message % 2 + 1],
    'Chrome', 'Linux', 'DE'
FROM (
    -- toUInt64: as Variant(Int64, UInt64), a copy's hashes would differ from the original's
    SELECT number, toUInt64(if(number % 50 = 49, number - 1, number)) AS message, number % 50 = 49 AS copy
    FROM numbers({{count:UInt64}})
)
"""


def main(count: int, visitors: int) -> None:
    client = connect(f"chdb://{tempfile.mkdtemp()}")
    apply_migrations(client, DATABASE)
    client.command(
        _EVENTS, parameters={"count": count, "visitors": visitors}, settings={"optimize_on_insert": 0}
    )
    built = query.sessions_query(
        DATABASE, Sessions(), datetime(2025, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    )
    consumed = f"SELECT count(), sum(cityHash64(*)) FROM ({built.sql})"
    for _ in range(3):
        started = time.perf_counter()
        sessions = client.query(consumed, parameters=built.parameters).result_rows[0][0]
        elapsed = time.perf_counter() - started
        print(
            f"{count:,} events -> {sessions:,} sessions in {elapsed:.2f} s: {count / elapsed:,.0f} events/s"
        )


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 20_000,
    )
