"""`headwater replay`: re-run a window of a project's events through the consumer pipeline into
ClickHouse (enrichment re-derived with today's rules and data), or export it as JSON lines."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from nats.aio.client import Client as NatsClient
from nats.js.errors import BucketNotFoundError

from headwater.consumers.collecting import TombstonesOf, no_tombstones
from headwater.consumers.enrich import Enricher, GeoLookup, default_geo_database
from headwater.consumers.processing import bot_filter
from headwater.consumers.replay import (
    DEFAULT_BATCH_ROWS,
    ClickHouseSink,
    JsonLinesSink,
    Replay,
    ReplayError,
    ReplayProgress,
    ReplaySink,
    ReplayWindow,
    default_checkpoint_path,
)
from headwater.control.clickhouse import connect, is_embedded, redact_url
from headwater.control.store import PROJECTS_BUCKET, ProjectStore
from headwater.core.projects.settings import ProjectSettings
from headwater.core.projects.tombstones import TombstoneRegistry, follow_tombstones

from .natsauth import NatsAuth
from .natsconn import ConnectionEvents, connect_for_command
from .options import (
    clickhouse_url_option,
    data_dir_option,
    nats_auth_options,
    nats_url_option,
    when_option,
)
from .streams import resolve_nats


class ProgressBar:
    """A progress bar on stderr (messages, events, rate, ETA), started once the total is known."""

    def __init__(self, label: str, quiet: bool) -> None:
        self._label = label
        self._quiet = quiet
        self._bar: Any = None
        self._shown = 0

    def __call__(self, progress: ReplayProgress) -> None:
        if self._quiet:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=max(progress.total_messages, 1),
                label=self._label,
                file=sys.stderr,
                show_eta=True,
                item_show_func=lambda text: text,
            )
            self._bar.__enter__()
            self._shown = 0
        self._bar.update(
            progress.messages - self._shown, f"{progress.events:,} events, {progress.rate:,.0f}/s"
        )
        self._shown = progress.messages

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


async def _project_settings(
    nats: NatsClient, window: ReplayWindow
) -> tuple[dict[str, ProjectSettings], dict[str, bytes]]:
    """Each project's current settings (its anonymisation rules apply to the replayed rows) and
    the key of its rules' `hash` action."""
    try:
        store = ProjectStore(await nats.jetstream().key_value(PROJECTS_BUCKET))
    except BucketNotFoundError:
        return {}, {}
    ids = [window.project] if window.project else await store.ids()
    found, keys = {}, {}
    for project_id in ids:
        project = await store.find(project_id)
        if project is not None:
            found[project_id] = project.settings
            if project.anonymisation_key is not None:
                keys[project_id] = project.anonymisation_key
    return found, keys


async def run_replay(
    nats_url: str,
    window: ReplayWindow,
    sink: ReplaySink | None,
    checkpoint: Path | None,
    auth: NatsAuth | None = None,
    **options: Any,
) -> ReplayProgress:
    events = ConnectionEvents()
    nats = await connect_for_command(nats_url, "headwater-replay", auth, events)
    registry: TombstoneRegistry | None = None
    try:
        settings, hash_keys = await _project_settings(nats, window)
        if window.project and window.project not in settings:
            click.echo(
                f"warning: project {window.project!r} has no config (purged?); default settings apply",
                err=True,
            )
        defaults = ProjectSettings()
        # Deleted data subjects (docs/privacy.md): their events in the stream are not written again,
        # those of a deletion asked for during the replay included (followed live, as consumers do).
        registry = await follow_tombstones(nats.jetstream())
        if registry is not None:
            events.subscribe(registry)
        replay = Replay(
            nats,
            window,
            sink,
            settings_of=lambda p: settings.get(p, defaults),
            hash_key_of=hash_keys.get,
            checkpoint_path=checkpoint,
            tombstones_of=live_tombstones(registry),
            **options,
        )
        return await replay.run()
    finally:
        if registry is not None:
            await registry.stop()
        await nats.close()


class TombstonesLost(click.ClickException):
    """The replay can no longer follow the tombstones: it stops rather than write a deleted person."""


def live_tombstones(registry: TombstoneRegistry | None) -> TombstonesOf:
    if registry is None:
        return no_tombstones

    def tombstones_of(project: str) -> frozenset[bytes]:
        if registry.failure is not None:
            raise TombstonesLost(
                f"following the tombstones failed ({registry.failure!r}): run the same replay "
                "again once NATS is reachable: it resumes from its checkpoint"
            )
        return registry.digests(project)

    return tombstones_of


@click.command()
@nats_url_option
@nats_auth_options
@data_dir_option
@clickhouse_url_option
@click.option("--project", default=None, help="The project whose events to replay.")
@click.option("--all-projects", is_flag=True, help="Replay every project's events (instead of --project).")
@click.option("--since", callback=when_option, help="From this time (ISO-8601, or 30m/12h/7d ago).")
@click.option("--until", callback=when_option, help="Up to this time.")
@click.option("--from-seq", type=click.IntRange(1), default=None, help="From this stream sequence.")
@click.option("--to-seq", type=click.IntRange(1), default=None, help="Up to this stream sequence.")
@click.option(
    "--to",
    "target",
    type=click.Choice(["clickhouse", "jsonl"]),
    default="clickhouse",
    show_default=True,
    help="Re-run the consumer pipeline into ClickHouse, or write JSON lines to --output.",
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="The file for --to jsonl.")
@click.option("--dry-run", is_flag=True, help="Count the window's messages and events; write nothing.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where progress is saved to resume an interrupted replay (default: a file in the current "
    "directory named after the replay).",
)
@click.option("--restart", is_flag=True, help="Ignore an existing checkpoint and start from the beginning.")
@click.option(
    "--batch-rows",
    type=click.IntRange(1),
    default=DEFAULT_BATCH_ROWS,
    show_default=True,
    help="Rows per INSERT.",
)
@click.option(
    "--geoip-database",
    default=None,
    help="A MaxMind-format City database (default: the one installed with headwater; '' for none).",
)
@click.option(
    "--datacentre-ranges",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="As the consumer's: data-centre networks whose events are flagged (docs/privacy.md).",
)
@click.option(
    "--referrer-spam-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="As the consumer's: hosts of referrer spammers added to the list headwater ships.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def replay(
    nats_url: str | None,
    nats_auth: NatsAuth,
    data_dir: str,
    clickhouse_url: str | None,
    project: str | None,
    all_projects: bool,
    since: datetime | None,
    until: datetime | None,
    from_seq: int | None,
    to_seq: int | None,
    target: str,
    output: Path | None,
    dry_run: bool,
    checkpoint: Path | None,
    restart: bool,
    batch_rows: int,
    geoip_database: str | None,
    datacentre_ranges: str | None,
    referrer_spam_file: str | None,
    quiet: bool,
) -> None:
    """Replay events from the stream into ClickHouse (or a JSON-lines file).

    Safe while the live consumers run: rows that land twice collapse on messageId. An interrupted
    replay resumes from its checkpoint when run again with the same options.

    With the embedded ClickHouse (`chdb://`), stop `headwater up` first: one process at a time can
    open its data directory. Without --nats-url, the NATS of the `headwater up` running in
    --data-dir is read (e.g. `--to jsonl`, or `--dry-run`).
    """
    target_nats = resolve_nats(nats_url, data_dir, nats_auth)
    if bool(project) == all_projects:
        raise click.UsageError("name one --project, or say --all-projects")
    if target == "jsonl" and output is None and not dry_run:
        raise click.UsageError("--to jsonl needs --output FILE")
    if target == "clickhouse" and not clickhouse_url and not dry_run:
        raise click.UsageError("--to clickhouse needs --clickhouse-url (or HEADWATER_CLICKHOUSE_URL)")
    window = ReplayWindow(project, since, until, from_seq, to_seq)
    geo = (
        default_geo_database()
        if geoip_database is None
        else (Path(geoip_database) if geoip_database else None)
    )
    try:
        bots = bot_filter(
            Path(datacentre_ranges) if datacentre_ranges else None,
            Path(referrer_spam_file) if referrer_spam_file else None,
        )
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"cannot use the bot filter's file: {exc}") from None
    sink: ReplaySink | None = None
    if not dry_run:
        if target == "jsonl":
            assert output is not None
            sink = JsonLinesSink(output)
        else:
            assert clickhouse_url is not None
            try:
                sink = ClickHouseSink(connect(clickhouse_url))
            except Exception as exc:
                hint = ""
                if is_embedded(clickhouse_url) and "Unable to open" in str(exc):
                    # chdb opens a data directory in one process at a time: `up` holds it.
                    hint = (
                        "\nAnother process (a running `headwater up`?) holds this embedded data: "
                        "stop `headwater up` first, or replay into a ClickHouse server with "
                        "--clickhouse-url http(s)://..."
                    )
                raise click.ClickException(
                    f"cannot open ClickHouse at {redact_url(clickhouse_url)}: {exc}{hint}"
                ) from None
    path = None if dry_run else (checkpoint or default_checkpoint_path(window, target))
    if path is not None and restart:
        path.unlink(missing_ok=True)
    bar = ProgressBar("replaying" if sink else "counting", quiet)
    started = time.monotonic()
    try:
        progress = asyncio.run(
            run_replay(
                target_nats.url,
                window,
                sink,
                path,
                target_nats.auth,
                enricher=Enricher(GeoLookup(geo), bots=bots),
                batch_rows=batch_rows,
                on_progress=bar,
            )
        )
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    seconds = time.monotonic() - started
    where = "counted" if sink is None else f"replayed into {target}"
    resumed = f" (resumed at sequence {progress.resumed_from})" if progress.resumed_from else ""
    click.echo(
        f"{where}: {progress.messages:,} messages, {progress.events:,} events"
        f"{f', {progress.skipped:,} unreadable messages skipped' if progress.skipped else ''}"
        f"{f', {progress.suppressed:,} events of deleted people left out' if progress.suppressed else ''}"
        f" in {seconds:.1f} s{resumed}"
    )
