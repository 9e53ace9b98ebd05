"""User-agent string → browser, OS and device, with `user-agents` (on ua-parser), behind an LRU cache.

`user-agents` decides the device type (bot, tablet, mobile, desktop) from ua-parser's families; the
families come from ua-parser's best available resolver: `ua-parser-rs` (compiled, a dependency)
takes ~40 µs for a string it has not seen, where the pure-Python regex list `user-agents` calls by
itself takes ~0.7 ms — same rules, same answers (tests/test_enrich.py compares them). Real traffic
repeats a small set of strings, so a bounded LRU on the string turns almost every event into a
dictionary lookup (well under a microsecond).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import ua_parser
import user_agents  # type: ignore[import-untyped]
from user_agents.parsers import (  # type: ignore[import-untyped]
    parse_browser,
    parse_device,
    parse_operating_system,
)

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


@functools.cache
def _resolver() -> ua_parser.Parser:
    # Built on first use: compiling the rules takes ~25 MB and a moment, which only consumers need
    # (the CLI imports every role's modules).
    return ua_parser.Parser(ua_parser.BestAvailableResolver(ua_parser.load_builtins()))


def parsed_user_agent(user_agent: str) -> user_agents.parsers.UserAgent:
    """What `user_agents.parse` returns, with the families from ua-parser's best resolver instead
    of the regex list user-agents runs itself (its UserAgent keeps the string and the three parsed
    parts; its device-type rules read only those)."""
    try:
        result = _resolver().parse(user_agent).with_defaults()
    except UnicodeEncodeError:  # a lone surrogate: the compiled resolver reads UTF-8 only
        result = _resolver().parse(user_agent.encode("utf-8", "replace").decode("utf-8")).with_defaults()
    browser, os, device = result.user_agent, result.os, result.device
    parsed = object.__new__(user_agents.parsers.UserAgent)
    parsed.ua_string = user_agent
    parsed.browser = parse_browser(
        browser.family, browser.major, browser.minor, browser.patch, browser.patch_minor
    )
    parsed.os = parse_operating_system(os.family, os.major, os.minor, os.patch, os.patch_minor)
    parsed.device = parse_device(device.family, device.brand, device.model)
    return parsed


def parse_user_agent(user_agent: str) -> UserAgentInfo:
    """Parse one UA string, uncached. Never raises for a str; empty/blank → EMPTY_USER_AGENT."""
    user_agent = user_agent.strip()[:MAX_UA_LENGTH]
    if not user_agent:
        return EMPTY_USER_AGENT
    parsed = parsed_user_agent(user_agent)
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
