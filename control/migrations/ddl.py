"""Small DDL helpers shared by the migrations."""

from __future__ import annotations


def on_cluster(cluster: str | None) -> str:
    """The `ON CLUSTER` clause for a clustered ClickHouse, or nothing."""
    return f" ON CLUSTER `{cluster}`" if cluster else ""
