"""Enrichment of Segment events in the consumers: user agent, geolocation, page/URL/UTM, IP handling.

Pure, synchronous and cached; see docs/enrichment.md for the data, its licence and the costs.
"""

from .bots import BotFilter, read_datacentre_ranges, read_referrer_spam
from .enrich import ENRICHMENT_COLUMN_TYPES, ENRICHMENT_COLUMNS, ClientColumns, Enricher, Enrichment
from .geo import DBIP_ATTRIBUTION, GEO_ATTRIBUTION, GeoLookup, GeoResult, default_geo_database
from .ip import anonymise_ip, parse_ip
from .timestamps import skew_corrected
from .url import PageInfo, page_info, url_host
from .useragent import UserAgentInfo, UserAgentParser, parse_user_agent

__all__ = [
    "DBIP_ATTRIBUTION",
    "ENRICHMENT_COLUMNS",
    "ENRICHMENT_COLUMN_TYPES",
    "GEO_ATTRIBUTION",
    "BotFilter",
    "ClientColumns",
    "Enricher",
    "Enrichment",
    "GeoLookup",
    "GeoResult",
    "PageInfo",
    "UserAgentInfo",
    "UserAgentParser",
    "anonymise_ip",
    "default_geo_database",
    "page_info",
    "parse_ip",
    "parse_user_agent",
    "read_datacentre_ranges",
    "read_referrer_spam",
    "skew_corrected",
    "url_host",
]
