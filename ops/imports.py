"""`headwater import …`: bring data from outside into a project (docs/import.md). `singer` reads a
Singer tap's messages on standard input; the Airbyte destination and the events importer add
their own subcommands to this group."""

from __future__ import annotations

from pathlib import Path

import click

from headwater.loaders.airbyte.cli import make_destination
from headwater.loaders.http import DEFAULT_MAX_ROWS
from headwater.loaders.singer.target import HeadwaterTarget

from .controlclient import resolve_admin_token, resolve_control_url
from .datadir import DataDir
from .import_events import import_events
from .options import control_url_option, data_dir_option, option


@click.group(name="import")
def import_() -> None:
    """Import production data (Singer, Airbyte) and past events into a project (docs/import.md)."""


@import_.command()
@option("--project", required=True, help="The project whose database receives the tables.")
@control_url_option
@data_dir_option
@click.option(
    "--batch-rows",
    type=click.IntRange(1, 10_000),
    default=DEFAULT_MAX_ROWS,
    show_default=True,
    help="Records per request to the control plane.",
)
@click.option(
    "--state-interval",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between STATE messages made durable and written out while the tap sends them.",
)
def singer(
    project: str, control_url: str | None, data_dir: str, batch_rows: int, state_interval: float
) -> None:
    """Read a Singer tap's messages (SCHEMA, RECORD, STATE, ACTIVATE_VERSION) on standard input,
    e.g. `tap-postgres | headwater import singer --project shop`. Each stream lands in
    hw_<project>.import_<stream>; each STATE is written to standard output once every record
    before it is durable. The token is HEADWATER_ADMIN_TOKEN or the one `headwater up` stored."""
    data = DataDir(Path(data_dir))
    config = {
        "control_url": resolve_control_url(control_url, data),
        "token": resolve_admin_token(data),
        "project": project,
        "batch_rows": batch_rows,
        "state_interval_seconds": state_interval,
    }
    target = HeadwaterTarget(config=config, validate_config=True)
    target.listen()


import_.add_command(make_destination())
import_.add_command(import_events)
