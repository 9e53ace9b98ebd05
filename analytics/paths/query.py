"""The ClickHouse query answering a paths question (docs/paths.md); reference.py is the same
definition in plain Python, and the tests hold the two equal.

Parameters only: the start or end point, every cleaning rule's regex and replacement, the depth,
the edge limit and the time range are bound, never spliced (the event types of `include` are
literals of ours).

Two forms of one definition (docs/paths.md, "How it is computed"):
- **numbered**, for a range of at most MAX_NUMBERED_STEPS distinct steps: a scalar subquery
  numbers the steps (each distinct page path cleaned once) in byte order of `kind:value`, and the
  events are grouped per person as numbers only: one UInt128 per event packing (milliseconds
  since `from`, the step's code), the message id's 128-bit SipHash and `copy_rank`. A string in a
  grouped array sends the grouping through ClickHouse's generic, serialized path; numeric arrays
  group several times faster (docs/benchmarks.md). Numbers become steps again in the answer's
  rows only. With many distinct steps the numbering itself costs more than it saves (ClickHouse
  copies a constant array into every block that reads it): past MAX_NUMBERED_STEPS the query
  stops with TOO_MANY_STEPS in its error (`too_many_steps`), having read only that far, and the
  caller asks again in the named form.
- **named**: each event's step string `kind:value` grouped per person in an array of (message id,
  copy rank, time, step) tuples.
Either way: copies of a message reduced to the one of highest rank; the person's steps sorted by
(timestamp, step); runs of one step collapsed; the path cut around the first (last) step matching
the point; then one row per node of each path with its neighbour, grouped, and the people through
each node and each edge counted with window sums over those groups in the same pass (no subquery
is read twice: ClickHouse would compute it twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from headwater.analytics.funnels.query import COPY_ORDER, NOT_A_BOT, PERSON, like_pattern

from .definition import INCLUDED_TYPES, Paths

T = TypeVar("T")

# Above this many distinct steps in the range, the named form (see above).
MAX_NUMBERED_STEPS = 10_000
# The numbered form's error past MAX_NUMBERED_STEPS.
TOO_MANY_STEPS = "paths: more distinct steps than the numbered form takes"


def steps_of_copies(tie: str) -> str:
    """The select items `all_steps` and `steps` of a journey from `sorted_copies` (its copies,
    tuples of message id, copy rank, Unix milliseconds and step, sorted by message id then rank,
    highest first): each message's copy of highest rank (the one received first: COPY_ORDER), in
    order of time then `tie` (`c.1` the message id, `c.4` the step), its steps; then `steps`, a
    run of one step collapsed into one."""
    return f"""arrayMap(
            c -> c.4,
            arraySort(
                c -> (c.3, {tie}),
                arrayFilter(
                    (c, previous, i) -> i = 1 OR c.1 != previous.1,
                    sorted_copies,
                    arrayPopBack(arrayPushFront(sorted_copies, sorted_copies[1])),
                    arrayEnumerate(sorted_copies)
                )
            )
        ) AS all_steps,
        -- A run of one step (a reload) is one step.
        arrayFilter(
            (s, previous, i) -> i = 1 OR s != previous,
            all_steps, arrayPopBack(arrayPushFront(all_steps, '')), arrayEnumerate(all_steps)
        ) AS steps"""


# The patterns' journeys (patterns/source.py) order a millisecond's events by message id.
STEPS_OF_COPIES = steps_of_copies("c.1")

# Each event as one number: (milliseconds since `from`) << 64 | its step's code. Sorted, a
# person's events come in the order of the definition: time, then step.
_PACKED = (
    "bitOr(bitShiftLeft(toUInt128(toUnixTimestamp64Milli(timestamp) "
    "- toUnixTimestamp64Milli({start:DateTime64(3, 'UTC')})), 64), toUInt128(step))"
)
_LOW_64 = "toUInt128(18446744073709551615)"
# A person's step codes in order from `packed`, `messages` and `ranks` (aligned arrays): of each
# message's copies the one of highest `copy_rank` (COPY_ORDER), found by sorting by (message,
# rank descending) and keeping each message's first; then sorted by the packed (time, code).
_ORDERED_CODES = f"""arrayMap(
            x -> toUInt64(bitAnd(x, {_LOW_64})),
            arraySort(arrayFilter(
                (x, message, previous, i) -> i = 1 OR message != previous,
                arraySort((x, message, rank) -> (message, bitNot(rank)), packed, messages, ranks),
                arraySort(messages) AS sorted_messages,
                arrayPopBack(arrayPushFront(sorted_messages, toUInt128(0))),
                arrayEnumerate(sorted_messages)
            ))
        )"""


@dataclass(frozen=True)
class PathsQuery:
    sql: str
    parameters: dict[str, Any]


def cleaned_path(paths: Paths, parameters: dict[str, Any], column: str = "page_path") -> str:
    """`column` (a page path) with every cleaning rule applied in order, their texts bound into
    `parameters`."""
    expression = column
    for index, rule in enumerate(paths.cleaning):
        # In a group: ClickHouse takes a pattern without metacharacters (`/`) as a plain string,
        # and then leaves `\0` in the replacement as it is (on a column, not on a constant).
        parameters[f"clean_{index}_regex"] = f"(?:{rule.regex})"
        parameters[f"clean_{index}_replacement"] = rule.replacement
        expression = (
            f"replaceRegexpAll({expression}, {{clean_{index}_regex:String}}, "
            f"{{clean_{index}_replacement:String}})"
        )
    return expression


@dataclass(frozen=True)
class _Form:
    """What differs between the two forms: `is_point`, whether a step `s` of `steps` is the point
    (SQL over `s`), and `none`, the value of no step."""

    is_point: str
    none: str


def _point(paths: Paths, parameters: dict[str, Any], name: str) -> str:
    """Whether the step named `name` (SQL, `kind:value`) is the path's point, binding it."""
    anchor = paths.anchor
    if anchor is None:
        return "0"
    if anchor.kind == "event":
        parameters["point"] = f"event:{anchor.value}"
        return f"{name} = {{point:String}}"
    parameters["point"] = f"page:{like_pattern(anchor.value)}"
    return f"{name} LIKE {{point:String}}"


def _rows(database: str, paths: Paths) -> str:
    types = ", ".join(f"'{kind}'" for kind in INCLUDED_TYPES[paths.include])  # our own literals
    bots = "" if paths.include_bots else f"AND {NOT_A_BOT}"
    return f"""`{database}`.events
            WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {{end:DateTime64(3, 'UTC')}}
                AND type IN ({types}) {bots}"""


def _graph(paths: Paths, form: _Form) -> str:
    """The CTEs from `journeys` (its `steps`) to `answer`, the answer's rows with their `rank`."""
    if paths.anchor is None:
        cut, first_depth, point_depth = (
            "if(empty(steps), 0, 1) AS at,\n        arraySlice(steps, 1, {steps:UInt8}) AS path",
            "1",
            "1",
        )
    elif paths.start is not None:
        cut = (
            f"arrayFirstIndex(s -> {form.is_point}, steps) AS at,\n        "
            "arraySlice(steps, at, {steps:UInt8}) AS path"
        )
        first_depth, point_depth = "1", "1"
    else:
        cut = (
            f"arrayLastIndex(s -> {form.is_point}, steps) AS at,\n        arraySlice(steps, "
            "greatest(1, toInt64(at) - {steps:UInt8} + 1), least(at, {steps:UInt8})) AS path"
        )
        first_depth, point_depth = "{steps:UInt8} - length(path) + 1", "{steps:UInt8}"
    if paths.end is None:  # each node with the next one: edge (node → next)
        neighbour = f"if(has_edge, path[i + 1], {form.none})"
        has_edge, source_depth, source, target = "i < length(path)", "depth", "step", "neighbour"
        source_people, target_people = "own_people", "other_people"
    else:  # each node with the one before: edge (previous → node)
        neighbour = f"if(has_edge, path[i - 1], {form.none})"
        has_edge, source_depth, source, target = "i > 1", "depth - 1", "neighbour", "step"
        source_people, target_people = "other_people", "own_people"
    return f"""cut AS (
    SELECT {cut}
    FROM journeys
),
nodes AS (
    SELECT toInt64({first_depth}) + i - 1 AS depth,
        path[i] AS step,
        {has_edge} AS has_edge,
        {neighbour} AS neighbour
    FROM cut ARRAY JOIN arrayEnumerate(path) AS i
    WHERE at > 0
),
grouped AS (
    SELECT depth, step, has_edge, neighbour, count() AS people
    FROM nodes
    GROUP BY depth, step, has_edge, neighbour
),
ranked AS (
    SELECT has_edge, {source_depth} AS source_depth, {source} AS source, {target} AS target, people,
        sum(people) OVER (PARTITION BY depth, step) AS own_people,
        sum(if(has_edge, people, 0)) OVER (PARTITION BY depth, neighbour) AS other_people,
        sum(if(depth = {point_depth}, people, 0)) OVER () AS total,
        row_number() OVER (ORDER BY has_edge DESC, people DESC, source_depth, source, target) AS rank
    FROM grouped
),
answer AS (
    SELECT has_edge, source_depth, source, target, people,
        {source_people} AS source_people, {target_people} AS target_people, total, rank
    FROM ranked
    WHERE rank <= {{edge_limit:UInt32}}
)"""


def too_many_steps(message: str) -> bool:
    """Whether a ClickHouse error is the numbered form's TOO_MANY_STEPS: ask the named form."""
    return TOO_MANY_STEPS in message


def in_either_form(
    run: Callable[[PathsQuery], T], database: str, paths: Paths, start: datetime, end: datetime
) -> tuple[T, bool]:
    """`run` of the numbered form, or of the named one where the numbered form stops with
    TOO_MANY_STEPS; and whether the numbered form answered. Any other error is raised as it is."""
    try:
        return run(graph_query(database, paths, start, end, numbered=True)), True
    except Exception as error:
        if not too_many_steps(str(error)):
            raise
    return run(graph_query(database, paths, start, end, numbered=False)), False


def graph_query(
    database: str, paths: Paths, start: datetime, end: datetime, numbered: bool = True
) -> PathsQuery:
    """At most `edge_limit` rows, the heaviest edges first (graph.edge_order), each `has_edge`,
    `source_depth`, `source` and `target` (`kind:value`), `people` (on the edge), `source_people`
    and `target_people` (through its nodes) and `total` (everyone with a path). Fewer edges than
    the limit: rows of nodes ending a path (`has_edge` 0) follow, which only carry `total`.
    `database` is the project's own (hw_<id>), an identifier of ours. `numbered`: the numbered
    form, which fails (`too_many_steps`) past MAX_NUMBERED_STEPS distinct steps; else the named."""
    parameters: dict[str, Any] = {
        "start": start,
        "end": end,
        "steps": paths.steps,
        "edge_limit": paths.edge_limit,
    }
    build = _numbered if numbered else _named
    return PathsQuery(build(database, paths, parameters), parameters)


def _named(database: str, paths: Paths, parameters: dict[str, Any]) -> str:
    cleaned = cleaned_path(paths, parameters)
    graph = _graph(paths, _Form(is_point=_point(paths, parameters, "s"), none="''"))
    return f"""
WITH
stored AS (
    SELECT {PERSON} AS person,
        groupArray((message_id, copy_rank, toUnixTimestamp64Milli(timestamp), step)) AS copies
    FROM (
        SELECT user_id, anonymous_id, message_id, copy_rank, timestamp,
            if(type = 'page', concat('page:', {cleaned}), concat('event:', event)) AS step
        FROM {_rows(database, paths)}
    )
    WHERE person != ''
    GROUP BY person
),
-- Of the copies of a message, the one of highest rank (received first).
by_message AS (
    SELECT arraySort({COPY_ORDER}, copies) AS sorted_copies FROM stored
),
journeys AS (
    SELECT {steps_of_copies("c.4")}
    FROM by_message
),
{graph}
SELECT has_edge, source_depth, source, target, people, source_people, target_people, total
FROM answer
ORDER BY rank
"""


def _numbered(database: str, paths: Paths, parameters: dict[str, Any]) -> str:
    parameters.update(most=MAX_NUMBERED_STEPS, enough=MAX_NUMBERED_STEPS + 1)
    cleaned = cleaned_path(paths, parameters, column="value")
    is_point = _point(paths, parameters, "name")
    graph = _graph(paths, _Form(is_point="bitAnd(s, 1) = 1", none="0"))
    rows = _rows(database, paths)
    return f"""
WITH
-- Every step of the range numbered from 1 in byte order of `kind:value` (each distinct page path
-- cleaned once), as its code: number * 2 + whether it is the point, so codes sort as steps do.
(
    SELECT (
        groupArrayIf(value, type = 'page'), groupArrayIf(code, type = 'page'),
        groupArrayIf(value, type != 'page'), groupArrayIf(code, type != 'page'),
        arrayMap(numbered -> numbered.2, arraySort(groupUniqArray((code, name)))),
        throwIf(count() > {{most:UInt32}}, '{TOO_MANY_STEPS}')
    )
    FROM (
        SELECT type, value, name,
            toUInt64(dense_rank() OVER (ORDER BY name)) * 2 + ({is_point}) AS code
        FROM (
            SELECT type, value,
                if(type = 'page', concat('page:', {cleaned}), concat('event:', value)) AS name
            FROM (
                SELECT DISTINCT type, if(type = 'page', page_path, event) AS value
                FROM {rows}
                LIMIT {{enough:UInt32}}
            )
        )
    )
) AS numbering,
stored AS (
    SELECT groupArray({_PACKED}) AS packed,
        groupArray(reinterpretAsUInt128(sipHash128(message_id))) AS messages,
        groupArray(copy_rank) AS ranks
    FROM (
        SELECT {PERSON} AS person, timestamp, message_id, copy_rank,
            if(type = 'page', transform(page_path, numbering.1, numbering.2, toUInt64(0)),
                transform(event, numbering.3, numbering.4, toUInt64(0))) AS step
        FROM {rows}
    )
    -- Step 0: a value the numbering did not see, written since it read (a server without
    -- one snapshot per query): left out, as if written after this query.
    WHERE person != '' AND step != 0
    GROUP BY person
),
journeys AS (
    SELECT {_ORDERED_CODES} AS all_steps,
        -- A run of one step (a reload) is one step.
        arrayFilter(
            (s, previous, i) -> i = 1 OR s != previous,
            all_steps, arrayPopBack(arrayPushFront(all_steps, toUInt64(0))), arrayEnumerate(all_steps)
        ) AS steps
    FROM stored
),
{graph}
-- Codes sort as their steps do (0, no step, as the empty string would); named here, in the
-- answer's rows only.
SELECT has_edge, source_depth,
    if(source = 0, '', arrayElement(numbering.5, intDiv(source, 2))) AS source,
    if(target = 0, '', arrayElement(numbering.5, intDiv(target, 2))) AS target,
    people, source_people, target_people, total
FROM answer
ORDER BY rank
"""
