"""ClickHouse access control for the query endpoint on a server: one reader role per project.

The role may SELECT from the project's database and nothing else; the query user (the user of
`--query-clickhouse-url`) is granted every project's role but none by default, and each query
names its project's role (the HTTP `role` parameter), so ClickHouse itself confines it. The query
user holds no other privilege: it cannot KILL the consumer's queries, read `system` tables of
other users or change a setting beyond what its profile allows. The embedded engine has no
per-session users (see docs/query-api.md): there the parser check and readonly mode remain.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from clickhouse_connect.driver.client import Client

from headwater.core.migrations.ddl import on_cluster
from headwater.core.projects.project import database_name


def reader_role(database: str) -> str:
    return f"{database}_reader"


def grant_statements(project_id: str, query_user: str, cluster: str | None = None) -> list[str]:
    """Idempotent DDL giving `query_user` the project's reader role (SELECT on its database only)."""
    database = database_name(project_id)
    role = reader_role(database)
    cluster_clause = on_cluster(cluster)
    user = _quoted(query_user)
    return [
        f"CREATE ROLE IF NOT EXISTS `{role}`{cluster_clause}",
        f"GRANT{cluster_clause} SELECT ON `{database}`.* TO `{role}`",
        f"GRANT{cluster_clause} `{role}` TO {user}",
        # Granted roles become default roles unless told otherwise: keep the user role-less.
        f"SET DEFAULT ROLE NONE TO {user}",
    ]


def revoke_statements(project_id: str, cluster: str | None = None) -> list[str]:
    return [f"DROP ROLE IF EXISTS `{reader_role(database_name(project_id))}`{on_cluster(cluster)}"]


def _quoted(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def query_user(url: str) -> str:
    """The user of a ClickHouse server URL (`default` when it names none)."""
    netloc = urlsplit(url).netloc
    credentials, at, _ = netloc.rpartition("@")
    return unquote(credentials.split(":", 1)[0]) if at and credentials else "default"


def apply_grants(client: Client, project_id: str, user: str, cluster: str | None = None) -> None:
    for statement in grant_statements(project_id, user, cluster):
        client.command(statement)


def revoke_grants(client: Client, project_id: str, cluster: str | None = None) -> None:
    for statement in revoke_statements(project_id, cluster):
        client.command(statement)
