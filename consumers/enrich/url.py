"""The page an event happened on and where its visitor came from: host, path, query, title, referrer,
UTM parameters.

Sources, as Segment libraries fill them:

- `context.page` {url, path, search, referrer, title} — analytics.js adds it to every call;
- a page call's `properties` {url, path, search, referrer, title} — they describe the page itself and
  win over `context.page` for `page` events;
- `context.campaign` {source, medium, name, term, content} — what the libraries (and server senders)
  read from the landing URL; it wins over `utm_*` found in the page's own query string, which fills
  only what it leaves empty.

Every value is client input: anything that is not a string is ignored, nothing here raises for any
input, and each field is cut to a bounded length.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

UTM_FIELDS: tuple[str, ...] = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
# context.campaign names them without the prefix, and the campaign itself as `name`.
_CAMPAIGN_KEYS: dict[str, str] = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}
# Browsers cap URLs at a few tens of kilobytes; a column value past this is noise or an attack.
MAX_URL_LENGTH = 8192
MAX_FIELD_LENGTH = 1024


class PageInfo(NamedTuple):
    url: str = ""
    host: str = ""
    path: str = ""
    query: str = ""
    title: str = ""
    referrer: str = ""
    referrer_host: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""


EMPTY_PAGE = PageInfo()


_NO_FIELDS: Mapping[str, Any] = {}
_NO_UTM: tuple[str, ...] = ("",) * len(UTM_FIELDS)


_CAMPAIGN_ORDER: tuple[str, ...] = tuple(_CAMPAIGN_KEYS[name] for name in UTM_FIELDS)


def _mapping(value: object) -> Mapping[str, Any]:
    if type(value) is dict:  # what JSON decoding gives: skip the slower ABC check
        return value
    return value if isinstance(value, Mapping) else _NO_FIELDS


def _clean_host(host: str) -> str:
    if len(host) > MAX_FIELD_LENGTH or any(c.isspace() or not c.isprintable() for c in host):
        return ""
    return host


def _split_uncached(url: str) -> tuple[str, str, str]:
    if not url:
        return "", "", ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host and not parts.scheme and not url.startswith(("/", "?", "#")):
            # Scheme-less "example.com/a?b" parses as a path: read it as a network location when
            # its first segment looks like a domain name.
            candidate = urlsplit("//" + url)
            if "." in (candidate.hostname or ""):
                parts, host = candidate, candidate.hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket, or a port that is not a number
        return "", "", ""
    return _clean_host(host), parts.path[:MAX_FIELD_LENGTH], parts.query[:MAX_URL_LENGTH]


def _utm_uncached(query: str) -> tuple[str, ...]:
    if "utm_" not in query.lower():
        return _NO_UTM
    try:
        pairs = parse_qsl(query, keep_blank_values=False)
    except ValueError:
        return _NO_UTM
    found: dict[str, str] = {}
    for key, value in pairs:
        name = key.strip().lower()
        if name in _CAMPAIGN_KEYS and name not in found and value.strip():
            found[name] = value.strip()[:MAX_FIELD_LENGTH]
    return tuple(found.get(name, "") for name in UTM_FIELDS) if found else _NO_UTM


# A site has a bounded set of pages and referrers, and the events of one visit repeat them: parsing
# (1 to 3 µs a string) is cached on the string. Only strings up to _CACHED_LENGTH are kept, so the
# caches stay under a few MB whatever clients send.
_CACHE_SIZE = 4096
_CACHED_LENGTH = 512
_split_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_split_uncached)
_utm_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_utm_uncached)


def _split(url: str) -> tuple[str, str, str]:
    """(host, path, query) of `url`; empty parts where it does not parse. Host lowercased, without
    port or credentials."""
    return _split_cached(url) if len(url) <= _CACHED_LENGTH else _split_uncached(url)


def _utm_from_query(query: str) -> tuple[str, ...]:
    """The utm_* parameters of a query string in UTM_FIELDS order (the first of each, names
    case-insensitive, values decoded)."""
    return _utm_cached(query) if len(query) <= _CACHED_LENGTH else _utm_uncached(query)


def url_host(url: object) -> str:
    """The lowercased host of a URL ('' for anything else)."""
    return _split(url.strip()[:MAX_URL_LENGTH])[0] if isinstance(url, str) else ""


def _first(mine: Mapping[str, Any], theirs: Mapping[str, Any], key: str, limit: int) -> str:
    """The string at `key` of `mine`, else of `theirs`; stripped and cut, '' for a non-string."""
    value = mine.get(key)
    if type(value) is not str or not (value := value.strip()):
        value = theirs.get(key)
        if type(value) is not str:
            return ""
        value = value.strip()
    return value[:limit]


def page_info(event: Mapping[str, Any]) -> PageInfo:
    """The page fields of one Segment event (any call type); EMPTY_PAGE when it names none."""
    if not isinstance(event, Mapping):
        return EMPTY_PAGE
    context = _mapping(event.get("context"))
    page = _mapping(context.get("page"))
    own = _mapping(event.get("properties")) if event.get("type") == "page" else _NO_FIELDS
    campaign = _mapping(context.get("campaign"))
    if not page and not own and not campaign:
        return EMPTY_PAGE  # server-side events mostly

    url = _first(own, page, "url", MAX_URL_LENGTH)
    host, url_path, url_query = _split(url)
    path = _first(own, page, "path", MAX_FIELD_LENGTH) or url_path
    search = _first(own, page, "search", MAX_URL_LENGTH)
    query = (search[1:] if search.startswith("?") else search) or url_query
    referrer = _first(own, page, "referrer", MAX_URL_LENGTH)
    title = _first(own, page, "title", MAX_FIELD_LENGTH)

    utm = (
        tuple([_first(campaign, _NO_FIELDS, key, MAX_FIELD_LENGTH) for key in _CAMPAIGN_ORDER])
        if campaign
        else _NO_UTM
    )
    if not all(utm):
        from_query = _utm_from_query(query)
        if from_query is not _NO_UTM:
            utm = tuple([mine or theirs for mine, theirs in zip(utm, from_query, strict=True)])
    return PageInfo(url, host, path, query, title, referrer, _split(referrer)[0], *utm)
