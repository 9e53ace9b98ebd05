"""Columns the consumers derive from each event: user agent, geolocation, page and campaign.

They sit after the raw columns, so analytics queries (and Cube) can filter and group on them
without JSON extraction. The consumers fill them (consumers/enrich/); the list must match
`ENRICHMENT_COLUMNS` there, which tests/test_units.py checks. `ip` is not here: it exists since
migration 1 and now holds the address as the project's anonymisation rule leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ddl import on_cluster

NUMBER = 2
NAME = "enrichment"

_LOW = "LowCardinality(String)"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("browser", _LOW),
    ("browser_version", _LOW),
    ("os", _LOW),
    ("os_version", _LOW),
    ("device_type", _LOW),
    ("device_brand", _LOW),
    ("device_model", "String"),
    ("is_bot", "Bool"),
    ("country_code", _LOW),
    ("country", _LOW),
    ("region", _LOW),
    ("region_code", _LOW),
    ("city", "String"),
    ("page_url", "String"),
    ("page_host", _LOW),
    ("page_path", "String"),
    ("page_query", "String"),
    ("page_title", "String"),
    ("referrer", "String"),
    ("referrer_host", _LOW),
    ("utm_source", _LOW),
    ("utm_medium", _LOW),
    ("utm_campaign", "String"),
    ("utm_term", "String"),
    ("utm_content", "String"),
)


def statements(database: str, cluster: str | None) -> Sequence[str]:
    additions = ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in COLUMNS)
    return [f"ALTER TABLE `{database}`.events{on_cluster(cluster)} {additions}"]
