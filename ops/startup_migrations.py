"""Start-up migrations: the control role brings every project's database to the newest schema
before it serves (a new headwater version may bring migrations), and grants the query API's
reader roles. `headwater migrate` (ops/migrate.py) does the same on demand."""

from __future__ import annotations

import asyncio
import logging

from clickhouse_connect.driver.client import Client

from headwater.control.query_grants import apply_grants, query_user
from headwater.control.store import ProjectStore
from headwater.core.migrations import apply_migrations
from headwater.core.projects.project import database_name

log = logging.getLogger(__name__)


async def migrate_projects(
    store: ProjectStore, clickhouse: Client, cluster: str | None, query_url: str | None = None
) -> None:
    """Migrate every project (idempotent). A failure is logged and left for `headwater migrate`
    to retry: it does not keep the control plane from starting."""
    for project_id in await store.ids():
        try:
            applied = await asyncio.to_thread(
                apply_migrations, clickhouse, database_name(project_id), cluster
            )
        except Exception:
            log.exception("migrating project %s failed; run `headwater migrate` once it is fixed", project_id)
            continue
        if applied:
            log.info("project %s: applied migrations %s", project_id, applied)
        if query_url is not None:
            try:
                await asyncio.to_thread(apply_grants, clickhouse, project_id, query_user(query_url), cluster)
            except Exception:
                log.exception("granting project %s's reader role failed", project_id)
