"""`POST /v1/projects/{id}/funnels/query`: a funnel request as a definition, run through the
read-only executor, answered per step (docs/funnels.md)."""

from __future__ import annotations

from dataclasses import astuple
from datetime import datetime
from typing import Any

import msgspec

from headwater.analytics.funnels.definition import (
    Breakdown,
    Exclusion,
    Funnel,
    FunnelError,
    PeopleList,
    Step,
)
from headwater.analytics.funnels.filters import Filter, FilterError
from headwater.analytics.funnels.query import breakdown_query, people_query, summary_query
from headwater.analytics.funnels.summary import (
    StepSummary,
    breakdown_of_rows,
    summary_of_row,
    total_of_rows,
)
from headwater.analytics.funnels.trend import MAX_TREND_DAYS, trend_days, trend_of_rows, trend_query
from headwater.core.projects.project import database_name
from headwater.core.projects.settings import Sessions
from headwater.core.service.errors import APIError

from .query import ReadOnlyQueries
from .schemas import (
    WINDOW_UNIT_MS,
    FilterSpec,
    FunnelAnswer,
    FunnelBreakdownAnswer,
    FunnelDefinitionSpec,
    FunnelPeopleAnswer,
    FunnelRequest,
    FunnelStepAnswer,
    FunnelTrendAnswer,
    FunnelTrendDay,
    FunnelTrendRequest,
)


def definition_of(spec: FunnelDefinitionSpec, breakdown: Breakdown | None = None) -> Funnel:
    """The funnel a request describes; FunnelError naming the field at fault."""
    window_ms = spec.window.value * WINDOW_UNIT_MS[spec.window.unit]
    steps = tuple(
        Step(
            step.kind,
            step.value,
            _filters(step.filters, f"steps[{index}].filters"),
            step.optional,
            None if step.window is None else step.window.value * WINDOW_UNIT_MS[step.window.unit],
        )
        for index, step in enumerate(spec.steps)
    )
    exclusions = tuple(
        Exclusion(
            Step(each.kind, each.value, _filters(each.filters, f"exclusions[{index}].filters")),
            each.from_step,
            each.to_step,
        )
        for index, each in enumerate(spec.exclusions)
    )
    filters = _filters(spec.filters, "filters")
    return Funnel(
        steps,
        window_ms,
        spec.order,
        breakdown,
        filters,
        spec.unit,
        exclusions,
        include_bots=spec.include_bots,
    )


def _time_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise APIError(400, "invalid_field", "to must be later than from", "to")


def funnel_of(request: FunnelRequest) -> tuple[Funnel, PeopleList | None]:
    _time_range(request.start, request.end)
    try:
        asked_breakdown = request.breakdown
        breakdown = (
            None
            if asked_breakdown is None
            else Breakdown(asked_breakdown.column, asked_breakdown.attribution, asked_breakdown.limit)
        )
        funnel = definition_of(request, breakdown)
        asked = request.people
        if asked is None:
            return funnel, None
        list_of = PeopleList(asked.step, asked.status, asked.limit, asked.after)
        list_of.check(funnel)
        return funnel, list_of
    except FunnelError as exc:
        raise APIError(400, "invalid_field", str(exc), exc.field) from None


def _filters(specs: list[FilterSpec], where: str) -> tuple[Filter, ...]:
    filters = []
    for index, spec in enumerate(specs):
        value = tuple(spec.value) if isinstance(spec.value, list) else spec.value
        try:
            filters.append(Filter(spec.key, spec.op, value))
        except FilterError as exc:
            raise FunnelError(exc.code, f"{where}[{index}].{exc.field}", str(exc)) from None
    return tuple(filters)


def _regex_filters(funnel: Funnel) -> list[tuple[str, str]]:
    """Each regex filter's pattern and where the request holds it."""
    found = [
        (f.value, f"steps[{step}].filters[{index}].value")
        for step, each in enumerate(funnel.steps)
        for index, f in enumerate(each.filters)
        if f.op == "regex"
    ]
    found += [
        (f.value, f"filters[{index}].value") for index, f in enumerate(funnel.filters) if f.op == "regex"
    ]
    found += [
        (f.value, f"exclusions[{number}].filters[{index}].value")
        for number, exclusion in enumerate(funnel.exclusions)
        for index, f in enumerate(exclusion.step.filters)
        if f.op == "regex"
    ]
    return found  # type: ignore[return-value]  # a regex filter's value is a string


def check_regexes(queries: ReadOnlyQueries, project_id: str, funnel: Funnel) -> None:
    """Have ClickHouse compile each regex filter (re2, as the query will): a pattern it refuses is
    the request's error, named by its field, not a failed query."""
    for pattern, where in _regex_filters(funnel):
        try:
            queries.run_built(project_id, "SELECT match('', {pattern:String})", {"pattern": pattern})
        except APIError as exc:
            if exc.code != "query_failed":
                raise
            raise APIError(400, "invalid_field", f"not a regular expression (re2): {exc}", where) from None


def run_funnel(
    queries: ReadOnlyQueries, project_id: str, request: FunnelRequest, session_rules: Sessions | None = None
) -> dict[str, Any]:
    """The answer to `request` in the project's database (blocking: run it in a thread).
    `session_rules`: the project's, for a funnel by sessions (the identity sessions follow)."""
    funnel, list_of = funnel_of(request)
    database = database_name(project_id)
    check_regexes(queries, project_id, funnel)
    breakdown = None
    if funnel.breakdown is None:
        built = summary_query(database, funnel, request.start, request.end, session_rules)
        result = queries.run_built(project_id, built.sql, built.parameters)
        steps = _step_answers(
            request, summary_of_row(funnel, dict(zip(result.columns, result.rows[0], strict=True)))
        )
    else:
        # Everyone's answer and each value's from one pass over the people.
        built = breakdown_query(database, funnel, request.start, request.end, session_rules)
        result = queries.run_built(project_id, built.sql, built.parameters)
        rows = [dict(zip(result.columns, values, strict=True)) for values in result.rows]
        steps = _step_answers(request, total_of_rows(funnel, rows))
        breakdown = [
            FunnelBreakdownAnswer(group.value, _step_answers(request, group.steps))
            for group in breakdown_of_rows(funnel, rows)
        ]
    people = (
        None
        if list_of is None
        else _people(queries, project_id, database, funnel, request, list_of, session_rules)
    )
    answer: dict[str, Any] = msgspec.to_builtins(FunnelAnswer(steps, people, breakdown))
    return answer


def _step_answers(request: FunnelDefinitionSpec, summaries: list[StepSummary]) -> list[FunnelStepAnswer]:
    return [
        FunnelStepAnswer(spec, *astuple(summary))
        for spec, summary in zip(request.steps, summaries, strict=True)
    ]


def _people(
    queries: ReadOnlyQueries,
    project_id: str,
    database: str,
    funnel: Funnel,
    request: FunnelRequest,
    list_of: PeopleList,
    session_rules: Sessions | None,
) -> FunnelPeopleAnswer:
    built = people_query(database, funnel, request.start, request.end, list_of, session_rules)
    rows = queries.run_built(project_id, built.sql, built.parameters).rows
    page = [str(row[0]) for row in rows[: list_of.limit]]
    next_after = page[-1] if len(rows) > list_of.limit else None
    return FunnelPeopleAnswer(list_of.step, list_of.status, page, next_after)


def run_trend(
    queries: ReadOnlyQueries,
    project_id: str,
    request: FunnelTrendRequest,
    now: datetime,
    session_rules: Sessions | None = None,
) -> dict[str, Any]:
    """The daily trend of `request`'s funnel (blocking: run it in a thread)."""
    _time_range(request.start, request.end)
    if len(trend_days(request.start, request.end)) > MAX_TREND_DAYS:
        raise APIError(400, "invalid_field", f"a trend covers at most {MAX_TREND_DAYS} days", "to")
    try:
        funnel = definition_of(request)
    except FunnelError as exc:
        raise APIError(400, "invalid_field", str(exc), exc.field) from None
    check_regexes(queries, project_id, funnel)
    built = trend_query(database_name(project_id), funnel, request.start, request.end, session_rules)
    result = queries.run_built(project_id, built.sql, built.parameters)
    rows = [dict(zip(result.columns, values, strict=True)) for values in result.rows]
    days = [
        FunnelTrendDay(day.day.isoformat(), day.complete, _step_answers(request, day.steps))
        for day in trend_of_rows(funnel, rows, request.start, request.end, now)
    ]
    answer: dict[str, Any] = msgspec.to_builtins(FunnelTrendAnswer(days))
    return answer
