"""`headwater import`: bring data from outside into a project (docs/import.md)."""

from __future__ import annotations

import click

from .import_events import import_events


@click.group("import")
def imports() -> None:
    """Import production data (Singer, Airbyte) or past events into a project."""


imports.add_command(import_events)
