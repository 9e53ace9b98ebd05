"""The paths query on the embedded ClickHouse against the reference paths: a property test on
random events, points, depths, included kinds, cleaning rules and edge limits, and named examples
of each rule (docs/paths.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from hw_funnels import store
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from headwater.analytics.funnels.definition import Step
from headwater.analytics.funnels.reference import FunnelEvent
from headwater.analytics.paths.definition import CleaningRule, Paths, PathsError, check_rule, parse_rule
from headwater.analytics.paths.graph import Edge, Node, PathsGraph, graph_of_paths, graph_of_rows
from headwater.analytics.paths.query import MAX_NUMBERED_STEPS, cleaned_path, graph_query, too_many_steps
from headwater.analytics.paths.reference import clean, person_paths
from headwater.control.paths import answer_of, run_paths
from headwater.control.query import ReadOnlyQueries
from headwater.control.schemas import PathsRequest

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RANGE = (T0 - timedelta(days=1), T0 + timedelta(days=1))
MINUTE = 60_000


@pytest.fixture
def events_table(clickhouse: Client, project_id: str) -> tuple[Client, str]:
    return clickhouse, f"hw_{project_id}"


def queried(
    client: Client, database: str, paths: Paths, span: tuple[datetime, datetime] = RANGE
) -> PathsGraph:
    """The answer of both forms of the query, which must agree."""
    answers = []
    for numbered in (False, True):
        built = graph_query(database, paths, *span, numbered=numbered)
        result = client.query(built.sql, parameters=built.parameters)
        rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
        answers.append(graph_of_rows(rows))
    named, numbered_answer = answers
    assert numbered_answer == named, "the numbered form differs from the named one"
    return named


def expected(
    paths: Paths, events: Sequence[FunnelEvent], span: tuple[datetime, datetime] = RANGE
) -> PathsGraph:
    return graph_of_paths(paths, person_paths(paths, events, *span))


def at(minutes: float, person: str = "a", name: str = "", path: str = "", message: str = "") -> FunnelEvent:
    when = T0 + timedelta(minutes=minutes)
    kind = "page" if path else "track"
    return FunnelEvent(
        message or f"m{minutes}-{person}-{name}{path}", kind, name, person, "", when, when, "r", path
    )


PATHS = ["/x", "/y/1", "/y/22", "/y/3/edit", "/z", "/users/7", "/users/12", "/a_b%"]
POINTS = [Step("event", "A"), Step("event", "B"), Step("page", "/y/*"), Step("page", "/x"), Step("page", "*")]
# Regexes that mean the same in Python's re and in re2, none matching the empty string (where the
# two place empty matches differently), and replacements using their groups.
RULES = [
    CleaningRule(r"/\d+", "/:id"),
    CleaningRule(r"^/users/(\d+)$", r"/people/\1"),
    CleaningRule(r"/y/(\d)\d*", r"/y/\1\0"),
    CleaningRule(r"[_%]", "-"),
    CleaningRule(r"/(edit|view)$", ""),
    CleaningRule(r"(?i)/Y", r"/Why\\"),
    CleaningRule(r"z|x", "q"),
    CleaningRule(r"(a)?_(b)", r"[\1|\2]"),
    CleaningRule("/", r"<\0>"),  # no metacharacter: ClickHouse would take it as a plain string
]


@st.composite
def stored_events(draw: st.DrawFn) -> list[FunnelEvent]:
    events = []
    for number in range(draw(st.integers(0, 30))):
        person = draw(st.sampled_from(["a", "b", "c", "d"]))
        identified = draw(st.booleans())
        kind = draw(st.sampled_from(["page", "page", "track", "track", "identify"]))
        # Minutes, and sometimes the same millisecond as another event (ties).
        when = T0 + timedelta(
            milliseconds=draw(st.integers(0, 120)) * MINUTE // 4 + draw(st.sampled_from([0, 0, 1]))
        )
        event = FunnelEvent(
            message_id=f"m{number:02d}",
            type=kind,
            event=draw(st.sampled_from(["A", "B", "C", ""])) if kind == "track" else "",
            anonymous_id=f"anon-{person}",
            user_id=person if identified else "",
            timestamp=when,
            received_at=when + timedelta(seconds=1),
            request_id=f"r{number}",
            page_path=draw(st.sampled_from(PATHS)) if kind == "page" else "",
            is_bot=draw(st.integers(0, 5)) == 0,
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
                        "is_bot": event.is_bot != (draw(st.integers(0, 3)) == 0),
                    }
                )
            )
    return events


_ATOMS = ["/", "y", "x", "u", "s", "_", "%", r"\d", "[0-9]", "[a-z]", "[^/]", ".", r"\.", "[_%]"]


@st.composite
def random_rules(draw: st.DrawFn) -> CleaningRule:
    """A random regex of pieces that each match at least one character (so no empty match: Python
    and re2 place empty matches differently), some in groups, some repeated, maybe anchored or
    two alternatives; and a replacement referring to its groups and escaping characters."""

    def alternative() -> tuple[str, int]:
        pieces, groups = [], 0
        for _ in range(draw(st.integers(1, 4))):
            piece = "".join(draw(st.lists(st.sampled_from(_ATOMS), min_size=1, max_size=2)))
            piece += draw(st.sampled_from(["", "", "+", "{1,2}"]))
            if draw(st.booleans()):
                piece, groups = f"({piece})", groups + 1
            pieces.append(piece)
        anchored = draw(st.sampled_from(["", "^", "$", "^$"]))
        text = "".join(pieces)
        return ("^" if "^" in anchored else "") + text + ("$" if "$" in anchored else ""), groups

    first, groups = alternative()
    if draw(st.booleans()):
        second, more = alternative()
        first, groups = f"{first}|{second}", groups + more
    references = [f"\\{group}" for group in range(groups + 1)]
    replacement = "".join(
        draw(st.lists(st.sampled_from([*references, ":id", "/", "\\\\", "\\x", "-"]), max_size=4))
    )
    return CleaningRule(first, replacement)


@st.composite
def questions(draw: st.DrawFn) -> Paths:
    include = draw(st.sampled_from(["pages", "events", "both"]))
    kinds = {"pages": ("page",), "events": ("event",), "both": ("page", "event")}[include]
    point = draw(st.none() | st.sampled_from([p for p in POINTS if p.kind in kinds]))
    at_end = draw(st.booleans())
    return Paths(
        start=None if at_end else point,
        end=point if at_end else None,
        steps=draw(st.integers(2, 5)),
        include=include,  # type: ignore[arg-type]
        cleaning=tuple(draw(st.lists(st.sampled_from(RULES) | random_rules(), max_size=3))),
        edge_limit=draw(st.integers(1, 8)),
        include_bots=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=stored_events(), paths=questions())
def test_the_query_equals_the_reference(
    events_table: tuple[Client, str], events: list[FunnelEvent], paths: Paths
) -> None:
    """The edges, the nodes they touch and the people, as the reference counts them."""
    client, database = events_table
    store(client, database, events)
    note(repr(paths))
    assert queried(client, database, paths) == expected(paths, events)


def node(depth: int, step: str) -> Node:
    kind, _, value = step.partition(":")
    return Node(depth, kind, value)


def edge(depth: int, source: str, target: str, people: int) -> Edge:
    return Edge(node(depth, source), node(depth + 1, target), people)


def check(client: Client, database: str, paths: Paths, events: list[FunnelEvent], graph: PathsGraph) -> None:
    store(client, database, events)
    assert expected(paths, events) == graph
    assert queried(client, database, paths) == graph


def test_ties_collapsed_repeats_and_node_counts(events_table: tuple[Client, str]) -> None:
    """a: /x /x /y B (the reload of /x is one step); b: /x B /y; c: /x alone. Edges of equal weight
    in depth order, then by `kind:value` in byte order ("event:B" before "page:/y")."""
    client, database = events_table
    events = [
        at(0, "a", path="/x"), at(1, "a", path="/x"), at(2, "a", path="/y"), at(3, "a", "B"),
        at(0, "b", path="/x"), at(1, "b", "B"), at(2, "b", path="/y"),
        at(0, "c", path="/x"),
    ]  # fmt: skip
    paths = Paths(start=Step("page", "/x"), steps=3)
    graph = PathsGraph(
        3,
        [
            (node(1, "page:/x"), 3),
            (node(2, "event:B"), 1),
            (node(2, "page:/y"), 1),
            (node(3, "event:B"), 1),
            (node(3, "page:/y"), 1),
        ],
        [
            edge(1, "page:/x", "event:B", 1),
            edge(1, "page:/x", "page:/y", 1),
            edge(2, "event:B", "page:/y", 1),
            edge(2, "page:/y", "event:B", 1),
        ],
    )
    check(client, database, paths, events, graph)
    # The edge limit keeps the heaviest after that order; nodes only as its edges touch them.
    limited = Paths(start=Step("page", "/x"), steps=3, edge_limit=1)
    check(client, database, limited, events, PathsGraph(3, graph.nodes[:2], graph.edges[:1]))
    # Pages only: B is no step, so a's and b's paths are /x /y; c's /x.
    pages = Paths(start=Step("page", "/x"), steps=3, include="pages")
    check(
        client,
        database,
        pages,
        events,
        PathsGraph(3, [(node(1, "page:/x"), 3), (node(2, "page:/y"), 2)], [edge(1, "page:/x", "page:/y", 2)]),
    )


def test_copies_count_once_and_the_range_is_half_open(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    first = at(0, "a", "A")
    copy = FunnelEvent(
        **{**asdict(first), "request_id": "r2", "received_at": first.received_at + timedelta(seconds=1)}
    )
    # The copy of B received first is the one at minute 3: after C.
    b_late = at(3, "a", "B", message="mb")
    b_early = FunnelEvent(**{**asdict(b_late), "timestamp": T0 + timedelta(minutes=1), "request_id": "r3",
                             "received_at": b_late.received_at + timedelta(seconds=5)})  # fmt: skip
    events = [first, copy, b_late, b_early, at(2, "a", "C"), at(60, "a", "D")]
    paths = Paths(start=Step("event", "A"), steps=4)
    span = (T0, T0 + timedelta(minutes=60))
    graph = PathsGraph(
        1,
        [(node(1, "event:A"), 1), (node(2, "event:C"), 1), (node(3, "event:B"), 1)],
        [edge(1, "event:A", "event:C", 1), edge(2, "event:C", "event:B", 1)],
    )
    store(client, database, events)
    assert expected(paths, events, span) == graph
    assert queried(client, database, paths, span) == graph


def test_one_millisecond_is_ordered_by_step_not_by_message(events_table: tuple[Client, str]) -> None:
    """Two events of one millisecond come in byte order of `kind:value`, whatever their message
    ids: /x (message m1) and A (message m2) at minute 0 are A then /x; and a step repeated in that
    millisecond is one run even with another message id between (B, C, B: B then C)."""
    client, database = events_table
    events = [
        at(0, "a", path="/x", message="m1"), at(0, "a", "A", message="m2"), at(1, "a", "Z"),
        at(0, "b", "A"), at(1, "b", "B", message="m1"), at(1, "b", "C", message="m2"),
        at(1, "b", "B", message="m3"),
    ]  # fmt: skip
    paths = Paths(start=Step("event", "A"), steps=3)
    graph = PathsGraph(
        2,
        [
            (node(1, "event:A"), 2),
            (node(2, "event:B"), 1),
            (node(2, "page:/x"), 1),
            (node(3, "event:C"), 1),
            (node(3, "event:Z"), 1),
        ],
        [
            edge(1, "event:A", "event:B", 1),
            edge(1, "event:A", "page:/x", 1),
            edge(2, "event:B", "event:C", 1),
            edge(2, "page:/x", "event:Z", 1),
        ],
    )
    check(client, database, paths, events, graph)


def test_too_many_distinct_steps_for_the_numbered_form(
    events_table: tuple[Client, str], clickhouse_url: str, project_id: str
) -> None:
    """At MAX_NUMBERED_STEPS distinct page paths the numbered form answers (they are counted
    before cleaning, which makes them one step here); past it, it stops with its error and the
    API's answer is the named form's, the reference's."""
    client, database = events_table
    person_of = ["a", "b", "c"]
    pages = [
        at(number / 1000, person_of[number % 3], path=f"/q/{number}") for number in range(MAX_NUMBERED_STEPS)
    ]
    paths = Paths(start=Step("page", "/q/:id"), steps=3, cleaning=(CleaningRule(r"/\d+", "/:id"),))
    store(client, database, pages)
    assert queried(client, database, paths) == expected(paths, pages)  # both forms, at the limit
    events = [*pages, at(20, "a", "A"), at(30, "c", path="/q/x")]
    store(client, database, events)
    numbered = graph_query(database, paths, *RANGE)
    with pytest.raises(ClickHouseError) as raised:
        client.query(numbered.sql, parameters=numbered.parameters)
    assert too_many_steps(str(raised.value))
    request = msgspec.convert(
        {
            "from": RANGE[0].isoformat(),
            "to": RANGE[1].isoformat(),
            "start": {"kind": "page", "value": "/q/:id"},
            "steps": 3,
            "cleaning": [{"regex": r"/\d+", "replacement": "/:id"}],
        },
        PathsRequest,
    )
    queries = ReadOnlyQueries(clickhouse_url)
    try:
        answer = run_paths(queries, project_id, request)
    finally:
        queries.close()
    graph = expected(paths, events)
    assert answer == msgspec.to_builtins(answer_of(graph))
    assert answer["people"] == 3 and answer["edges"]


def test_a_start_at_the_last_step_and_an_end_at_the_first(events_table: tuple[Client, str]) -> None:
    """A person whose start point is their last step counts, with a path of one node and no edge;
    so does one whose end point is their first step, at the last depth."""
    client, database = events_table
    events = [at(0, "a", "A"), at(1, "a", "B"), at(0, "b", "B"), at(1, "b", "A")]
    check(
        client,
        database,
        Paths(start=Step("event", "B"), steps=3),
        events,
        PathsGraph(2, [(node(1, "event:B"), 2), (node(2, "event:A"), 1)], [edge(1, "event:B", "event:A", 1)]),
    )
    check(
        client,
        database,
        Paths(end=Step("event", "A"), steps=3),
        events,
        PathsGraph(2, [(node(2, "event:B"), 1), (node(3, "event:A"), 2)], [edge(2, "event:B", "event:A", 1)]),
    )
    # The first matching step with a start point, the last with an end point.
    events = [at(0, "a", "A"), at(1, "a", "B"), at(2, "a", "A"), at(3, "a", "C")]
    check(
        client,
        database,
        Paths(start=Step("event", "A"), steps=2),
        events,
        PathsGraph(1, [(node(1, "event:A"), 1), (node(2, "event:B"), 1)], [edge(1, "event:A", "event:B", 1)]),
    )
    check(
        client,
        database,
        Paths(end=Step("event", "A"), steps=2),
        events,
        PathsGraph(1, [(node(1, "event:B"), 1), (node(2, "event:A"), 1)], [edge(1, "event:B", "event:A", 1)]),
    )
    # Nobody matching: nobody counted.
    check(client, database, Paths(start=Step("event", "Z")), events, PathsGraph(0, [], []))


def test_cleaning_merges_paths_before_repeats_collapse(events_table: tuple[Client, str]) -> None:
    """/users/7 and /users/12 are one step once cleaned, so a's visit to both is one step."""
    client, database = events_table
    events = [
        at(0, "a", path="/pricing"), at(1, "a", path="/users/7"), at(2, "a", path="/users/12"),
        at(3, "a", path="/done"), at(0, "b", path="/pricing"), at(1, "b", path="/users/99"),
    ]  # fmt: skip
    rules = (CleaningRule(r"^/users/\d+", "/users/:id"),)
    paths = Paths(start=Step("page", "/pri*"), steps=3, cleaning=rules)
    graph = PathsGraph(
        2,
        [(node(1, "page:/pricing"), 2), (node(2, "page:/users/:id"), 2), (node(3, "page:/done"), 1)],
        [edge(1, "page:/pricing", "page:/users/:id", 2), edge(2, "page:/users/:id", "page:/done", 1)],
    )
    check(client, database, paths, events, graph)
    # The start point is matched against the cleaned path.
    check(
        client,
        database,
        Paths(start=Step("page", "/users/:id"), steps=2, cleaning=rules),
        events,
        PathsGraph(
            2,
            [(node(1, "page:/users/:id"), 2), (node(2, "page:/done"), 1)],
            [edge(1, "page:/users/:id", "page:/done", 1)],
        ),
    )


@pytest.mark.parametrize("rule", RULES)
def test_cleaning_is_replace_regexp_all(events_table: tuple[Client, str], rule: CleaningRule) -> None:
    """The reference's cleaning and the query's, on a column (a constant takes another path)."""
    client, _ = events_table
    parameters: dict[str, object] = {}
    expression = cleaned_path(Paths(cleaning=(rule,)), parameters)
    for path in [*PATHS, "", "/Y/5/y/66", "/a_b"]:
        theirs = client.query(
            f"SELECT {expression} FROM (SELECT materialize({{path:String}}) AS page_path)",
            parameters={**parameters, "path": path},
        ).result_rows[0][0]
        assert clean(path, [rule]) == theirs, (path, rule)


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (CleaningRule("(", "x"), "cleaning[0].regex"),
        (CleaningRule("", "x"), "cleaning[0].regex"),
        (CleaningRule("(?=a)b", "x"), "cleaning[0].regex"),
        (CleaningRule(r"(a)\1", "x"), "cleaning[0].regex"),
        (CleaningRule("a++", "x"), "cleaning[0].regex"),
        (CleaningRule("(a)", r"\2"), "cleaning[0].replacement"),
    ],
)
def test_rules_are_validated(rule: CleaningRule, field: str) -> None:
    with pytest.raises(PathsError) as raised:
        Paths(cleaning=(rule,))
    assert raised.value.field == field
    with pytest.raises(PathsError):
        check_rule(rule, 0)


def test_questions_are_validated() -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"start": Step("event", "A"), "end": Step("event", "B")}, "end"),
        ({"steps": 1}, "steps"),
        ({"steps": 11}, "steps"),
        ({"edge_limit": 0}, "edge_limit"),
        ({"edge_limit": 501}, "edge_limit"),
        ({"start": Step("page", "/x"), "include": "events"}, "start"),
        ({"end": Step("event", "A"), "include": "pages"}, "end"),
        ({"start": Step("event", "")}, "start.value"),
        ({"cleaning": (CleaningRule("a", "b"),) * 21}, "cleaning"),
    ]
    for fields, field in cases:
        with pytest.raises(PathsError) as raised:
            Paths(**fields)  # type: ignore[arg-type]
        assert raised.value.field == field, fields
    assert parse_rule(r"/users/\d+=>/users/:id") == CleaningRule(r"/users/\d+", "/users/:id")
    with pytest.raises(PathsError):
        parse_rule("no arrow")
    assert Node(2, "page", "/pricing").id == "2:page:/pricing"
    assert re.fullmatch(r"\d+:(page|event):.*", Node(10, "event", "A").id)
