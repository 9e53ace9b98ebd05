"""Small DDL helpers shared by the migrations."""

from __future__ import annotations

import re

# A cluster's name as ClickHouse's configuration can spell it (an XML element's name): it is
# spliced into SQL as an identifier (`ON CLUSTER`, `clusterAllReplicas`), so it is checked here.
_CLUSTER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")


def cluster_name(cluster: str) -> str:
    """`cluster`, checked to be a plain name; ValueError otherwise."""
    if not _CLUSTER_NAME.fullmatch(cluster):
        raise ValueError(
            "a ClickHouse cluster's name is a letter or _ then letters, digits, _ . or - "
            f"(at most 128): {cluster!r}"
        )
    return cluster


def on_cluster(cluster: str | None) -> str:
    """The `ON CLUSTER` clause for a clustered ClickHouse, or nothing."""
    return f" ON CLUSTER `{cluster_name(cluster)}`" if cluster else ""


def system_table(table: str, cluster: str | None) -> str:
    """A system table (a name of ours) of this server, or of every replica of the cluster."""
    return f"clusterAllReplicas(`{cluster_name(cluster)}`, system.{table})" if cluster else f"system.{table}"


# Where a replicated table keeps its state in ClickHouse Keeper: `{shard}` and `{replica}` are the
# macros every server of the cluster defines (ops/deploy/clickhouse-cluster.xml).
REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"


def replacing_engine(cluster: str | None, *columns: str, table_path: str | None = None) -> str:
    """ReplacingMergeTree on one server; its replicated form on a cluster, so that a row inserted
    on one replica reaches the others (a plain MergeTree created ON CLUSTER would keep each
    node's rows to itself). `columns`: its version and is_deleted columns, if any; `table_path`:
    the name its Keeper path ends with, when not the table's own (a table recreated under the
    name of one that still exists)."""
    arguments = ", ".join(columns)
    if cluster:
        path = REPLICA_PATH if table_path is None else REPLICA_PATH.replace("{table}", table_path)
        return f"ReplicatedReplacingMergeTree({', '.join((path, *columns))})"
    return f"ReplacingMergeTree({arguments})" if arguments else "ReplacingMergeTree"


def deduplication_window(cluster: str | None) -> str:
    """Keep the hashes of the last 1,000 inserts, so a batch re-inserted with the same
    `insert_deduplication_token` is dropped; the replicated engines keep theirs in Keeper."""
    return (
        "replicated_deduplication_window = 1000" if cluster else "non_replicated_deduplication_window = 1000"
    )
