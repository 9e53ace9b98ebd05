"""Numbered, idempotent schema migrations applied to each project's ClickHouse database.

Each migration is a module `mNNNN_<name>.py` of this package (found by its name: adding the file
adds the migration) with `NUMBER`, `NAME` and either `statements(database, cluster)` returning the
DDL to run or, where it needs to look before it acts, `apply(client, database, cluster)` doing it.
Applied migrations are recorded in
`<database>.schema_migrations`, so re-running is safe, and every statement is itself idempotent
(`IF NOT EXISTS`; an `apply` finishes what an interrupted run began) so a crash between a
statement and its record does no harm.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from clickhouse_connect.driver.client import Client

from .ddl import on_cluster, replacing_engine

log = logging.getLogger(__name__)


Apply = Callable[[Client, str, str | None], None]


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    apply: Apply

    @classmethod
    def from_module(cls, module: ModuleType) -> Migration:
        apply: Apply = getattr(module, "apply", None) or _running(module.statements)
        return cls(module.NUMBER, module.NAME, apply)


def _running(statements: Callable[[str, str | None], Sequence[str]]) -> Apply:
    def apply(client: Client, database: str, cluster: str | None) -> None:
        for statement in statements(database, cluster):
            client.command(statement)

    return apply


def _numbered_modules() -> list[ModuleType]:
    """This package's `mNNNN_<name>` modules, in order; their numbers must run 1, 2, … without a
    gap, so a migration file cannot be left out or numbered twice."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if re.fullmatch(r"m\d{4}_\w+", m.name))
    modules = [importlib.import_module(f"{__name__}.{name}") for name in names]
    numbers = [module.NUMBER for module in modules]
    if numbers != list(range(1, len(modules) + 1)) or any(
        name != f"m{module.NUMBER:04d}_{module.NAME}" for name, module in zip(names, modules, strict=True)
    ):
        raise RuntimeError(f"migration modules out of order: {names}")
    return modules


MIGRATIONS: tuple[Migration, ...] = tuple(Migration.from_module(m) for m in _numbered_modules())


def apply_migrations(client: Client, database: str, cluster: str | None = None) -> list[int]:
    """Create `database` if needed and apply every pending migration; returns the numbers applied."""
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster(cluster)}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS `{database}`.schema_migrations{on_cluster(cluster)} "
        "(number UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        f"ENGINE = {replacing_engine(cluster)} ORDER BY number"
    )
    done = {row[0] for row in client.query(f"SELECT number FROM `{database}`.schema_migrations").result_rows}
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.number in done:
            continue
        migration.apply(client, database, cluster)
        client.insert(
            f"`{database}`.schema_migrations",
            [[migration.number, migration.name]],
            column_names=["number", "name"],
        )
        log.info("applied migration %04d_%s to %s", migration.number, migration.name, database)
        applied.append(migration.number)
    return applied


def drop_database(client: Client, database: str, cluster: str | None = None) -> None:
    """Drop a project's database and everything in it (project purge)."""
    client.command(f"DROP DATABASE IF EXISTS `{database}`{on_cluster(cluster)} SYNC")
