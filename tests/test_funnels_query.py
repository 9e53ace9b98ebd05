"""The funnel query on the embedded ClickHouse against the reference funnel: a property test on
random events and funnels, ClickHouse's own windowFunnel, and named examples of each rule
(docs/funnels.md)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hw_funnels import store, store_sessions
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from headwater.analytics.funnels.definition import (
    MAX_WINDOW_MS,
    Breakdown,
    Exclusion,
    Funnel,
    FunnelError,
    PeopleList,
    PeopleStatus,
    Step,
    parse_step,
)
from headwater.analytics.funnels.filters import Filter, FilterError, FilterOp, Scalar, parse_filter
from headwater.analytics.funnels.query import (
    PERSON,
    _ordered,
    _strict,
    breakdown_query,
    like_pattern,
    people_query,
    progress_query,
    step_conditions,
    summary_query,
)
from headwater.analytics.funnels.reference import (
    FunnelEvent,
    Progress,
    SessionSpan,
    best_chain,
    first_events,
    funnel_progress,
    milliseconds,
    people,
    people_page,
    session_of,
    unordered_attempt,
)
from headwater.analytics.funnels.summary import (
    NO_TIME,
    StepSummary,
    breakdown_of_progress,
    breakdown_of_rows,
    quantile,
    summary_of_progress,
    summary_of_row,
    total_of_rows,
)
from headwater.core.projects.settings import SessionIdentity, Sessions

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RANGE = (T0 - timedelta(days=1), T0 + timedelta(days=1))
MINUTE = 60_000


def reached(*minutes: float, person: str = "a") -> Progress:
    """A person's progress: the steps reached at these minutes after T0."""
    return Progress(person, len(minutes), tuple(milliseconds(T0) + round(m * MINUTE) for m in minutes))


@pytest.fixture
def events_table(clickhouse: Client, project_id: str) -> tuple[Client, str]:
    return clickhouse, f"hw_{project_id}"


def queried(
    client: Client, database: str, funnel: Funnel, span: tuple[datetime, datetime] = RANGE
) -> list[Progress]:
    built = progress_query(database, funnel, *span)
    return progress_of_rows(client.query(built.sql, parameters=built.parameters).result_rows)


def progress_of_rows(rows: Sequence[Sequence[Any]]) -> list[Progress]:
    """The query's rows as the reference's progress: a skipped optional step's NO_TIME is None."""
    return [
        Progress(person, level, tuple(None if t == int(NO_TIME) else t for t in times), breakdown)
        for person, level, times, breakdown in rows
    ]


def at(minutes: float, person: str = "a", name: str = "", path: str = "", message: str = "") -> FunnelEvent:
    when = T0 + timedelta(minutes=minutes)
    kind = "page" if path else "track"
    return FunnelEvent(
        message or f"m{minutes}-{person}-{name}{path}", kind, name, person, "", when, when, "r", path
    )


STEPS = [Step("event", "A"), Step("event", "B"), Step("event", "C"), Step("page", "/y/*"), Step("page", "/x")]


@st.composite
def stored_events(draw: st.DrawFn, dense: bool = False, least: int = 0) -> list[FunnelEvent]:
    """`least` to 30 events of three people in 30 minutes; `dense`: of two people, mostly track
    events, in ten minutes, so that attempts get deep and several overlap (exclusions decide
    between them)."""
    events = []
    for number in range(draw(st.integers(least, 30))):
        person = draw(st.sampled_from(["a", "b"] if dense else ["a", "b", "c"]))
        identified = draw(st.booleans())
        page = draw(st.integers(0, 4)) == 0 if dense else draw(st.booleans())
        # Minutes, and sometimes the same millisecond as another event (ties).
        when = T0 + timedelta(
            milliseconds=draw(st.integers(0, 40 if dense else 120)) * MINUTE // 4
            + draw(st.sampled_from([0, 0, 1]))
        )
        event = FunnelEvent(
            message_id=f"m{number:02d}",
            type="page" if page else "track",
            event=""
            if page
            else draw(st.sampled_from(["A", "B", "C", "D"] if dense else ["A", "B", "C", "D", ""])),
            anonymous_id=f"anon-{person}",
            user_id=person if identified else "",
            timestamp=when,
            received_at=when + timedelta(seconds=1),
            request_id=f"r{number}",
            page_path=draw(st.sampled_from(["/x", "/y/1", "/y/2", "/z"])) if page else "",
            browser=draw(st.sampled_from(["", "Chrome", "Firefox"])),
            country=draw(st.sampled_from(["DE", "FR", "US", "BR"])),
            properties=draw(properties_json()),
            is_bot=draw(st.integers(0, 5)) == 0,  # a bot's (left out unless the funnel includes bots)
        )
        events.append(event)
        if draw(st.integers(0, 5)) == 0:  # a retried copy: received later, its time corrected
            skew = timedelta(seconds=draw(st.integers(-3, 3)))
            events.append(
                FunnelEvent(
                    **{
                        **asdict(event),
                        "timestamp": when + skew,
                        "received_at": event.received_at + timedelta(seconds=draw(st.integers(-2, 5))),
                        "request_id": f"r{number}-copy",
                        # from another client, which the bot filter may judge otherwise
                        "is_bot": event.is_bot != (draw(st.integers(0, 3)) == 0),
                    }
                )
            )
    return events


_ABSENT = object()


@st.composite
def properties_json(draw: st.DrawFn) -> str:
    """`properties` with values of every JSON type under a few keys, some nested, some absent."""
    choices: dict[str, list[object]] = {
        "plan": [_ABSENT, "pro", "free", "", "1", 1, 2, 1.5, True, False, None, {"a": 1}, [1]],
        "n": [_ABSENT, 0, 1, 2, -3, 1.5, 2.0, "2", 18446744073709551615],
        "o": [_ABSENT, {"k": "x"}, {"k": 1}, {"k": None}, "k", {}],
    }
    document = {
        key: value
        for key, values in choices.items()
        if (value := draw(st.sampled_from(values))) is not _ABSENT
    }
    return json.dumps(document)


_OPERANDS: dict[str, list[Scalar]] = {
    "properties.plan": ["pro", "free", "", "1", 1, 1.5, True, False],
    "properties.n": [0, 1, 2, 2.0, -3, "2", 1.5],
    "properties.o.k": ["x", 1, "k"],
    "country": ["DE", "FR", ""],
    "browser": ["Chrome", ""],
}
_PATTERNS = ["^p", "o$", "[a-f]+", "x|e", "^$", "E", "^[A-Z]{2}$"]


@st.composite
def filters(draw: st.DrawFn) -> Filter:
    key = draw(st.sampled_from(list(_OPERANDS)))
    column = not key.startswith("properties.")
    ops: list[FilterOp] = ["eq", "neq", "in", "contains", "regex", "is_set", "is_not_set"]
    op = draw(st.sampled_from(ops if column else [*ops, "lt", "gt"]))
    operands = [o for o in _OPERANDS[key] if isinstance(o, str) or not column]
    if op in ("is_set", "is_not_set"):
        return Filter(key, op)
    if op == "in":
        return Filter(key, op, tuple(draw(st.lists(st.sampled_from(operands), min_size=1, max_size=3))))
    if op in ("lt", "gt"):
        return Filter(key, op, draw(st.sampled_from([0, 1, 1.5, 2, -1])))
    if op == "contains":
        return Filter(key, op, draw(st.sampled_from(["r", "", "p", "D", "x", "C"])))
    if op == "regex":
        return Filter(key, op, draw(st.sampled_from(_PATTERNS)))
    return Filter(key, op, draw(st.sampled_from(operands)))


@st.composite
def filtered_steps(draw: st.DrawFn) -> Step:
    step = draw(st.sampled_from(STEPS))
    if draw(st.integers(0, 2)):
        return step
    return Step(step.kind, step.value, tuple(draw(st.lists(filters(), min_size=1, max_size=2))))


@st.composite
def exclusions(draw: st.DrawFn, steps: int) -> Exclusion:
    """An exclusion between two of the funnel's steps; its event often one of the steps' too."""
    start = draw(st.integers(1, steps - 1))
    step = draw(st.sampled_from([Step("event", "D"), *STEPS[:3]]) | filtered_steps())
    return Exclusion(step, start, draw(st.integers(start + 1, steps)))


@st.composite
def funnels(draw: st.DrawFn, dense: bool = False) -> Funnel:
    """Random funnels; `dense`: for dense events, steps mostly of events and without filters, and
    always one or more exclusions."""
    plain = st.sampled_from([*STEPS[:4], Step("event", "D")])
    step = (
        st.integers(0, 3).flatmap(lambda n: filtered_steps() if n == 0 else plain)
        if dense
        else filtered_steps()
    )
    steps = tuple(draw(st.lists(step, min_size=2, max_size=4)))
    some = st.lists(exclusions(len(steps)), min_size=1, max_size=3 if dense else 2)
    return Funnel(
        steps,
        window_ms=draw(st.integers(1, 60).map(lambda minutes: minutes * MINUTE // 2)),
        order=draw(st.sampled_from(["ordered", "strict"])),
        breakdown=draw(
            st.none()
            | st.builds(
                Breakdown,
                column=st.sampled_from(
                    ["browser", "country", "properties.plan", "properties.n", "properties.o.k"]
                ),
                attribution=st.sampled_from(["first", "last"]),
                limit=st.integers(1, 3),
            )
        ),
        filters=draw(st.just(()) if dense else st.lists(filters(), max_size=2).map(tuple) | st.just(())),
        # Without exclusions in about half the (not dense) examples: the same as before they were.
        exclusions=tuple(draw(some if dense else st.just([]) | some)),
        include_bots=draw(st.booleans()),
    )


# 200: the floor of random event sets and funnels, in this test alone (the others add more).
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=stored_events(), funnel=funnels(), data=st.data())
def test_the_query_equals_the_reference(
    events_table: tuple[Client, str], events: list[FunnelEvent], funnel: Funnel, data: st.DataObject
) -> None:
    """Each person's progress, the answer per step, a page of a list of people and the breakdown;
    some funnels with exclusions."""
    check_against_reference(*events_table, events, funnel, data)


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=stored_events(dense=True), funnel=funnels(dense=True), data=st.data())
def test_exclusions_equal_the_reference(
    events_table: tuple[Client, str], events: list[FunnelEvent], funnel: Funnel, data: st.DataObject
) -> None:
    """The same with exclusions always, on events dense enough for attempts to overlap (where an
    exclusion voids one attempt and leaves another)."""
    check_against_reference(*events_table, events, funnel, data)


def check_against_reference(
    client: Client, database: str, events: list[FunnelEvent], funnel: Funnel, data: st.DataObject
) -> None:
    store(client, database, events)
    note(repr(funnel))
    expected = funnel_progress(funnel, events, *RANGE)
    assert queried(client, database, funnel) == expected
    assert summarized(client, database, funnel) == summary_of_progress(funnel, expected)
    status: PeopleStatus = data.draw(st.sampled_from(["converted", "dropped"]))
    list_of = PeopleList(
        data.draw(st.integers(1 if status == "converted" else 2, len(funnel.steps))),
        status,
        data.draw(st.integers(1, 3)),
        data.draw(st.sampled_from([None, "a", "anon-a", "anon-b", "b", "c"])),
    )
    assert listed(client, database, funnel, list_of) == people_page(funnel, expected, list_of)
    if funnel.breakdown is not None:
        built = breakdown_query(database, funnel, *RANGE)
        result = client.query(built.sql, parameters=built.parameters)
        rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        assert breakdown_of_rows(funnel, rows) == breakdown_of_progress(funnel, expected)
        assert total_of_rows(funnel, rows) == summary_of_progress(funnel, expected)


def listed(client: Client, database: str, funnel: Funnel, list_of: PeopleList) -> tuple[list[str], bool]:
    built = people_query(database, funnel, *RANGE, list_of)
    people = [row[0] for row in client.query(built.sql, parameters=built.parameters).result_rows]
    return people[: list_of.limit], len(people) > list_of.limit


def summarized(client: Client, database: str, funnel: Funnel) -> list[StepSummary]:
    built = summary_query(database, funnel, *RANGE)
    result = client.query(built.sql, parameters=built.parameters)
    [row] = result.result_rows
    return summary_of_row(funnel, dict(zip(result.column_names, row, strict=True)))


def test_the_answer_per_step(events_table: tuple[Client, str]) -> None:
    """Counts, conversions, drop-offs and times from the previous step, by hand: a reached B
    after 2 minutes, b after 4, c never; quantiles as ClickHouse's quantileExact takes them."""
    client, database = events_table
    funnel = Funnel((Step("event", "A"), Step("event", "B"), Step("event", "C")), 10 * MINUTE)
    events = [
        at(0, "a", "A"), at(2, "a", "B"),
        at(0, "b", "A"), at(4, "b", "B"),
        at(0, "c", "A"), at(5, "c", "C"),
    ]  # fmt: skip
    store(client, database, events)
    expected = [
        StepSummary(3, 1.0, 1.0, 0, None, None, None),
        StepSummary(2, 2 / 3, 2 / 3, 1, 4 * MINUTE, 3 * MINUTE, 4 * MINUTE),
        StepSummary(0, 0.0, 0.0, 2, None, None, None),
    ]
    assert summary_of_progress(funnel, funnel_progress(funnel, events, *RANGE)) == expected
    assert summarized(client, database, funnel) == expected
    assert (quantile([1, 2], 0.5), quantile([1, 2, 3], 0.5), quantile(list(range(1, 11)), 0.9)) == (2, 2, 10)


def window_funnel(client: Client, database: str, funnel: Funnel, strict: bool) -> dict[str, int]:
    parameters: dict[str, object] = {"start": RANGE[0], "end": RANGE[1]}
    conditions = ", ".join(step_conditions(funnel, parameters))
    mode = ", 'strict_order'" if strict else ""
    sql = f"""
        SELECT person, level FROM (
            SELECT {PERSON} AS person,
                windowFunnel({funnel.window_ms // 1000}{mode})(toDateTime(timestamp), {conditions}) AS level
            FROM `{database}`.events
            WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {{end:DateTime64(3, 'UTC')}}
            GROUP BY person
        ) WHERE level > 0
    """
    return {str(person): int(level) for person, level in client.query(sql, parameters=parameters).result_rows}


@st.composite
def distinct_seconds(draw: st.DrawFn, names: Sequence[str], each_name_once: bool) -> list[FunnelEvent]:
    """Events of two people, one per second at most, without copies (windowFunnel orders events of
    equal time as it reads them, and counts copies); with `each_name_once`, no person has a name
    twice."""
    seconds = draw(st.lists(st.integers(0, 600), max_size=30, unique=True))
    events = []
    seen: set[tuple[str, str]] = set()
    for number, second in enumerate(seconds):
        when = T0 + timedelta(seconds=second)
        name, person = draw(st.sampled_from(names)), draw(st.sampled_from(["a", "b"]))
        if each_name_once and (person, name) in seen:
            continue
        seen.add((person, name))
        events.append(FunnelEvent(f"m{number}", "track", name, person, "", when, when, "r"))
    return events


def _steps(names: Sequence[str], most: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(names), min_size=2, max_size=most, unique=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=distinct_seconds("ABCD", each_name_once=False), steps=_steps("ABC", 3), window=st.integers(1, 300)
)
def test_ordered_levels_equal_clickhouses_window_funnel(
    events_table: tuple[Client, str], events: list[FunnelEvent], steps: list[str], window: int
) -> None:
    """windowFunnel (default) is the ordered mode: on times a second apart (as it takes them) and
    distinct steps (it lets one event fill two steps: [A, A] reaches step 2 with one A)."""
    client, database = events_table
    store(client, database, events)
    funnel = Funnel(tuple(Step("event", name) for name in steps), window * 1000, "ordered")
    ours = {row.person: row.level for row in queried(client, database, funnel)}
    assert ours == window_funnel(client, database, funnel, strict=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=distinct_seconds("ABCD", each_name_once=True), window=st.integers(1, 300), size=st.integers(2, 4)
)
def test_strict_levels_equal_window_funnels_strict_order_where_no_step_repeats(
    events_table: tuple[Client, str], events: list[FunnelEvent], window: int, size: int
) -> None:
    """windowFunnel's 'strict_order' is the strict mode where every event is a step and none comes
    twice. Elsewhere the two differ (docs/funnels.md): strict_order stops a person for good at
    the first event out of order (A C A B with steps A, B: 1, here 2) and lets an earlier step
    come back between two (A B A C with steps A, B, C: 3, here 2)."""
    client, database = events_table
    funnel = Funnel(tuple(Step("event", name) for name in "ABCD"[:size]), window * 1000, "strict")
    covered = [e for e in events if e.event in "ABCD"[:size]]
    store(client, database, covered)
    ours = {row.person: row.level for row in queried(client, database, funnel)}
    assert ours == window_funnel(client, database, funnel, strict=True)


def test_where_strict_order_and_strict_differ(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    for sequence, steps, theirs, ours in (("ACAB", "AB", 1, 2), ("ABAC", "ABC", 3, 2)):
        store(client, database, [at(minute, name=name) for minute, name in enumerate(sequence)])
        funnel = Funnel(tuple(Step("event", name) for name in steps), 10 * MINUTE, "strict")
        assert window_funnel(client, database, funnel, strict=True) == {"a": theirs}
        assert [row.level for row in queried(client, database, funnel)] == [ours]


def test_named_cases(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    ab = Funnel((Step("event", "A"), Step("event", "B")), 10 * MINUTE)
    cases: list[tuple[str, Funnel, list[FunnelEvent], list[Progress]]] = [
        ("a step exactly at the window's end counts", ab,
         [at(0, name="A"), at(10, name="B")], [reached(0, 10)]),
        ("a millisecond later does not", ab,
         [at(0, name="A"), at(10 + 1 / MINUTE, name="B")], [reached(0)]),
        ("two events at the same millisecond follow message-id order", ab,
         [at(5, name="B", message="m1"), at(5, name="A", message="m2")], [reached(5)]),
        ("...so the other way round they convert", ab,
         [at(5, name="A", message="m1"), at(5, name="B", message="m2")], [reached(5, 5)]),
        ("the attempt starting last among the deepest, each step at its earliest", ab,
         [at(0, name="A"), at(3, name="A"), at(8, name="B"), at(9, name="B")],
         [reached(3, 8)]),
        ("a person converting twice counts once, with the later conversion", ab,
         [at(0, name="A"), at(1, name="B"), at(30, name="A"), at(32, name="B")],
         [reached(30, 32)]),
        ("a repeated step needs two events", Funnel((Step("event", "A"), Step("event", "A")), MINUTE * 10),
         [at(0, name="A")], [reached(0)]),
        ("strict: another event between breaks it", Funnel(ab.steps, ab.window_ms, "strict"),
         [at(0, name="A"), at(1, name="C"), at(2, name="B")], [reached(0)]),
        ("a page step by glob", Funnel((Step("page", "/y/*"), Step("event", "B")), MINUTE * 10),
         [at(0, path="/y/7"), at(1, name="B")], [reached(0, 1)]),
        ("a glob's other characters are themselves (LIKE's % and _ too)",
         Funnel((Step("page", "/a_b%"), Step("event", "B")), MINUTE * 10),
         [at(0, path="/axb"), at(1, name="B"), at(2, path="/a_b%"), at(3, name="B")],
         [reached(2, 3)]),
    ]  # fmt: skip
    for name, funnel, events, expected in cases:
        store(client, database, events)
        assert funnel_progress(funnel, events, *RANGE) == expected, name
        assert queried(client, database, funnel) == expected, name


def test_the_range_is_half_open_and_copies_count_once(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    funnel = Funnel((Step("event", "A"), Step("event", "B")), 10 * MINUTE, "strict")
    first = at(0, name="A")
    copy = FunnelEvent(
        **{**asdict(first), "request_id": "r2", "received_at": first.received_at + timedelta(seconds=1)}
    )
    events = [first, copy, at(1, name="B"), at(60, name="A")]
    store(client, database, events)
    span = (T0, T0 + timedelta(minutes=60))
    expected = [reached(0, 1)]
    assert funnel_progress(funnel, events, *span) == expected
    assert queried(client, database, funnel, span) == expected


def test_definitions_are_validated() -> None:
    with pytest.raises(FunnelError) as raised:
        Funnel((Step("event", "A"),), 1000)
    assert (raised.value.code, raised.value.field) == ("steps_count", "steps")
    with pytest.raises(FunnelError) as raised:
        Funnel((Step("event", "A"), Step("event", "")), 1000)
    assert raised.value.field == "steps[1]"
    with pytest.raises(FunnelError) as raised:
        Funnel((Step("event", "A"), Step("event", "B")), 0)
    assert raised.value.code == "window"
    assert parse_step("page:/pricing") == Step("page", "/pricing")
    with pytest.raises(FunnelError):
        parse_step("click:x")
    assert like_pattern("/a_b%*\\") == "/a\\_b\\%%\\\\"


@pytest.mark.parametrize("order", ["ordered", "strict", "unordered"])
def test_times_before_1970_are_times_like_others(events_table: tuple[Client, str], order: str) -> None:
    """Unix milliseconds before 1970 are negative: no value of them may mean "no attempt"."""
    client, database = events_table
    funnel = Funnel((Step("event", "A"), Step("event", "B")), 10 * MINUTE, order)  # type: ignore[arg-type]
    old = datetime(1969, 12, 31, 23, 59, tzinfo=UTC)
    events = [
        FunnelEvent(name, "track", name, "a", "", old + timedelta(seconds=offset), old, "r")
        for name, offset in (("A", 0), ("B", 30))
    ]
    store(client, database, events)
    span = (datetime(1960, 1, 1, tzinfo=UTC), datetime(1980, 1, 1, tzinfo=UTC))
    expected = [Progress("a", 2, (milliseconds(old), milliseconds(old) + 30_000))]
    assert funnel_progress(funnel, events, *span) == expected
    assert queried(client, database, funnel, span) == expected


def with_properties(event: FunnelEvent, **changes: object) -> FunnelEvent:
    return FunnelEvent(**{**asdict(event), **changes})


def test_filters_by_hand(events_table: tuple[Client, str]) -> None:
    """Typed comparisons, nested keys, missing values, and per-copy columns read from the copy
    chosen (the one received first)."""
    client, database = events_table
    a, b = at(0, name="A"), at(1, name="B")

    def b_where(*filters: Filter, funnel_filters: tuple[Filter, ...] = ()) -> Funnel:
        return Funnel((Step("event", "A"), Step("event", "B", filters)), 10 * MINUTE, filters=funnel_filters)

    cases: list[tuple[str, dict[str, object], Funnel, int]] = [
        ("a number equals its float", {"n": 2.0}, b_where(Filter("properties.n", "eq", 2)), 2),
        ("but not its string", {"n": "2"}, b_where(Filter("properties.n", "eq", 2)), 1),
        ("a string not a number", {"n": 2}, b_where(Filter("properties.n", "eq", "2")), 1),
        ("a boolean only a boolean", {"n": 1}, b_where(Filter("properties.n", "eq", True)), 1),
        ("nested keys", {"o": {"k": "x"}}, b_where(Filter("properties.o.k", "in", ("y", "x"))), 2),
        ("through a non-object: missing", {"o": "k"}, b_where(Filter("properties.o.k", "is_set")), 1),
        ("null is not set", {"o": None}, b_where(Filter("properties.o", "is_not_set")), 2),
        ("neq holds for a missing key", {}, b_where(Filter("properties.plan", "neq", "pro")), 2),
        ("lt on a string: never", {"n": "1"}, b_where(Filter("properties.n", "lt", 5)), 1),
        ("regex is a search (re2)", {"plan": "enterprise"},
         b_where(Filter("properties.plan", "regex", "ter")), 2),
        ("contains is case-sensitive", {"plan": "Pro"},
         b_where(Filter("properties.plan", "contains", "pro")), 1),
    ]  # fmt: skip
    for name, properties, funnel, level in cases:
        events = [a, with_properties(b, properties=json.dumps(properties))]
        store(client, database, events)
        assert [row.level for row in funnel_progress(funnel, events, *RANGE)] == [level], name
        assert [row.level for row in queried(client, database, funnel)] == [level], name

    # Two copies of B: the first received is from FR, a retry from DE. The copy chosen decides.
    copy = with_properties(b, country="DE", request_id="r2", received_at=b.received_at + timedelta(seconds=1))
    events = [a, with_properties(b, country="FR"), copy]
    store(client, database, events)
    for funnel, level in (
        (b_where(Filter("country", "eq", "DE")), 1),
        (b_where(Filter("country", "eq", "FR")), 2),
        (b_where(funnel_filters=(Filter("country", "eq", "DE"),)), 0),
    ):
        assert [row.level for row in funnel_progress(funnel, events, *RANGE)] == ([level] if level else [])
        assert [row.level for row in queried(client, database, funnel)] == ([level] if level else [])

    # Strict: an event the funnel's filters leave out is not between two steps.
    strict = Funnel(
        (Step("event", "A"), Step("event", "B")),
        10 * MINUTE,
        "strict",
        filters=(Filter("browser", "neq", "Bot"),),
    )
    events = [a, with_properties(at(0.5, name="C"), browser="Bot"), b]
    store(client, database, events)
    assert funnel_progress(strict, events, *RANGE) == [reached(0, 1)]
    assert queried(client, database, strict) == [reached(0, 1)]


def test_a_breakdown_by_property_reads_strings_booleans_and_integers(
    events_table: tuple[Client, str],
) -> None:
    client, database = events_table
    values = {"a": "pro", "b": True, "c": 40, "d": 1.5, "e": {"x": 1}}
    events = [
        with_properties(at(0, person, "A"), properties=json.dumps({"plan": value}))
        for person, value in values.items()
    ]
    store(client, database, events)
    funnel = Funnel((Step("event", "A"), Step("event", "B")), MINUTE, breakdown=Breakdown("properties.plan"))
    expected = {"a": "pro", "b": "true", "c": "40", "d": "", "e": ""}
    assert {row.person: row.breakdown for row in funnel_progress(funnel, events, *RANGE)} == expected
    assert {row.person: row.breakdown for row in queried(client, database, funnel)} == expected


def test_filters_are_validated_and_parsed() -> None:
    for key, op, value, field in [
        ("country", "lt", 3, "value"),
        ("properties.n", "lt", "3", "value"),
        ("properties.n", "gt", float("nan"), "value"),
        ("country", "eq", 3, "value"),
        ("country", "in", (), "value"),
        ("properties.a", "is_set", "x", "value"),
        ("properties.", "eq", "x", "key"),
        ("properties.a..b", "eq", "x", "key"),
        ("message_id", "eq", "x", "key"),
        ("country", "near", "x", "op"),
        ("country", "contains", "x" * 1001, "value"),
    ]:
        with pytest.raises(FilterError) as raised:
            Filter(key, op, value)  # type: ignore[arg-type]
        assert raised.value.field == field, (key, op, value)
    with pytest.raises(FunnelError) as funnel_raised:
        Funnel((Step("event", "A", (Filter("country", "is_set"),) * 11), Step("event", "B")), MINUTE)
    assert funnel_raised.value.field == "steps[0].filters"
    assert [parse_filter(text) for text in (
        "properties.n=2", 'properties.n="2"', "properties.plan=pro", "country=42", "properties.ok=true",
        "country!=DE", "page_path~/docs", "properties.plan=~^p.o$", "properties.n<1.5", "properties.n>-3",
        'country in ["DE", "FR"]', "properties.o.k?", "properties.o.k!?",
    )] == [
        Filter("properties.n", "eq", 2), Filter("properties.n", "eq", "2"),
        Filter("properties.plan", "eq", "pro"), Filter("country", "eq", "42"),
        Filter("properties.ok", "eq", True), Filter("country", "neq", "DE"),
        Filter("page_path", "contains", "/docs"), Filter("properties.plan", "regex", "^p.o$"),
        Filter("properties.n", "lt", 1.5), Filter("properties.n", "gt", -3),
        Filter("country", "in", ("DE", "FR")),
        Filter("properties.o.k", "is_set"), Filter("properties.o.k", "is_not_set"),
    ]  # fmt: skip
    for text in ("plan", "properties.n<", "country in DE", "properties.a?x"):
        with pytest.raises(FilterError):
            parse_filter(text)


def session_spans(events: Sequence[FunnelEvent], data: st.DataObject) -> list[SessionSpan]:
    """Up to three disjoint sessions per identity (either rule's), their edges mostly on the
    identity's own event times (exactly, or a millisecond off), so events fall on, inside and
    outside them."""
    spans = []
    for identity in ("anon-a", "anon-b", "anon-c", "a", "b", "c"):
        times = sorted({e.timestamp for e in events if identity in (e.anonymous_id, e.user_id)})
        moments = times + [T0 + timedelta(minutes=m) for m in (0, 10, 31)]
        bounds = sorted(set(data.draw(st.lists(st.sampled_from(moments), max_size=6))))
        for number, (first, last) in enumerate(zip(bounds[::2], bounds[1::2], strict=False)):
            nudge = timedelta(milliseconds=data.draw(st.sampled_from([0, 0, -1])))
            spans.append(SessionSpan(identity, f"s-{identity}-{number}", first, last + nudge))
    return spans


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=stored_events(),
    funnel=funnels(),
    data=st.data(),
    rule=st.sampled_from(["anonymous_id", "user_id"]),
)
def test_sessions_as_the_unit_equal_the_reference(
    events_table: tuple[Client, str],
    events: list[FunnelEvent],
    funnel: Funnel,
    data: st.DataObject,
    rule: SessionIdentity,
) -> None:
    check_by_sessions(*events_table, events, funnel, data, rule)


def check_by_sessions(
    client: Client,
    database: str,
    events: list[FunnelEvent],
    funnel: Funnel,
    data: st.DataObject,
    rule: SessionIdentity,
) -> None:
    """Each session's progress and the answer by sessions, over random sessions of the events."""
    spans = session_spans(events, data)
    store(client, database, events)
    store_sessions(client, database, spans)
    by_sessions = replace(funnel, unit="sessions")
    rules = Sessions(identity=rule)
    expected = funnel_progress(by_sessions, events, *RANGE, unit_of=session_of(spans, rule))
    built = progress_query(database, by_sessions, *RANGE, session_rules=rules)
    rows = client.query(built.sql, parameters=built.parameters).result_rows
    assert progress_of_rows(rows) == expected
    summary = summary_query(database, by_sessions, *RANGE, session_rules=rules)
    result = client.query(summary.sql, parameters=summary.parameters)
    row = dict(zip(result.column_names, result.result_rows[0], strict=True))
    assert summary_of_row(by_sessions, row) == summary_of_progress(by_sessions, expected)


def test_exclusions_named_cases(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    a, b, c, x = (Step("event", name) for name in "ABCX")

    def excluding(*exclusions: Exclusion, order: str = "ordered", steps: tuple[Step, ...] = (a, b)) -> Funnel:
        return Funnel(steps, 10 * MINUTE, order, exclusions=exclusions)  # type: ignore[arg-type]

    x_between = excluding(Exclusion(x, 1, 2))
    cases: list[tuple[str, Funnel, list[FunnelEvent], list[Progress]]] = [
        ("an exclusion between the steps voids the attempt; a later attempt without one counts",
         x_between,
         [at(0, name="A"), at(1, name="X"), at(2, name="A"), at(3, name="B")], [reached(2, 3)]),
        ("...and an earlier deeper attempt voided leaves the later shallower one",
         excluding(Exclusion(x, 2, 3), steps=(a, b, c)),
         [at(0, name="A"), at(1, name="B"), at(2, name="X"), at(3, name="C"), at(4, name="A"),
          at(5, name="B")], [reached(4, 5)]),
        ("to_step never reached: an exclusion after from_step inside the window voids",
         x_between, [at(0, name="A"), at(10, name="X")], []),
        ("...just outside the window it does not",
         x_between, [at(0, name="A"), at(10 + 1 / MINUTE, name="X")], [reached(0)]),
        ("an exclusion after to_step does not void", x_between,
         [at(0, name="A"), at(1, name="B"), at(2, name="X")], [reached(0, 1)]),
        ("an exclusion before from_step does not void", excluding(Exclusion(x, 2, 3), steps=(a, b, c)),
         [at(0, name="A"), at(1, name="X"), at(2, name="B"), at(3, name="C")], [reached(0, 2, 3)]),
        ("an event that is a step is not its own attempt's exclusion, a second one is",
         excluding(Exclusion(b, 1, 3), steps=(a, b, c)),
         [at(0, name="A"), at(1, name="B"), at(2, name="C")], [reached(0, 1, 2)]),
        ("...a second B between A and C voids it", excluding(Exclusion(b, 1, 3), steps=(a, b, c)),
         [at(0, name="A"), at(1, name="B"), at(2, name="B"), at(3, name="C")], []),
        ("a person with only void attempts is not in the funnel, not even at step 1", x_between,
         [at(0, name="A"), at(1, name="X"), at(2, name="A"), at(3, name="X")], []),
        ("strict: a void attempt leaves the next", excluding(Exclusion(x, 1, 2), order="strict"),
         [at(0, name="A"), at(1, name="X"), at(2, name="A"), at(3, name="B")], [reached(2, 3)]),
        ("strict: to_step reached, nothing can come between", excluding(Exclusion(x, 1, 2), order="strict"),
         [at(0, name="A"), at(1, name="B"), at(2, name="X")], [reached(0, 1)]),
        ("an exclusion with filters: only its matching events", excluding(
            Exclusion(Step("event", "X", (Filter("properties.plan", "eq", "pro"),)), 1, 2)),
         [at(0, name="A"), with_properties(at(1, name="X"), properties='{"plan": "free"}'), at(2, name="B")],
         [reached(0, 2)]),
        ("the funnel's filters leave exclusion events out too", Funnel(
            (a, b), 10 * MINUTE, exclusions=(Exclusion(x, 1, 2),), filters=(Filter("browser", "neq", "B"),)),
         [at(0, name="A"), with_properties(at(1, name="X"), browser="B"), at(2, name="B")],
         [reached(0, 2)]),
        ("no exclusions: as before", excluding(),
         [at(0, name="A"), at(1, name="X"), at(2, name="B")], [reached(0, 2)]),
    ]  # fmt: skip
    for name, funnel, events, expected in cases:
        store(client, database, events)
        assert funnel_progress(funnel, events, *RANGE) == expected, name
        assert queried(client, database, funnel) == expected, name


def test_exclusions_are_validated() -> None:
    a, b, c = Step("event", "A"), Step("event", "B"), Step("event", "C")
    for exclusions, field in [
        ((Exclusion(c, 1, 2),) * 6, "exclusions"),
        ((Exclusion(c, 0, 2),), "exclusions[0].from_step"),
        ((Exclusion(c, 1, 2), Exclusion(c, 2, 2)), "exclusions[1].from_step"),
        ((Exclusion(c, 2, 1),), "exclusions[0].from_step"),
        ((Exclusion(c, 1, 1),), "exclusions[0].to_step"),
        ((Exclusion(c, 1, 3),), "exclusions[0].to_step"),
        ((Exclusion(Step("event", ""), 1, 2),), "exclusions[0]"),
        ((Exclusion(Step("click", "x"), 1, 2),), "exclusions[0]"),  # type: ignore[arg-type]
        (
            (Exclusion(Step("event", "C", (Filter("country", "is_set"),) * 11), 1, 2),),
            "exclusions[0].filters",
        ),
    ]:
        with pytest.raises(FunnelError) as raised:
            Funnel((a, b), MINUTE, exclusions=exclusions)
        assert raised.value.field == field, exclusions
    Funnel((a, b, c), MINUTE, exclusions=(Exclusion(c, 1, 3), Exclusion(a, 2, 3)))


# Steps that overlap each other and STEPS' (an event can fill several): pages by a wider and a
# narrower glob, one event name with different filters.
OVERLAPPING = [
    Step("page", "/*"),
    Step("page", "/y/1"),
    Step("event", "A", (Filter("browser", "eq", "Chrome"),)),
    Step("event", "A", (Filter("country", "in", ("DE", "FR")),)),
]


@st.composite
def unordered_funnels(draw: st.DrawFn) -> Funnel:
    """funnels() in `unordered` order (without exclusions: not defined for it), its 2 to 5 steps
    often overlapping and repeated: events that fill several steps, where an event kept earlier
    must move to another step for a later one to be kept (an augmenting path)."""
    funnel = draw(funnels())
    plain = st.sampled_from([*STEPS[:4], *OVERLAPPING])
    step = st.integers(0, 3).flatmap(lambda n: filtered_steps() if n == 0 else plain)
    steps = tuple(draw(st.lists(step, min_size=2, max_size=5)))
    return replace(funnel, steps=steps, order="unordered", exclusions=())


# The unordered property tests together take ~40 s here: fewer examples than the tests above,
# with the named cases and the matching test beside them.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.integers(0, 2).flatmap(lambda n: stored_events(dense=n > 0, least=10)),
    funnel=unordered_funnels(),
    data=st.data(),
)
def test_unordered_equals_the_reference(
    events_table: tuple[Client, str], events: list[FunnelEvent], funnel: Funnel, data: st.DataObject
) -> None:
    """Each person's progress, the answer per step, a page of people and the breakdown in
    `unordered` order, on sparse and dense events."""
    check_against_reference(*events_table, events, funnel, data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=stored_events(least=10),
    funnel=unordered_funnels(),
    data=st.data(),
    rule=st.sampled_from(["anonymous_id", "user_id"]),
)
def test_unordered_by_sessions_equals_the_reference(
    events_table: tuple[Client, str],
    events: list[FunnelEvent],
    funnel: Funnel,
    data: st.DataObject,
    rule: SessionIdentity,
) -> None:
    check_by_sessions(*events_table, events, funnel, data, rule)


PATHS = ["/x", "/y/1", "/y/2", "/z/1"]
GLOBS = ["/*", "/y/*", "/y/1", "/y/2", "/x", "/*1", "/y*"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    views=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 12), st.sampled_from(PATHS)),
        min_size=2,
        max_size=24,
    ),
    globs=st.lists(st.sampled_from(GLOBS), min_size=2, max_size=6),
    window=st.integers(1, 8),
)
def test_unordered_matches_overlapping_pages_as_the_reference(
    events_table: tuple[Client, str], views: list[tuple[str, int, str]], globs: list[str], window: int
) -> None:
    """Page views against page steps that nearly all overlap (every view fills several, some a
    step another view needs): where keeping an event takes moving earlier ones to other steps,
    through paths of several steps. Each person's progress, as the reference's."""
    client, database = events_table
    funnel = Funnel(tuple(Step("page", glob) for glob in globs), window * MINUTE, "unordered")
    events = [
        at(minutes / 2, person, path=path, message=f"m{index:02d}")
        for index, (person, minutes, path) in enumerate(views)
    ]
    store(client, database, events)
    note(repr(funnel))
    assert queried(client, database, funnel) == funnel_progress(funnel, events, *RANGE)


def maximum_matching(rows: Sequence[Sequence[bool]]) -> int:
    """The most rows that can each fill a step of their own, by trying every assignment: each row
    a step it fills or none (-1), no step twice."""
    steps = len(rows[0]) if rows else 0
    choices = [[-1, *(step for step in range(steps) if row[step])] for row in rows]
    return max(
        (
            sum(1 for step in chosen if step >= 0)
            for chosen in itertools.product(*choices)
            if len([s for s in chosen if s >= 0]) == len({s for s in chosen if s >= 0})
        ),
        default=0,
    )


@settings(max_examples=300, deadline=None)
@given(
    fills=st.integers(1, 4).flatmap(
        lambda steps: st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps), max_size=7)
    ),
    gaps=st.lists(st.integers(0, 3), min_size=7, max_size=7),
    window=st.integers(0, 8),
)
def test_the_references_unordered_attempt_is_a_maximum_matching(
    fills: list[list[bool]], gaps: list[int], window: int
) -> None:
    """The reference's unordered attempt from each start keeps as many events as a maximum matching
    of the events in its window has (found by trying every assignment), and they are the earliest
    such events: the first matchable set of that size in lexicographic order."""
    times = list(itertools.accumulate(gaps[: len(fills)]))
    for start in range(len(fills)):
        if not any(fills[start]):
            continue
        inside = [i for i in range(start, len(fills)) if times[i] - times[start] <= window]
        kept = unordered_attempt(fills, times, start, window)
        size = maximum_matching([fills[i] for i in inside])
        assert len(kept) == size
        assert kept[0] == start
        first = next(
            list(chosen)
            for chosen in itertools.combinations(inside, size)
            if maximum_matching([fills[i] for i in chosen]) == size
        )
        assert kept == first


def test_unordered_named_cases(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    a, b, c = (Step("event", name) for name in "ABC")

    def unordered(*steps: Step, window: int = 10 * MINUTE) -> Funnel:
        return Funnel(steps, window, "unordered")

    any_page, y, y1 = Step("page", "/*"), Step("page", "/y/*"), Step("page", "/y/1")
    cases: list[tuple[str, Funnel, list[FunnelEvent], list[Progress]]] = [
        ("B then A reaches 2 in any order", unordered(a, b),
         [at(0, name="B"), at(1, name="A")], [reached(0, 1)]),
        ("...and 1 in order", Funnel((a, b), 10 * MINUTE),
         [at(0, name="B"), at(1, name="A")], [reached(1)]),
        ("an event matching two steps fills one", unordered(y, y1),
         [at(0, path="/y/1")], [reached(0)]),
        ("...a second one fills the other", unordered(y, y1),
         [at(0, path="/y/1"), at(1, path="/y/1")], [reached(0, 1)]),
        ("an event filling only a step taken first moves the earlier one (an augmenting path)",
         unordered(y, y1), [at(0, path="/y/1"), at(1, path="/y/2")], [reached(0, 1)]),
        ("...through two steps", unordered(any_page, y, y1),
         [at(0, path="/y/2"), at(1, path="/y/1"), at(2, path="/z")], [reached(0, 1, 2)]),
        ("...and none when no step is left for it", unordered(y, y1, a),
         [at(0, path="/y/2"), at(1, path="/y/2"), at(2, name="A")], [reached(1, 2)]),
        ("a repeated step needs two events", unordered(a, a),
         [at(0, name="A")], [reached(0)]),
        ("...and takes them", unordered(a, b, a),
         [at(0, name="A"), at(1, name="A"), at(2, name="B")], [reached(0, 1, 2)]),
        ("a later start reaching more is the person's", unordered(a, b, c),
         [at(0, name="A"), at(11, name="B"), at(12, name="C")], [reached(11, 12)]),
        ("...an earlier one reaching more beats a later one reaching fewer", unordered(a, b, c),
         [at(0, name="C"), at(1, name="B"), at(2, name="A"), at(20, name="A")], [reached(0, 1, 2)]),
        ("the deepest starting last, its events the earliest that fill the steps", unordered(a, b),
         [at(0, name="A"), at(1, name="A"), at(5, name="B"), at(6, name="B")], [reached(1, 5)]),
        ("the window from the start: exactly the window counts", unordered(a, b),
         [at(0, name="B"), at(10, name="A")], [reached(0, 10)]),
        ("...a millisecond later does not", unordered(a, b),
         [at(0, name="B"), at(10 + 1 / MINUTE, name="A")], [reached(10 + 1 / MINUTE)]),
        ("same millisecond: message-id order, and either order converts", unordered(a, b),
         [at(5, name="B", message="m1"), at(5, name="A", message="m2")], [reached(5, 5)]),
        ("a non-step event between changes nothing", unordered(a, b),
         [at(0, name="B"), at(1, name="C"), at(2, name="A")], [reached(0, 2)]),
    ]  # fmt: skip
    for name, funnel, events, expected in cases:
        store(client, database, events)
        assert funnel_progress(funnel, events, *RANGE) == expected, name
        assert queried(client, database, funnel) == expected, name
    # Breakdown: `first` is the start, `last` the last event kept.
    events = [with_properties(at(0, name="B"), country="FR"), with_properties(at(1, name="A"), country="DE"),
              with_properties(at(2, name="A"), country="US")]  # fmt: skip
    store(client, database, events)
    for attribution, value in (("first", "FR"), ("last", "DE")):
        funnel = Funnel((a, b), 10 * MINUTE, "unordered", Breakdown("country", attribution))  # type: ignore[arg-type]
        assert [row.breakdown for row in funnel_progress(funnel, events, *RANGE)] == [value]
        assert [row.breakdown for row in queried(client, database, funnel)] == [value]


def test_unordered_refuses_exclusions_and_step_options() -> None:
    a, b = Step("event", "A"), Step("event", "B")
    with pytest.raises(FunnelError) as raised:
        Funnel((a, b), MINUTE, "unordered", exclusions=(Exclusion(Step("event", "X"), 1, 2),))
    assert (raised.value.code, raised.value.field) == ("exclusions_unordered", "exclusions")
    Funnel((a, b), MINUTE, "unordered")
    for steps, field in [
        ((a, replace(b, window_ms=MINUTE)), "steps[1].window"),
        ((a, replace(b, optional=True), b), "steps[1].optional"),
    ]:
        with pytest.raises(FunnelError) as raised:
            Funnel(steps, MINUTE, "unordered")
        assert (raised.value.code, raised.value.field) == ("step_options_unordered", field)


# -- optional steps and step windows -----------------------------------------------------------

# Step windows around the dense events' gaps (multiples of 15 s, give or take a millisecond): equal
# to one, a millisecond either side, and wider than most.
_STEP_WINDOWS = [
    1,
    MINUTE // 4 - 1,
    MINUTE // 4,
    MINUTE // 4 + 1,
    MINUTE // 2,
    MINUTE,
    3 * MINUTE,
    30 * MINUTE,
]


@st.composite
def funnels_with_step_options(draw: st.DrawFn) -> Funnel:
    """Funnels of 3 to 5 steps, each middle step optional or not, some with a window of their own;
    often the same event or page twice, or an event filling two steps; sometimes exclusions
    (between required steps, as they must be)."""
    events = st.sampled_from([*STEPS[:3], Step("event", "D")])
    some = {0: filtered_steps(), 1: st.sampled_from(STEPS[3:])}
    base = draw(st.lists(st.integers(0, 7).flatmap(lambda n: some.get(n, events)), min_size=3, max_size=5))
    steps = []
    for index, step in enumerate(base):
        optional = 0 < index < len(base) - 1 and draw(st.booleans())
        own = draw(st.sampled_from(_STEP_WINDOWS)) if index and draw(st.integers(0, 2)) == 0 else None
        steps.append(replace(step, optional=optional, window_ms=own))
    required = [number for number, step in enumerate(steps, 1) if not step.optional]
    pairs = [(first, second) for first in required for second in required if first < second]
    chosen = draw(
        st.lists(st.sampled_from(pairs), max_size=2) if draw(st.integers(0, 2)) == 0 else st.just([])
    )
    excluded = [
        Exclusion(draw(st.sampled_from([Step("event", "D"), *STEPS[:3]])), first, second)
        for first, second in chosen
    ]
    return Funnel(
        tuple(steps),
        window_ms=draw(st.integers(1, 40).map(lambda minutes: minutes * MINUTE // 2)),
        order=draw(st.sampled_from(["ordered", "strict"])),
        breakdown=draw(
            st.none()
            | st.builds(
                Breakdown,
                column=st.sampled_from(["browser", "country"]),
                attribution=st.sampled_from(["first", "last"]),
                limit=st.integers(1, 3),
            )
        ),
        exclusions=tuple(excluded),
    )


@st.composite
def few_events(draw: st.DrawFn) -> list[FunnelEvent]:
    """A handful of track events per person, of the names the funnels use, 15 seconds apart or at
    the same millisecond: where a step taken too early loses a later one (`A, C, B` with `B`
    optional), or a step window makes the first event of a step the wrong one."""
    events = []
    for person in ("a", "b", "c"):
        for number in range(draw(st.integers(0, 7))):
            when = T0 + timedelta(milliseconds=draw(st.integers(0, 20)) * MINUTE // 4)
            name = draw(st.sampled_from("ABCD"))
            events.append(FunnelEvent(f"m{person}{number}", "track", name, person, "", when, when, "r"))
    return events


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=few_events(), funnel=funnels_with_step_options())
def test_optional_steps_and_step_windows_attempts_equal_the_reference(
    events_table: tuple[Client, str], events: list[FunnelEvent], funnel: Funnel
) -> None:
    """Each person's attempt only (one query an example, so many examples): on a handful of events
    a person, where the greedy pick of the query has to look ahead (about one example in twenty
    has a person whose attempt a pick without look-ahead gets wrong)."""
    client, database = events_table
    store(client, database, events)
    note(repr(funnel))
    assert queried(client, database, funnel) == funnel_progress(funnel, events, *RANGE)


# ~0.4 s an example (five queries): with the tests around and the trend's, about 35 s in all.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.one_of(few_events(), stored_events(dense=True), stored_events()),
    funnel=funnels_with_step_options(),
    data=st.data(),
)
def test_optional_steps_and_step_windows_equal_the_reference(
    events_table: tuple[Client, str], events: list[FunnelEvent], funnel: Funnel, data: st.DataObject
) -> None:
    """Each person's attempt, the answer per step, a page of a list of people and the breakdown,
    for funnels with optional steps and step windows (the reference enumerates every chain)."""
    check_against_reference(*events_table, events, funnel, data)


@settings(max_examples=60, deadline=None)
@given(events=stored_events(dense=True), funnel=funnels(dense=True))
def test_the_definitions_chains_give_todays_attempt_without_step_options(
    events: list[FunnelEvent], funnel: Funnel
) -> None:
    """Without optional steps and step windows, the best chain by the definition (every chain
    enumerated) is the attempt of each step at the first event filling it: the two forms of the
    reference, and so the query's two forms, agree."""
    for person_events in people(events, *RANGE).values():
        times = [milliseconds(e.timestamp) for e in person_events]
        fills = [[e.is_step(step) for step in funnel.steps] for e in person_events]
        for start in (index for index, row in enumerate(fills) if row[0]):
            assert best_chain(funnel, start, times, fills) == first_events(funnel, start, times, fills)


def test_optional_steps_and_step_windows_named_cases(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    a, b, c = (Step("event", name) for name in "ABC")
    maybe_b = replace(b, optional=True)
    abc = Funnel((a, maybe_b, c), 10 * MINUTE)
    c_within_2 = replace(c, window_ms=2 * MINUTE)
    cases: list[tuple[str, Funnel, list[FunnelEvent], list[Progress]]] = [
        ("an optional step taken", abc,
         [at(0, name="A"), at(1, name="B"), at(2, name="C")], [reached(0, 1, 2)]),
        ("A, C, B: taking the optional B would lose C, so it is skipped", abc,
         [at(0, name="A"), at(1, name="C"), at(2, name="B")], [skipping(2, 0, None, 1)]),
        ("a skipped optional step still counts the later one", abc,
         [at(0, name="A"), at(3, name="C")], [skipping(2, 0, None, 3)]),
        ("the last step not reached: the attempt ends at the required step before", abc,
         [at(0, name="A"), at(1, name="B")], [reached(0, 1)]),
        ("strict: the optional step skipped when the next event is the one after it",
         replace(abc, order="strict"),
         [at(0, name="A"), at(1, name="C")], [skipping(2, 0, None, 1)]),
        ("strict: another event between still breaks it", replace(abc, order="strict"),
         [at(0, name="A"), at(1, name="X"), at(2, name="C")], [reached(0)]),
        ("a step window makes the first B too early: the later B is the one",
         Funnel((a, b, c_within_2), 10 * MINUTE),
         [at(0, name="A"), at(1, name="B"), at(5, name="B"), at(6, name="C")], [reached(0, 5, 6)]),
        ("a step window is from the previous step taken, not the first",
         Funnel((a, maybe_b, c_within_2), 10 * MINUTE),
         [at(0, name="A"), at(4, name="B"), at(6, name="C")], [reached(0, 4, 6)]),
        ("...from the first when the optional step is skipped", Funnel((a, maybe_b, c_within_2), 10 * MINUTE),
         [at(0, name="A"), at(6, name="C")], [reached(0)]),
        ("a gap exactly the step window counts", Funnel((a, replace(b, window_ms=MINUTE)), 10 * MINUTE),
         [at(0, name="A"), at(1, name="B")], [reached(0, 1)]),
        ("a millisecond more does not", Funnel((a, replace(b, window_ms=MINUTE)), 10 * MINUTE),
         [at(0, name="A"), at(1 + 1 / MINUTE, name="B")], [reached(0)]),
        ("an optional step too long after the step before is skipped; the next step can still come",
         Funnel((a, replace(maybe_b, window_ms=MINUTE), c), 10 * MINUTE),
         [at(0, name="A"), at(5, name="B"), at(6, name="C")], [skipping(2, 0, None, 6)]),
        ("strict: the same", Funnel((a, replace(maybe_b, window_ms=MINUTE), c), 10 * MINUTE, "strict"),
         [at(0, name="A"), at(5, name="B"), at(6, name="C")], [reached(0)]),
        ("the funnel's window still bounds every step from the first",
         Funnel((a, replace(b, window_ms=8 * MINUTE), replace(c, window_ms=8 * MINUTE)), 10 * MINUTE),
         [at(0, name="A"), at(5, name="B"), at(11, name="C")], [reached(0, 5)]),
        ("of two attempts as deep, the one taking more steps, though it starts earlier", abc,
         [at(0, name="A"), at(1, name="B"), at(2, name="C"), at(3, name="A"), at(4, name="C")],
         [reached(0, 1, 2)]),
        ("of two as deep taking as many, the one starting last", abc,
         [at(0, name="A"), at(2, name="C"), at(3, name="A"), at(4, name="C")], [skipping(2, 3, None, 4)]),
    ]  # fmt: skip
    for name, funnel, events, expected in cases:
        store(client, database, events)
        assert funnel_progress(funnel, events, *RANGE) == expected, name
        assert queried(client, database, funnel) == expected, name


def skipping(skipped: int, *minutes: float | None, person: str = "a") -> Progress:
    """A person's progress with optional step `skipped` (1-based) left out (its minute None)."""
    assert minutes[skipped - 1] is None
    return Progress(
        person,
        len(minutes),
        tuple(None if m is None else milliseconds(T0) + round(m * MINUTE) for m in minutes),
    )


def test_the_answer_with_an_optional_step(events_table: tuple[Client, str]) -> None:
    """a takes A, B, C; b skips B; c reaches B only; d only A. B counts a and c; C counts a and b,
    its conversion and drop-off from A (the previous required step), its times from the step
    before it taken (B for a, A for b); who converted and who dropped at each step."""
    client, database = events_table
    funnel = Funnel((Step("event", "A"), Step("event", "B", optional=True), Step("event", "C")), 10 * MINUTE)
    events = [
        at(0, "a", "A"), at(1, "a", "B"), at(3, "a", "C"),
        at(0, "b", "A"), at(5, "b", "C"),
        at(0, "c", "A"), at(2, "c", "B"),
        at(0, "d", "A"),
    ]  # fmt: skip
    store(client, database, events)
    expected = [
        StepSummary(4, 1.0, 1.0, 0, None, None, None),
        StepSummary(2, 0.5, 0.5, 2, 2 * MINUTE, 1.5 * MINUTE, 2 * MINUTE),
        StepSummary(2, 0.5, 0.5, 2, 5 * MINUTE, 3.5 * MINUTE, 5 * MINUTE),
    ]
    progress = funnel_progress(funnel, events, *RANGE)
    assert summary_of_progress(funnel, progress) == expected
    assert summarized(client, database, funnel) == expected
    for step, status, people_there in [
        (2, "converted", ["a", "c"]),
        (2, "dropped", ["b", "d"]),
        (3, "converted", ["a", "b"]),
        (3, "dropped", ["c", "d"]),
    ]:
        list_of = PeopleList(step, status, 10)  # type: ignore[arg-type]
        assert people_page(funnel, progress, list_of) == (people_there, False), (step, status)
        assert listed(client, database, funnel, list_of) == (people_there, False), (step, status)


def test_step_options_are_validated() -> None:
    a, b, c = Step("event", "A"), Step("event", "B"), Step("event", "C")
    for steps, exclusions, code, field in [
        ((replace(a, optional=True), b, c), (), "optional_step", "steps[0].optional"),
        ((a, b, replace(c, optional=True)), (), "optional_step", "steps[2].optional"),
        ((replace(a, window_ms=MINUTE), b), (), "step_window", "steps[0].window"),
        ((a, replace(b, window_ms=0)), (), "step_window", "steps[1].window"),
        ((a, replace(b, window_ms=MAX_WINDOW_MS + 1)), (), "step_window", "steps[1].window"),
        (
            (a, replace(b, optional=True), c),
            (Exclusion(c, 2, 3),),
            "exclusion_steps",
            "exclusions[0].from_step",
        ),
        (
            (a, b, replace(b, optional=True), c),
            (Exclusion(c, 1, 3),),
            "exclusion_steps",
            "exclusions[0].to_step",
        ),
        ((a, b), (Exclusion(replace(c, optional=True), 1, 2),), "exclusion_step", "exclusions[0]"),
    ]:
        with pytest.raises(FunnelError) as raised:
            Funnel(steps, 10 * MINUTE, exclusions=exclusions)
        assert (raised.value.code, raised.value.field) == (code, field), steps
    Funnel((a, replace(b, optional=True, window_ms=MAX_WINDOW_MS), replace(c, window_ms=1)), MINUTE)


def test_funnels_without_step_options_keep_their_query() -> None:
    """Plain funnels run the one-pass forms (_ordered, _strict), not the per-start one."""
    for order in ("ordered", "strict"):
        plain = Funnel(tuple(STEPS[:3]), MINUTE, order)  # type: ignore[arg-type]
        sql = progress_query("hw_p", plain, *RANGE).sql
        form = _ordered(3) if order == "ordered" else _strict(3)
        assert form in sql and "ARRAY JOIN" not in sql
        optional = replace(plain, steps=(STEPS[0], replace(STEPS[1], optional=True), STEPS[2]))
        assert "ARRAY JOIN" in progress_query("hw_p", optional, *RANGE).sql
