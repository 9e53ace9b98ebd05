"""The destination's commands: `destination-headwater spec|check|write`, also reachable as
`headwater import airbyte …`. Output is Airbyte messages on stdout, one JSON object a line; a
failure ends with an error TRACE message and exit status 1, never a bare traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import click

from headwater.loaders.http import HttpImportLoader, ImportRefused, ImportUnavailable
from headwater.loaders.loader import ImportLoader

from .catalog import SUPPORTED_SYNC_MODES, read_catalog
from .check import check
from .config import CONNECTION_SPECIFICATION, DestinationConfig, read_config
from .messages import (
    ConfigError,
    DestinationError,
    TransientError,
    connection_status,
    encode,
    error_trace,
    log_message,
    spec_message,
)
from .write import write

LoaderFactory = Callable[[DestinationConfig], ImportLoader]


def http_loader(config: DestinationConfig) -> ImportLoader:
    """The loader over the control plane's import API."""
    return HttpImportLoader(config.control_url, config.token, config.project)


def _reported(error: Exception) -> Exception:
    """The loader's failures as the protocol's kinds: unavailable is transient (a retry may
    succeed), a refusal is the system's error with the control plane's code and field."""
    if isinstance(error, ImportUnavailable):
        return TransientError(f"headwater is unavailable: {error}")
    if isinstance(error, ImportRefused):
        return DestinationError(f"the control plane refused the import: {error}")
    return error


def _emit(out: BinaryIO, message: dict[str, Any]) -> None:
    out.write(encode(message))
    out.flush()


def _file_option(name: str, help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(name, required=True, help=help_text, type=click.Path(dir_okay=False, path_type=Path))


def make_destination(loader_factory: LoaderFactory = http_loader) -> click.Group:
    @click.group(name="airbyte", context_settings={"help_option_names": ["-h", "--help"]})
    def destination() -> None:
        """An Airbyte destination writing into a headwater project (docs/import.md, "Airbyte")."""

    @destination.command()
    def spec() -> None:
        """Print the connection specification (a SPEC message)."""
        _emit(sys.stdout.buffer, spec_message(CONNECTION_SPECIFICATION, SUPPORTED_SYNC_MODES))

    @destination.command(name="check")
    @_file_option("--config", "The destination config (JSON: control_url, token, project).")
    def check_command(config: Path) -> None:
        """Try the config against the control API (a CONNECTION_STATUS message)."""
        try:
            result = check(read_config(config))
        except ConfigError as exc:
            _emit(sys.stdout.buffer, connection_status(False, exc.message))
            return
        _emit(sys.stdout.buffer, connection_status(result.succeeded, result.message))

    @destination.command(name="write")
    @_file_option("--config", "The destination config (JSON: control_url, token, project).")
    @_file_option("--catalog", "The configured catalog of the sync.")
    def write_command(config: Path, catalog: Path) -> None:
        """Import the records on standard input; echo each state once the records before it are stored."""
        out = sys.stdout.buffer
        try:
            plans = read_catalog(catalog)
            loader = loader_factory(read_config(config))
            write(loader, plans, sys.stdin.buffer, out)
        except Exception as exc:  # every failure is reported the protocol's way
            reported = _reported(exc)
            if reported is not exc:
                reported.__cause__ = exc
                reported.__traceback__ = exc.__traceback__
            _emit(out, log_message("ERROR", str(reported)))
            _emit(out, error_trace(reported))
            sys.exit(1)

    return destination


def main() -> None:
    """The `destination-headwater` console script."""
    make_destination().main(prog_name="destination-headwater")
