"""A data subject's export: every event and session of the person, as JSON lines.

Read through the read-only executor (control/query.py: confined to the project's database, with
its limits), page by page, so the answer is streamed and memory stays at one page. Each line is
`{"table": "events"|"sessions", "row": {...}}` (events de-duplicated, sessions as their newest
computation); a table with more than MAX_EXPORT_ROWS rows of the person ends with
`{"table": ..., "truncated": true}`, a failure half-way with `{"error": ...}` (the status was sent).
The person is the user id and the anonymous ids named, plus those that appear on the user id's
events, as for a deletion.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.core.service.errors import APIError

from .query import ReadOnlyQueries
from .subjects import MAX_LINKED_ANONYMOUS_IDS
from .subjects_schemas import DataSubjectRequest

MAX_EXPORT_ROWS = 100_000  # per table
PAGE_ROWS = 1_000
# Each table with its person condition (bound parameters only) and a total order for paging.
_TABLES: dict[str, tuple[str, str]] = {
    "events": (
        "user_id IN {users:Array(String)} OR anonymous_id IN {anonymous:Array(String)}",
        "timestamp, message_id",
    ),
    "sessions": (
        "identity IN {everyone:Array(String)} OR user_id IN {users:Array(String)} "
        "OR anonymous_id IN {anonymous:Array(String)}",
        "started_at, identity, session_id",
    ),
}


@dataclass(frozen=True, slots=True)
class Person:
    users: list[str]
    anonymous: list[str]

    def parameters(self) -> dict[str, Any]:
        return {"users": self.users, "anonymous": self.anonymous, "everyone": self.users + self.anonymous}


def resolve_person(queries: ReadOnlyQueries, project_id: str, request: DataSubjectRequest) -> Person:
    """The request's ids plus the anonymous ids on the user id's events."""
    users = [request.user_id] if request.user_id is not None else []
    anonymous = set(request.anonymous_ids)
    if users:
        sql = """
            SELECT DISTINCT anonymous_id FROM events
            WHERE user_id = {user_id:String} AND anonymous_id != '' LIMIT {limit:UInt32}
        """
        parameters = {"user_id": users[0], "limit": MAX_LINKED_ANONYMOUS_IDS + 1}
        rows = queries.run_built(project_id, sql, parameters).rows
        if len(rows) > MAX_LINKED_ANONYMOUS_IDS:
            raise APIError(
                422,
                "too_many_linked_ids",
                f"the user id appears with more than {MAX_LINKED_ANONYMOUS_IDS} anonymous ids; "
                "name the anonymous ids instead",
                "user_id",
            )
        anonymous.update(str(row[0]) for row in rows)
    return Person(users, sorted(anonymous))


def _line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_NAIVE_UTC, default=str) + b"\n"


async def export_lines(queries: ReadOnlyQueries, project_id: str, person: Person) -> AsyncIterator[bytes]:
    """The person's rows, table by table, as JSON lines."""
    try:
        for table, (condition, order) in _TABLES.items():
            async for line in _table_lines(queries, project_id, person, table, condition, order):
                yield line
    except APIError as exc:  # the status line is sent already: say it in the stream
        yield _line({"error": exc.to_dict()})


async def _table_lines(
    queries: ReadOnlyQueries, project_id: str, person: Person, table: str, condition: str, order: str
) -> AsyncIterator[bytes]:
    sql = f"""
        SELECT * FROM {table} FINAL WHERE {condition}
        ORDER BY {order} LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}
    """
    offset = 0
    while offset < MAX_EXPORT_ROWS:
        limit = min(PAGE_ROWS, MAX_EXPORT_ROWS - offset)
        parameters = {**person.parameters(), "limit": limit, "offset": offset}
        result = await asyncio.to_thread(queries.run_built, project_id, sql, parameters)
        for row in result.rows:
            yield _line({"table": table, "row": dict(zip(result.columns, row, strict=True))})
        offset += len(result.rows)
        if len(result.rows) < limit:
            return
    yield _line({"table": table, "truncated": True})
