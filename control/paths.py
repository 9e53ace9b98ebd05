"""`POST /v1/projects/{id}/paths/query`: a paths request as a definition, run through the
read-only executor, answered as nodes and weighted edges (docs/paths.md)."""

from __future__ import annotations

from typing import Any

import msgspec

from headwater.analytics.funnels.definition import FunnelError, Step
from headwater.analytics.paths.definition import CleaningRule, Paths
from headwater.analytics.paths.graph import PathsGraph, graph_of_rows
from headwater.analytics.paths.query import PathsQuery, in_either_form, too_many_steps
from headwater.core.projects.project import database_name
from headwater.core.service.errors import APIError

from .query import QueryResult, ReadOnlyQueries
from .schemas import PathsAnswer, PathsEdge, PathsNode, PathsRequest, PathsStep, StepSpec

# ClickHouse's words for a regex or a replacement it cannot use (error 36, BAD_ARGUMENTS, or 427,
# CANNOT_COMPILE_REGEXP): a rule our own checks let through that re2 refuses.
REGEX_REFUSED = ("re2", "regexp", "Substitution", "capturing group")


def _point(spec: StepSpec | None) -> Step | None:
    return None if spec is None else Step(spec.kind, spec.value)


def paths_of(request: PathsRequest) -> Paths:
    if request.end_time <= request.start_time:
        raise APIError(400, "invalid_field", "to must be later than from", "to")
    try:
        return Paths(
            start=_point(request.start),
            end=_point(request.end),
            steps=request.steps,
            include=request.include,
            cleaning=tuple(CleaningRule(rule.regex, rule.replacement) for rule in request.cleaning),
            edge_limit=request.edge_limit,
            include_bots=request.include_bots,
        )
    except FunnelError as exc:
        raise APIError(400, "invalid_field", str(exc), exc.field) from None


def run_paths(queries: ReadOnlyQueries, project_id: str, request: PathsRequest) -> dict[str, Any]:
    """The answer to `request` in the project's database (blocking: run it in a thread)."""
    paths = paths_of(request)
    result, _ = in_either_form(
        lambda built: _graph_rows(queries, project_id, paths, built),
        database_name(project_id),
        paths,
        request.start_time,
        request.end_time,
    )
    rows = [dict(zip(result.columns, values, strict=True)) for values in result.rows]
    answer: dict[str, Any] = msgspec.to_builtins(answer_of(graph_of_rows(rows)))
    return answer


def _graph_rows(queries: ReadOnlyQueries, project_id: str, paths: Paths, built: PathsQuery) -> QueryResult:
    """The rows of one form of the graph query; a cleaning rule ClickHouse refuses as a 400 naming
    it (not the numbered form's TOO_MANY_STEPS, on which in_either_form asks the named form)."""
    try:
        return queries.run_built(project_id, built.sql, built.parameters)
    except APIError as error:
        if error.code != "query_failed" or too_many_steps(error.message):
            raise
        if any(word in error.message for word in REGEX_REFUSED):
            raise rule_refused(queries, project_id, paths) or error from None
        raise


def rule_refused(queries: ReadOnlyQueries, project_id: str, paths: Paths) -> APIError | None:
    """The first cleaning rule ClickHouse refuses on its own, as a 400 naming it."""
    for index, rule in enumerate(paths.cleaning):
        try:
            queries.run_built(
                project_id,
                "SELECT replaceRegexpAll('', {regex:String}, {replacement:String})",
                {"regex": rule.regex, "replacement": rule.replacement},
            )
        except APIError as error:
            if error.code != "query_failed":
                raise
            part = "replacement" if "Substitution" in error.message else "regex"
            return APIError(400, "invalid_field", error.message, f"cleaning[{index}].{part}")
    return None


def answer_of(graph: PathsGraph) -> PathsAnswer:
    nodes = [
        PathsNode(node.id, node.depth, PathsStep(node.kind, node.value), people)  # type: ignore[arg-type]
        for node, people in graph.nodes
    ]
    edges = [PathsEdge(edge.source.id, edge.target.id, edge.people) for edge in graph.edges]
    return PathsAnswer(graph.people, nodes, edges)
