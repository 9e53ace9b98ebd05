"""The journeys query on the embedded ClickHouse against the reference journeys: a property test on
random stored events (copies of a message, ties, identified and anonymous people, pages and
events of the same text), cleaning rules, step limits and units (people, and sessions of a
random sessions table); and the limit on journeys, enforced in the query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hw_funnels import store, store_sessions
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from headwater.analytics.funnels.reference import FunnelEvent, SessionSpan, session_of
from headwater.analytics.paths.definition import CleaningRule
from headwater.analytics.patterns.journeys import Limits, TooManyJourneys
from headwater.analytics.patterns.reference import reference_journeys
from headwater.analytics.patterns.source import Journeys, JourneyUnit, journeys_of_row, journeys_query
from headwater.core.projects.settings import Sessions

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RANGE = (T0, T0 + timedelta(hours=2))
RULES = [
    CleaningRule(r"/\d+", "/:id"),
    CleaningRule(r"^/users/(\d+)$", r"/people/\1"),
    CleaningRule(r"[_%]", "-"),
]
PATHS = ["/x", "/y/1", "/y/22", "/users/7", "/users/12", "/a_b%", "A", ""]
NAMES = ["A", "B", "/x", ""]  # an event named like a page's path stays an event


@st.composite
def stored_events(draw: st.DrawFn) -> list[FunnelEvent]:
    events = []
    for number in range(draw(st.integers(0, 30))):
        person = draw(st.sampled_from(["a", "b", "c", "d"]))
        kind = draw(st.sampled_from(["page", "page", "track", "track", "identify"]))
        # Minutes, sometimes the same millisecond as another event (ties), some outside the range.
        when = T0 + timedelta(
            milliseconds=draw(st.integers(-5, 130)) * 60_000 + draw(st.sampled_from([0, 0, 1]))
        )
        event = FunnelEvent(
            message_id=f"m{number:02d}",
            type=kind,
            event=draw(st.sampled_from(NAMES)) if kind == "track" else "",
            anonymous_id=f"anon-{person}",
            user_id=person if draw(st.booleans()) else "",
            timestamp=when,
            received_at=when + timedelta(seconds=1),
            request_id=f"r{number}",
            page_path=draw(st.sampled_from(PATHS)) if kind == "page" else "",
            is_bot=draw(st.integers(0, 5)) == 0,
        )
        events.append(event)
        if draw(st.integers(0, 3)) == 0:  # a retried copy: received later or earlier, time corrected
            # (by up to minutes: a copy may land between other events, where only dedup removes it)
            events.append(
                FunnelEvent(
                    **{
                        **asdict(event),
                        "timestamp": when + timedelta(seconds=draw(st.sampled_from([0, -1, 2, -150, 200]))),
                        "received_at": event.received_at + timedelta(seconds=draw(st.integers(-2, 5))),
                        "request_id": f"r{number}-copy",
                        "is_bot": event.is_bot != (draw(st.integers(0, 3)) == 0),
                    }
                )
            )
    return events


@st.composite
def session_spans(draw: st.DrawFn, events: Sequence[FunnelEvent]) -> list[SessionSpan]:
    """Up to two disjoint sessions per identity, their edges on its events' times or near them."""
    spans = []
    for identity in ("anon-a", "anon-b", "anon-c", "anon-d", "a", "b"):
        times = sorted({e.timestamp for e in events if identity in (e.anonymous_id, e.user_id)})
        moments = times + [T0 + timedelta(minutes=m) for m in (0, 40, 90)]
        bounds = sorted(set(draw(st.lists(st.sampled_from(moments), max_size=4))))
        for number, (first, last) in enumerate(zip(bounds[::2], bounds[1::2], strict=False)):
            spans.append(SessionSpan(identity, f"s-{identity}-{number}", first, last))
    return spans


def read(
    client: Client,
    database: str,
    unit: JourneyUnit,
    cleaning: tuple[CleaningRule, ...],
    limits: Limits,
    include_bots: bool = False,
) -> Journeys:
    built = journeys_query(database, unit, *RANGE, cleaning, limits, Sessions(), include_bots)
    result = client.query(built.sql, parameters=built.parameters)
    assert len(result.result_rows) == 1  # every journey in one row, never a row per event
    return journeys_of_row(dict(zip(result.column_names, result.result_rows[0], strict=True)), limits)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=stored_events(),
    cleaning=st.lists(st.sampled_from(RULES), max_size=2).map(tuple),
    max_steps=st.integers(1, 8),
    by_sessions=st.booleans(),
    include_bots=st.booleans(),
    data=st.data(),
)
def test_the_journeys_query_equals_the_reference(
    clickhouse: Client,
    project_id: str,
    events: list[FunnelEvent],
    cleaning: tuple[CleaningRule, ...],
    max_steps: int,
    by_sessions: bool,
    include_bots: bool,
    data: st.DataObject,
) -> None:
    database = f"hw_{project_id}"
    store(clickhouse, database, events)
    unit_of = None
    if by_sessions:
        spans = data.draw(session_spans(events))
        store_sessions(clickhouse, database, spans)
        unit_of = session_of(spans, "anonymous_id")  # Sessions()' default identity
        note(repr(spans))
    limits = Limits(max_steps=max_steps)
    unit = "sessions" if by_sessions else "people"
    found = read(clickhouse, database, unit, cleaning, limits, include_bots)
    kwargs: dict[str, Any] = {"include_bots": include_bots}
    if unit_of is not None:
        kwargs["unit_of"] = unit_of
    expected = reference_journeys(events, *RANGE, cleaning, max_steps=10_000, **kwargs)
    assert sorted(found.journeys) == [j[:max_steps] for j in expected]
    assert found.truncated == sum(len(j) > max_steps for j in expected)


def test_steps_keep_their_kind_and_runs_collapse(clickhouse: Client, project_id: str) -> None:
    """A page `/x` and an event named `/x` are two steps; a reload is one; a copy counts once."""
    database = f"hw_{project_id}"

    def at(minutes: int, message: str, path: str = "", name: str = "", request: str = "r") -> FunnelEvent:
        when = T0 + timedelta(minutes=minutes)
        kind = "page" if path else "track"
        received = when + timedelta(minutes=1 if request == "r" else 10)
        return FunnelEvent(message, kind, name, "", "u", when, received, request, path)

    events = [
        at(1, "m1", path="/x"),
        at(2, "m2", path="/x"),  # a reload
        at(3, "m3", name="/x"),
        at(4, "m4", name="Bought"),
        at(0, "m4", name="Bought", request="r2"),  # a retry, received later, its time corrected
    ]
    store(clickhouse, database, events)
    found = read(clickhouse, database, "people", (), Limits())
    assert found == Journeys((("page:/x", "event:/x", "event:Bought"),), 0)


def test_more_journeys_than_the_limit_are_refused_by_a_bounded_read(
    clickhouse: Client, project_id: str
) -> None:
    database = f"hw_{project_id}"
    events = [
        FunnelEvent(f"m{i}", "track", "A", "", f"u{i}", T0 + timedelta(minutes=i), T0, "r") for i in range(5)
    ]
    store(clickhouse, database, events)
    limits = Limits(max_journeys=2)
    built = journeys_query(database, "people", *RANGE, (), limits)
    result = clickhouse.query(built.sql, parameters=built.parameters)
    assert result.result_rows[0][0] == 3  # read no further than one past the limit
    with pytest.raises(TooManyJourneys):
        read(clickhouse, database, "people", (), limits)
    assert len(read(clickhouse, database, "people", (), Limits(max_journeys=5)).journeys) == 5
