"""The `headwater` command group."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from .dlq import dlq
from .funnel import funnel
from .imports import imports
from .migrate import migrate
from .paths import paths
from .patterns import patterns
from .projects import projects
from .query import query
from .replay import replay
from .savedfunnels import funnels
from .serve import serve
from .sessions import sessions
from .spool import spool
from .streams import streams
from .subjects import subjects
from .up import up


def _version() -> str:
    try:
        return version("headwater")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(_version(), prog_name="headwater")
def main() -> None:
    """headwater: a self-hostable product-analytics collector.

    Segment-compatible ingest → NATS JetStream → ClickHouse, one database per project.
    """


main.add_command(up)
main.add_command(serve)
main.add_command(query)
main.add_command(funnel)
main.add_command(funnels)
main.add_command(paths)
main.add_command(patterns)
main.add_command(projects)
main.add_command(migrate)
main.add_command(spool)
main.add_command(dlq)
main.add_command(replay)
main.add_command(streams)
main.add_command(sessions)
main.add_command(subjects)
main.add_command(imports)
