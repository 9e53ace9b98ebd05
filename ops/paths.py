"""`headwater paths`: the most frequent journeys from a start point or to an end point, as a table
of edges by weight or JSON."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from headwater.analytics.funnels.definition import FunnelError, parse_step
from headwater.analytics.paths.definition import DEFAULT_EDGES, DEFAULT_STEPS, INCLUDES, parse_rule
from headwater.control.paths import run_paths
from headwater.control.schemas import PathsRequest
from headwater.core.service.validation import convert_body

from .controlclient import ControlClient
from .direct import ask_directly
from .options import (
    clickhouse_url_option,
    control_url_option,
    data_dir_option,
    include_bots_option,
    option,
    range_options,
    time_range,
)


def _point(text: str | None, name: str) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        step = parse_step(text)
    except FunnelError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None
    return {"kind": step.kind, "value": step.value}


def paths_body(
    start_point: str | None, end_point: str | None, steps: int, include: str, rules: tuple[str, ...],
    edge_limit: int, start: datetime | None, end: datetime | None, include_bots: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The API's request body from the command's options."""
    if start_point is not None and end_point is not None:
        raise click.UsageError("--start and --end exclude each other")
    cleaning = []
    for text in rules:
        try:
            rule = parse_rule(text)
        except FunnelError as exc:
            raise click.BadParameter(str(exc), param_hint="--clean") from None
        cleaning.append({"regex": rule.regex, "replacement": rule.replacement})
    body: dict[str, Any] = {
        **time_range(start, end),
        "steps": steps,
        "include": include,
        "cleaning": cleaning,
        "edge_limit": edge_limit,
    }
    for name, point in (("start", _point(start_point, "--start")), ("end", _point(end_point, "--end"))):
        if point is not None:
            body[name] = point
    if include_bots:
        body["include_bots"] = True
    return body


def _label(node: dict[str, Any]) -> str:
    return f"{node['step']['kind']}:{node['step']['value']}"


def paths_table(answer: dict[str, Any]) -> str:
    """An answer's edges as an aligned table, heaviest first: depth, from, to, people, and the
    share of everyone with a path."""
    nodes = {node["id"]: node for node in answer["nodes"]}
    total = answer["people"]
    header = ("depth", "from", "to", "people", "share")
    rows = [header]
    for edge in answer["edges"]:
        source, target = nodes[edge["source"]], nodes[edge["target"]]
        share = f"{edge['people'] / total:.1%}" if total else "-"
        rows.append(
            (
                f"{source['depth']}→{target['depth']}",
                _label(source),
                _label(target),
                f"{edge['people']:,}",
                share,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if column in (0, 3, 4) else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.append(f"{total:,} people with a path; {len(answer['edges'])} edges shown")
    return "\n".join(lines)


@click.command()
@option("--project", required=True, help="Project id.")
@click.option(
    "--start", "start_point", help="From each person's first step matching this: event:NAME or page:PATH."
)
@click.option("--end", "end_point", help="To each person's last step matching this (not with --start).")
@click.option(
    "--steps",
    type=click.IntRange(2, 10),
    default=DEFAULT_STEPS,
    show_default=True,
    help="Nodes per path, the start or end point included.",
)
@range_options
@click.option("--include", type=click.Choice(INCLUDES), default="both", show_default=True)
@click.option(
    "--clean",
    "rules",
    multiple=True,
    help="A path-cleaning rule REGEX=>REPLACEMENT (re2, \\1 for groups), applied in order; repeatable.",
)
@click.option(
    "--edge-limit",
    type=click.IntRange(1, 500),
    default=DEFAULT_EDGES,
    show_default=True,
    help="Heaviest edges shown.",
)
@include_bots_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
@data_dir_option
@control_url_option
@clickhouse_url_option
def paths(
    project: str, start_point: str | None, end_point: str | None, steps: int, start: datetime | None,
    end: datetime | None, include: str, rules: tuple[str, ...], edge_limit: int, include_bots: bool,
    as_json: bool, data_dir: str, control_url: str | None, clickhouse_url: str | None,
) -> None:  # fmt: skip
    """The most frequent journeys from a start point or to an end point (docs/paths.md): the
    heaviest edges between steps, as a table or as the API's nodes and edges.

    With --clickhouse-url the query goes straight to that ClickHouse; otherwise through the control
    API of the running stack (found from --data-dir, or --control-url).
    """
    body = paths_body(start_point, end_point, steps, include, rules, edge_limit, start, end, include_bots)
    if clickhouse_url:
        request = convert_body(body, PathsRequest)
        answer = ask_directly(clickhouse_url, lambda queries: run_paths(queries, project, request))
    else:
        answer = ControlClient.resolve(control_url, data_dir).paths(project, body)
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(paths_table(answer))
