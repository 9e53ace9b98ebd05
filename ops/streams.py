"""`headwater streams status|ensure`: watch the JetStream streams and KV buckets headwater owns, and
bring their replication and retention to the configured settings, showing the changes first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import click
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DEFAULT_PREFIX, ConsumerInfo, StreamConfig
from nats.js.errors import APIError, NotFoundError

from headwater.control.audit import AUDIT_STREAM, ensure_audit_stream
from headwater.control.idempotency import IDEMPOTENCY_BUCKET, ensure_idempotency_bucket
from headwater.control.imports import IMPORTS_BUCKET, ensure_imports_bucket
from headwater.control.saved_funnels import FUNNELS_BUCKET, ensure_funnels_bucket
from headwater.control.store import PROJECTS_BUCKET, BucketSettings, ensure_projects_bucket
from headwater.edge.streams import (
    MANAGED_FIELDS,
    FieldChange,
    StreamSettings,
    config_changes,
    stream_configs,
    with_changes,
)
from headwater.sessionizer.watermarks import SESSIONS_BUCKET, ensure_sessions_bucket

from .datadir import DataDir
from .natsauth import NatsAuth, NatsTarget, is_empty, up_auth
from .options import (
    data_dir_option,
    format_byte_size,
    format_duration,
    nats_auth_options,
    nats_url_option,
    stream_options,
    stream_settings,
)

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 3.0
REQUEST_TIMEOUT_SECONDS = 5.0
CONSUMER_LIST_PAGE = 256  # the server's page size for CONSUMER.LIST
DEFAULT_WATCH_SECONDS = 2.0


# -- connecting --------------------------------------------------------------------------------------


def resolve_nats(nats_url: str | None, data_dir: str, auth: NatsAuth | None = None) -> NatsTarget:
    """--nats-url / HEADWATER_NATS_URL, else the NATS of the `headwater up` stack running on `data_dir`
    (as the admin user `up` made there, unless credentials were given)."""
    auth = auth or NatsAuth()
    if nats_url:
        return NatsTarget(nats_url, auth)
    record = DataDir(Path(data_dir)).read_stack()
    if record is None:
        raise click.UsageError(
            "--nats-url (or HEADWATER_NATS_URL) is required when no `headwater up` runs in --data-dir"
        )
    return NatsTarget(record.nats_url, auth if not is_empty(auth) else up_auth(Path(data_dir)))


def _describe(error: BaseException) -> str:
    if isinstance(error, APIError) and error.description:
        return f"{error.description} (JetStream error {error.err_code})"
    return str(error) or type(error).__name__


@asynccontextmanager
async def connected(target: NatsTarget, name: str) -> AsyncIterator[Client]:
    """A connection that fails within seconds when NATS is unreachable: `connect_nats` retries the
    first connection forever, which suits a role but not a command an operator waits on."""
    errors: list[Exception] = []

    async def remember(error: Exception) -> None:
        errors.append(error)

    try:
        client = await nats.connect(
            servers=[u.strip() for u in target.url.split(",") if u.strip()],
            name=name,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            **target.auth.connect_options(),
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            error_cb=remember,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        cause = errors[-1] if errors else exc
        raise click.ClickException(f"cannot reach NATS at {target.redacted}: {_describe(cause)}") from None
    try:
        yield client
    finally:
        await client.close()


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a failed NATS request is the command's error, not a traceback."""
    try:
        return asyncio.run(work)
    except nats.errors.Error as exc:
        raise click.ClickException(f"NATS request failed: {_describe(exc)}") from None


# -- what headwater owns -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagedStream:
    """A stream headwater owns: its desired config, the fields `ensure` keeps equal to it on a live
    stream, and how to create it (KV buckets and the audit stream through their own owners)."""

    name: str
    desired: StreamConfig
    fields: tuple[str, ...]
    create: Callable[[JetStreamContext], Awaitable[None]]


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"  # how JetStream names a KV bucket's stream


def _adding(config: StreamConfig) -> Callable[[JetStreamContext], Awaitable[None]]:
    async def add(js: JetStreamContext) -> None:
        await js.add_stream(config)

    return add


def managed_streams(settings: StreamSettings) -> list[ManagedStream]:
    """HW_EVENTS, HW_DLQ and HW_IMPORTS follow every setting. The audit stream and the KV buckets
    follow only the replicas: their retention is fixed by the control plane (audit 400 days, KV
    history and TTL)."""
    replicas = settings.replicas
    replicas_only = ("num_replicas",)

    async def audit(js: JetStreamContext) -> None:
        await ensure_audit_stream(js, replicas)

    async def projects(js: JetStreamContext) -> None:
        await ensure_projects_bucket(js, BucketSettings(replicas=replicas))

    async def idempotency(js: JetStreamContext) -> None:
        await ensure_idempotency_bucket(js, replicas)

    async def sessions(js: JetStreamContext) -> None:
        await ensure_sessions_bucket(js, replicas)

    async def funnels(js: JetStreamContext) -> None:
        await ensure_funnels_bucket(js, replicas)

    async def imports(js: JetStreamContext) -> None:
        await ensure_imports_bucket(js, replicas)

    streams = [
        ManagedStream(str(config.name), config, MANAGED_FIELDS, _adding(config))
        for config in stream_configs(settings)
    ]
    for name, create in (
        (AUDIT_STREAM, audit),
        (_kv_stream(PROJECTS_BUCKET), projects),
        (_kv_stream(IDEMPOTENCY_BUCKET), idempotency),
        (_kv_stream(SESSIONS_BUCKET), sessions),
        (_kv_stream(FUNNELS_BUCKET), funnels),
        (_kv_stream(IMPORTS_BUCKET), imports),
    ):
        streams.append(
            ManagedStream(name, StreamConfig(name=name, num_replicas=replicas), replicas_only, create)
        )
    return streams


STREAM_NAMES = tuple(stream.name for stream in managed_streams(StreamSettings()))


# -- status ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    name: str
    lag: int  # messages not delivered yet (num_pending)
    ack_pending: int  # delivered, not acknowledged yet
    redelivered: int
    waiting: int  # pull requests waiting for messages
    last_active: datetime | None

    @classmethod
    def from_info(cls, info: ConsumerInfo) -> ConsumerStatus:
        activity = [s.last_active for s in (info.delivered, info.ack_floor) if s and s.last_active]
        return cls(
            name=info.name,
            lag=info.num_pending or 0,
            ack_pending=info.num_ack_pending or 0,
            redelivered=info.num_redelivered or 0,
            waiting=info.num_waiting or 0,
            last_active=max(activity, default=None),
        )


@dataclass(frozen=True, slots=True)
class StreamStatus:
    name: str
    exists: bool
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    replicas: int = 0
    leader: str | None = None
    consumers: tuple[ConsumerStatus, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if not self.exists:
            return {"name": self.name, "exists": False}
        return {
            "name": self.name,
            "exists": True,
            "messages": self.messages,
            "bytes": self.bytes,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_time": _iso(self.first_time),
            "last_time": _iso(self.last_time),
            "replicas": self.replicas,
            "leader": self.leader,
            "consumers": [
                {
                    "name": c.name,
                    "lag": c.lag,
                    "ack_pending": c.ack_pending,
                    "redelivered": c.redelivered,
                    "waiting": c.waiting,
                    "last_active": _iso(c.last_active),
                }
                for c in self.consumers
            ],
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _timestamp(raw: str | None) -> datetime | None:
    """A server time; its zero value (year 1) stands for none, e.g. in an empty stream."""
    moment = datetime.fromisoformat(raw) if raw else None
    return moment if moment and moment.year > 1 else None


async def _consumers(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    found: list[ConsumerInfo] = []
    while True:
        page = await js.consumers_info(stream, offset=len(found))
        found += page
        if len(page) < CONSUMER_LIST_PAGE:
            return found


async def stream_status(client: Client, name: str) -> StreamStatus:
    # A raw STREAM.INFO request: nats-py's StreamState drops the first and last message times.
    reply = await client.request(f"{DEFAULT_PREFIX}.STREAM.INFO.{name}", b"", timeout=REQUEST_TIMEOUT_SECONDS)
    response = json.loads(reply.data)
    if error := response.get("error"):
        if error.get("code") == 404:
            return StreamStatus(name, exists=False)
        raise APIError(
            code=error.get("code"), description=error.get("description"), err_code=error.get("err_code")
        )
    state, config = response["state"], response["config"]
    consumers = await _consumers(client.jetstream(timeout=REQUEST_TIMEOUT_SECONDS), name)
    return StreamStatus(
        name=name,
        exists=True,
        messages=state["messages"],
        bytes=state["bytes"],
        first_seq=state["first_seq"],
        last_seq=state["last_seq"],
        first_time=_timestamp(state.get("first_ts")) if state["messages"] else None,
        last_time=_timestamp(state.get("last_ts")) if state["messages"] else None,
        replicas=config.get("num_replicas", 1),
        leader=(response.get("cluster") or {}).get("leader"),
        consumers=tuple(sorted((ConsumerStatus.from_info(c) for c in consumers), key=lambda c: c.name)),
    )


async def collect_status(url: NatsTarget) -> list[StreamStatus]:
    async with connected(url, "headwater-streams-status") as client:
        return [await stream_status(client, name) for name in STREAM_NAMES]


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size, below in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800)):
        if seconds < below:
            return f"{seconds // size}{unit} ago"
    return f"{seconds // 86400}d ago"


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def render_status(statuses: list[StreamStatus], now: datetime) -> str:
    lines = [
        f"{'stream':<20} {'messages':>10} {'bytes':>10} {'first seq':>10} {'last seq':>10}  "
        f"{'first (UTC)':<19}  {'last (UTC)':<19}  {'replicas':>8}  leader"
    ]
    for s in statuses:
        if not s.exists:
            lines.append(f"{s.name:<20} not created (`headwater streams ensure` creates it)")
            continue
        lines.append(
            f"{s.name:<20} {s.messages:>10} {human_bytes(s.bytes):>10} {s.first_seq:>10} {s.last_seq:>10}  "
            f"{_clock(s.first_time):<19}  {_clock(s.last_time):<19}  {s.replicas:>8}  {s.leader or '-'}"
        )
    consumers = [(s.name, c) for s in statuses for c in s.consumers]
    lines.append("")
    if not consumers:
        lines.append("no consumers")
        return "\n".join(lines)
    lines.append(
        f"{'consumer':<24} {'stream':<20} {'lag':>10} {'ack pending':>11} {'redelivered':>11} "
        f"{'waiting':>7}  last active"
    )
    for stream, c in consumers:
        lines.append(
            f"{c.name:<24} {stream:<20} {c.lag:>10} {c.ack_pending:>11} {c.redelivered:>11} "
            f"{c.waiting:>7}  {_ago(c.last_active, now)}"
        )
    return "\n".join(lines)


def status_document(statuses: list[StreamStatus], now: datetime) -> dict[str, Any]:
    return {"time": _iso(now), "streams": [s.to_json() for s in statuses]}


async def watch_status(url: NatsTarget, interval: float, as_json: bool) -> None:
    """Print a fresh status every `interval` seconds until cancelled (Ctrl-C). NATS being unreachable
    is shown in the frame and watching goes on, so an operator can watch it come back."""
    while True:
        now = datetime.now(UTC)
        try:
            statuses = await collect_status(url)
        except (click.ClickException, nats.errors.Error) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else _describe(exc)
            if as_json:
                click.echo(f"Error: {message}", err=True)
            else:
                click.clear()
                click.echo(f"{_watch_header(now, interval)}\n\nError: {message}\n")
        else:
            if as_json:
                click.echo(json.dumps(status_document(statuses, now)))
            else:
                frame = render_status(statuses, now)  # rendered before clearing: no flicker
                click.clear()
                click.echo(f"{_watch_header(now, interval)}\n\n{frame}\n")
        await asyncio.sleep(interval)


def _watch_header(now: datetime, interval: float) -> str:
    return f"headwater streams status - {_clock(now)} UTC - every {interval:g}s, Ctrl-C to stop"


# -- ensure ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamPlan:
    stream: ManagedStream
    current: StreamConfig | None
    changes: tuple[FieldChange, ...]  # for a stream to create: every managed field, from None

    @property
    def action(self) -> str:
        return "create" if self.current is None else "update" if self.changes else "none"


def plan_stream(stream: ManagedStream, current: StreamConfig | None) -> StreamPlan:
    if current is None:
        created = tuple(FieldChange(f, None, getattr(stream.desired, f)) for f in stream.fields)
        return StreamPlan(stream, None, created)
    return StreamPlan(stream, current, tuple(config_changes(current, stream.desired, stream.fields)))


def shown(field: str, value: object) -> str:
    """A config value as the flags spell it (7d, 50GiB, unlimited)."""
    if value is None:
        return "-"
    if field == "max_age" and isinstance(value, int | float):
        return format_duration(value) if value > 0 else "unlimited"
    if field == "duplicate_window" and isinstance(value, int | float):
        return format_duration(value)
    if field == "max_bytes" and isinstance(value, int):
        return format_byte_size(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if field == "description":
        return json.dumps(value)
    return str(value)


def render_plan(plans: list[StreamPlan]) -> str:
    marks = {"create": "+", "update": "~", "none": "="}
    lines = []
    for plan in plans:
        label = "no change" if plan.action == "none" else plan.action
        lines.append(f"{marks[plan.action]} {plan.stream.name}: {label}")
        for change in plan.changes:
            value = shown(change.field, change.desired)
            if plan.current is not None:
                value = f"{shown(change.field, change.current)} -> {value}"
            lines.append(f"      {change.field:<18} {value}")
    counts = {action: sum(p.action == action for p in plans) for action in marks}
    lines.append(f"{counts['create']} to create, {counts['update']} to update, {counts['none']} unchanged")
    return "\n".join(lines)


async def current_config(js: JetStreamContext, name: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(name)).config
    except NotFoundError:
        return None


async def apply_plan(js: JetStreamContext, plan: StreamPlan) -> None:
    if plan.current is None:
        await plan.stream.create(js)
    else:
        await js.update_stream(with_changes(plan.current, plan.changes))


async def _plans(js: JetStreamContext, settings: StreamSettings) -> list[StreamPlan]:
    return [plan_stream(s, await current_config(js, s.name)) for s in managed_streams(settings)]


async def read_plans(url: NatsTarget, settings: StreamSettings) -> list[StreamPlan]:
    async with connected(url, "headwater-streams-ensure") as client:
        return await _plans(client.jetstream(timeout=REQUEST_TIMEOUT_SECONDS), settings)


def _same(plans: list[StreamPlan], others: list[StreamPlan]) -> bool:
    def key(plan: StreamPlan) -> tuple[str, str, tuple[FieldChange, ...]]:
        return plan.stream.name, plan.action, plan.changes

    return [key(p) for p in plans] == [key(p) for p in others]


async def apply_plans(url: NatsTarget, settings: StreamSettings, seen: list[StreamPlan]) -> int:
    """Apply the plan the operator saw, stream by stream; the number of streams that failed."""
    async with connected(url, "headwater-streams-ensure") as client:
        js = client.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
        plans = await _plans(js, settings)
        if not _same(plans, seen):  # someone changed a stream while the operator read the plan
            raise click.ClickException("the streams changed since the plan was shown: run the command again")
        failed = 0
        for plan in (p for p in plans if p.action != "none"):
            try:
                await apply_plan(js, plan)
            except nats.errors.Error as exc:  # JetStream refuses some changes; the others still apply
                click.echo(f"{plan.stream.name}: {plan.action} refused: {_describe(exc)}", err=True)
                failed += 1
            else:
                click.echo(f"{plan.stream.name}: {plan.action}d")
        click.echo(f"{sum(p.action != 'none' for p in plans) - failed} applied, {failed} failed")
        return failed


# -- commands ----------------------------------------------------------------------------------------


@click.group()
def streams() -> None:
    """Watch and configure the JetStream streams and KV buckets (see docs/cli.md)."""


@streams.command()
@nats_url_option
@nats_auth_options
@data_dir_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of tables (one line per frame with --watch)."
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    is_flag=False,
    flag_value=DEFAULT_WATCH_SECONDS,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C.",
)
def status(
    nats_url: str | None, nats_auth: NatsAuth, data_dir: str, as_json: bool, watch: float | None
) -> None:
    """Messages, bytes, first and last message, replicas per stream; lag, ack-pending, redeliveries,
    waiting pulls and last activity per consumer. Reads only."""
    url = resolve_nats(nats_url, data_dir, nats_auth)
    if watch is not None:
        try:
            asyncio.run(watch_status(url, watch, as_json))
        except KeyboardInterrupt:
            click.echo("", err=True)  # end the line the terminal's ^C was echoed on
        return
    statuses = _run(collect_status(url))
    now = datetime.now(UTC)
    if as_json:
        click.echo(json.dumps(status_document(statuses, now), indent=2))
    else:
        click.echo(render_status(statuses, now))


@streams.command()
@nats_url_option
@nats_auth_options
@data_dir_option
@stream_options
@click.option("--dry-run", is_flag=True, help="Print the changes; make none.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def ensure(
    nats_url: str | None, nats_auth: NatsAuth, data_dir: str, dry_run: bool, yes: bool, **flags: Any
) -> None:
    """Create the streams and KV buckets that are missing and update the ones whose settings differ.

    Prints the changes field by field and asks before applying them. The settings are declarative:
    a flag left out takes its default (or its HEADWATER_* variable), so pass every setting you
    changed from the default. A change JetStream refuses (e.g. replicas above 1 on a single server,
    another storage type) is reported for its stream, the others still apply, and the exit code is 1.
    """
    settings = stream_settings(**flags)
    url = resolve_nats(nats_url, data_dir, nats_auth)
    plans = _run(read_plans(url, settings))
    click.echo(render_plan(plans))
    pending = sum(p.action != "none" for p in plans)
    if not pending:
        click.echo("nothing to change")
        return
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    # Asked with no connection open: nothing to keep alive, and Ctrl-C at the prompt ends at once.
    if not yes:
        click.confirm(f"apply these changes to {pending} stream(s)?", abort=True)
    if _run(apply_plans(url, settings, plans)):
        raise click.exceptions.Exit(1)
