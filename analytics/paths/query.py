"""The ClickHouse query answering a paths question (docs/paths.md); reference.py is the same
definition in plain Python, and the tests hold the two equal.

Parameters only: the start or end point, every cleaning rule's regex and replacement, the depth,
the edge limit and the time range are bound, never spliced (the event types of `include` are
literals of ours). Shape: the rows of the range of the included types, each as a step string
`kind:value` (a page's path cleaned by the rules in turn), grouped per person into an array, copies
of a message reduced to the one received first, sorted by (timestamp, message id) as funnels do;
runs of one step collapsed; the person's path cut around the first (last) step matching the
point; then one row per node of each path with its neighbour on the path, grouped, and the
people through each node and each edge counted with window sums over those groups in the same
pass (no subquery is read twice: ClickHouse would compute it twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from headwater.analytics.funnels.query import COPY_ORDER, NOT_A_BOT, PERSON, like_pattern

from .definition import INCLUDED_TYPES, Paths

# The select items `all_steps` and `steps` of a journey from `sorted_copies` (its copies, tuples of
# message id, copy rank, Unix milliseconds and step, sorted by message id then rank, highest
# first): each message's copy of highest rank (the one received first: COPY_ORDER), in order of
# time then message id, its steps; then `steps`, a run of one step collapsed into one. The
# patterns' journeys (patterns/source.py) read the same.
STEPS_OF_COPIES = """arrayMap(
            c -> c.4,
            arraySort(
                c -> (c.3, c.1),
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


@dataclass(frozen=True)
class PathsQuery:
    sql: str
    parameters: dict[str, Any]


def cleaned_path(paths: Paths, parameters: dict[str, Any]) -> str:
    """`page_path` with every cleaning rule applied in order, their texts bound into `parameters`."""
    expression = "page_path"
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


def _cut(paths: Paths, parameters: dict[str, Any]) -> tuple[str, str, str]:
    """The select items `at` (the index of the point among the steps, 0: none) and `path`; the
    depth of a path's first step; the depth of the point, which every path has."""
    anchor = paths.anchor
    if anchor is None:
        return "if(empty(steps), 0, 1) AS at,\n        arraySlice(steps, 1, {steps:UInt8}) AS path", "1", "1"
    if anchor.kind == "event":
        parameters["point"] = f"event:{anchor.value}"
        matching = "s -> s = {point:String}"
    else:
        parameters["point"] = f"page:{like_pattern(anchor.value)}"
        matching = "s -> s LIKE {point:String}"
    if paths.start is not None:
        first = f"arrayFirstIndex({matching}, steps) AS at"
        return f"{first},\n        arraySlice(steps, at, {{steps:UInt8}}) AS path", "1", "1"
    last = f"arrayLastIndex({matching}, steps) AS at"
    before = (
        "arraySlice(steps, greatest(1, toInt64(at) - {steps:UInt8} + 1), least(at, {steps:UInt8})) AS path"
    )
    return f"{last},\n        {before}", "{steps:UInt8} - length(path) + 1", "{steps:UInt8}"


def graph_query(database: str, paths: Paths, start: datetime, end: datetime) -> PathsQuery:
    """At most `edge_limit` rows, the heaviest edges first (graph.edge_order), each `has_edge`,
    `source_depth`, `source` and `target` (`kind:value`), `people` (on the edge), `source_people`
    and `target_people` (through its nodes) and `total` (everyone with a path). Fewer edges than
    the limit: rows of nodes ending a path (`has_edge` 0) follow, which only carry `total`.
    `database` is the project's own (hw_<id>), an identifier of ours."""
    parameters: dict[str, Any] = {
        "start": start,
        "end": end,
        "steps": paths.steps,
        "edge_limit": paths.edge_limit,
    }
    types = ", ".join(f"'{kind}'" for kind in INCLUDED_TYPES[paths.include])  # our own literals
    cleaned = cleaned_path(paths, parameters)
    cut, first_depth, point_depth = _cut(paths, parameters)
    bots = "" if paths.include_bots else f"AND {NOT_A_BOT}"
    if paths.end is None:  # each node with the next one: edge (node → next)
        neighbour = "if(has_edge, path[i + 1], '')"
        has_edge, source_depth, source, target = "i < length(path)", "depth", "step", "neighbour"
        source_people, target_people = "own_people", "other_people"
    else:  # each node with the one before: edge (previous → node)
        neighbour = "if(has_edge, path[i - 1], '')"
        has_edge, source_depth, source, target = "i > 1", "depth - 1", "neighbour", "step"
        source_people, target_people = "other_people", "own_people"
    sql = f"""
WITH
stored AS (
    SELECT {PERSON} AS person,
        groupArray((message_id, copy_rank, toUnixTimestamp64Milli(timestamp), step)) AS copies
    FROM (
        SELECT user_id, anonymous_id, message_id, copy_rank, timestamp,
            if(type = 'page', concat('page:', {cleaned}), concat('event:', event)) AS step
        FROM `{database}`.events
        WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {{end:DateTime64(3, 'UTC')}}
            AND type IN ({types}) {bots}
    )
    WHERE person != ''
    GROUP BY person
),
-- Of the copies of a message, the one of highest rank (received first).
by_message AS (
    SELECT arraySort({COPY_ORDER}, copies) AS sorted_copies FROM stored
),
journeys AS (
    SELECT
        {STEPS_OF_COPIES},
        {cut}
    FROM by_message
),
nodes AS (
    SELECT toInt64({first_depth}) + i - 1 AS depth,
        path[i] AS step,
        {has_edge} AS has_edge,
        {neighbour} AS neighbour
    FROM journeys ARRAY JOIN arrayEnumerate(path) AS i
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
)
SELECT has_edge, source_depth, source, target, people,
    {source_people} AS source_people, {target_people} AS target_people, total
FROM ranked
WHERE rank <= {{edge_limit:UInt32}}
ORDER BY rank
"""
    return PathsQuery(sql, parameters)
