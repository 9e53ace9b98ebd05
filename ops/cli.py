"""The `headwater` command group."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

import click

# Each command's module is imported only when that command runs (or `--help` lists them all): the
# whole CLI imports nats, ClickHouse, the user-agent parser, singer-sdk and numpy (~2.8 s), a
# command such as `projects list` needs a fraction of that.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("up", "up"),
    "serve": ("serve", "serve"),
    "query": ("query", "query"),
    "funnel": ("funnel", "funnel"),
    "funnels": ("savedfunnels", "funnels"),
    "paths": ("paths", "paths"),
    "patterns": ("patterns", "patterns"),
    "projects": ("projects", "projects"),
    "migrate": ("migrate", "migrate"),
    "spool": ("spool", "spool"),
    "dlq": ("dlq", "dlq"),
    "replay": ("replay", "replay"),
    "streams": ("streams", "streams"),
    "sessions": ("sessions", "sessions"),
    "subjects": ("subjects", "subjects"),
    "import": ("imports", "import_"),
}


class LazyGroup(click.Group):
    """A group whose commands (COMMANDS: name → module of this package, attribute) are imported
    when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
        assert isinstance(command, click.Command) and command.name == cmd_name, cmd_name
        return command


def _version() -> str:
    try:
        return version("headwater")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(_version(), prog_name="headwater")
def main() -> None:
    """headwater: a self-hostable product-analytics collector.

    Segment-compatible ingest → NATS JetStream → ClickHouse, one database per project.
    """
