"""`headwater serve ROLE`: one role against an existing NATS and ClickHouse, as production runs it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from dataclasses import replace
from typing import Any

import click

from headwater.consumers.settings import DEFAULT_MAX_BATCH_ROWS, ConsumerSettings
from headwater.control.settings import ControlSettings
from headwater.core.service.nodereports import DEFAULT_INTERVAL_SECONDS as DEFAULT_REPORT_SECONDS
from headwater.edge.settings import EdgeSettings
from headwater.sessionizer.cycle import DEFAULT_SETTLE_SECONDS
from headwater.sessionizer.settings import (
    DEFAULT_DEFER_TO_WRITERS_SECONDS,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_MAX_BUSY_FRACTION,
    SessionizerSettings,
)

from .logs import configure_logging
from .loop import StackFailure, run, wait_until_stopped
from .natsauth import NatsAuth
from .options import (
    admin_tokens_from_env,
    clickhouse_url_option,
    edge_options,
    edge_settings,
    host_option,
    http_limit_options,
    http_limits,
    idempotency_secret_from_env,
    log_format_option,
    log_level_option,
    nats_auth_options,
    nats_url_option,
    on_cluster_option,
    option,
    query_options,
    stream_options,
    stream_settings,
    tls_files,
    tls_options,
)
from .runtime import Stack, StackSettings

DEFAULT_PORTS = {"edge": 8700, "control": 8701, "consumer": 8702, "sessionizer": 8703}
ROLES = ("edge", "control", "consumer", "sessionizer")
DEFAULT_SPOOL_DIR = ".headwater/spool"


@click.command()
@click.argument("role", type=click.Choice(ROLES))
@host_option
@option(
    "--port",
    None,
    int,
    help="HTTP port (edge 8700, control 8701; consumer 8702 and sessionizer 8703: health and metrics).",
)
@option(
    "--workers",
    1,
    click.IntRange(1, 64),
    help="Edge processes sharing the port (SO_REUSEPORT); one per core is a good start.",
)
@nats_url_option
@nats_auth_options
@clickhouse_url_option
@option(
    "--ack-wait",
    120.0,
    click.FloatRange(1, 3600),
    env="HEADWATER_CONSUMER_ACK_WAIT",
    help="Consumer: seconds before JetStream redelivers an unacknowledged message (e.g. after a "
    "crash); keep it above the longest project batching span. Set when the durable consumer is created.",
)
@option(
    "--max-batch-rows",
    DEFAULT_MAX_BATCH_ROWS,
    click.IntRange(1, 1_000_000),
    env="HEADWATER_CONSUMER_MAX_BATCH_ROWS",
    help="Consumer: rows held (over all projects) before they are written, whatever the batching spans.",
)
@option(
    "--consumer-workers",
    None,
    click.IntRange(0, 64),
    help="Consumer: processes that decode, enrich and encode events (default: one per core, none on "
    "one core; 0: in the consumer's own process).",
)
@option(
    "--consumer-unready-after",
    30.0,
    click.FloatRange(0, 3600),
    help="Consumer: seconds of failing inserts (ClickHouse unreachable, full, overloaded) after "
    "which /readyz answers 503; the batch is held and retried meanwhile.",
)
@option(
    "--datacentre-ranges",
    None,
    click.Path(exists=True, dir_okay=False),
    help="Consumer: a file of data-centre networks (one CIDR a line, or CSV rows of a CIDR or a "
    "first,last address range); events from them are flagged `datacentre` in projects that keep "
    "bots.datacentre on (docs/privacy.md).",
)
@option(
    "--referrer-spam-file",
    None,
    click.Path(exists=True, dir_okay=False),
    help="Consumer: hosts of referrer spammers, one a line, added to the list headwater ships.",
)
@option(
    "--interval",
    DEFAULT_INTERVAL_SECONDS,
    click.FloatRange(0.05, 3600),
    env="HEADWATER_SESSIONIZER_INTERVAL",
    help="Sessionizer: seconds between rounds (one cycle per enabled project each).",
)
@option(
    "--max-busy",
    DEFAULT_MAX_BUSY_FRACTION,
    click.FloatRange(0.01, 1),
    env="HEADWATER_SESSIONIZER_MAX_BUSY",
    help="Sessionizer: the most of its time spent in cycles; after a round of t seconds it pauses "
    "at least t * (1 - f) / f, leaving the rest of a shared machine to ingestion (1: no limit).",
)
@option(
    "--settle-seconds",
    DEFAULT_SETTLE_SECONDS,
    click.FloatRange(0, 3600),
    env="HEADWATER_SESSIONIZER_SETTLE_SECONDS",
    help="Sessionizer: a cycle takes events inserted up to this long before ClickHouse's clock; keep "
    "it above the longest INSERT the consumers make (docs/sessions.md).",
)
@option(
    "--defer-to-writers",
    DEFAULT_DEFER_TO_WRITERS_SECONDS,
    click.FloatRange(0, 3600),
    env="HEADWATER_SESSIONIZER_DEFER_TO_WRITERS",
    help="Sessionizer: while another sessionizer or a rebuild announced a snapshot less than this "
    "many seconds ago and has not ended, a project's cycle waits for a later round (0: never).",
)
@option(
    "--node-report-seconds",
    DEFAULT_REPORT_SECONDS,
    click.FloatRange(0.1, 25),
    help="Seconds between the role's node reports (KV HW_NODES, read by /v1/health); under the "
    "bucket's 30 s TTL, or the node drops out of the health page between two reports.",
)
@on_cluster_option
@query_options
@tls_options
@stream_options
@edge_options
@http_limit_options
@log_level_option
@log_format_option
def serve(
    role: str,
    host: str,
    port: int | None,
    workers: int,
    nats_url: str | None,
    nats_auth: NatsAuth,
    clickhouse_url: str | None,
    ack_wait: float,
    max_batch_rows: int,
    consumer_workers: int | None,
    consumer_unready_after: float,
    datacentre_ranges: str | None,
    referrer_spam_file: str | None,
    interval: float,
    max_busy: float,
    settle_seconds: float,
    defer_to_writers: float,
    node_report_seconds: float,
    on_cluster: str | None,
    query_clickhouse_url: str | None,
    query_max_memory: int,
    query_max_concurrent: int,
    tls_cert: str | None,
    tls_key: str | None,
    replicas: int,
    max_age: float,
    max_bytes: int,
    duplicate_window: float,
    dlq_max_age: float,
    log_level: str,
    log_format: str | None,
    **edge_flags: Any,
) -> None:
    """Run one ROLE (edge, control, consumer or sessionizer) against --nats-url and --clickhouse-url.

    --on-cluster applies to the control role, which creates and drops project databases, and to
    the consumer's import writer, which creates imported tables; the
    other roles ignore it, so one environment can serve every role. So do --tls-cert and --tls-key
    (the edge and control roles serve HTTPS with them; the consumer's health port stays HTTP).
    The stream flags apply to the streams and KV buckets a role creates when they do not exist
    yet; `headwater streams ensure` changes existing ones.
    """
    logging_setup = (log_level, log_format or "json", role)
    configure_logging(*logging_setup)
    limits = http_limits(edge_flags)
    if not nats_url:
        raise click.UsageError("--nats-url (or HEADWATER_NATS_URL) is required")
    if role in ("control", "consumer", "sessionizer") and not clickhouse_url:
        raise click.UsageError(f"the {role} role needs --clickhouse-url (or HEADWATER_CLICKHOUSE_URL)")
    http_port = DEFAULT_PORTS.get(role, 0) if port is None else port
    edge = control = consumer = None
    sessionizer = None
    if workers > 1 and (role != "edge" or http_port == 0):
        raise click.UsageError("--workers applies to the edge role on a fixed --port")
    tls = tls_files(tls_cert, tls_key) if role in ("edge", "control") else None

    def edge_for(worker: int) -> EdgeSettings:
        """Each worker has its own spool directory under the base (docs/spool.md)."""
        flags = dict(edge_flags)
        return edge_settings(
            host, http_port, DEFAULT_SPOOL_DIR, reuse_port=workers > 1, worker=worker, tls=tls, **flags
        )

    if role == "edge":
        edge = edge_for(0)
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
                idempotency_secret=idempotency_secret_from_env(),
                tls_cert=tls[0] if tls else None,
                tls_key=tls[1] if tls else None,
                query_max_memory_bytes=query_max_memory,
                query_max_concurrent=query_max_concurrent,
                query_clickhouse_url=query_clickhouse_url,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    elif role == "sessionizer":
        assert clickhouse_url is not None
        sessionizer = SessionizerSettings(
            clickhouse_url=clickhouse_url,
            host=host,
            port=http_port,
            interval_seconds=interval,
            max_busy_fraction=max_busy,
            settle_seconds=settle_seconds,
            defer_to_writers_seconds=defer_to_writers,
        )
    else:
        assert clickhouse_url is not None
        consumer = ConsumerSettings(
            clickhouse_url=clickhouse_url,
            host=host,
            port=http_port,
            ack_wait_seconds=ack_wait,
            workers=consumer_workers,
            max_batch_rows=max_batch_rows,
            unready_after_retrying_seconds=consumer_unready_after,
            datacentre_ranges=datacentre_ranges,
            referrer_spam_file=referrer_spam_file,
            clickhouse_cluster=on_cluster,  # where the import writer creates imported tables
        )
    settings = StackSettings(
        nats_url=nats_url,
        nats_auth=nats_auth,
        streams=stream_settings(replicas, max_age, max_bytes, duplicate_window, dlq_max_age),
        clickhouse_url=clickhouse_url,
        edge=edge,
        control=control,
        consumer=consumer,
        sessionizer=sessionizer,
        http=limits,
        node_report_seconds=node_report_seconds,
    )

    if workers > 1:
        per_worker = [replace(settings, edge=edge_for(worker)) for worker in range(workers)]
        sys.exit(run_workers(role, per_worker, logging_setup))
    try:
        run_role(role, settings)
    except StackFailure as exc:
        raise click.ClickException(str(exc)) from None


def run_role(role: str, settings: StackSettings) -> None:
    async def main(stop: asyncio.Event) -> None:
        stack = Stack(settings)
        try:
            await stack.start()
            listening = (stack.edge_url, stack.control_url, stack.consumer_url, stack.sessionizer_url)
            urls = "".join(f" on {u}" for u in listening if u)
            if stack.edge_operator_url:
                urls += f" (operator: {stack.edge_operator_url})"
            click.echo(f"headwater {role} running{urls} (pid {os.getpid()})")
            await wait_until_stopped(stop, stack.failed)
        finally:
            await stack.stop()

    run(main)


def _worker(role: str, settings: StackSettings, logging_setup: tuple[str, str, str]) -> None:
    configure_logging(*logging_setup)
    try:
        run_role(role, settings)
    except StackFailure as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


def run_workers(role: str, per_worker: list[StackSettings], logging_setup: tuple[str, str, str]) -> int:
    """Run one process per settings object, on one port; SIGINT/SIGTERM stop them all. Returns the
    exit code: non-zero when a worker failed."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(role, s, logging_setup)) for s in per_worker]
    for process in processes:
        process.start()

    def forward(signum: int, _frame: object) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in processes:
        process.join()
    return max((process.exitcode or 0) for process in processes)
