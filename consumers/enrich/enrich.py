"""The enrichment step of a consumer: one Segment event (with the request's user agent and address) →
the derived columns of its `events` row, in ENRICHMENT_COLUMNS order.

    enricher = Enricher(GeoLookup(default_geo_database()))
    client, stored_ip = enricher.client(user_agent, ip, project.anonymisation.ip)  # once per client
    page = enricher.page(event_type, page_json, campaign_json, properties_json)
    reason = enricher.bots.client_reason(user_agent, client[IS_BOT], ip, project.bots)  # per client
    reason = reason or enricher.bots.referrer_reason(page.referrer_host, project.bots)
    row = base_row + client + page + (reason or "",)  # rows.py: is_bot set from the reason, and
                                                      # the end user's client judged, not a server's

Order of work: the address is geolocated in full first, then anonymised per the project's setting;
only the anonymised form (`Enrichment.ip`) is stored. A replay re-derives every column with the
rules and data of the day.

Pure and synchronous: no I/O per event (the GeoIP files are memory-mapped, the caches are bounded).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import msgspec

from headwater.core.projects.settings import IpHandling

from .bots import BotFilter
from .geo import EMPTY_GEO, GeoLookup, GeoResult
from .ip import anonymise_ip
from .url import PageInfo, page_info
from .useragent import DEFAULT_UA_CACHE_SIZE, UserAgentInfo, UserAgentParser


class Enrichment(NamedTuple):
    """The derived columns of one event, flat and in column order.

    A NamedTuple rather than a frozen dataclass: it is as immutable and as typed, it *is* the row
    fragment (no conversion step), and it is built by concatenating the cached parts — about 0.3 µs,
    where a frozen dataclass of 26 fields costs about 2.3 µs in its `__init__` alone (CPython 3.11).
    """

    # user agent (useragent.py)
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device_type: str = ""
    device_brand: str = ""
    device_model: str = ""
    is_bot: bool = False
    # geolocation of the full address (geo.py)
    country_code: str = ""
    country: str = ""
    region: str = ""
    region_code: str = ""
    city: str = ""
    # page and campaign (url.py)
    page_url: str = ""
    page_host: str = ""
    page_path: str = ""
    page_query: str = ""
    page_title: str = ""
    referrer: str = ""
    referrer_host: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    # why the event is not a person's ('' when it is): bots.py and headwater.privacy.bots
    bot_reason: str = ""
    # the address as stored: anonymised per the project (ip.py)
    ip: str = ""


ENRICHMENT_COLUMNS: tuple[str, ...] = Enrichment._fields

_LOW = "LowCardinality(String)"
ENRICHMENT_COLUMN_TYPES: dict[str, str] = {
    "browser": _LOW,
    "browser_version": _LOW,
    "os": _LOW,
    "os_version": _LOW,
    "device_type": _LOW,
    "device_brand": _LOW,
    # Thousands of Android models: past what a LowCardinality dictionary is good for.
    "device_model": "String",
    "is_bot": "Bool",
    "country_code": _LOW,
    "country": _LOW,
    "region": _LOW,
    "region_code": _LOW,
    "city": "String",
    "page_url": "String",
    "page_host": _LOW,
    "page_path": "String",
    "page_query": "String",
    "page_title": "String",
    "referrer": "String",
    "referrer_host": _LOW,
    "utm_source": _LOW,
    "utm_medium": _LOW,
    "utm_campaign": "String",
    "utm_term": "String",
    "utm_content": "String",
    "bot_reason": _LOW,
    "ip": "String",
}

# The geolocation columns are the first fields of GeoResult (it also carries latitude/longitude).
_GEO_COLUMNS = len(GeoResult._fields) - 2
_PAGE_COLUMNS = tuple(
    name if name.startswith(("referrer", "utm_")) else f"page_{name}" for name in PageInfo._fields
)
# Rows concatenate the client's columns, the page's and the address (rows.py), relying on the parts
# lining up with the columns: checked once, here, rather than trusted (a reordered field would
# otherwise shift every column after it).
_ASSEMBLED = UserAgentInfo._fields + GeoResult._fields[:_GEO_COLUMNS] + _PAGE_COLUMNS + ("bot_reason", "ip")
if _ASSEMBLED != ENRICHMENT_COLUMNS or list(ENRICHMENT_COLUMN_TYPES) != list(ENRICHMENT_COLUMNS):
    raise ImportError("enrichment parts no longer line up with ENRICHMENT_COLUMNS")  # pragma: no cover


# A request's events mostly share their page object, and a site's pages repeat: page_info (~3 µs
# an event) is cached on the raw JSON it reads. Only small keys are kept, so the cache stays under
# a few MB whatever clients send.
DEFAULT_PAGE_CACHE_SIZE = 4096
_CACHED_PAGE_BYTES = 2048
ClientColumns = tuple[Any, ...]  # the user-agent and geolocation columns, in column order
IS_BOT = ENRICHMENT_COLUMNS.index("is_bot")  # its place among the client's columns


class Enricher:
    """Derives the enrichment columns of events; one per consumer process (it holds the caches)."""

    def __init__(
        self,
        geo: GeoLookup | None,
        ua_cache_size: int = DEFAULT_UA_CACHE_SIZE,
        page_cache_size: int = DEFAULT_PAGE_CACHE_SIZE,
        bots: BotFilter | None = None,
    ) -> None:
        self.geo = geo
        self.bots = bots if bots is not None else BotFilter()
        self.user_agents = UserAgentParser(ua_cache_size)
        self._page_cached = functools.lru_cache(maxsize=page_cache_size)(_page_from_json)

    def client(
        self, user_agent: str | None, ip: str | None, ip_mode: IpHandling
    ) -> tuple[ClientColumns, str]:
        """The columns that depend on the client alone (user agent, then geolocation of the full
        address) and the address as stored under `ip_mode`: the same for every event of a request
        that does not name its own (rows.py computes them once per request)."""
        agent = self.user_agents.parse(user_agent)
        place = self.geo.lookup(ip) if self.geo is not None else EMPTY_GEO
        return agent + place[:_GEO_COLUMNS], anonymise_ip(ip, ip_mode)

    def page(self, event_type: str, page: bytes, campaign: bytes, properties: bytes) -> PageInfo:
        """page_info of an event given as the raw JSON of its `context.page`, `context.campaign`
        and (read for page calls only) `properties`: what `Enrichment` holds from `page_url` to
        `utm_content`. Cached on that JSON."""
        if event_type != "page":
            properties = b""
        if len(page) + len(campaign) + len(properties) > _CACHED_PAGE_BYTES:
            return _page_from_json(event_type, page, campaign, properties)
        return self._page_cached(event_type, page, campaign, properties)

    def page_cache_info(self) -> functools._CacheInfo:
        return self._page_cached.cache_info()


def _page_from_json(event_type: str, page: bytes, campaign: bytes, properties: bytes) -> PageInfo:
    fields: dict[str, Any] = {
        "type": event_type,
        "context": {"page": _json_value(page), "campaign": _json_value(campaign)},
    }
    if properties:
        fields["properties"] = _json_value(properties)
    return page_info(fields)


def _json_value(raw: bytes) -> Any:
    """The value of raw JSON the edge already validated; None for anything unreadable (which
    page_info, like every enrichment, treats as absent rather than failing the event)."""
    try:
        return msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        return None
