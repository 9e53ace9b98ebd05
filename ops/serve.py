"""`headwater serve ROLE`: one role against an existing NATS and ClickHouse, as production runs it."""

from __future__ import annotations

import asyncio

import click

from headwater.consumers.settings import ConsumerSettings
from headwater.control.settings import ControlSettings
from headwater.edge.settings import EdgeSettings
from headwater.edge.streams import StreamSettings

from .logs import configure_logging
from .loop import StackFailure, run, wait_until_stopped
from .options import (
    admin_tokens_from_env,
    clickhouse_url_option,
    host_option,
    log_level_option,
    nats_url_option,
    on_cluster_option,
    option,
)
from .runtime import Stack, StackSettings

DEFAULT_PORTS = {"edge": 8700, "control": 8701}


@click.command()
@click.argument("role", type=click.Choice(["edge", "control", "consumer"]))
@host_option
@option("--port", env="HEADWATER_PORT", default=None, type=int, help="HTTP port (edge 8700, control 8701).")
@nats_url_option
@clickhouse_url_option
@on_cluster_option
@log_level_option
def serve(
    role: str,
    host: str,
    port: int | None,
    nats_url: str | None,
    clickhouse_url: str | None,
    on_cluster: str | None,
    log_level: str,
) -> None:
    """Run one ROLE (edge, control or consumer) against --nats-url and --clickhouse-url.

    --on-cluster applies to the control role, which creates and drops project databases; the
    other roles ignore it, so one environment can serve every role.
    """
    configure_logging(log_level)
    if not nats_url:
        raise click.UsageError("--nats-url (or HEADWATER_NATS_URL) is required")
    if role in ("control", "consumer") and not clickhouse_url:
        raise click.UsageError(f"the {role} role needs --clickhouse-url (or HEADWATER_CLICKHOUSE_URL)")
    http_port = DEFAULT_PORTS.get(role, 0) if port is None else port
    edge = control = consumer = None
    if role == "edge":
        edge = EdgeSettings(host=host, port=http_port)
    elif role == "control":
        assert clickhouse_url is not None
        tokens = admin_tokens_from_env()
        if not tokens:
            raise click.UsageError("the control role needs HEADWATER_ADMIN_TOKEN or HEADWATER_ADMIN_TOKENS")
        try:
            control = ControlSettings(
                clickhouse_url=clickhouse_url,
                admin_tokens=tokens,
                host=host,
                port=http_port,
                clickhouse_cluster=on_cluster,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        assert clickhouse_url is not None
        consumer = ConsumerSettings(clickhouse_url=clickhouse_url)
    settings = StackSettings(
        nats_url=nats_url,
        streams=StreamSettings(),
        clickhouse_url=clickhouse_url,
        edge=edge,
        control=control,
        consumer=consumer,
    )

    async def main(stop: asyncio.Event) -> None:
        stack = Stack(settings)
        try:
            await stack.start()
            click.echo(
                f"headwater {role} running"
                + "".join(f" on {u}" for u in (stack.edge_url, stack.control_url) if u)
            )
            await wait_until_stopped(stop, stack.failed)
        finally:
            await stack.stop()

    try:
        run(main)
    except StackFailure as exc:
        raise click.ClickException(str(exc)) from None
