"""`POST /v1/projects/{id}/patterns/query`: the journeys of a range read through the read-only
executor in one row, mined in this process, answered as suggested funnels, drivers of a goal and
the next-step model's accuracy (docs/patterns.md, "The API")."""

from __future__ import annotations

import threading
from typing import Any

import msgspec

from headwater.analytics.funnels.definition import FunnelError
from headwater.analytics.paths.definition import CleaningRule, Paths
from headwater.analytics.patterns.analysis import PatternsQuestion, analyse
from headwater.analytics.patterns.journeys import Limits, TooManyJourneys
from headwater.analytics.patterns.prefixspan import MiningTimedOut, TooManyPatterns
from headwater.analytics.patterns.source import journeys_of_row, journeys_query
from headwater.core.projects.project import database_name
from headwater.core.projects.settings import Sessions
from headwater.core.service.errors import APIError

from .paths import REGEX_REFUSED, rule_refused
from .patterns_schemas import PatternsAnswer, PatternsRequest
from .query import ReadOnlyQueries

# The API's own input bounds (an operator may change them: ControlSettings): mining takes seconds per
# 10,000 journeys (docs/patterns.md, "Limits"), and the request waits for it.
DEFAULT_LIMITS = Limits(max_journeys=200_000, max_steps=100, max_patterns=200_000, max_seconds=120.0)


class MiningBusy(APIError):
    def __init__(self) -> None:
        super().__init__(429, "too_many_queries", "a pattern query is running already; retry shortly")
        self.headers = {"Retry-After": "5"}


def mining_slots(count: int = 1) -> threading.BoundedSemaphore:
    """How many pattern queries may run at once in a process: each holds its journeys and the
    miner's arrays in memory and keeps a core busy, so one at a time by default."""
    return threading.BoundedSemaphore(count)


def question_of(
    request: PatternsRequest, limits: Limits
) -> tuple[PatternsQuestion, tuple[CleaningRule, ...]]:
    if request.end_time <= request.start_time:
        raise APIError(400, "invalid_field", "to must be later than from", "to")
    goal = request.goal
    if goal is not None and goal.kind == "page" and "*" in goal.value:
        raise APIError(400, "invalid_field", "a goal page is an exact path, without `*`", "goal.value")
    seconds = int((request.end_time - request.start_time).total_seconds())
    question = PatternsQuestion(
        unit=request.unit,
        goal=None if goal is None else f"{goal.kind}:{goal.value}",
        top=request.top,
        min_support=request.min_support,
        max_length=request.max_length,
        next_step=request.next_step,
        range_seconds=max(1, seconds),
        limits=limits,
    )
    return question, tuple(CleaningRule(rule.regex, rule.replacement) for rule in request.cleaning)


def run_patterns(
    queries: ReadOnlyQueries,
    project_id: str,
    request: PatternsRequest,
    session_rules: Sessions | None = None,
    limits: Limits = DEFAULT_LIMITS,
    slots: threading.BoundedSemaphore | None = None,
) -> dict[str, Any]:
    """The answer to `request` in the project's database (blocking: run it in a thread); with
    `slots`, refused (429) while they are all taken."""
    question, cleaning = question_of(request, limits)
    if slots is None:
        return _run(queries, project_id, request, question, cleaning, session_rules, limits)
    if not slots.acquire(blocking=False):
        raise MiningBusy
    try:
        return _run(queries, project_id, request, question, cleaning, session_rules, limits)
    finally:
        slots.release()


def _run(
    queries: ReadOnlyQueries,
    project_id: str,
    request: PatternsRequest,
    question: PatternsQuestion,
    cleaning: tuple[CleaningRule, ...],
    session_rules: Sessions | None,
    limits: Limits,
) -> dict[str, Any]:
    try:
        built = journeys_query(
            database_name(project_id),
            question.unit,
            request.start_time,
            request.end_time,
            cleaning,
            limits,
            session_rules,
            request.include_bots,
        )
    except FunnelError as exc:  # a cleaning rule, checked as the paths query checks it
        raise APIError(400, "invalid_field", str(exc), exc.field) from None
    try:
        result = queries.run_built(project_id, built.sql, built.parameters)
    except APIError as error:
        if error.code == "query_failed" and any(word in error.message for word in REGEX_REFUSED):
            raise rule_refused(queries, project_id, Paths(cleaning=cleaning)) or error from None
        raise
    row = dict(zip(result.columns, result.rows[0], strict=True))
    try:
        journeys = journeys_of_row(row, limits)
    except TooManyJourneys as exc:
        raise APIError(422, "too_many_journeys", str(exc), "from") from None
    try:
        answer = analyse(journeys, question)
    except TooManyPatterns as exc:
        raise APIError(422, "too_many_patterns", str(exc), "min_support") from None
    except MiningTimedOut as exc:
        raise APIError(422, "mining_timed_out", str(exc), "min_support") from None
    # Through the answer's schema: what the document promises is what is sent.
    checked: dict[str, Any] = msgspec.to_builtins(msgspec.convert(answer, PatternsAnswer))
    return checked
