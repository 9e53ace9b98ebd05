"""`GET /v1/projects/{id}/live`: the last events stored for a project, newest first, and why the
edges refused its events lately (their refusal logs, from their node reports)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.core.projects.project import database_name, iso
from headwater.core.service.nodereports import NodeReport

from .console_schemas import LiveEvent, Refusals, RefusalSample
from .health import by_count
from .query import ReadOnlyQueries

# How far back the events are looked for: the table is partitioned by month of `received_at`, so
# the scan stays within the last month or two whatever the project's history.
LOOKBACK = timedelta(days=7)
MAX_RECENT_REFUSALS = 50
WINDOW_SECONDS = 3600

_EVENTS = """
    SELECT received_at, timestamp, type, event, anonymous_id, user_id, page_url AS url,
           page_path AS path, country_code AS country, browser, is_bot, message_id
    FROM `{database}`.events
    WHERE received_at >= {{since:DateTime64(3, 'UTC')}}
    ORDER BY received_at DESC, message_id
    LIMIT 1 BY message_id
    LIMIT {{limit:UInt32}}
"""


def _iso(moment: datetime) -> str:
    """A stored time as the API writes times (a naive one read from ClickHouse is UTC)."""
    return iso(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


def last_events(queries: ReadOnlyQueries, project_id: str, limit: int, now: datetime) -> list[LiveEvent]:
    """The project's last `limit` events received within LOOKBACK, newest first, each message once
    (blocking: run it in a thread)."""
    sql = _EVENTS.format(database=database_name(project_id))
    result = queries.run_built(project_id, sql, {"since": now - LOOKBACK, "limit": limit})
    events = []
    for row in result.rows:
        named = dict(zip(result.columns, row, strict=True))  # the columns are LiveEvent's fields
        named["received_at"], named["timestamp"] = _iso(named["received_at"]), _iso(named["timestamp"])
        events.append(LiveEvent(**named))
    return events


def refusals_of(project_id: str, reports: list[NodeReport]) -> Refusals:
    """The project's refusals summed over every edge's report, and their latest samples."""
    counts: dict[str, int] = {}
    recent: list[RefusalSample] = []
    for report in reports:
        entry: dict[str, Any] = ((report.refusals or {}).get("projects") or {}).get(project_id) or {}
        for reason, n in (entry.get("counts") or {}).items():
            counts[str(reason)] = counts.get(str(reason), 0) + int(n)
        for sample in entry.get("recent") or []:
            recent.append(
                RefusalSample(
                    str(sample.get("at", "")),
                    str(sample.get("reason", "")),
                    None if sample.get("field") is None else str(sample["field"]),
                    str(sample.get("message", "")),
                    report.node,
                )
            )
    recent.sort(key=lambda sample: sample.at, reverse=True)
    return Refusals(WINDOW_SECONDS, by_count(counts), recent[:MAX_RECENT_REFUSALS])
