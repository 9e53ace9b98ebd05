"""A funnel's daily trend: for each UTC day of a range, the funnel of the people who entered it
that day (docs/funnels.md, "Daily trend"). Day D's funnel reads the events of [max(from, D),
min(to, D + 1 day) + window) and counts only attempts whose first step lies in [max(from, D),
min(to, D + 1 day)): a conversion may come up to a window after its day (and after `to`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from headwater.core.projects.settings import Sessions

from .definition import Funnel
from .query import DAY_MS, FunnelQuery, progress_query
from .reference import milliseconds
from .summary import StepSummary, no_one, summary_items, summary_of_row

_EPOCH = date(1970, 1, 1)
# A trend of more days than this is a query over years: asked for rarely, and costly.
MAX_TREND_DAYS = 400


@dataclass(frozen=True, slots=True)
class TrendDay:
    day: date
    steps: list[StepSummary]
    # Whether a window has passed since the day's last entry: else later events can still convert.
    complete: bool


def trend_days(start: datetime, end: datetime) -> list[int]:
    """The days (since 1970, UTC) of [start, end)."""
    return list(range(milliseconds(start) // DAY_MS, (milliseconds(end) - 1) // DAY_MS + 1))


def day_bounds(day: int, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The entries of `day` within [start, end)."""
    midnight = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)
    return max(start, midnight), min(end, midnight + timedelta(days=1))


def trend_query(
    database: str, funnel: Funnel, start: datetime, end: datetime, session_rules: Sessions | None = None
) -> FunnelQuery:
    """A row per day with anyone entering: `day` and summary.summary_items."""
    progress = progress_query(
        database, funnel, start, end, sorted_by_person=False, per_day=True, session_rules=session_rules
    )
    items = ",\n    ".join(summary_items(funnel))
    sql = f"SELECT day,\n    {items}\nFROM ({progress.sql})\nGROUP BY day ORDER BY day"
    return FunnelQuery(sql, progress.parameters)


def trend_of_rows(
    funnel: Funnel, rows: Sequence[dict[str, Any]], start: datetime, end: datetime, now: datetime
) -> list[TrendDay]:
    """Every day of [start, end), from trend_query's rows (days without rows: nobody entered)."""
    by_day = {int(row["day"]): summary_of_row(funnel, row) for row in rows}
    return [
        day_of_trend(funnel, day, by_day.get(day) or no_one(funnel), start, end, now)
        for day in trend_days(start, end)
    ]


def day_of_trend(
    funnel: Funnel, day: int, steps: list[StepSummary], start: datetime, end: datetime, now: datetime
) -> TrendDay:
    last_entry = day_bounds(day, start, end)[1]
    complete = last_entry + timedelta(milliseconds=funnel.window_ms) <= now
    return TrendDay(_EPOCH + timedelta(days=day), steps, complete)
