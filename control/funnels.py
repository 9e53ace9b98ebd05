"""`POST /v1/projects/{id}/funnels/query`: a funnel request as a definition, run through the
read-only executor, answered per step (docs/funnels.md)."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import msgspec

from headwater.analytics.funnels.definition import Funnel, FunnelError, PeopleList, Step
from headwater.analytics.funnels.query import people_query, summary_query
from headwater.analytics.funnels.summary import summary_of_row
from headwater.core.projects.project import database_name
from headwater.core.service.errors import APIError

from .query import ReadOnlyQueries
from .schemas import WINDOW_UNIT_MS, FunnelAnswer, FunnelPeopleAnswer, FunnelRequest, FunnelStepAnswer


def funnel_of(request: FunnelRequest) -> tuple[Funnel, PeopleList | None]:
    if request.end <= request.start:
        raise APIError(400, "invalid_field", "to must be later than from", "to")
    window_ms = request.window.value * WINDOW_UNIT_MS[request.window.unit]
    try:
        funnel = Funnel(
            tuple(Step(step.kind, step.value) for step in request.steps), window_ms, request.order
        )
        asked = request.people
        if asked is None:
            return funnel, None
        list_of = PeopleList(asked.step, asked.status, asked.limit, asked.after)
        list_of.check(funnel)
        return funnel, list_of
    except FunnelError as exc:
        raise APIError(400, "invalid_field", str(exc), exc.field) from None


def run_funnel(queries: ReadOnlyQueries, project_id: str, request: FunnelRequest) -> dict[str, Any]:
    """The answer to `request` in the project's database (blocking: run it in a thread)."""
    funnel, list_of = funnel_of(request)
    database = database_name(project_id)
    built = summary_query(database, funnel, request.start, request.end)
    result = queries.run_built(project_id, built.sql, built.parameters)
    row = dict(zip(result.columns, result.rows[0], strict=True))
    steps = [
        FunnelStepAnswer(spec, *astuple(summary))
        for spec, summary in zip(request.steps, summary_of_row(funnel, row), strict=True)
    ]
    people = None if list_of is None else _people(queries, project_id, funnel, request, list_of)
    answer: dict[str, Any] = msgspec.to_builtins(FunnelAnswer(steps, people))
    return answer


def _people(
    queries: ReadOnlyQueries, project_id: str, funnel: Funnel, request: FunnelRequest, list_of: PeopleList
) -> FunnelPeopleAnswer:
    built = people_query(database_name(project_id), funnel, request.start, request.end, list_of)
    rows = queries.run_built(project_id, built.sql, built.parameters).rows
    page = [str(row[0]) for row in rows[: list_of.limit]]
    next_after = page[-1] if len(rows) > list_of.limit else None
    return FunnelPeopleAnswer(list_of.step, list_of.status, page, next_after)
