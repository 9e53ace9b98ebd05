"""`headwater funnels`: list, show, save, delete and run a project's saved funnels through the
control API, and flag the days their conversion left its band (docs/funnels.md, "Saved funnels";
docs/patterns.md, "Anomalies")."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from . import anomalies as anomaly_table
from .controlclient import ControlClient
from .funnel import definition_body, definition_options, funnel_table, trend_table
from .options import option, range_options, time_range, when_option
from .projects import key_value_block, print_json, table, with_client

json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
project_option = option("--project", required=True, help="Project id.")


def _step_text(step: dict[str, Any]) -> str:
    return f"{step['kind']}:{step['value']}" + (
        f" ({len(step['filters'])} filters)" if step["filters"] else ""
    )


def _filter_text(spec: dict[str, Any]) -> str:
    return f"{spec['key']} {spec['op']}" + ("" if spec.get("value") is None else f" {spec['value']!r}")


def funnel_summary(funnel: dict[str, Any]) -> str:
    window = funnel["window"]
    breakdown = funnel["breakdown"]
    rows: list[tuple[str, str | list[str]]] = [
        ("id", funnel["id"]),
        ("name", funnel["name"]),
        ("revision", str(funnel["revision"])),
        ("steps", [_step_text(step) for step in funnel["steps"]]),
        ("window", f"{window['value']} {window['unit']}{'s' if window['value'] != 1 else ''}"),
        ("order", funnel["order"]),
        ("unit", funnel["unit"]),
        (
            "exclusions",
            [
                f"{_step_text(e)} between steps {e['from_step']} and {e['to_step']}"
                for e in funnel["exclusions"]
            ],
        ),
        ("filters", [_filter_text(spec) for spec in funnel["filters"]]),
        (
            "breakdown",
            "-"
            if breakdown is None
            else f"{breakdown['column']} ({breakdown['attribution']} touch, top {breakdown['limit']})",
        ),
        ("created", funnel["created_at"]),
        ("updated", funnel["updated_at"]),
    ]
    return key_value_block(rows)


@click.group()
def funnels() -> None:
    """Manage a project's saved funnels through the control API, and run them.

    The API is --control-url (HEADWATER_CONTROL_URL), else the running `headwater up` of --data-dir;
    the admin token is HEADWATER_ADMIN_TOKEN, else the one `headwater up` stored in --data-dir.
    """


@funnels.command(name="list")
@project_option
@json_option
@with_client
def list_funnels(client: ControlClient, project: str, as_json: bool) -> None:
    """The project's saved funnels, by name."""
    saved = client.list_saved_funnels(project)
    if as_json:
        print_json({"funnels": saved})
        return
    if not saved:
        click.echo(f"project {project!r} has no saved funnels")
        return
    rows = [
        (f["id"], f["name"], " → ".join(f"{s['kind']}:{s['value']}" for s in f["steps"]), f["updated_at"])
        for f in saved
    ]
    click.echo(table(("id", "name", "steps", "updated"), rows))


@funnels.command()
@project_option
@click.argument("funnel_id", metavar="FUNNEL_ID")
@json_option
@with_client
def show(client: ControlClient, project: str, funnel_id: str, as_json: bool) -> None:
    """One saved funnel's definition."""
    saved = client.get_saved_funnel(project, funnel_id)
    if as_json:
        print_json(saved)
    else:
        click.echo(funnel_summary(saved))


@funnels.command()
@project_option
@click.option("--name", required=True, help="The funnel's name (1 to 200 characters).")
@definition_options
@click.option("--replace", "replace_id", metavar="FUNNEL_ID", help="Replace this saved funnel instead.")
@click.option("--if-match", type=int, metavar="REVISION", help="With --replace: only if still at REVISION.")
@json_option
@with_client
def save(
    client: ControlClient, project: str, name: str, replace_id: str | None, if_match: int | None,
    as_json: bool, **definition: Any,
) -> None:  # fmt: skip
    """Save a funnel under a name (the options of `headwater funnel`, without a time range)."""
    body = {**definition_body(**definition), "name": name}
    if replace_id is None:
        saved = client.save_funnel(project, body)
    else:
        saved = client.replace_saved_funnel(project, replace_id, body, if_match)
    if as_json:
        print_json(saved)
        return
    click.echo(f"{'replaced' if replace_id else 'saved'} funnel {saved['id']} in project {project!r}")
    click.echo(funnel_summary(saved))


@funnels.command()
@project_option
@click.argument("funnel_id", metavar="FUNNEL_ID")
@with_client
def delete(client: ControlClient, project: str, funnel_id: str) -> None:
    """Delete a saved funnel."""
    client.delete_saved_funnel(project, funnel_id)
    click.echo(f"deleted funnel {funnel_id} of project {project!r}")


@funnels.command()
@project_option
@click.argument("funnel_id", metavar="FUNNEL_ID")
@range_options
@click.option("--trend", is_flag=True, help="The conversion per UTC day of entry instead (no breakdown).")
@json_option
@with_client
def run(
    client: ControlClient,
    project: str,
    funnel_id: str,
    start: datetime | None,
    end: datetime | None,
    trend: bool,
    as_json: bool,
) -> None:
    """Run a saved funnel: the table `headwater funnel` prints for its definition."""
    body = time_range(start, end)
    if trend:
        answer = client.saved_funnel_trend(project, funnel_id, body)
    else:
        answer = client.run_saved_funnel(project, funnel_id, body)
    if as_json:
        click.echo(json.dumps(answer))
        return
    if trend:
        click.echo(trend_table(answer["days"]))
        return
    click.echo(funnel_table(answer["steps"]))
    groups = answer.get("breakdown") or ()
    if groups:
        column = client.get_saved_funnel(project, funnel_id)["breakdown"]["column"]
        for group in groups:
            label = "(all other values)" if group["value"] is None else repr(group["value"])
            click.echo(f"\n{column} = {label}\n{funnel_table(group['steps'])}")


@funnels.command()
@project_option
@click.argument("funnel_id", metavar="FUNNEL_ID")
@click.option(
    "--from", "start", callback=when_option,
    help="Days from this time (ISO-8601, or 30m/12h/7d ago); default: 90 days before --to.",
)  # fmt: skip
@click.option("--to", "end", callback=when_option, help="Days before this time; default: now.")
@click.option("--baseline-days", type=int, help="Days before a day that give its expected rate [28].")
@click.option("--min-baseline-days", type=int, help="Usable days a day's baseline needs [14].")
@click.option("--confidence", type=float, help="The chance that a quiet range raises nothing [0.99].")
@click.option("--min-entered", type=int, help="Days with fewer entries are not judged [30].")
@click.option(
    "--seasonality",
    type=click.Choice(["weekly", "none"]),
    help="weekly: expect a day to convert as its weekday did [weekly].",
)
@json_option
@with_client
def anomalies(
    client: ControlClient, project: str, funnel_id: str, start: datetime | None, end: datetime | None,
    as_json: bool, **settings: Any,
) -> None:  # fmt: skip
    """The days a saved funnel's conversion left its expected band, marked LOW or HIGH."""
    until = end or datetime.now(UTC)
    body: dict[str, Any] = {
        "from": (start or until - anomaly_table.DEFAULT_RANGE).isoformat(),
        "to": until.isoformat(),
        **{name: value for name, value in settings.items() if value is not None},
    }
    answer = client.saved_funnel_anomalies(project, funnel_id, body)
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(anomaly_table.anomalies_table(answer))
