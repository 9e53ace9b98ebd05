"""`headwater import events`: past events from JSON-lines files (gzip or not) sent through the
edge, resumable, with a progress bar and a summary (docs/import.md, "Past events")."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import click

from headwater.loaders.events.errorlog import ErrorLog
from headwater.loaders.events.formats import FORMATS, Format
from headwater.loaders.events.importer import MAX_BATCH_EVENTS, EventsImport, ImportSettings, Summary
from headwater.loaders.events.sender import EdgeRefusedImport, EdgeSender, EdgeUnavailable
from headwater.loaders.events.source import UNREADABLE_FILE

from .datadir import DataDir
from .options import data_dir_option, option

PLAIN_PROGRESS_EVERY_SECONDS = 10.0


def resolve_edge_url(edge_url: str | None, data_dir: str) -> str:
    if edge_url:
        return edge_url
    record = DataDir(Path(data_dir)).read_stack()
    if record is None:
        raise click.ClickException(
            f"no running stack found in {data_dir}: start `headwater up`, "
            "or pass --edge-url (HEADWATER_EDGE_URL)"
        )
    return record.edge_url


@click.command("events")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--project", required=True, help="The project the events belong to.")
@option("--write-key", None, required=True, help="The project's secret key (the edge refuses a public one).")
@option(
    "--edge-url", None, help="The edge to send to; default: the running `headwater up` stack of --data-dir."
)
@data_dir_option
@click.option(
    "--format",
    "source_format",
    default="auto",
    show_default=True,
    type=click.Choice(FORMATS),
    help="segment: Segment events or archives; jitsu: Jitsu's exports; auto: decided per line.",
)
@option(
    "--state",
    None,
    click.Path(file_okay=False, path_type=Path),
    env="HEADWATER_IMPORT_STATE",
    help="Directory for the progress files; default: beside each input file.",
)
@click.option(
    "--errors",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write each refused line here (JSON lines: file, line, code, field, message, text).",
)
@click.option("--restart", is_flag=True, help="Ignore saved progress: send every line again.")
@click.option(
    "--batch-events",
    default=500,
    show_default=True,
    type=click.IntRange(1, MAX_BATCH_EVENTS),
    help="Events per request (the edge takes at most --max-batch-events, 2,500 by default).",
)
@click.option(
    "--batch-bytes",
    default=400_000,
    show_default=True,
    type=click.IntRange(1024, None),
    help="Bytes of events per request (under the edge's --max-body-bytes, 500 KB by default).",
)
@click.option(
    "--concurrency", default=4, show_default=True, type=click.IntRange(1, 64), help="Requests in flight."
)
@click.option(
    "--give-up-after",
    default=900.0,
    show_default=True,
    type=click.FloatRange(1, None),
    help="Seconds a batch may keep failing (429, 503, no connection) before the import stops.",
)
def import_events(
    files: tuple[Path, ...],
    project: str,
    write_key: str,
    edge_url: str | None,
    data_dir: str,
    source_format: str,
    state: Path | None,
    errors: Path | None,
    restart: bool,
    batch_events: int,
    batch_bytes: int,
    concurrency: int,
    give_up_after: float,
) -> None:
    """Import past events from FILES: JSON lines of Segment events, Segment archives or Jitsu
    exports, gzip or not. A run stopped midway continues where it stopped when run again."""
    try:
        settings = ImportSettings(
            project,
            cast(Format, source_format),  # (click.Choice checked it)
            batch_events,
            batch_bytes,
            concurrency,
            state,
            restart,
        )
        sender = EdgeSender(resolve_edge_url(edge_url, data_dir), write_key, give_up_after)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        error_log = ErrorLog(errors)
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="--errors") from None
    job = EventsImport(settings, sender, error_log)
    paths = list(files)
    started = time.monotonic()
    try:
        total, done = job.plan(paths)
        if sys.stderr.isatty():
            with click.progressbar(length=total, label="importing", file=sys.stderr) as bar:
                bar.update(done)
                summary = job.run(paths, bar.update)
        else:
            summary = job.run(paths, _plain_progress(total, done))
    except (EdgeRefusedImport, EdgeUnavailable) as exc:
        raise click.ClickException(f"{exc}; progress is saved: run the same command to resume") from None
    except PermissionError as exc:  # e.g. no progress file can be written beside a read-only input
        raise click.ClickException(f"{exc} (--state DIR keeps the progress files elsewhere)") from None
    except UNREADABLE_FILE as exc:  # an unreadable file, a corrupt or truncated gzip
        raise click.ClickException(
            f"{exc}; the progress saved so far is kept for a run on the whole file"
        ) from None
    finally:
        error_log.close()
        sender.close()
    click.echo(format_summary(summary, time.monotonic() - started))


def _plain_progress(total: int, done: int) -> Callable[[int], None]:
    """A line on standard error every few seconds, for logs."""
    state = {"done": done, "shown": time.monotonic()}

    def advance(size: int) -> None:
        state["done"] += size
        now = time.monotonic()
        if now - state["shown"] >= PLAIN_PROGRESS_EVERY_SECONDS:
            state["shown"] = now
            share = 100.0 * state["done"] / total if total else 100.0
            click.echo(f"imported {share:.1f}% of the input bytes", err=True)

    return advance


def format_summary(summary: Summary, seconds: float) -> str:
    refused = sum(summary.refused.values())
    lines = [
        f"files: {summary.files} ({summary.files_already_done} already imported before this run)",
        f"lines read: {summary.lines:,}",
        f"events accepted by the edge: {summary.accepted:,}",
        f"lines refused: {refused:,}",
    ]
    lines += [f"  {code}: {count:,}" for code, count in sorted(summary.refused.items())]
    lines.append(
        f"sent in this run: {summary.sent_this_run:,} events in {seconds:.1f} s"
        + (f" ({summary.retries} retried requests)" if summary.retries else "")
    )
    return "\n".join(lines)
