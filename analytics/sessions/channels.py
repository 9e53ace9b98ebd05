"""The channel a session came through, from its entry event's referrer and UTM parameters.

Interface fixed for the sessions work; the rules are filled in by the channel-grouping change.
"""

from __future__ import annotations

from typing import Any, Literal

Channel = Literal["direct", "organic_search", "paid_search", "social", "email", "referral", "other"]
CHANNELS: tuple[Channel, ...] = (
    "direct", "organic_search", "paid_search", "social", "email", "referral", "other",
)  # fmt: skip


def channel_of(
    referrer_host: str, page_host: str, utm_source: str, utm_medium: str, utm_campaign: str
) -> Channel:
    """The channel of a session entered on `page_host` from `referrer_host` with these UTM values
    (each '' when absent)."""
    raise NotImplementedError


def channel_sql(
    referrer_host: str, page_host: str, utm_source: str, utm_medium: str, utm_campaign: str
) -> tuple[str, dict[str, Any]]:
    """A ClickHouse expression computing channel_of over the given column expressions (our own
    identifiers, never user text), and the query parameters it binds (names start `channel_`)."""
    raise NotImplementedError
