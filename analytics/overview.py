"""The overview of a project over a time range (the console's overview page; docs/control-api.md,
"Overview"): what its events and sessions add up to, per hour or day, and the most frequent pages,
referrers, channels, countries, browsers and devices.

Parameters only: the range, the limit and the bot rule are bound or fixed text, never the caller's.
`events` is read with FINAL (one row per message id, docs/schema.md) by `timestamp`; `sessions`
with FINAL by `started_at`. Bots are left out unless asked for, as funnels and paths do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Interval = Literal["hour", "day"]
MAX_RANGE_DAYS = 400
MAX_HOURLY_RANGE_DAYS = 31
# A visitor: the user id, else the anonymous id (the `people` unit of funnels).
VISITOR = "if(user_id != '', user_id, anonymous_id)"
# The top lists taken from sessions, by the column they count.
SESSION_TOPS = {
    "referrers": "referrer_host",
    "channels": "channel",
    "countries": "country",
    "browsers": "browser",
    "devices": "device_type",
}
TOP_LISTS = ("pages", *SESSION_TOPS)
_BUCKET = {"hour": "toStartOfHour", "day": "toStartOfDay"}
_STEP = {"hour": "INTERVAL 1 HOUR", "day": "INTERVAL 1 DAY"}
_START = "{start:DateTime64(3, 'UTC')}"
_END = "{end:DateTime64(3, 'UTC')}"
# The buckets are DateTime (seconds): fill up to the second after the range's last millisecond.
_FILL_TO = f"toDateTime({_END} - toIntervalMillisecond(1), 'UTC') + 1"


@dataclass(frozen=True, slots=True)
class Built:
    sql: str
    parameters: dict[str, Any]


def _events(database: str, include_bots: bool, where: str = "") -> str:
    bots = "" if include_bots else " AND NOT is_bot"
    return f"`{database}`.events FINAL WHERE timestamp >= {_START} AND timestamp < {_END}{bots}{where}"


def _sessions(database: str, include_bots: bool) -> str:
    bots = "" if include_bots else " AND NOT is_bot"
    return f"`{database}`.sessions FINAL WHERE started_at >= {_START} AND started_at < {_END}{bots}"


def _range(start: datetime, end: datetime) -> dict[str, Any]:
    return {"start": start, "end": end}


def totals_query(database: str, start: datetime, end: datetime, include_bots: bool) -> Built:
    """One row: events, pageviews, visitors; sessions, bounces, mean and median duration."""
    sql = f"""
        SELECT * FROM (
            SELECT count() AS events, countIf(type = 'page') AS pageviews,
                   uniqExact({VISITOR}) AS visitors
            FROM {_events(database, include_bots)}
        ) AS e CROSS JOIN (
            SELECT count() AS sessions, countIf(is_bounce) AS bounces,
                   avg(duration_seconds) AS avg_session_seconds,
                   quantileExactInclusive(0.5)(duration_seconds) AS median_session_seconds
            FROM {_sessions(database, include_bots)}
        ) AS s
    """
    return Built(sql, _range(start, end))


def series_query(
    database: str, start: datetime, end: datetime, interval: Interval, include_bots: bool
) -> Built:
    """A row per `interval` bucket (UTC) from the one holding `start` to the one holding the last
    moment before `end`, zero-filled by ClickHouse (WITH FILL)."""
    bucket, step = _BUCKET[interval], _STEP[interval]
    sql = f"""
        SELECT t, events, pageviews, visitors, sessions FROM (
            SELECT {bucket}(timestamp) AS t, count() AS events, countIf(type = 'page') AS pageviews,
                   uniqExact({VISITOR}) AS visitors
            FROM {_events(database, include_bots)}
            GROUP BY t
        ) AS e
        FULL OUTER JOIN (
            SELECT {bucket}(started_at) AS t, count() AS sessions
            FROM {_sessions(database, include_bots)}
            GROUP BY t
        ) AS s USING t
        ORDER BY t WITH FILL FROM {bucket}(toDateTime({_START}, 'UTC')) TO {_FILL_TO} STEP {step}
    """
    return Built(sql, _range(start, end))


def top_query(database: str, start: datetime, end: datetime, limit: int, include_bots: bool) -> Built:
    """Rows (list, value, count): the `limit` most frequent values of each top list, empty values
    left out. Pages: the path of page views; the others: sessions by their column."""
    pairs = ", ".join(f"('{name}', toString({column}))" for name, column in SESSION_TOPS.items())
    sql = f"""
        SELECT * FROM (
            SELECT 'pages' AS list, page_path AS value, count() AS n
            FROM {_events(database, include_bots, " AND type = 'page' AND page_path != ''")}
            GROUP BY value ORDER BY n DESC, value LIMIT {{limit:UInt32}}
        )
        UNION ALL
        SELECT * FROM (
            SELECT pair.1 AS list, pair.2 AS value, count() AS n
            FROM (SELECT arrayJoin([{pairs}]) AS pair FROM {_sessions(database, include_bots)})
            WHERE value != ''
            GROUP BY list, value ORDER BY list, n DESC, value LIMIT {{limit:UInt32}} BY list
        )
    """
    return Built(sql, {**_range(start, end), "limit": limit})
