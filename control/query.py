"""Read-only SQL against one project's database, confined to it and bounded in cost.

Three layers, each enforced by ClickHouse: the statement is parsed by ClickHouse and checked
against an allow-list before it runs (query_guard.py); it runs with `readonly=1` and limits on
memory, time and result rows; and, with a query URL of its own pointing to a ClickHouse server,
it runs under the project's role, which may SELECT from the project's database only
(query_grants.py). At most `max_concurrent` queries run at once, on a bounded pool of clients.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from headwater.core.projects.project import database_name
from headwater.core.service.errors import APIError

from .clickhouse import connect
from .query_grants import reader_role
from .query_guard import QueryNotAllowed, check_tree, explain_statement

# ClickHouse error codes, by what they mean to the caller.
_TOO_EXPENSIVE = {
    158: "too many rows",  # TOO_MANY_ROWS
    159: "time limit",  # TIMEOUT_EXCEEDED
    160: "too slow",  # TOO_SLOW
    241: "memory limit",  # MEMORY_LIMIT_EXCEEDED
    307: "too many bytes",  # TOO_MANY_BYTES
    396: "result too large",  # TOO_MANY_ROWS_OR_BYTES
}
_NOT_ALLOWED = {497, 81}  # ACCESS_DENIED, UNKNOWN_DATABASE (164 READONLY below)
_SYNTAX = {62}  # SYNTAX_ERROR
_BUSY = {202}  # TOO_MANY_SIMULTANEOUS_QUERIES
_CODE = re.compile(r"Code: (\d+)\.")


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[list[Any]]


# The share of a query's memory limit past which a built query's GROUP BY spills to disk.
SPILL_SHARE = 0.4


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_rows: int = 10_000
    timeout_seconds: int = 30
    max_memory_bytes: int = 1_000_000_000
    max_concurrent: int = 4


class TooManyQueries(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(429, "too_many_queries", f"{limit} queries are running already; retry shortly")
        self.headers = {"Retry-After": "1"}


def _not_allowed(message: str) -> APIError:
    return APIError(403, "query_not_allowed", message, "sql")


def _error_answer(exc: ClickHouseError) -> APIError:
    """The API's answer to a ClickHouse error, by its error code."""
    text = str(exc).strip()
    match = _CODE.search(text)
    code = int(match[1]) if match else None
    if code in _TOO_EXPENSIVE:
        return APIError(
            422, "query_too_expensive", f"the query exceeded the {_TOO_EXPENSIVE[code]}: {text}", "sql"
        )
    if code == 164:
        return _not_allowed(f"queries are read-only; SETTINGS, SET and writes are not allowed: {text}")
    if code in _NOT_ALLOWED:
        return _not_allowed(text)
    if code in _SYNTAX:
        return APIError(400, "query_syntax_error", text, "sql")
    if code in _BUSY:
        return APIError(429, "too_many_queries", text)
    return APIError(400, "query_failed", text, "sql")


class ReadOnlyQueries:
    """Runs one checked SELECT in a project's database with ClickHouse-enforced limits.

    `use_roles`: the URL's user is a query user granted every project's reader role (but no
    default role), so each query runs with exactly its project's role (a ClickHouse server only;
    the embedded engine has no per-session users)."""

    def __init__(
        self,
        clickhouse_url: str,
        max_rows: int = 10_000,
        timeout_seconds: int = 30,
        limits: QueryLimits | None = None,
        use_roles: bool = False,
    ) -> None:
        self._url = clickhouse_url
        self._limits = limits or QueryLimits(max_rows=max_rows, timeout_seconds=timeout_seconds)
        self._use_roles = use_roles
        # `readonly` last: the limits are applied before it, and it then refuses any change.
        self._settings: dict[str, Any] = {
            "max_execution_time": self._limits.timeout_seconds,
            "timeout_overflow_mode": "throw",
            "max_result_rows": self._limits.max_rows,
            "result_overflow_mode": "throw",
            "max_memory_usage": self._limits.max_memory_bytes,
            "allow_introspection_functions": 0,
            "readonly": 1,
        }
        # Built queries group a whole project's people into arrays: past this much of the memory
        # limit their aggregation goes on on disk (a funnel over 10M events of 1M people needs
        # ~1.1 GB in memory, and answers in 4.8 s instead of 3.8 s under a 1 GB limit this way).
        self._spill = {"max_bytes_before_external_group_by": int(self._limits.max_memory_bytes * SPILL_SHARE)}
        self._slots = threading.BoundedSemaphore(self._limits.max_concurrent)
        self._idle: list[Client] = []  # at most max_concurrent: one per running query
        self._lock = threading.Lock()

    def run(self, project_id: str, sql: str) -> QueryResult:
        if not sql.strip():
            raise APIError(400, "invalid_field", "sql must not be empty", "sql")
        return self._with_client(project_id, lambda client, database: self._run(client, database, sql))

    def run_built(self, project_id: str, sql: str, parameters: dict[str, Any]) -> QueryResult:
        """A query headwater built (funnels, paths: SQL of its own, every value of the caller bound
        as a parameter), in the project's database with the same limits, role and read-only mode;
        not parsed against the allow-list, which admits no bound parameters."""

        def run(client: Client, database: str) -> QueryResult:
            client.database = database
            settings = {**self._spill, **self._query_settings(database)}
            result = client.query(sql, parameters=parameters, settings=settings)
            return QueryResult(tuple(result.column_names), [list(row) for row in result.result_rows])

        return self._with_client(project_id, run)

    def _with_client(self, project_id: str, work: Callable[[Client, str], QueryResult]) -> QueryResult:
        if not self._slots.acquire(blocking=False):
            raise TooManyQueries(self._limits.max_concurrent)
        try:
            # A client that cannot connect raises as it is: `headwater query` explains a locked
            # embedded directory, the API answers 500 as for any dependency it cannot open.
            client = self._checkout()
            try:
                result = work(client, database_name(project_id))
            except OperationalError as exc:
                client.close()  # the connection may be broken: do not pool it
                raise APIError(503, "clickhouse_unavailable", str(exc).strip()) from None
            except ClickHouseError as exc:
                self._checkin(client)
                raise _error_answer(exc) from None
            except BaseException:
                self._checkin(client)
                raise
            self._checkin(client)
            return result
        finally:
            self._slots.release()

    def _role(self, database: str) -> dict[str, Any]:
        return {"role": reader_role(database)} if self._use_roles else {}

    def _query_settings(self, database: str) -> dict[str, Any]:
        return {**self._role(database), **self._settings}

    def _run(self, client: Client, database: str, sql: str) -> QueryResult:
        client.database = database
        role = self._role(database)
        settings = {**role, **self._settings}
        # Parsing only: the text travels as a bound parameter, so nothing of it executes here.
        canonical = client.query(
            "SELECT formatQuerySingleLine({sql:String})", parameters={"sql": sql}, settings=settings
        ).result_rows[0][0]
        # No SETTINGS of ours here (the client would append them to the tree); EXPLAIN AST parses.
        tree = client.raw_query(explain_statement(canonical), settings=role).decode()
        try:
            check_tree(tree, database)
        except QueryNotAllowed as exc:
            raise _not_allowed(str(exc)) from None
        result = client.query(canonical, settings=settings)
        return QueryResult(
            tuple(result.column_names), [[_jsonable(v) for v in row] for row in result.result_rows]
        )

    def _checkout(self) -> Client:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return connect(self._url)

    def _checkin(self, client: Client) -> None:
        with self._lock:
            if len(self._idle) < self._limits.max_concurrent:
                self._idle.append(client)
                return
        client.close()

    @property
    def idle_clients(self) -> int:
        """Clients kept open between queries: at most max_concurrent, whatever the project count."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()


def _jsonable(value: Any) -> Any:
    """A ClickHouse value JSON can carry: maps get string keys, integers beyond 64 bits (UInt128,
    Int256, …) become strings, as ClickHouse's own JSON output writes them."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    return value
