"""Journeys read from ClickHouse in bulk: every session's (or person's) steps in a time range, in
order, aggregated into arrays by ClickHouse and answered as ONE row, so Python never sees a row
per event nor per journey (docs/patterns.md, "Journeys").

A step is `kind:value` as in the paths query (`page:<cleaned path>`, `event:<name>`): the kind
travels with the step, so a page and an event of the same text stay two steps. `step_text` and
`step_kind` split it for the answer. The rows read are page views and track events of [start,
end); copies of a message count once (the copy received first: copy_rank, as funnels),
ordered by (timestamp, message id), a run of one step collapsed into one (a reload), as the paths
query reads them. Units: `people` (the funnels' person: the user id, else the anonymous id) or
`sessions` (each event in the session of its identity that started last at or before it, when
it lies within that session's span, as funnels by sessions read the sessions table).

Parameters only: the time range, the cleaning rules' texts and the limits are bound. Journeys are
ordered by a hash of their key (a fixed pseudo-random order: the next-step model holds out the
last fifth) and at most `max_journeys + 1` are aggregated into the answer, so a project with more
is refused without its journeys reaching Python; each keeps its first `max_steps` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from headwater.analytics.funnels.query import COPY_ORDER, NOT_A_BOT, PERSON
from headwater.analytics.paths.definition import CleaningRule, Paths
from headwater.analytics.paths.query import STEPS_OF_COPIES, cleaned_path
from headwater.analytics.sessions.query import identity_expression
from headwater.core.projects.settings import Sessions

from .journeys import Limits, TooManyJourneys

JourneyUnit = Literal["sessions", "people"]
UNITS: tuple[JourneyUnit, ...] = ("sessions", "people")


@dataclass(frozen=True)
class JourneysQuery:
    sql: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Journeys:
    """The journeys of a range, each a tuple of `kind:value` steps, and how many were cut short."""

    journeys: tuple[tuple[str, ...], ...]
    truncated: int  # journeys longer than max_steps, cut to their first max_steps steps


def step_kind(step: str) -> str:
    return step.partition(":")[0]


def step_text(step: str) -> str:
    """What the answer shows: an event's name or a page's path."""
    return step.partition(":")[2]


def journeys_query(
    database: str,
    unit: JourneyUnit,
    start: datetime,
    end: datetime,
    cleaning: tuple[CleaningRule, ...] = (),
    limits: Limits | None = None,
    session_rules: Sessions | None = None,
    include_bots: bool = False,
) -> JourneysQuery:
    """One row: `journeys` (how many, at most max_journeys + 1), `journey_steps` (Array(Array(String)),
    each journey's first max_steps steps, in the hash order of their keys) and `truncated`.
    `database` is the project's own (hw_<id>), an identifier of ours. Cleaning rules are checked
    as the paths query checks them (PathsError naming `cleaning[i]`)."""
    limits = limits or Limits()
    parameters: dict[str, Any] = {
        "start": start,
        "end": end,
        "max_steps": limits.max_steps,
        "read_journeys": limits.max_journeys + 1,
    }
    cleaned = cleaned_path(Paths(cleaning=cleaning), parameters)
    unit_key, identity, sessions_join, within = PERSON, "", "", ""
    if unit == "sessions":
        unit_key = "s.session_id"
        identity = f", {identity_expression(session_rules or Sessions())} AS session_identity"
        sessions_join = f"""
    ASOF JOIN (
        SELECT identity, session_id, started_at, ended_at FROM `{database}`.sessions FINAL
        WHERE started_at < {{end:DateTime64(3, 'UTC')}} AND ended_at >= {{start:DateTime64(3, 'UTC')}}
    ) AS s ON e.session_identity = s.identity AND e.timestamp >= s.started_at"""
        within = "AND e.timestamp <= s.ended_at"
    sql = f"""
WITH
stored AS (
    SELECT {unit_key} AS journey,
        groupArray((message_id, copy_rank, toUnixTimestamp64Milli(timestamp), step)) AS copies
    FROM (
        SELECT user_id, anonymous_id, message_id, copy_rank, timestamp,
            if(type = 'page', concat('page:', {cleaned}), concat('event:', event)) AS step{identity}
        FROM `{database}`.events
        WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {{end:DateTime64(3, 'UTC')}}
            AND type IN ('page', 'track') {"" if include_bots else f"AND {NOT_A_BOT}"}
    ) AS e{sessions_join}
    WHERE journey != '' {within}
    GROUP BY journey
    ORDER BY cityHash64(journey), journey
    LIMIT {{read_journeys:UInt64}}
),
by_message AS (
    -- Of the copies of a message, the one of highest rank (received first).
    SELECT journey, arraySort({COPY_ORDER}, copies) AS sorted_copies FROM stored
),
ordered AS (
    SELECT journey,
        {STEPS_OF_COPIES}
    FROM by_message
)
SELECT count() AS journeys,
    arrayMap(
        j -> j.3,
        arraySort(groupArray((cityHash64(journey), journey, arraySlice(steps, 1, {{max_steps:UInt32}}))))
    ) AS journey_steps,
    countIf(length(steps) > {{max_steps:UInt32}}) AS truncated
FROM ordered
"""
    return JourneysQuery(sql, parameters)


def journeys_of_row(row: dict[str, Any], limits: Limits) -> Journeys:
    """The query's one row as journeys; TooManyJourneys past the limit."""
    count = int(row["journeys"])
    if count > limits.max_journeys:
        raise TooManyJourneys(
            f"more than {limits.max_journeys} journeys in the range: ask for a shorter range"
        )
    return Journeys(tuple(tuple(steps) for steps in row["journey_steps"]), int(row["truncated"]))
