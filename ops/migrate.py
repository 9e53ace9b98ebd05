"""`headwater migrate`: apply pending ClickHouse migrations to the database of every project.

Projects are listed from the HW_PROJECTS KV bucket; each database is migrated on its own, so one
failing project is reported and the others still get their migrations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import click
from clickhouse_connect.driver.client import Client
from nats.js.errors import BucketNotFoundError

from headwater.control.clickhouse import connect as connect_clickhouse
from headwater.control.clickhouse import redact_url
from headwater.control.store import PROJECTS_BUCKET, BucketSettings, ProjectStore, ensure_projects_bucket
from headwater.core.catalog import table_exists
from headwater.core.migrations import MIGRATIONS, Migration, apply_migrations
from headwater.core.projects.project import database_name
from headwater.edge.streams import StreamSettings

from .natsauth import NatsAuth
from .natsconn import connect_for_command
from .options import clickhouse_url_option, nats_auth_options, nats_url_option, on_cluster_option

Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ProjectMigration:
    """What happened to one project's database: migrations applied (or pending, in a dry run)."""

    project_id: str
    migrations: tuple[str, ...] = ()
    error: str | None = None


@dataclass(slots=True)
class MigrationRun:
    dry_run: bool
    projects: list[ProjectMigration] = field(default_factory=list)

    @property
    def failed(self) -> list[ProjectMigration]:
        return [p for p in self.projects if p.error is not None]

    def summary(self) -> str:
        changed = sum(1 for p in self.projects if p.migrations and p.error is None)
        verb = "would be migrated" if self.dry_run else "migrated"
        current = len(self.projects) - changed - len(self.failed)
        return (
            f"{len(self.projects)} project(s): {changed} {verb}, {current} up to date, "
            f"{len(self.failed)} failed"
        )


def migration_label(migration: Migration) -> str:
    return f"{migration.number:04d}_{migration.name}"


def pending_migrations(client: Client, database: str) -> list[Migration]:
    """The migrations `apply_migrations` would apply to `database` (all, when it has none yet)."""
    done: set[int] = set()
    if table_exists(client, database, "schema_migrations"):
        rows = client.query(f"SELECT number FROM `{database}`.schema_migrations").result_rows
        done = {row[0] for row in rows}
    return [m for m in MIGRATIONS if m.number not in done]


def migrate_project(client: Client, project_id: str, cluster: str | None, dry_run: bool) -> ProjectMigration:
    database = database_name(project_id)
    if dry_run:
        labels = [migration_label(m) for m in pending_migrations(client, database)]
    else:
        applied = set(apply_migrations(client, database, cluster))
        labels = [migration_label(m) for m in MIGRATIONS if m.number in applied]
    return ProjectMigration(project_id, tuple(labels))


async def project_ids(nats_url: str, dry_run: bool, auth: NatsAuth | None = None) -> list[str]:
    """The ids in the HW_PROJECTS bucket. A real run creates the bucket when missing, as every role
    does; a dry run changes nothing and finds no projects there."""
    nats = await connect_for_command(nats_url, "headwater-migrate", auth)
    try:
        js = nats.jetstream()
        if dry_run:
            try:
                kv = await js.key_value(PROJECTS_BUCKET)
            except BucketNotFoundError:
                return []
        else:
            kv = await ensure_projects_bucket(js, BucketSettings(replicas=StreamSettings().replicas))
        return await ProjectStore(kv).ids()
    finally:
        await nats.close()


async def migrate_all(
    nats_url: str,
    clickhouse_url: str,
    cluster: str | None = None,
    dry_run: bool = False,
    report: Report = click.echo,
    auth: NatsAuth | None = None,
) -> MigrationRun:
    """Migrate (or, with `dry_run`, inspect) the database of every project, reporting each."""
    ids = await project_ids(nats_url, dry_run, auth)
    run = MigrationRun(dry_run)
    if not ids:
        report("no projects")
        return run
    try:
        client = await asyncio.to_thread(connect_clickhouse, clickhouse_url)
    except Exception as exc:
        raise click.ClickException(
            f"cannot connect to ClickHouse at {redact_url(clickhouse_url)}: {exc}"
        ) from None
    try:
        for project_id in ids:
            result = await _migrate_reported(client, project_id, cluster, dry_run)
            run.projects.append(result)
            report(describe(result, dry_run))
    finally:
        client.close()
    return run


async def _migrate_reported(
    client: Client, project_id: str, cluster: str | None, dry_run: bool
) -> ProjectMigration:
    try:
        return await asyncio.to_thread(migrate_project, client, project_id, cluster, dry_run)
    except Exception as exc:  # reported per project: the other projects still get migrated
        return ProjectMigration(project_id, error=f"{type(exc).__name__}: {exc}")


def describe(result: ProjectMigration, dry_run: bool) -> str:
    if result.error is not None:
        return f"{result.project_id}: FAILED: {result.error}"
    if not result.migrations:
        return f"{result.project_id}: up to date"
    verb = "would apply" if dry_run else "applied"
    return f"{result.project_id}: {verb} {', '.join(result.migrations)}"


@click.command()
@nats_url_option
@nats_auth_options
@clickhouse_url_option
@on_cluster_option
@click.option("--dry-run", is_flag=True, help="List the pending migrations of each project; change nothing.")
def migrate(
    nats_url: str | None,
    nats_auth: NatsAuth,
    clickhouse_url: str | None,
    on_cluster: str | None,
    dry_run: bool,
) -> None:
    """Apply pending ClickHouse migrations to the database of every project.

    Safe to re-run: applied migrations are recorded in each database's schema_migrations table.
    Exits non-zero when any project failed; the others are migrated all the same.
    """
    if not nats_url:
        raise click.UsageError("--nats-url (or HEADWATER_NATS_URL) is required")
    if not clickhouse_url:
        raise click.UsageError("--clickhouse-url (or HEADWATER_CLICKHOUSE_URL) is required")
    run = asyncio.run(migrate_all(nats_url, clickhouse_url, on_cluster, dry_run, auth=nats_auth))
    if run.projects:
        click.echo(run.summary())
    if run.failed:
        raise click.ClickException(
            f"{len(run.failed)} project(s) failed: {', '.join(p.project_id for p in run.failed)}"
        )
