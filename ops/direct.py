"""Asking the project's ClickHouse directly (a command's --clickhouse-url), through the control
plane's read-only executor, without a control plane running."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from headwater.control.query import ReadOnlyQueries
from headwater.core.service.errors import APIError

T = TypeVar("T")


def ask_directly(clickhouse_url: str, work: Callable[[ReadOnlyQueries], T]) -> T:
    """`work`'s answer over a read-only executor of `clickhouse_url`; an API error as the
    command's error, with the field at fault."""
    queries = ReadOnlyQueries(clickhouse_url, timeout_seconds=300)
    try:
        return work(queries)
    except APIError as exc:
        where = f" ({exc.field})" if exc.field else ""
        raise click.ClickException(f"{exc.code}{where}: {exc.message}") from None
    finally:
        queries.close()
