"""Channel grouping: each rule and edge by example, and the ClickHouse expression agreeing with the
Python definition on generated inputs (run in the embedded engine)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.analytics.sessions.channels import (
    CHANNELS,
    DISPLAY_MEDIUMS,
    EMAIL_SOURCES,
    EMAIL_TAGS,
    PAID_MEDIUMS,
    REFERRAL_MEDIUMS,
    SEARCH_DOMAINS,
    SEARCH_NAMES,
    SOCIAL_DOMAINS,
    SOCIAL_MEDIUMS,
    SOCIAL_NAMES,
    channel_of,
    channel_sql,
)
from headwater.control.clickhouse import connect
from headwater.core.migrations.m0002_enrichment import COLUMNS as ENRICHMENT_COLUMNS

Row = tuple[str, str, str, str, str]
PAGE = "example.com"

# (referrer_host, page_host, utm_source, utm_medium, utm_campaign) -> channel
CASES: list[tuple[Row, str]] = [
    # direct: no source and no UTM at all
    (("", PAGE, "", "", ""), "direct"),
    (("", "", "", "", ""), "direct"),
    # a self-referral is no referrer, whatever its case or www.
    ((PAGE, PAGE, "", "", ""), "direct"),
    (("www.example.com", PAGE, "", "", ""), "direct"),
    (("example.com", "www.example.com", "", "", ""), "direct"),
    (("WWW.Example.COM", "example.com", "", "", ""), "direct"),
    (("blog.example.com", PAGE, "", "", ""), "referral"),  # a subdomain is another site
    ((PAGE, PAGE, "", "", "spring"), "other"),  # UTM without a source or a known medium
    # organic search: a search engine's host on any TLD, or utm_medium=organic
    (("www.google.com", PAGE, "", "", ""), "organic_search"),
    (("google.co.uk", PAGE, "", "", ""), "organic_search"),
    (("www.google.com.br", PAGE, "", "", ""), "organic_search"),
    (("Google.DE", PAGE, "", "", ""), "organic_search"),
    (("duckduckgo.com", PAGE, "", "", ""), "organic_search"),
    (("search.yahoo.co.jp", PAGE, "", "", ""), "organic_search"),
    (("you.com", PAGE, "", "", ""), "organic_search"),
    (("", PAGE, "google", "", ""), "organic_search"),
    (("", PAGE, "Bing", "organic", ""), "organic_search"),
    (("", PAGE, "some-engine", "organic", ""), "organic_search"),
    (("google.evil.com", PAGE, "", "", ""), "referral"),  # google is not the registrable name
    (("google.com", PAGE, "", "display", ""), "other"),  # GA4's Display
    # paid search: a search source with a paid medium
    (("", PAGE, "google", "cpc", "spring"), "paid_search"),
    (("", PAGE, "GOOGLE", "CPC", ""), "paid_search"),
    (("", PAGE, "bing", "ppc", ""), "paid_search"),
    (("", PAGE, "www.google.com", "paid-search", ""), "paid_search"),
    (("", PAGE, "duckduckgo", "retargeting", ""), "paid_search"),
    (("", PAGE, "google", "cpm", ""), "paid_search"),
    (("www.google.com", PAGE, "", "cpc", ""), "paid_search"),  # the referrer is the source
    # social: a social source (paid or not) or a social medium
    (("m.facebook.com", PAGE, "", "", ""), "social"),
    (("l.instagram.com", PAGE, "", "", ""), "social"),
    (("t.co", PAGE, "", "", ""), "social"),
    (("x.com", PAGE, "", "", ""), "social"),
    (("news.ycombinator.com", PAGE, "", "", ""), "social"),
    (("www.reddit.com", PAGE, "", "", ""), "social"),
    (("lnkd.in", PAGE, "", "", ""), "social"),
    (("", PAGE, "facebook", "cpc", ""), "social"),
    (("", PAGE, "fb", "paid_social", ""), "social"),
    (("", PAGE, "partner", "social", ""), "social"),
    (("", PAGE, "", "Social Media", ""), "social"),
    # email: an email source or tag, or a webmail host
    (("mail.google.com", PAGE, "", "", ""), "email"),
    (("outlook.live.com", PAGE, "", "", ""), "email"),
    (("", PAGE, "newsletter", "", ""), "email"),
    (("", PAGE, "weekly", "email", "launch"), "email"),
    (("", PAGE, "", "E-Mail", ""), "email"),
    (("", PAGE, "acme-newsletter", "link", ""), "email"),
    (("", PAGE, "gmail", "", ""), "email"),
    (("blog.org", PAGE, "mailchimp", "", ""), "email"),  # utm_source wins over the referrer
    (("", PAGE, "newsletter", "cpc", ""), "other"),  # paid before email, as GA4
    # referral: a referrer host on no list, or a referral medium
    (("blog.example.org", PAGE, "", "", ""), "referral"),
    (("news.site.co.uk", PAGE, "", "", ""), "referral"),
    (("blog.example.org", PAGE, "", "", "spring"), "referral"),
    (("", PAGE, "partner.com", "referral", ""), "referral"),
    (("", PAGE, "some-app", "app", ""), "referral"),
    # other: UTM values that match nothing, and paid mediums without a search or social source
    (("", PAGE, "partner", "", ""), "other"),
    (("", PAGE, "partner", "unknown", ""), "other"),
    (("blog.example.org", PAGE, "", "weird", ""), "other"),
    (("", PAGE, "", "", "spring-sale"), "other"),
    (("", PAGE, "partner", "cpc", ""), "other"),
    (("", PAGE, "", "banner", ""), "other"),
]


@pytest.mark.parametrize(("row", "expected"), CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(CASES)])
def test_channel_of(row: Row, expected: str) -> None:
    assert channel_of(*row) == expected


def test_every_channel_has_a_case() -> None:
    assert {expected for _, expected in CASES} == set(CHANNELS)


@pytest.fixture(scope="module")
def engine(clickhouse_url: str) -> Iterator[Client]:
    client = connect(clickhouse_url)
    yield client
    client.close()


_COLUMNS = ("referrer_host", "page_host", "utm_source", "utm_medium", "utm_campaign")
_TYPES = dict(ENRICHMENT_COLUMNS)  # the events table's own types (LowCardinality for most of these)


def channels_in_clickhouse(client: Client, rows: Sequence[Row]) -> list[str]:
    """channel_sql over `rows`, all in one query: the rows travel as parameter arrays, cast to the
    types the events table gives these columns."""
    expression, parameters = channel_sql(*_COLUMNS)
    columns = list(zip(*rows, strict=True))
    arrays = ", ".join(f"{{rows_{name}:Array(String)}}" for name in _COLUMNS)
    names = ", ".join(f"CAST(row.{i + 1} AS {_TYPES[name]}) AS {name}" for i, name in enumerate(_COLUMNS))
    sql = (
        f"SELECT {expression} FROM (SELECT {names}, row.6 AS position"
        f" FROM (SELECT arrayJoin(arrayZip({arrays}, range({len(rows)}))) AS row))"
        " ORDER BY position"
    )
    for name, column in zip(_COLUMNS, columns, strict=True):
        parameters[f"rows_{name}"] = list(column)
    return [channel for (channel,) in client.query(sql, parameters=parameters).result_rows]


def test_channel_sql_matches_the_cases(engine: Client) -> None:
    rows = [row for row, _ in CASES]
    assert channels_in_clickhouse(engine, rows) == [expected for _, expected in CASES]


def test_channel_sql_binds_only_channel_parameters() -> None:
    expression, parameters = channel_sql(*_COLUMNS)
    assert all(name.startswith("channel_") for name in parameters)
    assert all(f"{{{name}:Array(String)}}" in expression for name in parameters)


_KNOWN = (
    SEARCH_NAMES + SEARCH_DOMAINS + SOCIAL_NAMES + SOCIAL_DOMAINS + EMAIL_SOURCES
    + ("example.com", "blog.example.org", "google.evil.com", "co.uk", "t.co")
)  # fmt: skip
_MEDIUMS = (
    PAID_MEDIUMS + DISPLAY_MEDIUMS + SOCIAL_MEDIUMS + REFERRAL_MEDIUMS + EMAIL_TAGS
    + ("cpc", "paid", "paid-social", "organic", "xcpx", "none")
)  # fmt: skip
_LABELS = st.sampled_from(("www", "m", "l", "mail", "news", "co", "com", "uk", "de", "ne", "jp", "", "WWW"))
_TEXT = st.text(max_size=12)


@st.composite
def _host_variant(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A known name or domain, perhaps under a subdomain, on another TLD, in other case, with a
    trailing dot or stray text around it."""
    host = draw(base)
    if draw(st.booleans()):
        host = f"{draw(_LABELS)}.{host}"
    if "." not in host and draw(st.booleans()):
        host = f"{host}.{draw(_LABELS)}"
    if draw(st.booleans()):
        host = "".join(c.upper() if draw(st.booleans()) else c for c in host)
    return draw(st.sampled_from((host, host, host + ".", host + draw(_TEXT), draw(_TEXT) + host)))


_HOSTS = st.one_of(st.just(""), st.sampled_from(_KNOWN), _host_variant(st.sampled_from(_KNOWN)), _TEXT)
_SOURCE = st.one_of(st.just(""), _HOSTS)  # absent half of the time, so that the referrer counts
_MEDIUM = st.one_of(
    st.just(""), st.just(""), st.sampled_from(_MEDIUMS), _host_variant(st.sampled_from(_MEDIUMS)), _TEXT
)
_CAMPAIGN = st.one_of(st.just(""), st.just(""), st.just("spring"), _TEXT)


@st.composite
def _rows(draw: st.DrawFn) -> Row:
    page = draw(st.one_of(st.just(PAGE), _HOSTS))
    referrer = draw(st.one_of(_HOSTS, st.sampled_from((page, "www." + page, page.upper()))))
    return (referrer, page, draw(_SOURCE), draw(_MEDIUM), draw(_CAMPAIGN))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_rows(), min_size=1, max_size=40))
def test_channel_sql_agrees_with_channel_of(engine: Client, rows: list[Row]) -> None:
    assert channels_in_clickhouse(engine, rows) == [channel_of(*row) for row in rows]
