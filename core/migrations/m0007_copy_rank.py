"""Merges keep the copy of an event the analytics count: `events` becomes a
`ReplacingMergeTree(copy_rank)` (copy_rank.py has the rank).

Copies of one message (a retried request, a re-sent import line) are stored as separate rows, and
the analytics count the copy received first (docs/sessions.md, "How a session is computed"). A
ReplacingMergeTree without a version keeps the copy inserted last when a merge brings copies
together; copies carry their own skew-corrected timestamps, so a merge after sessions were
computed could move an event across a boundary (a gap of 29:59.4 became 30:01.4) and a rebuild
then disagreed with the kept sessions. With `copy_rank` as the version, a merge keeps the copy
with the highest rank, which is by construction the one the analytics choose.

ClickHouse cannot change an engine in place: the table is renamed `events_before_7`, a new
`events` is created with its structure and the version, every partition is moved into it (parts
move, nothing is copied), and the old table is dropped once empty. A consumer inserting meanwhile
finds no table for a moment, which it retries (consumers/insert_errors.py); inserts running when
the migration began are waited for before the last move. Databases created since migration 1
makes `events` versioned have nothing to move.

Every step reads the state it acts on, so a run interrupted anywhere is finished by the next, and
runs at once (two control planes starting, concurrent creations of one project) converge: a step
that another run's step made fail (a table renamed or dropped under it) is retried from the state
as it then is. `sessionizer_recent` gets the same column.
"""

from __future__ import annotations

import logging
import time

from clickhouse_connect.driver.client import Client

from headwater.core.catalog import table_engine, table_exists
from headwater.core.clickhouse_errors import error_code

from .copy_rank import COLUMN
from .ddl import deduplication_window, on_cluster, replacing_engine, system_table

NUMBER = 7
NAME = "copy_rank"

PREVIOUS = "events_before_7"
# How long the migration waits for the inserts that were running when it began.
INSERTS_TIMEOUT_SECONDS = 300.0
# What another run of this migration makes a step meet: a table renamed or dropped under it, or
# created before it.
_RACED = {57: "TABLE_ALREADY_EXISTS", 60: "UNKNOWN_TABLE"}
_ATTEMPTS = 20

log = logging.getLogger(__name__)


def apply(client: Client, database: str, cluster: str | None) -> None:
    started = time.monotonic()
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            _converge(client, database, cluster, started)
            return
        except Exception as error:
            if error_code(error) not in _RACED or attempt == _ATTEMPTS:
                raise
            log.info("%s: migration 7 met another run's step (%s); looking again", database, error)
            time.sleep(0.2 * attempt)


def _converge(client: Client, database: str, cluster: str | None, started: float) -> None:
    cluster_clause = on_cluster(cluster)
    events, previous = f"`{database}`.events", f"`{database}`.{PREVIOUS}"
    engine = table_engine(client, database, "events")
    if _unversioned(engine):
        if not table_exists(client, database, PREVIOUS):
            client.command(f"ALTER TABLE {events}{cluster_clause} ADD COLUMN IF NOT EXISTS {COLUMN}")
            client.command(f"RENAME TABLE {events} TO {previous}{cluster_clause}")
        elif _unversioned(table_engine(client, database, "events")):
            # Looked at again: another run may have renamed `events` between the two looks above.
            raise RuntimeError(
                f"{database} holds both an unversioned `events` and `{PREVIOUS}`: "
                f"move {PREVIOUS}'s rows into events (or drop it) and migrate again"
            )
    if not table_exists(client, database, "events"):
        # The replicated form under a path of its own: the renamed table keeps `events`' path.
        versioned = replacing_engine(cluster, "copy_rank", table_path="events_7")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {events}{cluster_clause} AS {previous} "
            f"ENGINE = {versioned} PARTITION BY toYYYYMM(received_at) ORDER BY (type, event, message_id) "
            f"SETTINGS {deduplication_window(cluster)}"
        )
    if table_exists(client, database, PREVIOUS):
        _move_partitions(client, database, cluster)
        _wait_for_inserts_begun_before(client, cluster, started)
        _move_partitions(client, database, cluster)
        client.command(f"DROP TABLE IF EXISTS {previous}{cluster_clause} SYNC")
    client.command(
        f"ALTER TABLE `{database}`.sessionizer_recent{cluster_clause} ADD COLUMN IF NOT EXISTS {COLUMN}"
    )


def _unversioned(engine_full: str | None) -> bool:
    return engine_full is not None and not _versioned(engine_full)


def _versioned(engine_full: str) -> bool:
    """Whether an engine has copy_rank for its version (among its arguments, before the keys)."""
    return "copy_rank" in engine_full.split(" PARTITION BY ")[0].split(" ORDER BY ")[0]


def _move_partitions(client: Client, database: str, cluster: str | None) -> None:
    partitions = client.query(
        f"SELECT DISTINCT partition_id FROM {system_table('parts', cluster)} "
        "WHERE database = {db:String} AND table = {table:String} AND active AND rows > 0 "
        "ORDER BY partition_id",
        parameters={"db": database, "table": PREVIOUS},
    ).result_rows
    for (partition,) in partitions:
        client.command(
            f"ALTER TABLE `{database}`.{PREVIOUS}{on_cluster(cluster)} "
            f"MOVE PARTITION ID {{partition:String}} TO TABLE `{database}`.events",
            parameters={"partition": partition},
        )
    if partitions:
        log.info("%s: moved %d partition(s) of events into the versioned table", database, len(partitions))


def _wait_for_inserts_begun_before(client: Client, cluster: str | None, started: float) -> None:
    """Wait until no INSERT begun before `started` (monotonic) is left: one that began before the
    rename may still commit its rows into the renamed table."""
    processes = system_table("processes", cluster)
    deadline = time.monotonic() + INSERTS_TIMEOUT_SECONDS
    while True:
        running = client.query(
            f"SELECT count() FROM {processes} WHERE query_kind = 'Insert' AND elapsed >= {{seconds:Float64}}",
            parameters={"seconds": time.monotonic() - started},
        ).result_rows[0][0]
        if not running:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{running} insert(s) begun before the events table was renamed are still running; "
                "migrate again once they end"
            )
        time.sleep(0.5)
