"""The reference's daily trend (trend.py's definition in plain Python), for the tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from .definition import Funnel
from .reference import FunnelEvent, funnel_progress
from .summary import summary_of_progress
from .trend import TrendDay, day_bounds, day_of_trend, trend_days


def trend_of_events(
    funnel: Funnel, events: Iterable[FunnelEvent], start: datetime, end: datetime, now: datetime
) -> list[TrendDay]:
    """The reference's trend: day by day, the reference funnel over that day's events and entries."""
    stored = list(events)
    days = []
    window = timedelta(milliseconds=funnel.window_ms)
    for day in trend_days(start, end):
        first, last = day_bounds(day, start, end)
        progress = funnel_progress(funnel, stored, first, last + window, entry=(first, last))
        days.append(day_of_trend(funnel, day, summary_of_progress(funnel, progress), start, end, now))
    return days
