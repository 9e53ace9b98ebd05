"""`headwater query`: read-only SQL against one project's database, rows printed tab-separated."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click
from clickhouse_connect.driver.exceptions import ClickHouseError

from headwater.control.clickhouse import is_embedded, redact_url
from headwater.control.query import ReadOnlyQueries
from headwater.core.service.errors import APIError

from .controlclient import ControlClient
from .options import clickhouse_url_option, control_url_option, data_dir_option, option

_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_field(value: Any) -> str:
    """A value as ClickHouse's TabSeparated format writes it (NULL is \\N)."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime.datetime):
        value = value.isoformat(sep=" ")
    elif isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    return str(value).translate(_TSV_ESCAPES)


def query_directly(clickhouse_url: str, project: str, sql: str) -> tuple[list[str], list[list[Any]]]:
    queries = ReadOnlyQueries(clickhouse_url, max_rows=1_000_000, timeout_seconds=300)
    try:
        result = queries.run(project, sql)
    except APIError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    except ClickHouseError as exc:
        hint = ""
        if is_embedded(clickhouse_url) and "Unable to open" in str(exc):
            hint = (
                "\nIf a running headwater holds this embedded data, query through it: drop --clickhouse-url."
            )
        raise click.ClickException(f"cannot query {redact_url(clickhouse_url)}: {exc}{hint}") from None
    finally:
        queries.close()
    return list(result.columns), result.rows


@click.command()
@option("--project", required=True, help="Project id; the query runs in its database.")
@click.argument("sql")
@data_dir_option
@control_url_option
@clickhouse_url_option
@click.option("--header/--no-header", default=False, help="Print the column names first.")
def query(
    project: str, sql: str, data_dir: str, control_url: str | None, clickhouse_url: str | None, header: bool
) -> None:
    """Run read-only SQL in PROJECT's database and print the rows, one per line, tab-separated.

    With --clickhouse-url the query goes straight to that ClickHouse (a server, or embedded data no
    running process holds); otherwise through the control API of the running stack (found from
    --data-dir, or --control-url), since only the process that runs the embedded engine can open
    its data.
    """
    if clickhouse_url:
        columns, rows = query_directly(clickhouse_url, project, sql)
    else:
        columns, rows = ControlClient.resolve(control_url, data_dir).query(project, sql)
    if header:
        click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join(tsv_field(v) for v in row))
