"""`POST /v1/projects/{id}/funnels/query`: a funnel request as a definition, run through the
read-only executor, answered per step (docs/funnels.md)."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import msgspec

from headwater.analytics.funnels.definition import Funnel, FunnelError, Step
from headwater.analytics.funnels.query import summary_query
from headwater.analytics.funnels.summary import summary_of_row
from headwater.core.projects.project import database_name
from headwater.core.service.errors import APIError

from .query import ReadOnlyQueries
from .schemas import WINDOW_UNIT_MS, FunnelAnswer, FunnelRequest, FunnelStepAnswer


def funnel_of(request: FunnelRequest) -> Funnel:
    if request.end <= request.start:
        raise APIError(400, "invalid_field", "to must be later than from", "to")
    window_ms = request.window.value * WINDOW_UNIT_MS[request.window.unit]
    try:
        return Funnel(tuple(Step(step.kind, step.value) for step in request.steps), window_ms, request.order)
    except FunnelError as exc:
        raise APIError(400, "invalid_field", str(exc), exc.field) from None


def run_funnel(queries: ReadOnlyQueries, project_id: str, request: FunnelRequest) -> dict[str, Any]:
    """The answer to `request` in the project's database (blocking: run it in a thread)."""
    funnel = funnel_of(request)
    built = summary_query(database_name(project_id), funnel, request.start, request.end)
    result = queries.run_built(project_id, built.sql, built.parameters)
    row = dict(zip(result.columns, result.rows[0], strict=True))
    steps = [
        FunnelStepAnswer(spec, *astuple(summary))
        for spec, summary in zip(request.steps, summary_of_row(funnel, row), strict=True)
    ]
    answer: dict[str, Any] = msgspec.to_builtins(FunnelAnswer(steps))
    return answer
