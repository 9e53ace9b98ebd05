"""Read-only SQL against one project's database; read-only is enforced by ClickHouse itself."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from .clickhouse import connect
from .errors import APIError
from .project import database_name


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: list[list[Any]]


class ReadOnlyQueries:
    """Runs a query with `readonly=1` (ClickHouse refuses writes, DDL and setting changes) and
    limits on rows and time. One client per project database, opened on first use."""

    def __init__(self, clickhouse_url: str, max_rows: int, timeout_seconds: int) -> None:
        self._url = clickhouse_url
        # `readonly` last: the limits are applied before it, and it then refuses any change.
        self._settings = {
            "max_execution_time": timeout_seconds,
            "max_result_rows": max_rows,
            "result_overflow_mode": "throw",
            "readonly": 1,
        }
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()

    def _client(self, database: str) -> Client:
        with self._lock:
            client = self._clients.get(database)
            if client is None:
                client = self._clients[database] = connect(self._url, database=database)
            return client

    def run(self, project_id: str, sql: str) -> QueryResult:
        if not sql.strip():
            raise APIError(400, "invalid_field", "sql must not be empty", "sql")
        client = self._client(database_name(project_id))
        try:
            result = client.query(sql, settings=self._settings)
        except OperationalError as exc:
            raise APIError(503, "clickhouse_unavailable", str(exc).strip()) from None
        except ClickHouseError as exc:
            raise APIError(400, "query_failed", str(exc).strip(), "sql") from None
        return QueryResult(
            tuple(result.column_names), [[_jsonable(v) for v in row] for row in result.result_rows]
        )

    def forget(self, project_id: str) -> None:
        """Close the client of a project whose database was dropped."""
        with self._lock:
            client = self._clients.pop(database_name(project_id), None)
        if client is not None:
            client.close()

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


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
