"""A funnel's daily trend on the embedded ClickHouse against the reference's, day by day: a
property test over events spread across midnights, and examples by hand (docs/funnels.md, "Daily
trend")."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client
from hw_funnels import store
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from test_funnels_query import at, funnels, funnels_with_step_options, stored_events, unordered_funnels

from headwater.analytics.funnels.definition import Funnel, Step
from headwater.analytics.funnels.reference import FunnelEvent
from headwater.analytics.funnels.trend import TrendDay, trend_of_rows, trend_query
from headwater.analytics.funnels.trend_reference import trend_of_events

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
NOW = datetime(2026, 3, 10, tzinfo=UTC)


@pytest.fixture
def events_table(clickhouse: Client, project_id: str) -> tuple[Client, str]:
    return clickhouse, f"hw_{project_id}"


def queried(client: Client, database: str, funnel: Funnel, start: datetime, end: datetime) -> list[TrendDay]:
    built = trend_query(database, funnel, start, end)
    result = client.query(built.sql, parameters=built.parameters)
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    return trend_of_rows(funnel, rows, start, end, NOW)


@st.composite
def spread(draw: st.DrawFn) -> list[FunnelEvent]:
    """stored_events moved across three days: each event shifted by whole hours (ties kept)."""
    events = draw(stored_events())
    shifts: dict[str, timedelta] = {}
    moved = []
    for event in events:  # a message's copies move together
        shift = shifts.setdefault(event.message_id, HOUR * draw(st.integers(-4, 28)))
        moved.append(replace(event, timestamp=event.timestamp + shift, received_at=event.received_at + shift))
    return moved


# The window and the range of check_trend, in hours.
TREND_TIMES = {
    "window_hours": st.integers(1, 30),
    "start_hours": st.integers(-4, 24),
    "length_hours": st.integers(1, 30),
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=spread(),
    funnel=funnels(),
    **TREND_TIMES,
)
def test_the_trend_equals_the_reference_day_by_day(
    events_table: tuple[Client, str],
    events: list[FunnelEvent],
    funnel: Funnel,
    window_hours: int,
    start_hours: int,
    length_hours: int,
) -> None:
    check_trend(*events_table, events, funnel, window_hours, start_hours, length_hours)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=spread(),
    funnel=funnels_with_step_options(),
    **TREND_TIMES,
)
def test_the_trend_with_optional_steps_and_step_windows_equals_the_reference(
    events_table: tuple[Client, str],
    events: list[FunnelEvent],
    funnel: Funnel,
    window_hours: int,
    start_hours: int,
    length_hours: int,
) -> None:
    """The per-day form of the per-start query (a row per day, person and start)."""
    check_trend(*events_table, events, funnel, window_hours, start_hours, length_hours)


def check_trend(
    client: Client,
    database: str,
    events: list[FunnelEvent],
    funnel: Funnel,
    window_hours: int,
    start_hours: int,
    length_hours: int,
) -> None:
    store(client, database, events)
    funnel = replace(funnel, window_ms=window_hours * 3_600_000 + 1)
    start = T0 + HOUR * start_hours + timedelta(milliseconds=1)
    end = start + HOUR * length_hours
    note(repr((funnel, start, end)))
    assert queried(client, database, funnel, start, end) == trend_of_events(funnel, events, start, end, NOW)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=spread(),
    funnel=unordered_funnels(),
    **TREND_TIMES,
)
def test_the_unordered_trend_equals_the_reference_day_by_day(
    events_table: tuple[Client, str],
    events: list[FunnelEvent],
    funnel: Funnel,
    window_hours: int,
    start_hours: int,
    length_hours: int,
) -> None:
    """The same in `unordered` order: only the day's entries start attempts, and any step, the
    first too, may come after the start, on that day or the next."""
    check_trend(*events_table, events, funnel, window_hours, start_hours, length_hours)


def test_an_unordered_trend_by_hand(events_table: tuple[Client, str]) -> None:
    """a does B on day 1 and A just after midnight: entered on day 1 (B), converted; the A, an
    entry of day 2, starts an attempt there too (reaching 1)."""
    client, database = events_table
    ab = Funnel((Step("event", "A"), Step("event", "B")), 3 * 3_600_000, "unordered")
    events = [at(23 * 60, "a", "B"), at(25 * 60, "a", "A")]
    store(client, database, events)
    start, end = T0, T0 + timedelta(hours=48)
    days = queried(client, database, ab, start, end)
    assert days == trend_of_events(ab, events, start, end, NOW)
    assert [[step.count for step in day.steps] for day in days] == [[1, 1], [1, 0]]


def test_a_trend_by_hand(events_table: tuple[Client, str]) -> None:
    """a enters on day 1 at 23:00 and converts at 01:00 on day 2 (counted on day 1, its entry's
    day); b enters on day 2 and converts after `to`, inside the window; c's A of day 2 converts, so
    its day-1 A (without B within the window) is c's only entry of day 1."""
    client, database = events_table
    ab = Funnel((Step("event", "A"), Step("event", "B")), 3 * 3_600_000)
    minutes = 60
    events = [
        at(23 * minutes, "a", "A"), at(25 * minutes, "a", "B"),
        at(46 * minutes, "b", "A"), at(49 * minutes, "b", "B"),
        at(1 * minutes, "c", "A"), at(40 * minutes, "c", "A"), at(41 * minutes, "c", "B"),
    ]  # fmt: skip
    store(client, database, events)
    start, end = T0, T0 + timedelta(hours=48)
    days = queried(client, database, ab, start, end)
    assert days == trend_of_events(ab, events, start, end, NOW)
    assert [(day.day, [step.count for step in day.steps]) for day in days] == [
        (date(2026, 3, 1), [2, 1]),  # a converts; c's A at 00:01 does not
        (date(2026, 3, 2), [2, 2]),  # b (after `to`, within the window) and c
    ]
    assert [day.complete for day in queried(client, database, ab, start, end)] == [True, True]
    later = trend_of_rows(ab, [], start, end, T0 + timedelta(hours=50))
    assert [day.complete for day in later] == [True, False]  # day 2's last entry + 3 h > now
    assert [step.count for step in later[0].steps] == [0, 0]
