"""Command-line flags, each also settable as a HEADWATER_* environment variable, and the frozen
settings objects built from them. This is the only place where configuration is read."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from headwater.control.settings import AdminToken

F = TypeVar("F", bound=Callable[..., Any])

ADMIN_TOKEN_ENV = "HEADWATER_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token


def option(*names: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option whose environment variable is named explicitly and shown in --help."""
    return click.option(*names, envvar=env, show_envvar=True, show_default=True, **kwargs)


data_dir_option = option(
    "--data-dir",
    env="HEADWATER_DATA_DIR",
    default=".headwater",
    type=click.Path(file_okay=False, path_type=str),
    help="Where `up` keeps NATS and ClickHouse data, the admin token and the running stack's URLs.",
)
host_option = option(
    "--host", env="HEADWATER_HOST", default="127.0.0.1", help="Address the HTTP roles listen on."
)
nats_url_option = option(
    "--nats-url",
    env="HEADWATER_NATS_URL",
    default=None,
    help="An existing NATS server (comma-separated URLs for a cluster).",
)
clickhouse_url_option = option(
    "--clickhouse-url",
    env="HEADWATER_CLICKHOUSE_URL",
    default=None,
    help="http(s)://user:pass@host:8123 for a ClickHouse server, or chdb:///path for the embedded engine.",
)
log_level_option = option(
    "--log-level",
    env="HEADWATER_LOG_LEVEL",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log level.",
)


def admin_tokens_from_env(fallback: str | None = None) -> tuple[AdminToken, ...]:
    """HEADWATER_ADMIN_TOKEN, else `fallback` (the token `up` keeps in its data dir)."""
    token = os.environ.get(ADMIN_TOKEN_ENV) or fallback
    return (AdminToken("default", token),) if token else ()


def admin_token_from_env() -> str | None:
    return os.environ.get(ADMIN_TOKEN_ENV) or None
