"""The bot and spam filter (headwater.privacy.bots, consumers/enrich/bots.py): its hit rates on the
crawler list's own examples and on real browsers, each check and its reason, the operator's files,
the project settings, and rows flagged or dropped (docs/privacy.md, "Bot and spam filtering").
End to end through the edge: tests/test_bots_pipeline.py."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fake_useragent
import pytest
from clickhouse_connect.driver.client import Client
from hw_testing import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.consumers.enrich import BotFilter, Enricher, read_datacentre_ranges, read_referrer_spam
from headwater.consumers.rows import COLUMNS, envelope_rows
from headwater.consumers.wire import ReadEnvelope, decode_envelope
from headwater.control.patterns_schemas import PatternsRequest
from headwater.control.schemas import PathsRequest
from headwater.core.migrations import apply_migrations, m0005_bot_reason
from headwater.core.projects.settings import MAX_IP_BLOCKLIST, Bots, ProjectSettings
from headwater.core.service.errors import APIError
from headwater.core.service.validation import convert_body
from headwater.core.wire.envelope import Envelope
from headwater.ops.paths import paths_body
from headwater.ops.patterns import patterns_body
from headwater.privacy.bots import (
    BOT_REASONS,
    NETWORK_PATTERN,
    DatacentreFileError,
    NetworkRanges,
    ReferrerSpamList,
    crawler_list,
    datacentre_ranges,
    default_referrer_spam,
    parse_network,
    user_agent_reason,
)

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def crawler_examples() -> list[str]:
    return [str(i) for entry in crawler_list() for i in entry.get("instances") or []]  # type: ignore[attr-defined]


def real_browsers() -> list[str]:
    """fake-useragent's database of user agents seen in real traffic (desktop, mobile and tablet
    browsers only: its `type`), each string once."""
    path = Path(fake_useragent.__file__).parent / "data" / "browsers.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted({r["useragent"] for r in rows if r["type"] in ("desktop", "mobile", "tablet")})


def flagged(user_agents: list[str]) -> list[str]:
    """The user agents the consumer's filter flags, with the parser's own flag as rows.py uses it."""
    enricher = Enricher(None)
    rules = Bots()
    out = []
    for agent in user_agents:
        client, _ = enricher.client(agent, None, "drop")
        if enricher.bots.client_reason(agent, client[7], None, rules) is not None:
            out.append(agent)
    return out


def test_the_crawler_lists_examples_are_flagged() -> None:
    examples = crawler_examples()
    assert len(examples) >= 2000  # crawler-user-agents 1.67: 2,123 examples of 1,504 patterns
    rate = len(flagged(examples)) / len(examples)
    assert rate >= 0.95, rate


def test_real_browsers_are_not_flagged() -> None:
    browsers = real_browsers()
    assert len(browsers) >= 800  # fake-useragent 2.2: 839 distinct browser user agents
    wrongly = flagged(browsers)
    assert len(wrongly) / len(browsers) <= 0.01, wrongly[:10]


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 "
        "Safari/537.36",
        "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 "
        "Safari/538.1",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Playwright/1.40 Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) Puppeteer Chrome/120.0.0.0",
        "Selenium/4.15.0 (python linux)",
        "python-requests/2.31.0",
        "Python-urllib/3.11",
        "curl/8.4.0",
        "Wget/1.21.3",
        "Go-http-client/1.1",
        "okhttp/4.12.0",
        "axios/1.6.2",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "Java-http-client/17.0.9",
        "Apache-HttpClient/4.5.14 (Java/17.0.9)",
        "Scrapy/2.11.0 (+https://scrapy.org)",
    ],
)
def test_headless_browsers_and_http_tools_are_automation(agent: str) -> None:
    assert user_agent_reason(agent, parser_says_bot=False) == "automation"


def test_a_crawler_of_the_list_is_a_crawler_and_the_parsers_own_flag_comes_last() -> None:
    assert user_agent_reason(GOOGLEBOT, parser_says_bot=True) == "crawler"
    assert user_agent_reason("Mozilla/5.0 (compatible; SemrushBot/7~bl)", parser_says_bot=False) == "crawler"
    # Neither list names it, but ua-parser calls it a bot.
    assert user_agent_reason("Mozilla/5.0 Shiny-New-Thing/1.0", parser_says_bot=True) == "user_agent"
    assert user_agent_reason(CHROME, parser_says_bot=False) is None
    assert user_agent_reason("", parser_says_bot=False) is None
    assert user_agent_reason(None, parser_says_bot=False) is None


# ---- networks ----------------------------------------------------------------------------------


def test_parse_network_clears_host_bits_and_takes_single_addresses() -> None:
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8"
    assert str(parse_network("2001:db8::1")) == "2001:db8::1/128"
    for bad in ("", "10.0.0.0/33", "example.com", "1.2.3.4/8/9", "x" * 100, " 10.0.0.0/8"):
        with pytest.raises(ValueError, match="CIDR"):
            parse_network(bad)


networks_v4 = st.builds(
    lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv4Address(a)}/{p}", strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(8, 32),
)
networks_v6 = st.builds(
    lambda a, p: ipaddress.ip_network(f"{ipaddress.IPv6Address(a)}/{p}", strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(16, 128),
)
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(networks_v4, networks_v6), max_size=30), st.lists(addresses, max_size=20))
def test_network_ranges_answer_as_the_networks_do(networks: list[Any], probes: list[Any]) -> None:
    ranges = NetworkRanges(networks)
    # Probe the edges of every network too, where an off-by-one would show.
    edges = [a for n in networks for a in (n.network_address, n.broadcast_address)]
    edges += [type(a)(int(a) + 1) for a in edges if int(a) + 1 < 2**a.max_prefixlen]
    edges += [type(a)(int(a) - 1) for a in edges if int(a) > 0]
    for address in [*probes, *edges]:
        expected = any(address.version == n.version and address in n for n in networks)
        assert (address in ranges) is expected, address


def test_a_datacentre_file_of_cidrs_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "dc.txt"
    path.write_text("# cloud ranges\n\n203.0.113.0/24\n2001:db8:100::/40  # v6\n198.51.100.7\n")
    ranges = read_datacentre_ranges(path)
    assert ipaddress.ip_address("203.0.113.200") in ranges
    assert ipaddress.ip_address("2001:db8:1ff::1") in ranges
    assert ipaddress.ip_address("198.51.100.7") in ranges
    assert ipaddress.ip_address("198.51.100.8") not in ranges
    assert ipaddress.ip_address("2001:db8:200::1") not in ranges


def test_a_datacentre_csv_with_a_header_cidrs_and_address_ranges() -> None:
    lines = [
        "network,provider,region",
        '"192.0.2.0/25",acme-cloud,eu',
        "198.51.100.10,198.51.100.20,other-cloud",
        "2001:db8::,2001:db8::ffff,v6-cloud",
    ]
    ranges = datacentre_ranges(lines)
    assert ipaddress.ip_address("192.0.2.127") in ranges
    assert ipaddress.ip_address("192.0.2.128") not in ranges
    assert ipaddress.ip_address("198.51.100.20") in ranges
    assert ipaddress.ip_address("198.51.100.21") not in ranges
    assert ipaddress.ip_address("2001:db8::abcd") in ranges


@pytest.mark.parametrize(
    ("lines", "line"),
    [
        (["10.0.0.0/8", "not a network"], 2),
        (["10.0.0.0/8", "10.0.0.9,10.0.0.1"], 2),
        (["10.0.0.0/8", "10.0.0.1,2001:db8::1"], 2),
        (["300.1.2.3/8"], 1),
        (["network", "10.0.0.0/8", "ten/8"], 3),
    ],
)
def test_a_bad_line_of_a_datacentre_file_is_named(lines: list[str], line: int) -> None:
    with pytest.raises(DatacentreFileError, match=f"^line {line}: "):
        datacentre_ranges(lines)


# ---- referrer spam -------------------------------------------------------------------------------


def test_a_referrer_is_spam_by_its_host_or_a_parent_domain() -> None:
    spam = default_referrer_spam()
    assert len(spam) >= 279
    assert spam.is_spam("semalt.com")
    assert spam.is_spam("www.semalt.com")
    assert spam.is_spam("a.b.semalt.com")
    assert spam.is_spam("SEMALT.COM.")
    assert not spam.is_spam("notsemalt.com")
    assert not spam.is_spam("com")
    assert not spam.is_spam("www.google.com")
    assert not spam.is_spam("")
    # Internationalised hosts in either spelling.
    assert spam.is_spam("холодныйобзвон.рф")
    assert spam.is_spam("холодныйобзвон.рф".encode("idna").decode())


def test_an_operators_list_adds_to_the_shipped_one(tmp_path: Path) -> None:
    path = tmp_path / "spam.txt"
    path.write_text("# ours\nspam.example\n\n")
    spam = read_referrer_spam(path)
    assert spam.is_spam("x.spam.example") and spam.is_spam("semalt.com")
    assert len(ReferrerSpamList(["a.test", "www.a.test", "# c"])) == 1


def test_each_projects_blocklist_answers_for_it_whichever_was_asked_last() -> None:
    """The filter remembers the blocklist it was last asked for by the identity of its tuple:
    alternating projects (and equal tuples that are other objects) get their own answers."""
    bots = BotFilter()
    tens = ProjectSettings().merged({"bots": {"ip_blocklist": ["10.0.0.0/8"]}}).bots
    ours = ProjectSettings().merged({"bots": {"ip_blocklist": ["192.168.0.0/16"]}}).bots
    again = ProjectSettings().merged({"bots": {"ip_blocklist": ["10.0.0.0/8"]}}).bots
    assert again.ip_blocklist == tens.ip_blocklist and again.ip_blocklist is not tens.ip_blocklist
    browser = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    for _ in range(2):
        for rules, flagged, passed in ((tens, "10.1.2.3", "192.168.1.1"), (ours, "192.168.1.1", "10.1.2.3"),
                                       (again, "10.9.9.9", "192.168.7.7")):  # fmt: skip
            assert bots.client_reason(browser, False, flagged, rules) == "ip_blocklist"
            assert bots.client_reason(browser, False, passed, rules) is None


# ---- settings ------------------------------------------------------------------------------------


def test_the_bots_settings_default_to_flagging() -> None:
    assert ProjectSettings().bots == Bots(mode="flag", ip_blocklist=(), referrer_spam=True, datacentre=True)
    assert ProjectSettings().to_dict()["bots"]["ip_blocklist"] == []


def test_blocklist_networks_are_checked_and_kept_in_canonical_form() -> None:
    networks = ["10.1.2.3/8", "10.0.0.0/8", "2001:DB8::1"]
    settings = ProjectSettings().merged({"bots": {"ip_blocklist": networks}})
    assert settings.bots.ip_blocklist == ("10.0.0.0/8", "2001:db8::1/128")
    assert settings.bots.mode == "flag"  # the group's other fields kept
    with pytest.raises(APIError) as bad:
        ProjectSettings.from_dict({"bots": {"ip_blocklist": ["10.0.0.0/8", "10.0.0.0/99"]}})
    assert (bad.value.status, bad.value.code, bad.value.field) == (
        400,
        "invalid_field",
        "settings.bots.ip_blocklist[1]",
    )


@pytest.mark.parametrize(
    ("group", "field"),
    [
        ({"mode": "hide"}, "settings.bots.mode"),
        ({"ip_blocklist": ["10.0.0.1"] * (MAX_IP_BLOCKLIST + 1)}, "settings.bots.ip_blocklist"),
        ({"ip_blocklist": ["1" * 60]}, "settings.bots.ip_blocklist[0]"),
        ({"ip_blocklist": ["10.0.0.0/8\n"]}, "settings.bots.ip_blocklist[0]"),
        ({"ip_blocklist": ["010.0.0.0/8"]}, "settings.bots.ip_blocklist[0]"),
        ({"ip_blocklist": ["::ffff:10.0.0.1"]}, "settings.bots.ip_blocklist[0]"),
        ({"referrer_spam": "yes"}, "settings.bots.referrer_spam"),
        ({"robots": True}, "settings.bots.robots"),
    ],
)
def test_bad_bots_settings_name_the_field(group: dict[str, Any], field: str) -> None:
    with pytest.raises(APIError) as bad:
        ProjectSettings.from_dict({"bots": group})
    assert bad.value.status == 400 and bad.value.field == field


# ---- rows ------------------------------------------------------------------------------------------


def _request(
    events: list[dict[str, Any]], user_agent: str, ip: str = "192.0.2.10", key_kind: str = "public"
) -> ReadEnvelope:
    envelope = Envelope("shop", "r1", "2026-11-28T10:00:00.000Z", events, key_kind, ip, user_agent, None)  # type: ignore[arg-type]
    return decode_envelope(envelope.encode())


def _track(**context: Any) -> dict[str, Any]:
    return {"type": "track", "event": "E", "anonymousId": "a", "context": context}


def _flags(rows: list[tuple[Any, ...]]) -> list[tuple[bool, str]]:
    return [(row[COLUMNS.index("is_bot")], row[COLUMNS.index("bot_reason")]) for row in rows]


def test_rows_of_a_crawler_are_flagged_with_the_reason() -> None:
    rows = envelope_rows(_request([_track(), _track()], GOOGLEBOT), Enricher(None))
    assert _flags(rows) == [(True, "crawler")] * 2
    assert _flags(envelope_rows(_request([_track()], CHROME), Enricher(None))) == [(False, "")]


def test_drop_mode_counts_bots_events_per_reason_and_keeps_the_others() -> None:
    drop = ProjectSettings.from_dict({"bots": {"mode": "drop", "ip_blocklist": ["192.0.2.0/24"]}})
    dropped: dict[str, int] = {}
    events = [
        _track(),  # the request's own client: on the blocklist
        _track(userAgent=CHROME, page={"referrer": "https://www.semalt.com/x"}),  # blocklisted too
        _track(userAgent="curl/8.4.0"),  # a tool's user agent is reported before its address
    ]
    assert envelope_rows(_request(events, CHROME), Enricher(None), drop, None, dropped=dropped) == []
    assert dropped == {"ip_blocklist": 2, "automation": 1}
    dropped = {}
    events = [_track(page={"referrer": "https://semalt.com/"}), _track(), _track(userAgent=GOOGLEBOT)]
    rows = envelope_rows(
        _request(events, CHROME, "198.51.100.1"), Enricher(None), drop, None, dropped=dropped
    )
    assert dropped == {"referrer_spam": 1, "crawler": 1}
    assert _flags(rows) == [(False, "")]


def test_each_reason_is_stored_in_flag_mode(tmp_path: Path) -> None:
    path = tmp_path / "dc.txt"
    path.write_text("198.51.100.0/24\n")
    enricher = Enricher(None, bots=BotFilter(datacentre=read_datacentre_ranges(path)))
    settings = ProjectSettings.from_dict({"bots": {"ip_blocklist": ["192.0.2.0/24"]}})
    events = [
        _track(userAgent="Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)"),
        _track(userAgent="python-requests/2.31.0"),
        _track(page={"referrer": "https://buttons-for-website.com/"}),
        _track(),
    ]
    rows = envelope_rows(_request(events, CHROME, "203.0.113.9"), enricher, settings)
    assert _flags(rows) == [(True, "crawler"), (True, "automation"), (True, "referrer_spam"), (False, "")]
    assert _flags(envelope_rows(_request([_track()], CHROME, "192.0.2.1"), enricher, settings)) == [
        (True, "ip_blocklist")
    ]
    assert _flags(envelope_rows(_request([_track()], CHROME, "198.51.100.1"), enricher, settings)) == [
        (True, "datacentre")
    ]
    # The project turns the data-centre and referrer checks off.
    off = settings.merged({"bots": {"datacentre": False, "referrer_spam": False}})
    spam = _track(page={"referrer": "https://buttons-for-website.com/"})
    assert _flags(envelope_rows(_request([spam], CHROME, "198.51.100.1"), enricher, off)) == [(False, "")]
    assert set(BOT_REASONS) >= {"crawler", "automation", "referrer_spam", "ip_blocklist", "datacentre"}


def test_a_server_senders_own_client_is_not_checked_but_the_one_it_relays_is() -> None:
    settings = ProjectSettings.from_dict({"bots": {"ip_blocklist": ["192.0.2.0/24"]}})
    events = [
        _track(),  # the library's user agent and the server's address: not the end user's
        _track(userAgent=GOOGLEBOT),
        _track(ip="192.0.2.77", userAgent=CHROME),
    ]
    request = _request(events, "python-requests/2.31.0", "192.0.2.10", "secret")
    rows = envelope_rows(request, Enricher(None), settings)
    assert _flags(rows) == [(False, ""), (True, "crawler"), (True, "ip_blocklist")]


@settings(max_examples=300, deadline=None)
@given(st.from_regex(NETWORK_PATTERN, fullmatch=True))
def test_every_network_the_settings_pattern_admits_is_one(text: str) -> None:
    # The OpenAPI document's pattern is the settings' validation: what it admits must parse.
    settings = ProjectSettings.from_dict({"bots": {"ip_blocklist": [text]}})
    assert settings.bots.ip_blocklist == (str(parse_network(text)),)


# ---- the column ------------------------------------------------------------------------------------


def test_rows_stored_before_migration_5_read_their_reason_from_is_bot(
    clickhouse: Client, project_id: str
) -> None:
    database = f"hw_{project_id}"
    # The table as migration 4 left it, with a person's row and one ua-parser called a bot's.
    clickhouse.command(f"ALTER TABLE {database}.events DROP COLUMN bot_reason")
    clickhouse.command(
        f"ALTER TABLE {database}.schema_migrations DELETE WHERE number = 5 SETTINGS mutations_sync = 2"
    )
    when = datetime(2026, 11, 28, tzinfo=UTC)
    clickhouse.insert(
        f"{database}.events",
        [["person", "track", when, when, False], ["bot", "track", when, when, True]],
        column_names=["message_id", "type", "timestamp", "received_at", "is_bot"],
    )
    assert apply_migrations(clickhouse, database) == [5]
    for statement in m0005_bot_reason.statements(database, None):  # idempotent
        clickhouse.command(statement)
    rows = clickhouse.query(f"SELECT message_id, bot_reason FROM {database}.events ORDER BY message_id")
    assert rows.result_rows == [("bot", "user_agent"), ("person", "")]


async def test_replay_refuses_a_datacentre_file_it_cannot_use(tmp_path: Path) -> None:
    # A replay re-judges events with the consumers' files: a bad one stops it before it starts.
    path = tmp_path / "dc.txt"
    path.write_text("10.0.0.0/8\nten dot zero\n")
    args = ("replay", "--project", "demo", "--dry-run", "--nats-url", "nats://127.0.0.1:1")
    refused = await run_cli(*args, "--datacentre-ranges", str(path))
    assert refused.code == 2, refused.stderr
    assert "line 2" in refused.stderr


def test_the_paths_and_patterns_commands_ask_for_bots_only_when_told() -> None:
    """`--include-bots` becomes the request's `include_bots`, which the API's request types take."""
    asked = {
        PatternsRequest: lambda bots: patterns_body("sessions", None, 20, 0.01, 5, (), None, None, bots),
        PathsRequest: lambda bots: paths_body("event:Viewed", None, 4, "both", (), 50, None, None, bots),
    }
    for request, body_of in asked.items():
        assert "include_bots" not in body_of(False)
        assert convert_body(body_of(True), request).include_bots is True  # type: ignore[attr-defined]
