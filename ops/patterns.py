"""`headwater patterns`: suggested funnels, what converters do differently and the next-step model's
accuracy, as tables or JSON (docs/patterns.md, "The CLI").

The API answers when the mining ends (no progress to poll), so while it works the command shows a
spinner with the elapsed time on stderr when stderr is a terminal, and one line saying what it
waits for otherwise."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from headwater.analytics.patterns.analysis import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MIN_SUPPORT,
    DEFAULT_TOP,
    MAX_TOP,
)
from headwater.analytics.patterns.source import UNITS
from headwater.control.patterns import run_patterns
from headwater.control.patterns_schemas import PatternsRequest
from headwater.core.service.validation import convert_body

from .controlclient import ControlClient
from .direct import ask_directly
from .options import (
    clickhouse_url_option,
    control_url_option,
    data_dir_option,
    include_bots_option,
    option,
    time_range,
    when_option,
)
from .paths import paths_body  # the same --clean parsing

T = TypeVar("T")
# Mining a large range takes minutes; the control client's usual minute is too short.
TIMEOUT_SECONDS = 900.0


def goal_of(text: str | None) -> dict[str, str] | None:
    """`--goal`: a page when it begins with `/`, else an event's name (`event:/x` or `page:x` say
    which outright)."""
    if text is None:
        return None
    kind, separator, value = text.partition(":")
    if separator and kind in ("event", "page") and value:
        return {"kind": kind, "value": value}
    return {"kind": "page" if text.startswith("/") else "event", "value": text}


def patterns_body(
    unit: str, goal: str | None, top: int, min_support: float, max_length: int, rules: tuple[str, ...],
    start: datetime | None, end: datetime | None, include_bots: bool = False,
) -> dict[str, Any]:  # fmt: skip
    cleaning = paths_body(None, None, 4, "both", rules, 50, start, end)["cleaning"]
    body: dict[str, Any] = {
        **time_range(start, end),
        "unit": unit,
        "top": top,
        "min_support": min_support,
        "max_length": max_length,
        "cleaning": cleaning,
    }
    asked = goal_of(goal)
    if asked is not None:
        body["goal"] = asked
    if include_bots:
        body["include_bots"] = True
    return body


def with_spinner(label: str, work: Callable[[], T]) -> T:
    """`work()`'s result, a spinner and the elapsed seconds on stderr meanwhile (a terminal), or one
    line (anything else)."""
    err = sys.stderr
    if not err.isatty():
        click.echo(f"{label}…", err=True)
        return work()
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            if done.wait(0.2):
                break
            err.write(f"\r{frame} {label}… {time.monotonic() - started:.0f} s")
            err.flush()
        err.write("\r\x1b[K")
        err.flush()

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        return work()
    finally:
        done.set()
        spinner.join()


def _steps(item: dict[str, Any]) -> str:
    return " → ".join(item["steps"])


def _aligned(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(w) if c in right else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def patterns_table(answer: dict[str, Any]) -> str:
    unit = answer["unit"]
    cut = f" ({answer['truncated']:,} cut short)" if answer["truncated"] else ""
    lines = [f"{answer['journeys']:,} {unit} read{cut}"]
    rows: list[tuple[str, ...]] = [("#", "pattern", unit, "share", "lift", "leverage", "drop-off")]
    for index, p in enumerate(answer["patterns"], 1):
        rows.append(
            (
                str(index),
                _steps(p),
                f"{p['support']:,}",
                f"{p['share']:.1%}",
                f"{p['lift']:.1f}x",
                f"{p['leverage']:.1%}",
                f"{p['drop_off']:.0%}",
            )
        )
    lines += ["", "Suggested funnels (by leverage)"]
    lines += _aligned(rows, {0, 2, 3, 4, 5, 6}) if answer["patterns"] else ["(none)"]
    if answer.get("drivers") is not None:
        rows = [("#", "pattern", "converters", "others", "lift", "q", "")]
        for index, d in enumerate(answer["drivers"], 1):
            lift = "∞" if d["lift"] is None else f"{d['lift']:.2f}x"
            rows.append(
                (
                    str(index),
                    _steps(d),
                    f"{d['support_converters']:.1%}",
                    f"{d['support_others']:.1%}",
                    lift,
                    f"{d['q_value']:.2g}",
                    d["direction"],
                )
            )
        lines += ["", f"What converters do differently ({answer['converters']:,} {unit} reached the goal)"]
        lines += _aligned(rows, {0, 2, 3, 4, 5}) if answer["drivers"] else ["(no significant driver)"]
    model = answer.get("next_step")
    if model is not None:
        lines += [
            "",
            f"Next step: order {model['order']}, held-out top-3 accuracy {model['top3_accuracy']:.1%} "
            f"(most frequent steps: {model['baseline_top3_accuracy']:.1%}) on {model['journeys']:,} {unit}",
        ]
    return "\n".join(lines)


@click.command()
@option("--project", required=True, help="Project id.")
@click.option("--goal", help="A goal for drivers: an event's name, or a page's path when it begins with /.")
@click.option(
    "--since",
    "--from",
    "start",
    callback=when_option,
    help="From this time (ISO-8601, or 30m/12h/7d ago); default: 30 days before --until.",
)
@click.option("--until", "--to", "end", callback=when_option, help="Before this time; default: now.")
@click.option("--unit", type=click.Choice(UNITS), default="sessions", show_default=True)
@click.option(
    "--top",
    type=click.IntRange(1, MAX_TOP),
    default=DEFAULT_TOP,
    show_default=True,
    help="Patterns (and drivers) shown.",
)
@click.option(
    "--min-support",
    type=click.FloatRange(0, 1, min_open=True),
    default=DEFAULT_MIN_SUPPORT,
    show_default=True,
    help="A pattern occurs in at least this share of the journeys.",
)
@click.option(
    "--max-length",
    type=click.IntRange(2, 20),
    default=DEFAULT_MAX_LENGTH,
    show_default=True,
    help="Steps per pattern at most.",
)
@click.option(
    "--clean",
    "rules",
    multiple=True,
    help="A path-cleaning rule REGEX=>REPLACEMENT, applied in order; repeatable.",
)
@include_bots_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
@data_dir_option
@control_url_option
@clickhouse_url_option
def patterns(
    project: str, goal: str | None, start: datetime | None, end: datetime | None, unit: str, top: int,
    min_support: float, max_length: int, rules: tuple[str, ...], include_bots: bool, as_json: bool,
    data_dir: str, control_url: str | None, clickhouse_url: str | None,
) -> None:  # fmt: skip
    """Suggested funnels, what converters do differently (with --goal) and the next-step model
    (docs/patterns.md): mined from the journeys of a time range.

    With --clickhouse-url the journeys are read straight from that ClickHouse and mined here;
    otherwise the control API of the running stack (found from --data-dir, or --control-url) does it.
    """
    body = patterns_body(unit, goal, top, min_support, max_length, rules, start, end, include_bots)
    label = f"mining the {unit} of {project}"
    if clickhouse_url:
        request = convert_body(body, PatternsRequest)
        url = clickhouse_url
        answer = with_spinner(
            label, lambda: ask_directly(url, lambda queries: run_patterns(queries, project, request))
        )
    else:
        client = ControlClient.resolve(control_url, data_dir, timeout=TIMEOUT_SECONDS)
        answer = with_spinner(label, lambda: client.patterns(project, body))
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(patterns_table(answer))
