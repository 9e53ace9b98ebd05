"""`headwater spool status|drain|export`: operate the edges' disk spools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import click

from headwater.edge.drainer import drain_batch
from headwater.edge.sink import JetStreamSink
from headwater.edge.streams import StreamSettings, ensure_streams
from headwater.spool import Spool, SpoolUnavailable, list_spool_dirs

from .natsauth import NatsAuth
from .options import data_dir_option, nats_auth_options, nats_url_option, option
from .streams import connected, resolve_nats

spool_dir_option = option(
    "--spool-dir",
    ".headwater/spool",
    help="The spool base directory (holding one directory per edge worker), or one worker's directory.",
)


def spool_dirs(base: str) -> list[Path]:
    root = Path(base)
    dirs = list_spool_dirs(root)
    if not dirs and (root / "cache.db").is_file():
        dirs = [root]  # a single worker's directory
    if not dirs:
        raise click.ClickException(f"no spool found under {root}")
    return dirs


@asynccontextmanager
async def opened(directory: Path) -> AsyncIterator[Spool]:
    try:
        spool = await Spool(directory).open()
    except SpoolUnavailable as exc:  # a full or failing disk: said, not a traceback
        raise click.ClickException(str(exc)) from None
    try:
        yield spool
    finally:
        await spool.close()


@click.group()
def spool() -> None:
    """Inspect, drain and export the edges' disk spools (see docs/spool.md)."""


@spool.command()
@spool_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(spool_dir: str, as_json: bool) -> None:
    """Entries, bytes, oldest age and quarantine per spool directory."""

    async def collect() -> list[dict[str, Any]]:
        rows = []
        for directory in spool_dirs(spool_dir):
            async with opened(directory) as store:
                free = store.try_acquire_drain_lock()
                if free:
                    store.release_drain_lock()
                stats = store.stats()
                rows.append(
                    {
                        "directory": str(directory),
                        "entries": stats.entries,
                        "bytes": stats.bytes,
                        "oldest_age_seconds": stats.oldest_age_seconds,
                        "quarantined": stats.quarantined,
                        "writable": stats.writable,
                        "drained_by": "nobody" if free else "another process (a running edge?)",
                    }
                )
        return rows

    rows = asyncio.run(collect())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        f"{'directory':<40} {'entries':>9} {'bytes':>12} {'oldest':>9} {'quarantined':>11}  drained by"
    )
    for row in rows:
        oldest = "-" if row["oldest_age_seconds"] is None else f"{row['oldest_age_seconds']:.0f}s"
        click.echo(
            f"{row['directory']:<40} {row['entries']:>9} {row['bytes']:>12} {oldest:>9} "
            f"{row['quarantined']:>11}  {row['drained_by']}"
        )


@spool.command()
@spool_dir_option
@nats_url_option
@nats_auth_options
@data_dir_option
@click.option("--batch", default=256, show_default=True, type=click.IntRange(1, 10_000))
def drain(spool_dir: str, nats_url: str | None, nats_auth: NatsAuth, data_dir: str, batch: int) -> None:
    """Republish spooled envelopes to JetStream now, oldest first, with a progress bar.

    A directory whose drain lock a running edge holds is skipped: that edge drains it itself.
    Without --nats-url, the NATS of the `headwater up` running in --data-dir is used.
    """
    url = resolve_nats(nats_url, data_dir, nats_auth)

    async def run() -> int:
        async with connected(url, "headwater-spool-drain") as client:
            js = client.jetstream()
            await ensure_streams(js, StreamSettings())
            sink = JetStreamSink(client, 30)
            await sink.refresh_limit()
            limit = sink.max_body_bytes()  # an envelope over it is split, or quarantined
            total = 0
            for directory in spool_dirs(spool_dir):
                async with opened(directory) as store:
                    if not store.try_acquire_drain_lock():
                        click.echo(f"{directory}: skipped, another process drains it")
                        continue
                    entries = store.stats().entries
                    with click.progressbar(length=entries, label=str(directory), show_pos=True) as bar:
                        while envelopes := await store.peek_batch(batch):
                            drained = await drain_batch(store, js, envelopes, 30, limit)
                            total += drained.removed
                            bar.update(drained.removed + drained.quarantined)
                            if drained.error is not None:
                                raise click.ClickException(f"JetStream did not take them: {drained.error!r}")
                            if drained.quarantined:
                                click.echo(f"{drained.quarantined} undeliverable, moved to the quarantine")
                    store.release_drain_lock()
            return total

    click.echo(f"drained {asyncio.run(run())} envelopes")


@spool.command()
@spool_dir_option
@click.option("--output", "-o", type=click.File("w"), default="-", help="JSON lines file (default: stdout).")
def export(spool_dir: str, output: IO[str]) -> None:
    """Every spooled envelope (and every quarantined one) as JSON lines, for forensics.

    Reads only: nothing is removed, and a running edge may keep appending.
    """

    async def run() -> int:
        count = 0
        for directory in spool_dirs(spool_dir):
            async with opened(directory) as store:
                async for record in store.export():
                    output.write(json.dumps({"directory": str(directory), **record.to_json()}) + "\n")
                    count += 1
        return count

    count = asyncio.run(run())
    click.echo(f"exported {count} entries", err=True)
