"""`headwater sessions status` and `headwater sessions rebuild`: the sessionizer's watermarks and
lag per project, and a recomputation of a project's sessions. Both talk to NATS (the project configs
and the HW_SESSIONS watermarks) and to ClickHouse directly, like `migrate` and `replay`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from clickhouse_connect.driver.client import Client
from nats.js.errors import BucketNotFoundError

from headwater.control.clickhouse import connect, is_embedded, redact_url
from headwater.control.store import PROJECTS_BUCKET, ProjectStore
from headwater.core.projects.project import Project, database_name
from headwater.edge.streams import StreamSettings
from headwater.sessionizer.cycle import DEFAULT_SETTLE_SECONDS, rebuild
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket

from .controlclient import ControlClient
from .natsauth import NatsAuth
from .natsconn import connect_for_command
from .options import (
    BYTE_SIZE,
    clickhouse_url_option,
    control_url_option,
    data_dir_option,
    nats_auth_options,
    nats_url_option,
    when_option,
)
from .streams import resolve_nats

# The count of a project's sessions, from ClickHouse directly or through the control API.
SessionCount = Callable[[str], int]
COUNT_SQL = "SELECT count() FROM sessions FINAL"


@dataclass(frozen=True, slots=True)
class ProjectSessions:
    project: str
    enabled: bool
    watermark: str | None  # ISO-8601; None before the first cycle
    lag_seconds: float | None
    sessions: int | None  # None when ClickHouse could not tell (error)
    error: str | None = None
    # Writers announced and not settled (docs/sessions.md, "Two writers at once"): at work, or lost
    # or presumed dead and waiting for a cycle to reconcile them.
    writing: int = 0
    to_reconcile: int = 0


def _open_clickhouse(clickhouse_url: str | None) -> Client:
    if not clickhouse_url:
        raise click.UsageError("--clickhouse-url (or HEADWATER_CLICKHOUSE_URL) is required")
    try:
        return connect(clickhouse_url)
    except Exception as exc:
        hint = ""
        if is_embedded(clickhouse_url) and "Unable to open" in str(exc):
            # chdb opens a data directory in one process at a time: `up` holds it.
            hint = (
                "\nAnother process (a running `headwater up`?) holds this embedded data: stop it "
                "first, or use a ClickHouse server with --clickhouse-url http(s)://..."
            )
        raise click.ClickException(
            f"cannot open ClickHouse at {redact_url(clickhouse_url)}: {exc}{hint}"
        ) from None


async def _projects(store: ProjectStore, project_id: str | None) -> list[Project]:
    ids = [project_id] if project_id else await store.ids()
    found = []
    for one in ids:
        project = await store.find(one)
        if project is None:
            raise click.ClickException(f"no project {one!r}")
        found.append(project)
    return found


def count_sessions(client: Client, project_id: str) -> int:
    sql = f"SELECT count() FROM `{database_name(project_id)}`.sessions FINAL"
    return int(client.query(sql).result_rows[0][0])


def count_directly(client: Client) -> SessionCount:
    def count(project_id: str) -> int:
        return count_sessions(client, project_id)

    return count


def count_through(control: ControlClient) -> SessionCount:
    def count(project_id: str) -> int:
        _, rows = control.query(project_id, COUNT_SQL)
        return int(rows[0][0])

    return count


async def sessions_status(
    nats_url: str, count_of: SessionCount, project_id: str | None, auth: NatsAuth | None = None
) -> list[ProjectSessions]:
    nats = await connect_for_command(nats_url, "headwater-sessions", auth)
    try:
        js = nats.jetstream()
        try:
            store = ProjectStore(await js.key_value(PROJECTS_BUCKET))
        except BucketNotFoundError:
            return []
        watermarks = Watermarks(await ensure_sessions_bucket(js, StreamSettings().replicas))
        rows = []
        for project in await _projects(store, project_id):
            watermark = await watermarks.get(project.id)
            through = watermark.inserted_through if watermark.committed else None
            lag = None if through is None else round((datetime.now(UTC) - through).total_seconds(), 1)
            try:
                count: int | None = await asyncio.to_thread(count_of, project.id)
                error = None
            except Exception as exc:  # one project's database (not migrated?) does not stop the list
                count, error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            iso = None if through is None else through.isoformat()
            to_reconcile = len(watermark.to_reconcile(datetime.now(UTC)))
            writing = len(watermark.pending) - to_reconcile
            rows.append(
                ProjectSessions(project.id, project.enabled, iso, lag, count, error, writing, to_reconcile)
            )
        return rows
    finally:
        await nats.close()


def _status_table(rows: list[ProjectSessions]) -> str:
    lines = [f"{'PROJECT':<24} {'WATERMARK':<32} {'LAG (s)':>10} {'SESSIONS':>10} {'WRITERS':>8}"]
    for row in rows:
        lag = "-" if row.lag_seconds is None else f"{row.lag_seconds:,.1f}"
        count = "?" if row.sessions is None else f"{row.sessions:,}"
        name = row.project if row.enabled else f"{row.project} (disabled)"
        watermark = row.watermark or "(no cycle yet)"
        writers = f"{row.writing}" + (f"+{row.to_reconcile}!" if row.to_reconcile else "")
        line = f"{name:<24} {watermark:<32} {lag:>10} {count:>10} {writers:>8}"
        lines.append(line + (f"  error: {row.error}" if row.error else ""))
    return "\n".join(lines)


async def rebuild_project(
    nats_url: str,
    clickhouse: Client,
    project_id: str,
    since: datetime | None,
    settle_seconds: float,
    auth: NatsAuth | None = None,
    max_memory: int | None = None,
) -> None:
    def step(text: str) -> None:
        click.echo(text, err=True)

    started = time.monotonic()
    step(f"reading the config of project {project_id!r}")
    nats = await connect_for_command(nats_url, "headwater-sessions", auth)
    try:
        js = nats.jetstream()
        try:
            store = ProjectStore(await js.key_value(PROJECTS_BUCKET))
        except BucketNotFoundError:
            raise click.ClickException(f"no project {project_id!r} (no projects at all)") from None
        [project] = await _projects(store, project_id)
        rules = project.settings.sessions
        step(f"rules: {orjson.dumps(asdict_rules(rules)).decode()}")
        watermarks = Watermarks(await ensure_sessions_bucket(js, StreamSettings().replicas))
        window = "all events" if since is None else f"events since {since.isoformat()}"
        step(f"recomputing the sessions of every identity with {window}")
        result = await rebuild(
            clickhouse,
            watermarks,
            project_id,
            rules,
            since,
            settle_seconds,
            RebuildProgress(),
            max_memory=max_memory,
        )
    finally:
        await nats.close()
    seconds = time.monotonic() - started
    click.echo(
        f"rebuilt project {project_id!r}: {result.identities:,} identities, {result.sessions:,} sessions "
        f"written, {result.tombstones:,} removed, events inserted up to "
        f"{result.inserted_through.isoformat()}, in {seconds:.1f} s"
    )


class RebuildProgress:
    """Identities (or shards of them) recomputed so far: a bar on a terminal, a line per chunk
    otherwise (a log)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def __call__(self, done: int, total: int, unit: str) -> None:
        if not sys.stderr.isatty():
            click.echo(f"{unit} recomputed: {done:,} of {total:,}", err=True)
            return
        if self._bar is None:
            bar = click.progressbar(length=max(total, 1), label=unit, file=sys.stderr, show_pos=True)
            self._bar = bar.__enter__()
        self._bar.length = max(total, 1)  # shards split when ClickHouse refused one for memory
        self._bar.update(done - self._bar.pos)
        if done >= total:
            self._bar.__exit__(None, None, None)


def asdict_rules(rules: Any) -> dict[str, Any]:
    """The session rules as a plain dict (a msgspec Struct)."""
    return {name: getattr(rules, name) for name in rules.__struct_fields__}


@click.group()
def sessions() -> None:
    """The sessionizer's state per project, and recomputing sessions (docs/sessions.md)."""


@sessions.command()
@nats_url_option
@nats_auth_options
@data_dir_option
@control_url_option
@clickhouse_url_option
@click.option("--project", default=None, help="Only this project (default: every project).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per project, in an array.")
def status(
    nats_url: str | None,
    nats_auth: NatsAuth,
    data_dir: str,
    control_url: str | None,
    clickhouse_url: str | None,
    project: str | None,
    as_json: bool,
) -> None:
    """Per project: the watermark (every event inserted before it is sessionized), the lag (now
    minus the watermark) and the count of sessions.

    The counts come from --clickhouse-url when given, else through the control API of the running
    stack (found from --data-dir, or --control-url): only the process that runs the embedded
    engine can open its data.
    """
    target = resolve_nats(nats_url, data_dir, nats_auth)
    clickhouse = _open_clickhouse(clickhouse_url) if clickhouse_url else None
    count_of: SessionCount = (
        count_directly(clickhouse)
        if clickhouse is not None
        else count_through(ControlClient.resolve(control_url, data_dir))
    )
    try:
        rows = asyncio.run(sessions_status(target.url, count_of, project, target.auth))
    finally:
        if clickhouse is not None:
            clickhouse.close()
    if as_json:
        click.echo(orjson.dumps([asdict(row) for row in rows], option=orjson.OPT_INDENT_2).decode())
    elif not rows:
        click.echo("no projects")
    else:
        click.echo(_status_table(rows))


@sessions.command(name="rebuild")
@nats_url_option
@nats_auth_options
@data_dir_option
@clickhouse_url_option
@click.option("--project", required=True, help="The project whose sessions to recompute.")
@click.option(
    "--since",
    callback=when_option,
    help="Recompute every identity with events from this time (ISO-8601, or 30m/12h/7d ago); "
    "default: all of them.",
)
@click.option(
    "--settle-seconds",
    type=click.FloatRange(0, 3600),
    default=DEFAULT_SETTLE_SECONDS,
    show_default=True,
    help="Take events inserted up to this long before ClickHouse's clock (as the sessionizer does).",
)
@click.option(
    "--max-memory",
    type=BYTE_SIZE,
    default=None,
    help="Memory each of a full rebuild's statements may take in ClickHouse (max_memory_usage), "
    "e.g. 4GiB; a shard refused for memory is split in two. Default: the server's limits.",
)
def rebuild_command(
    nats_url: str | None,
    nats_auth: NatsAuth,
    data_dir: str,
    clickhouse_url: str | None,
    project: str,
    since: datetime | None,
    settle_seconds: float,
    max_memory: float | None,
) -> None:
    """Recompute a project's sessions (after a change of its rules, a replay or an import), late
    events included. Safe while sessionizers run: the newest computation wins, and the watermark is
    left where it is.

    With the embedded ClickHouse (`chdb://`), stop `headwater up` first.
    """
    target = resolve_nats(nats_url, data_dir, nats_auth)
    clickhouse = _open_clickhouse(clickhouse_url)
    try:
        memory = None if max_memory is None or max_memory < 0 else int(max_memory)
        asyncio.run(
            rebuild_project(target.url, clickhouse, project, since, settle_seconds, target.auth, memory)
        )
    finally:
        clickhouse.close()
