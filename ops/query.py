"""`headwater query`: read-only SQL against one project's database, rows printed tab-separated."""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
from clickhouse_connect.driver.exceptions import ClickHouseError

from headwater.control.clickhouse import is_embedded, redact_url
from headwater.control.errors import APIError
from headwater.control.query import ReadOnlyQueries

from .datadir import DataDir
from .options import admin_token_from_env, clickhouse_url_option, data_dir_option, option

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


def query_via_control(
    control_url: str, token: str, project: str, sql: str
) -> tuple[list[str], list[list[Any]]]:
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own control API
        f"{control_url.rstrip('/')}/v1/projects/{project}/query",
        data=json.dumps({"sql": sql}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
            message = f"{error.get('code')}: {error.get('message')}"
        except ValueError:
            message = str(exc)
        raise click.ClickException(f"query refused ({exc.code}) {message}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach the control API at {control_url}: {exc.reason}") from None
    return body["columns"], body["rows"]


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
@option(
    "--project", env="HEADWATER_PROJECT", required=True, help="Project id; the query runs in its database."
)
@click.argument("sql")
@data_dir_option
@option("--control-url", env="HEADWATER_CONTROL_URL", default=None, help="Control API of a running stack.")
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
        data = DataDir(Path(data_dir))
        if control_url is None:
            record = data.read_stack()
            if record is None:
                raise click.ClickException(
                    f"no running stack found in {data.root}: start `headwater up`, or pass --control-url"
                )
            control_url = record.control_url
        token = admin_token_from_env() or data.admin_token()
        if not token:
            raise click.ClickException("no admin token: set HEADWATER_ADMIN_TOKEN")
        columns, rows = query_via_control(control_url, token, project, sql)
    if header:
        click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join(tsv_field(v) for v in row))
