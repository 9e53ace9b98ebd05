"""User-agent string → browser, OS and device, with `user-agents` (on ua-parser), behind an LRU cache.

Parsing a UA string the cache has not seen costs about 1 ms (ua-parser runs its regex list); real
traffic repeats a small set of strings, so a bounded LRU on the string turns almost every event into
a dictionary lookup (well under a microsecond).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import user_agents  # type: ignore[import-untyped]

DeviceType = Literal["desktop", "mobile", "tablet", "bot", "other", ""]

DEFAULT_UA_CACHE_SIZE = 10_000
# Real UA strings stay under ~500 characters; longer ones are cut before parsing so that a hostile
# header cannot make the regex list scan megabytes, and so that a cache entry stays small.
MAX_UA_LENGTH = 1024


class UserAgentInfo(NamedTuple):
    """What a UA string says; every field empty when there was no UA. A NamedTuple, like the other
    enrichment results, so that the facade assembles a row by concatenation (enrich.py)."""

    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device_type: DeviceType = ""
    device_brand: str = ""
    device_model: str = ""
    is_bot: bool = False


EMPTY_USER_AGENT = UserAgentInfo()


def _device_type(parsed: user_agents.parsers.UserAgent) -> DeviceType:
    # Bot first: a crawler announcing a phone (Googlebot smartphone) is still a crawler.
    if parsed.is_bot:
        return "bot"
    if parsed.is_tablet:
        return "tablet"
    if parsed.is_mobile:
        return "mobile"
    if parsed.is_pc:
        return "desktop"
    return "other"


def parse_user_agent(user_agent: str) -> UserAgentInfo:
    """Parse one UA string, uncached. Never raises for a str; empty/blank → EMPTY_USER_AGENT."""
    user_agent = user_agent.strip()[:MAX_UA_LENGTH]
    if not user_agent:
        return EMPTY_USER_AGENT
    parsed = user_agents.parse(user_agent)
    return UserAgentInfo(
        browser=parsed.browser.family or "",
        browser_version=parsed.browser.version_string or "",
        os=parsed.os.family or "",
        os_version=parsed.os.version_string or "",
        device_type=_device_type(parsed),
        device_brand=parsed.device.brand or "",
        device_model=parsed.device.model or "",
        is_bot=bool(parsed.is_bot),
    )


class UserAgentParser:
    """`parse_user_agent` behind a bounded LRU keyed on the (cut) string; one per consumer process."""

    def __init__(self, cache_size: int = DEFAULT_UA_CACHE_SIZE) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._cached = functools.lru_cache(maxsize=cache_size)(parse_user_agent)

    def parse(self, user_agent: str | None) -> UserAgentInfo:
        if not user_agent or not isinstance(user_agent, str):
            return EMPTY_USER_AGENT
        if len(user_agent) > MAX_UA_LENGTH:
            user_agent = user_agent[:MAX_UA_LENGTH]
        return self._cached(user_agent)

    def cache_info(self) -> functools._CacheInfo:
        return self._cached.cache_info()

    def cache_clear(self) -> None:
        self._cached.cache_clear()
