"""`headwater import …`: bring production data and past events into a project (docs/import.md)."""

from __future__ import annotations

import click

from headwater.loaders.airbyte.cli import make_destination


@click.group(name="import")
def import_group() -> None:
    """Import data into a project: Airbyte, Singer, past events (docs/import.md)."""


import_group.add_command(make_destination())
