"""`headwater up`: the whole stack on embedded defaults, in one process tree."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from headwater.consumers.settings import ConsumerSettings
from headwater.control.clickhouse import is_embedded, redact_url
from headwater.control.settings import ControlSettings
from headwater.core.projects.project import Project
from headwater.edge.streams import StreamSettings
from headwater.sessionizer.settings import SessionizerSettings

from .datadir import DEFAULT_DATA_DIR, DataDir, DataDirLocked, StackRecord
from .logs import configure_logging
from .loop import StackFailure, run, wait_until_stopped
from .natsauth import (
    PASSWORDS_DIR,
    NatsAuth,
    authorization_config,
    generate_passwords,
    redact_nats_url,
    up_auth,
)
from .natsserver import NatsServerError, NatsServerProcess
from .options import (
    admin_token_from_env,
    admin_tokens_from_env,
    clickhouse_url_option,
    data_dir_option,
    edge_options,
    edge_settings,
    host_option,
    http_limit_options,
    http_limits,
    log_format_option,
    log_level_option,
    nats_auth_options,
    nats_url_option,
    option,
    tls_files,
    tls_options,
)
from .runtime import Stack, StackSettings

log = logging.getLogger(__name__)
DEMO_PROJECT = "demo"
SAMPLE_EVENT = '{"event":"Signed Up","userId":"user-1","properties":{"plan":"free"}}'
SAMPLE_QUERY = (
    "SELECT received_at, event, user_id, properties FROM events FINAL ORDER BY received_at DESC LIMIT 10"
)


@click.command()
@data_dir_option
@host_option
@option("--edge-port", 8700, int, help="Port of the ingest edge (0: any free).")
@option("--control-port", 8701, int, help="Port of the control API.")
@option("--nats-port", 4222, int, help="Port of the embedded NATS server.")
@option(
    "--consumer-port",
    8702,
    click.IntRange(0, 65535),
    help="Port of the consumer's /metrics and /readyz, on 127.0.0.1 (0: any free).",
)
@option(
    "--sessionizer-port",
    8703,
    click.IntRange(0, 65535),
    help="Port of the sessionizer's /metrics and /readyz, on 127.0.0.1 (0: any free).",
)
@nats_url_option
@nats_auth_options
@clickhouse_url_option
@tls_options
@edge_options
@http_limit_options
@log_level_option
@log_format_option
def up(
    data_dir: str,
    host: str,
    edge_port: int,
    control_port: int,
    nats_port: int,
    consumer_port: int,
    sessionizer_port: int,
    nats_url: str | None,
    nats_auth: NatsAuth,
    clickhouse_url: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    log_level: str,
    log_format: str | None,
    **edge_flags: Any,
) -> None:
    """Run NATS, embedded ClickHouse, the control plane, the edge, a consumer and the sessionizer;
    create a demo project.

    Data stays in --data-dir across restarts. Stop with Ctrl-C or SIGTERM. With --tls-cert and
    --tls-key, the edge and the control API serve HTTPS.
    """
    configure_logging(log_level, log_format or "text", "up")
    tls = tls_files(tls_cert, tls_key)
    limits = http_limits(edge_flags)
    data = DataDir(Path(data_dir))
    data.create()
    try:
        lock = data.lock()
    except DataDirLocked as exc:
        raise click.ClickException(str(exc)) from None
    new_token: str | None = None
    stored_token = data.admin_token()
    if admin_token_from_env() is None and stored_token is None:
        stored_token = new_token = data.generate_admin_token()
    clickhouse_url = clickhouse_url or data.clickhouse_url
    nats_process: NatsServerProcess | None = None
    try:
        if nats_url is None:
            # The embedded NATS listens on loopback only, whatever --host says; and even there every
            # client logs in as one of the per-role users whose passwords live in the data dir.
            passwords = generate_passwords(data.root / PASSWORDS_DIR)
            nats_process = NatsServerProcess(
                data.nats_store,
                "127.0.0.1",
                nats_port,
                data.logs / "nats-server.log",
                authorization=authorization_config(
                    {role: path.read_text().strip() for role, path in passwords.items()}
                ),
            )
            # The stack runs every role in one process on one connection: it needs them all.
            nats_auth = up_auth(data.root)
            try:
                nats_url = nats_process.start()
            except NatsServerError as exc:
                raise click.ClickException(str(exc)) from None
        settings = StackSettings(
            nats_url=nats_url,
            nats_auth=nats_auth,
            streams=StreamSettings(),
            clickhouse_url=clickhouse_url,
            edge=edge_settings(host, edge_port, str(data.root / "spool"), tls=tls, **edge_flags),
            control=ControlSettings(
                clickhouse_url=clickhouse_url,
                admin_tokens=admin_tokens_from_env(stored_token),
                host=host,
                port=control_port,
                tls_cert=tls[0] if tls else None,
                tls_key=tls[1] if tls else None,
            ),
            consumer=ConsumerSettings(clickhouse_url=clickhouse_url, host="127.0.0.1", port=consumer_port),
            # The same stack, so the same ClickHouse client as the consumer: one process opens the
            # embedded engine's directory.
            sessionizer=SessionizerSettings(
                clickhouse_url=clickhouse_url, host="127.0.0.1", port=sessionizer_port
            ),
            http=limits,
        )

        async def main(stop: asyncio.Event) -> None:
            stack = Stack(settings)
            try:
                await stack.start()
                demo, secret_key = await _ensure_demo(stack)
                assert stack.edge_url and stack.control_url and nats_url
                data.write_stack(
                    StackRecord(
                        pid=os.getpid(),
                        edge_url=stack.edge_url,
                        control_url=stack.control_url,
                        nats_url=nats_url,
                        clickhouse_url=clickhouse_url,
                        nats_pid=nats_process.pid if nats_process else None,
                    )
                )
                click.echo(_banner(stack, data, data_dir, demo, secret_key, new_token))
                await wait_until_stopped(stop, stack.failed)
                click.echo("headwater: stopping…")
            finally:
                await stack.stop()

        try:
            run(main)
        except StackFailure as exc:
            raise click.ClickException(str(exc)) from None
    finally:
        if nats_process is not None:
            nats_process.stop()
        data.clear_stack()
        lock.close()
    click.echo("headwater: stopped")


async def _ensure_demo(stack: Stack) -> tuple[Project, str | None]:
    """The demo project, created on first start (its secret key is returned only then)."""
    assert stack.store is not None and stack.service is not None and stack.edge_url is not None
    existing = await stack.store.find(DEMO_PROJECT)
    if existing is not None:
        return existing, None
    scheme, port = stack.edge_url.split("://", 1)[0], stack.edge_url.rsplit(":", 1)[1]
    answer, _ = await stack.service.create(
        {
            "id": DEMO_PROJECT,
            "name": "Demo",
            "allowed_origins": [f"{scheme}://localhost:{port}", f"{scheme}://127.0.0.1:{port}"],
        },
        actor="headwater up",
    )
    project = await stack.store.find(DEMO_PROJECT)
    assert project is not None
    return project, str(answer.body["secret_key"])


def _program() -> str:
    """How the user invoked headwater (e.g. `.venv/bin/headwater`), so printed commands work as-is."""
    invoked = sys.argv[0] if sys.argv else ""
    return shlex.quote(invoked) if Path(invoked).name == "headwater" else "headwater"


def _banner(
    stack: Stack, data: DataDir, data_dir: str, demo: Project, secret_key: str | None, new_token: str | None
) -> str:
    public_key = demo.public_keys()[0]
    origin = demo.allowed_origins[0] if demo.allowed_origins else ""
    data_flag = "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {shlex.quote(data_dir)}"
    curl = (
        f"curl -sS {stack.edge_url}/v1/track -u {shlex.quote(public_key + ':')} "
        f"-H {shlex.quote('Origin: ' + origin)} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(SAMPLE_EVENT)}"
    )
    query = f"{_program()} query{data_flag} --project {DEMO_PROJECT} {shlex.quote(SAMPLE_QUERY)}"
    clickhouse = stack.settings.clickhouse_url or ""
    embedded = " (embedded)" if is_embedded(clickhouse) else ""
    if new_token:
        token_line = f"admin token (new, stored in {data.admin_token_file}): {new_token}"
    else:
        token_line = "admin token: $HEADWATER_ADMIN_TOKEN or " + str(data.admin_token_file)
    embedded_nats = stack.settings.nats_auth == up_auth(data.root) != NatsAuth()
    nats_users = f" (users and passwords in {data.root / PASSWORDS_DIR})" if embedded_nats else ""
    lines = [
        "",
        "headwater is running",
        f"  edge         {stack.edge_url}",
        f"  control API  {stack.control_url}",
        f"  console      {stack.control_url}/console/ (sign in with the admin token)",
        f"  metrics      {stack.edge_operator_url}/metrics (edge), {stack.consumer_url}/metrics (consumer), "
        f"{stack.sessionizer_url}/metrics (sessionizer)",
        f"  NATS         {redact_nats_url(stack.settings.nats_url)}{nats_users}",
        f"  ClickHouse   {redact_url(clickhouse)}{embedded}",
        f"  {token_line}",
        "",
        f"demo project {DEMO_PROJECT!r}: public key {public_key}",
    ]
    if secret_key:
        lines.append(f"  secret key (shown once, stored only as a hash): {secret_key}")
    edge = stack.settings.edge
    if edge is not None and edge.tls_cert is not None:
        cert = shlex.quote(edge.tls_cert)
        lines += [
            "",
            f"HTTPS with {cert}; if it is self-signed, trust it in the commands below:",
            f"  CURL_CA_BUNDLE={cert} for curl, SSL_CERT_FILE={cert} for headwater",
        ]
    lines += [
        "",
        "send an event:",
        f"  {curl}",
        "",
        "see it in ClickHouse:",
        f"  {query}",
        "",
        "stop with Ctrl-C",
        "",
    ]
    return "\n".join(lines)
