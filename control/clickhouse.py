"""ClickHouse access by URL: `http(s)://user:pass@host:8123` for a server, `chdb:///path` embedded."""

from __future__ import annotations

from typing import Any

import clickhouse_connect
from clickhouse_connect import common
from clickhouse_connect.driver.client import Client

# Roles share one client across threads; ClickHouse refuses concurrent queries in one HTTP
# session, so clients must not create one.
common.set_setting("autogenerate_session_id", False)


def connect(url: str, database: str | None = None, settings: dict[str, Any] | None = None) -> Client:
    """A client for `url`. The embedded engine (chdb) opens one data directory per process."""
    if not url.startswith(("http://", "https://", "chdb://", "clickhouse://")):
        raise ValueError(f"unsupported ClickHouse URL {redact_url(url)!r}: use http(s):// or chdb://")
    return clickhouse_connect.get_client(dsn=url, database=database, settings=settings)


def is_embedded(url: str) -> bool:
    return url.startswith("chdb://")


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
