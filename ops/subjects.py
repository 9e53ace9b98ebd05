"""`headwater subjects`: delete or export a data subject's data through the control API, and
follow a deletion job (docs/privacy.md, "Data subjects: deletion and export")."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from .controlclient import ControlClient
from .options import option
from .projects import key_value_block, print_json, with_client

json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
project_option = option("--project", required=True, help="Project id.")
user_id_option = click.option("--user-id", default=None, help="The person's user id.")
anonymous_id_option = click.option(
    "--anonymous-id",
    "anonymous_ids",
    multiple=True,
    help="An anonymous id of the person (repeatable).",
)
ENDED = ("done", "failed")
POLL_SECONDS = 1.0


def _person(user_id: str | None, anonymous_ids: tuple[str, ...]) -> dict[str, Any]:
    if user_id is None and not anonymous_ids:
        raise click.UsageError("name the person: --user-id, --anonymous-id (repeatable), or both")
    body: dict[str, Any] = {"anonymous_ids": list(anonymous_ids)}
    if user_id is not None:
        body["user_id"] = user_id
    return body


def job_summary(job: dict[str, Any]) -> str:
    deleted = job["rows_deleted"]
    return key_value_block(
        [
            ("job", job["job_id"]),
            ("state", job["state"]),
            ("tombstones", str(job["tombstones"])),
            ("linked anonymous ids", str(job["linked_anonymous_ids"])),
            ("rows deleted", [f"{table}: {rows:,}" for table, rows in sorted(deleted.items())]),
            ("passes", str(job["passes"])),
            ("created", job["created_at"]),
            ("started", job["started_at"] or "-"),
            ("finished", job["finished_at"] or "-"),
            *([("error", job["error"])] if job["error"] else []),
        ]
    )


def _progress(job: dict[str, Any]) -> str:
    rows = sum(job["rows_deleted"].values())
    return f"{job['state']}: {job['tombstones']} tombstones, {rows:,} rows deleted, {job['passes']} passes"


def follow(
    client: ControlClient, project: str, job_id: str, interval: float = POLL_SECONDS
) -> dict[str, Any]:
    """Poll the job until it ends, telling each change on stderr; the last state."""
    said = ""
    while True:
        job = client.data_subject_job(project, job_id)
        line = _progress(job)
        if line != said:
            click.echo(f"job {job_id}: {line}", err=True)
            said = line
        if job["state"] in ENDED:
            return job
        time.sleep(interval)


def _show(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(job)
    else:
        click.echo(job_summary(job))
    if job["state"] == "failed":
        raise SystemExit(1)


@click.group()
def subjects() -> None:
    """Delete or export a person's data (a data subject's) through the control API.

    The API is --control-url (HEADWATER_CONTROL_URL), else the running `headwater up` of --data-dir;
    the admin token is HEADWATER_ADMIN_TOKEN, else the one `headwater up` stored in --data-dir.
    """


@subjects.command()
@project_option
@user_id_option
@anonymous_id_option
@click.option("--wait", is_flag=True, help="Follow the job to its end (progress on stderr).")
@json_option
@with_client
def delete(
    client: ControlClient,
    project: str,
    user_id: str | None,
    anonymous_ids: tuple[str, ...],
    wait: bool,
    as_json: bool,
) -> None:
    """Delete a person's events and sessions, and keep them from coming back (tombstones).

    The user id's other anonymous ids (those on its events) are deleted too. Prints the job's id;
    with --wait, follows it and exits 1 if it failed.
    """
    job_id = client.delete_data_subject(project, _person(user_id, anonymous_ids))
    if not wait:
        if as_json:
            print_json({"job_id": job_id})
        else:
            click.echo(job_id)
        return
    _show(follow(client, project, job_id), as_json)


@subjects.command()
@project_option
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Follow the job to its end (progress on stderr).")
@json_option
@with_client
def status(client: ControlClient, project: str, job_id: str, wait: bool, as_json: bool) -> None:
    """The state and counts of deletion job JOB_ID (as `delete` printed it); exits 1 if it failed."""
    job = follow(client, project, job_id) if wait else client.data_subject_job(project, job_id)
    _show(job, as_json)


@subjects.command()
@project_option
@user_id_option
@anonymous_id_option
@with_client
def export(client: ControlClient, project: str, user_id: str | None, anonymous_ids: tuple[str, ...]) -> None:
    """Every event and session of a person, as JSON lines on stdout.

    One object a line: {"table": "events"|"sessions", "row": {...}}; at most 100,000 rows per table.
    """
    copied = client.export_data_subject(project, _person(user_id, anonymous_ids), sys.stdout.buffer)
    sys.stdout.buffer.flush()
    click.echo(f"{copied:,} bytes exported", err=True)
