"""`POST /v1/projects/{id}/overview`: a project's events, visitors and sessions over a range, per
hour or day, and its top pages, referrers, channels, countries, browsers and devices
(analytics/overview.py builds the queries; docs/control-api.md has the definitions)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from headwater.analytics.overview import (
    MAX_HOURLY_RANGE_DAYS,
    MAX_RANGE_DAYS,
    TOP_LISTS,
    Built,
    series_query,
    top_query,
    totals_query,
)
from headwater.core.projects.project import database_name
from headwater.core.service.errors import APIError

from .console_schemas import (
    OverviewAnswer,
    OverviewPoint,
    OverviewRequest,
    OverviewTop,
    OverviewTotals,
    TopValue,
)
from .query import ReadOnlyQueries


def check_range(request: OverviewRequest) -> None:
    if request.end <= request.start:
        raise APIError(400, "invalid_field", "to must be later than from", "to")
    if request.end - request.start > timedelta(days=MAX_RANGE_DAYS):
        raise APIError(400, "invalid_field", f"an overview covers at most {MAX_RANGE_DAYS} days", "to")
    if request.interval == "hour" and request.end - request.start > timedelta(days=MAX_HOURLY_RANGE_DAYS):
        raise APIError(
            400,
            "invalid_field",
            f"an hourly series covers at most {MAX_HOURLY_RANGE_DAYS} days; ask for interval day",
            "interval",
        )


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> float:
    """A mean or median of no session is NaN in ClickHouse: 0 here, as the answer documents."""
    number = float(value)
    return 0.0 if math.isnan(number) else number


def run_overview(queries: ReadOnlyQueries, project_id: str, request: OverviewRequest) -> dict[str, Any]:
    """The answer (blocking: run it in a thread)."""
    check_range(request)
    database = database_name(project_id)
    start, end, bots = request.start, request.end, request.include_bots

    totals = queries.run_built(project_id, *_parts(totals_query(database, start, end, bots)))
    row = dict(zip(totals.columns, totals.rows[0], strict=True))
    sessions = int(row["sessions"])
    summary = OverviewTotals(
        int(row["events"]),
        int(row["pageviews"]),
        int(row["visitors"]),
        sessions,
        int(row["bounces"]) / sessions if sessions else 0.0,
        _number(row["avg_session_seconds"]),
        _number(row["median_session_seconds"]),
    )

    series = queries.run_built(
        project_id, *_parts(series_query(database, start, end, request.interval, bots))
    )
    points = [
        OverviewPoint(_iso(t), int(events), int(pageviews), int(visitors), int(count))
        for t, events, pageviews, visitors, count in series.rows
    ]

    top = queries.run_built(project_id, *_parts(top_query(database, start, end, request.limit, bots)))
    lists: dict[str, list[TopValue]] = {name: [] for name in TOP_LISTS}
    for name, value, count in top.rows:
        lists[name].append(TopValue(str(value), int(count)))
    for values in lists.values():
        values.sort(key=lambda v: (-v.count, v.value))
    answer: dict[str, Any] = msgspec.to_builtins(OverviewAnswer(summary, points, OverviewTop(**lists)))
    return answer


def _parts(built: Built) -> tuple[str, dict[str, Any]]:
    return built.sql, built.parameters
