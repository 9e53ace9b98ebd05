"""`headwater funnel`: how far people get through a funnel's steps, as a table or JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from headwater.analytics.funnels.definition import ORDERS, UNITS, FunnelError, parse_step
from headwater.analytics.funnels.filters import Filter, FilterError, check_key, parse_filter
from headwater.control.funnels import run_funnel, run_trend
from headwater.control.schemas import WINDOW_UNIT_MS, FunnelRequest, FunnelTrendRequest
from headwater.core.service.validation import convert_body

from .controlclient import ControlClient
from .direct import ask_directly
from .options import (
    clickhouse_url_option,
    control_url_option,
    data_dir_option,
    format_duration,
    include_bots_option,
    option,
    options,
    parse_duration,
    range_options,
    time_range,
)


def definition_body(
    steps: tuple[str, ...], window: str, order: str, unit: str, step_filters: tuple[tuple[int, str], ...],
    filters: tuple[str, ...], exclusions: tuple[tuple[int, int, str], ...],
    exclude_filters: tuple[tuple[int, str], ...], breakdown: str | None, attribution: str,
    optional: tuple[int, ...] = (), step_windows: tuple[tuple[int, str], ...] = (),
    include_bots: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """A funnel's definition in the API's form, from the options of definition_options."""
    parsed = []
    for text in steps:
        try:
            step = parse_step(text)
        except FunnelError as exc:
            raise click.BadParameter(str(exc), param_hint="--step") from None
        parsed.append({"kind": step.kind, "value": step.value})
    body: dict[str, Any] = {
        "steps": parsed,
        "window": _window(window, "--window"),
        "order": order,
        "unit": unit,
    }
    add_step_options(body, optional, step_windows)
    add_filters(body, step_filters, filters)
    add_exclusions(body, exclusions, exclude_filters)
    if breakdown:
        body["breakdown"] = {"column": breakdown, "attribution": attribution}
    if include_bots:
        body["include_bots"] = True
    return body


def _window(text: str, hint: str) -> dict[str, Any]:
    """A duration (7d, 12h, 90s) as the API's window, in whole seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None
    if seconds < 1 or seconds != int(seconds):
        raise click.BadParameter("a whole number of seconds, at least 1s", param_hint=hint)
    return {"value": int(seconds), "unit": "second"}


def add_step_options(
    body: dict[str, Any], optional: tuple[int, ...], step_windows: tuple[tuple[int, str], ...]
) -> None:
    """--optional N marks step N (1-based) optional, --step-window N DURATION gives it a window
    from the previous step taken. The API checks which steps may have either."""
    for number in optional:
        if not 1 <= number <= len(body["steps"]):
            raise click.BadParameter(f"no step {number}", param_hint="--optional")
        body["steps"][number - 1]["optional"] = True
    for number, text in step_windows:
        if not 1 <= number <= len(body["steps"]):
            raise click.BadParameter(f"no step {number}", param_hint="--step-window")
        body["steps"][number - 1]["window"] = _window(text, "--step-window")


def _filter_spec(text: str, hint: str) -> dict[str, Any]:
    try:
        parsed: Filter = parse_filter(text)
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None
    value = list(parsed.value) if isinstance(parsed.value, tuple) else parsed.value
    return {"key": parsed.key, "op": parsed.op, "value": value}


def add_filters(
    body: dict[str, Any], step_filters: tuple[tuple[int, str], ...], filters: tuple[str, ...]
) -> None:
    """--step-filter N EXPR onto step N (1-based), --filter EXPR onto the funnel."""
    for number, text in step_filters:
        if not 1 <= number <= len(body["steps"]):
            raise click.BadParameter(f"no step {number}", param_hint="--step-filter")
        step = body["steps"][number - 1]
        step.setdefault("filters", []).append(_filter_spec(text, "--step-filter"))
    if filters:
        body["filters"] = [_filter_spec(text, "--filter") for text in filters]


def add_exclusions(
    body: dict[str, Any], exclusions: tuple[tuple[int, int, str], ...], filters: tuple[tuple[int, str], ...]
) -> None:
    """--exclude FROM TO STEP (an event or page voiding an attempt between its steps FROM and TO),
    --exclude-filter N EXPR onto the Nth --exclude (1-based). The API checks FROM and TO."""
    specs: list[dict[str, Any]] = []
    for start, end, text in exclusions:
        try:
            step = parse_step(text)
        except FunnelError as exc:
            raise click.BadParameter(str(exc), param_hint="--exclude") from None
        specs.append({"kind": step.kind, "value": step.value, "from_step": start, "to_step": end})
    for number, text in filters:
        if not 1 <= number <= len(specs):
            raise click.BadParameter(f"no exclusion {number}", param_hint="--exclude-filter")
        specs[number - 1].setdefault("filters", []).append(_filter_spec(text, "--exclude-filter"))
    if specs:
        body["exclusions"] = specs


def _breakdown_key(_context: click.Context, _parameter: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            check_key(value)
        except FilterError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _time(milliseconds: float | None) -> str:
    if milliseconds is None:
        return "-"
    if milliseconds < 1000:
        return f"{milliseconds:.0f}ms"
    return format_duration(round(milliseconds / 1000))


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def trend_table(days: list[dict[str, Any]]) -> str:
    """A trend's days as an aligned table: entries, conversions to the last step, the share."""
    rows = [("day", "entered", "converted", "conversion", "")]
    for day in days:
        first, last = day["steps"][0], day["steps"][-1]
        rows.append(
            (
                day["date"],
                f"{first['count']:,}",
                f"{last['count']:,}",
                _share(last["conversion_from_start"]),
                "" if day["complete"] else "(in progress)",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        "  ".join(
            [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:4], widths[1:], strict=True))]
        )
        + (f"  {row[4]}" if row[4] else "")
        for row in rows
    )


def _step_name(step: dict[str, Any]) -> str:
    """`kind:value`, with `(optional)` and its own window when it has them."""
    name = f"{step['kind']}:{step['value']}"
    if step.get("window"):
        name += f" (within {_time(step['window']['value'] * WINDOW_UNIT_MS[step['window']['unit']])})"
    return f"{name} (optional)" if step.get("optional") else name


def funnel_table(steps: list[dict[str, Any]]) -> str:
    """An answer's steps as an aligned table, one line per step; an optional step's drop-off and
    conversion from the previous are from the required step before it."""
    header = ("step", "people", "of first", "of previous", "dropped", "median", "average", "p90")
    rows = [header]
    for index, step in enumerate(steps):
        first = index == 0
        rows.append(
            (
                _step_name(step["step"]),
                f"{step['count']:,}",
                _share(step["conversion_from_start"]),
                "-" if first else _share(step["conversion_from_previous"]),
                "-" if first else f"{step['dropped']:,}",
                _time(step["median_ms"]),
                _time(step["average_ms"]),
                _time(step["p90_ms"]),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = []
    for row in rows:
        name, *numbers = row
        cells = [name.ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(numbers, widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


# The options that define a funnel (definition_body takes them by name), shared by `headwater
# funnel` and `headwater funnels save`.
definition_options = options(
    click.option(
        "--step",
        "steps",
        multiple=True,
        required=True,
        help="event:NAME or page:PATH (* wildcards), in order; 2 to 20.",
    ),
    click.option(
        "--window",
        default="1d",
        show_default=True,
        help="The last step at most this long after the first (30m, 12h, 7d).",
    ),
    click.option(
        "--order",
        type=click.Choice(ORDERS),
        default="ordered",
        show_default=True,
        help="strict: no other event between steps; unordered: the steps in any order.",
    ),
    click.option(
        "--unit",
        type=click.Choice(UNITS),
        default="people",
        show_default=True,
        help="sessions: each visit of the sessions table goes through the funnel on its own.",
    ),
    click.option(
        "--optional",
        type=int,
        multiple=True,
        metavar="N",
        help="Step N (1-based; neither the first nor the last) may be skipped: who skips it still counts "
        "at the steps after it.",
    ),
    click.option(
        "--step-window",
        "step_windows",
        type=(int, str),
        multiple=True,
        metavar="N DURATION",
        help="Step N at most this long after the previous step taken (30m, 12h), within --window too.",
    ),
    click.option(
        "--step-filter",
        "step_filters",
        type=(int, str),
        multiple=True,
        metavar="N EXPR",
        help="A condition on step N's event (1-based): KEY=V, KEY!=V, KEY~TEXT, KEY=~REGEX, KEY<N, KEY>N, "
        "KEY in [..], KEY?, KEY!?; KEY a column (country) or properties.NAME.",
    ),
    click.option(
        "--filter",
        "filters",
        multiple=True,
        metavar="EXPR",
        help="A condition every event read meets (same form as --step-filter's).",
    ),
    click.option(
        "--exclude",
        "exclusions",
        type=(int, int, str),
        multiple=True,
        metavar="FROM TO STEP",
        help="An event:NAME or page:PATH that voids an attempt when it comes between its steps FROM and TO "
        "(1-based), or, TO not reached, after FROM within the window; up to 5.",
    ),
    click.option(
        "--exclude-filter",
        "exclude_filters",
        type=(int, str),
        multiple=True,
        metavar="N EXPR",
        help="A condition on the Nth --exclude's event (same form as --step-filter's).",
    ),
    click.option(
        "--breakdown",
        callback=_breakdown_key,
        help="Also a table per value of this column or properties.NAME (the values with most people; "
        "the rest together).",
    ),
    click.option(
        "--attribution",
        type=click.Choice(["first", "last"]),
        default="first",
        show_default=True,
        help="The breakdown value at the first step of a person's attempt, or at the last it reached.",
    ),
    include_bots_option,
)


@click.command()
@option("--project", required=True, help="Project id.")
@definition_options
@range_options
@click.option(
    "--trend",
    is_flag=True,
    help="Per UTC day of entry instead: who entered the funnel that day and who converted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
@data_dir_option
@control_url_option
@clickhouse_url_option
def funnel(
    project: str, start: datetime | None, end: datetime | None, trend: bool, as_json: bool,
    data_dir: str, control_url: str | None, clickhouse_url: str | None, **definition: Any,
) -> None:  # fmt: skip
    """How far people get through a funnel (docs/funnels.md): per step, who reached it, the
    conversion, the drop-off and the time from the previous step.

    With --clickhouse-url the query goes straight to that ClickHouse; otherwise through the control
    API of the running stack (found from --data-dir, or --control-url).
    """
    body = {**definition_body(**definition), **time_range(start, end)}
    breakdown = definition["breakdown"]
    if breakdown and trend:
        raise click.BadParameter("a trend has no breakdown", param_hint="--breakdown")
    if clickhouse_url:
        if trend:
            trend_request = convert_body(body, FunnelTrendRequest)
            answer = ask_directly(
                clickhouse_url, lambda queries: run_trend(queries, project, trend_request, datetime.now(UTC))
            )
        else:
            request = convert_body(body, FunnelRequest)
            answer = ask_directly(clickhouse_url, lambda queries: run_funnel(queries, project, request))
    else:
        client = ControlClient.resolve(control_url, data_dir)
        answer = client.funnel_trend(project, body) if trend else client.funnel(project, body)
    if as_json:
        click.echo(json.dumps(answer))
        return
    if trend:
        click.echo(trend_table(answer["days"]))
        return
    click.echo(funnel_table(answer["steps"]))
    for group in answer.get("breakdown") or ():
        label = "(all other values)" if group["value"] is None else repr(group["value"])
        click.echo(f"\n{breakdown} = {label}\n{funnel_table(group['steps'])}")
