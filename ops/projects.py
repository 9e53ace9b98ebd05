"""`headwater projects`: create, list, show, update, rotate the keys of and delete projects through
the control API. Every command prints a short readable summary, or the API's JSON with --json."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from .controlclient import ControlAPIError, ControlClient
from .options import control_url_option, data_dir_option

MAX_PAGE_SIZE = 500  # the API's largest page (control/app.py)
DEFAULT_PAGE_SIZE = 100
RULE = "=" * 72

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON answer instead of a summary."
)


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    """An option's value parsed as a JSON object, e.g. '{"batching": {"span_seconds": 2}}'."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter('must be a JSON object, e.g. \'{"batching": {"span_seconds": 2}}\'')
    return parsed


def with_client(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` the options that locate the control API, and a `client` built from them."""

    @functools.wraps(command)
    def run(*args: Any, control_url: str | None, data_dir: str, **kwargs: Any) -> None:
        command(*args, client=ControlClient.resolve(control_url, data_dir), **kwargs)

    return data_dir_option(control_url_option(run))


# -- human output ---------------------------------------------------------------------------------


def key_value_block(rows: Sequence[tuple[str, str | Sequence[str]]]) -> str:
    """Aligned `key  value` lines; a list value continues on lines of its own, aligned."""
    width = max(len(key) for key, _ in rows) + 2
    lines: list[str] = []
    for key, value in rows:
        values = [value] if isinstance(value, str) else list(value) or ["-"]
        lines.append(f"{key:<{width}}{values[0]}")
        lines.extend(f"{'':<{width}}{more}" for more in values[1:])
    return "\n".join(lines)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    body = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body)


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def flat_settings(settings: dict[str, Any], prefix: str = "") -> list[str]:
    """`rate_limits.burst_seconds = 10.0`, one line per setting, values as JSON (what --settings takes)."""
    lines: list[str] = []
    for key, value in settings.items():
        if isinstance(value, dict):
            lines += flat_settings(value, f"{prefix}{key}.")
        else:
            lines.append(f"{prefix}{key} = {json.dumps(value)}")
    return lines


def key_lines(keys: Sequence[dict[str, Any]], shown: str, suffix: str = "") -> list[str]:
    """One line per key: the key (or, for a secret key, its first characters), when it was made and
    when it stops working."""
    return [
        f"{key[shown]}{suffix}  created {key['created_at']}"
        + (f", expires {key['expires_at']}" if key.get("expires_at") else "")
        for key in keys
    ]


def project_summary(project: dict[str, Any], revision: int | None) -> str:
    rows: list[tuple[str, str | Sequence[str]]] = [
        ("id", project["id"]),
        ("name", project["name"]),
        ("enabled", yes_no(project["enabled"])),
    ]
    if revision is not None:
        rows.append(("revision", str(revision)))
    rows += [
        ("database", project["database"]),
        ("allowed origins", project["allowed_origins"]),
        ("allow any origin", yes_no(project["allow_any_origin"])),
        ("created", project["created_at"]),
        ("updated", project.get("updated_at") or "-"),
        ("public keys", key_lines(project["public_keys"], "key")),
        ("secret keys", key_lines(project["secret_keys"], "hint", "…")),
        ("settings", flat_settings(project["settings"])),
    ]
    return key_value_block(rows)


def shown_once(label: str, value: str) -> str:
    """A clear-text secret framed so it cannot be missed, with the warning that it is shown once."""
    return "\n".join(
        [
            RULE,
            f"{label} (shown once: headwater stores only its hash; copy it now)",
            "",
            f"    {value}",
            "",
            RULE,
        ]
    )


def print_json(body: Any) -> None:
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


# -- commands -------------------------------------------------------------------------------------


@click.group()
def projects() -> None:
    """Manage projects through the control API.

    The API is --control-url (HEADWATER_CONTROL_URL), else the running `headwater up` of --data-dir;
    the admin token is HEADWATER_ADMIN_TOKEN, else the one `headwater up` stored in --data-dir.
    """


@projects.command()
@click.argument("project_id", metavar="ID")
@click.option("--name", help="Display name (default: the id).")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allowed browser origin, e.g. https://app.example.com or https://*.example.com; repeatable.",
)
@click.option("--allow-any-origin", is_flag=True, help="Let --origin '*' accept events from any website.")
@click.option("--settings", metavar="JSON", callback=json_object, help="Project settings as a JSON object.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Retry-safe creation: the same KEY and request within 24 h returns the first answer again.",
)
@json_option
@with_client
def create(
    client: ControlClient,
    project_id: str,
    name: str | None,
    origins: tuple[str, ...],
    allow_any_origin: bool,
    settings: dict[str, Any] | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Create project ID: its ClickHouse database, a public key and a secret key."""
    body: dict[str, Any] = {"id": project_id, "allowed_origins": list(origins)}
    if name is not None:
        body["name"] = name
    if allow_any_origin:
        body["allow_any_origin"] = True
    if settings is not None:
        body["settings"] = settings
    answer = client.create_project(body, idempotency_key)
    if as_json:
        print_json(answer.body)
        return
    replayed = answer.headers.get("idempotent-replayed") == "true"
    click.echo(f"created project {project_id!r}" + (" (replayed: same Idempotency-Key)" if replayed else ""))
    click.echo(project_summary(answer.body["project"], answer.body["revision"]))
    click.echo(f"\npublic key (for browsers and apps): {answer.body['public_key']}\n")
    click.echo(shown_once("SECRET KEY", answer.body["secret_key"]))


@projects.command(name="list")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE_SIZE),
    help="Show one page of at most this many projects (default: all of them).",
)
@click.option("--after", metavar="ID", help="Start after this project id (ids are listed in order).")
@click.option(
    "--page-size",
    type=click.IntRange(1, MAX_PAGE_SIZE),
    default=DEFAULT_PAGE_SIZE,
    show_default=True,
    help="Projects per request when listing all of them.",
)
@json_option
@with_client
def list_projects(
    client: ControlClient, limit: int | None, after: str | None, page_size: int, as_json: bool
) -> None:
    """List projects in id order: all of them, or one page with --limit."""
    if limit is not None:
        page = client.list_projects(limit, after)
    else:
        page = {"projects": list(all_projects(client, page_size, after)), "next_after": None}
    if as_json:
        print_json(page)
        return
    if not page["projects"]:
        click.echo("no projects")
    else:
        click.echo(project_table(page["projects"]))
    if page["next_after"] is not None:
        click.echo(f"\nmore projects follow: list --after {page['next_after']}")


def all_projects(client: ControlClient, page_size: int, after: str | None) -> Iterable[dict[str, Any]]:
    """Every project after `after`, page by page, following `next_after`."""
    while True:
        page = client.list_projects(page_size, after)
        yield from page["projects"]
        after = page["next_after"]
        if after is None:
            return


def project_table(listed: Sequence[dict[str, Any]]) -> str:
    return table(
        ("ID", "NAME", "ENABLED", "ORIGINS", "CREATED"),
        (
            (
                p["id"],
                p["name"],
                yes_no(p["enabled"]),
                ",".join(p["allowed_origins"]) or "-",
                p["created_at"],
            )
            for p in listed
        ),
    )


@projects.command()
@click.argument("project_id", metavar="ID")
@json_option
@with_client
def show(client: ControlClient, project_id: str, as_json: bool) -> None:
    """Show project ID and its revision (for update --if-match)."""
    answer = client.get_project(project_id)
    if as_json:
        print_json(answer)
        return
    click.echo(project_summary(answer["project"], answer["revision"]))


@projects.command()
@click.argument("project_id", metavar="ID")
@click.option("--name", help="New display name.")
@click.option("--enable/--disable", "enabled", default=None, help="Accept events, or refuse them.")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allowed origin; repeatable; the given ones replace the whole list.",
)
@click.option("--clear-origins", is_flag=True, help="Remove every allowed origin.")
@click.option("--allow-any-origin/--no-allow-any-origin", default=None, help="Opt in to (or out of) '*'.")
@click.option(
    "--settings",
    metavar="JSON",
    callback=json_object,
    help="Settings to change, merged into the current ones.",
)
@click.option(
    "--if-match",
    type=click.IntRange(min=0),
    metavar="REVISION",
    help="Apply only if the project is still at REVISION (see `projects show`).",
)
@json_option
@with_client
def update(
    client: ControlClient,
    project_id: str,
    name: str | None,
    enabled: bool | None,
    origins: tuple[str, ...],
    clear_origins: bool,
    allow_any_origin: bool | None,
    settings: dict[str, Any] | None,
    if_match: int | None,
    as_json: bool,
) -> None:
    """Change project ID: only the fields given are sent."""
    if origins and clear_origins:
        raise click.UsageError("--origin and --clear-origins exclude each other")
    patch: dict[str, Any] = {}
    if name is not None:
        patch["name"] = name
    if enabled is not None:
        patch["enabled"] = enabled
    if origins or clear_origins:
        patch["allowed_origins"] = list(origins)
    if allow_any_origin is not None:
        patch["allow_any_origin"] = allow_any_origin
    if settings is not None:
        patch["settings"] = settings
    if not patch:
        raise click.UsageError(
            "nothing to update: pass --name, --enable/--disable, --origin, --clear-origins, "
            "--allow-any-origin/--no-allow-any-origin or --settings"
        )
    try:
        answer = client.update_project(project_id, patch, if_match)
    except ControlAPIError as exc:
        if exc.code == "revision_mismatch":
            hint = f"`headwater projects show {project_id}` shows the current revision."
            raise exc.with_hint(hint) from None
        raise
    if as_json:
        print_json(answer)
        return
    click.echo(f"updated project {project_id!r}")
    click.echo(project_summary(answer["project"], answer["revision"]))


@projects.command(name="rotate-key")
@click.argument("project_id", metavar="ID")
@click.option("--kind", type=click.Choice(["public", "secret"]), required=True, help="Which key to replace.")
@click.option(
    "--grace-seconds",
    type=click.IntRange(min=0),
    help="How long the current keys of that kind keep working (server default: 1 day).",
)
@json_option
@with_client
def rotate_key(
    client: ControlClient, project_id: str, kind: str, grace_seconds: int | None, as_json: bool
) -> None:
    """Issue a new public or secret key for project ID; the current ones expire after a grace period."""
    answer = client.rotate_key(project_id, kind, grace_seconds)
    if as_json:
        print_json(answer)
        return
    click.echo(f"new {kind} key for project {project_id!r} (revision {answer['revision']})")
    click.echo(f"previous {kind} keys expire at {answer['previous_keys_expire_at']}\n")
    if kind == "secret":
        click.echo(shown_once("NEW SECRET KEY", answer["key"]))
    else:
        click.echo(f"new public key: {answer['key']}")


@projects.command()
@click.argument("project_id", metavar="ID")
@click.option("--purge", is_flag=True, help="Delete the project with all its events, irreversibly.")
@click.option("--confirm", metavar="ID", help="Required with --purge: the project id again.")
@json_option
@with_client
def delete(client: ControlClient, project_id: str, purge: bool, confirm: str | None, as_json: bool) -> None:
    """Disable project ID (its events are refused, its data kept), or purge it with --purge."""
    if confirm is not None and not purge:
        raise click.UsageError("--confirm only goes with --purge")
    if not purge:
        answer = client.disable_project(project_id)
        if as_json:
            print_json(answer)
            return
        click.echo(
            f"disabled project {project_id!r}: its events are refused, its data is kept.\n"
            f"Enable it again with `headwater projects update {project_id} --enable`, or delete it "
            f"with all its data: `headwater projects delete {project_id} --purge --confirm {project_id}`."
        )
        return
    if confirm != project_id:
        raise click.UsageError(
            f"--purge deletes project {project_id!r} and every event of it: pass --confirm {project_id}"
        )
    result = client.purge_project(project_id, confirm)
    if as_json:
        print_json(result)
        return
    click.echo(
        f"purged project {project_id!r}: database {result['database_dropped']} dropped, "
        f"{result['messages_purged']} queued messages removed"
    )
