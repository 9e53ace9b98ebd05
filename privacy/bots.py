"""Bot and spam filtering: whether an event is a person's, and if not, why (docs/privacy.md, "Bot
and spam filtering").

Each check gives a reason, stored in `events.bot_reason` (`is_bot` is true for any):

- `automation`: headless browsers and HTTP tools (HeadlessChrome, Selenium, curl, ...), below;
- `crawler`: a pattern of the `crawler-user-agents` list (PyPI, MIT; 1,500 patterns with example
  user agents). Chosen over `crawlerdetect` and Matomo's `device-detector` port as the one that
  flagged the most of the examples with no real browser flagged, and the fastest (bench/bots.py:
  100% / 0% at ~50-200 µs a new user agent, against 86% / 0% at ~0.2-0.5 ms and 72% / 0% at
  ~6-10 ms);
- `user_agent`: ua-parser calls it a bot and neither list does;
- `ip_blocklist`: the client address is in one of the project's networks;
- `datacentre`: the address is in the operator's data-centre ranges (a file: `datacentre_ranges`);
- `referrer_spam`: the referrer's host, or a parent domain of it, is a known referrer spammer
  (`ReferrerSpamList`).

Pure but for reading the lists shipped inside installed packages (this one's referrer spammers,
crawler-user-agents' JSON), once per process; the operator's files are read by the consumers and
handed here as lines.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

BotReason = Literal["crawler", "automation", "user_agent", "ip_blocklist", "datacentre", "referrer_spam"]
BOT_REASONS: tuple[BotReason, ...] = get_args(BotReason)

# The longest textual network: an IPv6 address with an embedded IPv4 and a /128.
MAX_NETWORK_LENGTH = 50
# Longer user agents are cut before matching (as the parser does: consumers/enrich/useragent.py).
MAX_USER_AGENT_LENGTH = 1024
MAX_HOST_LENGTH = 253

# Headless browsers, browser automation and HTTP libraries: tools, not people. Looked for in the
# lowercased user agent as plain substrings (~5 µs, where one case-insensitive regular expression of
# the same names took ~100 µs); names that are common words only at the start, before their version.
_AUTOMATION_NAMES = (
    "headlesschrome", "headless", "phantomjs", "slimerjs", "selenium", "webdriver", "puppeteer",
    "playwright", "cypress/", "jsdom/", "python-requests", "python-urllib", "python-httpx",
    "aiohttp/", "urllib3/", "go-http-client", "okhttp/", "axios/", "node-fetch", "undici",
    "java-http-client", "apache-httpclient", "commons-httpclient", "scrapy", "httpie/",
    "libwww-perl", "lwp::simple", "guzzlehttp", "postmanruntime", "insomnia/", "(dart:io)",
    "faraday", "restsharp", "reqwest/", "typhoeus", "http.rb/", "gocolly",
)  # fmt: skip
_AUTOMATION_PREFIXES = ("curl/", "wget/", "java/", "ruby", "php/")


def is_automation(user_agent: str) -> bool:
    lowered = user_agent.lower()
    return lowered.startswith(_AUTOMATION_PREFIXES) or any(name in lowered for name in _AUTOMATION_NAMES)


# Patterns joined in groups: one alternation of 1,500 is slower in Python's engine than a scan of
# groups (25 measured best: ~50 µs a crawler, ~200 µs a browser, the worst case, seen once per
# distinct user agent behind the consumer's cache).
_PATTERNS_PER_GROUP = 25


class CrawlerPatterns:
    """A list of user-agent regular expressions (case-sensitive, as the list is written)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.count = len(patterns)
        self._groups = [
            # Joined as they are (the list is written for it): wrapping each in a group made a
            # browser's scan ~2.5x slower.
            re.compile("|".join(patterns[i : i + _PATTERNS_PER_GROUP]))
            for i in range(0, len(patterns), _PATTERNS_PER_GROUP)
        ]

    def matches(self, user_agent: str) -> bool:
        return any(group.search(user_agent) for group in self._groups)


def crawler_list() -> list[dict[str, object]]:
    """The entries of `crawler-user-agents` (pattern, instances, url, ...), from the package's JSON."""
    text = (importlib.resources.files("crawleruseragents") / "crawler-user-agents.json").read_text("utf-8")
    entries: list[dict[str, object]] = json.loads(text)
    return entries


@functools.cache
def default_crawler_patterns() -> CrawlerPatterns:
    return CrawlerPatterns([str(entry["pattern"]) for entry in crawler_list()])


def user_agent_reason(
    user_agent: str | None, parser_says_bot: bool, crawlers: CrawlerPatterns | None = None
) -> BotReason | None:
    """Why the user agent is not a person's (automation first: a tool the crawler list also names
    is reported as the tool it is), or None."""
    if user_agent:
        user_agent = user_agent[:MAX_USER_AGENT_LENGTH]
        if is_automation(user_agent):
            return "automation"
        if (crawlers or default_crawler_patterns()).matches(user_agent):
            return "crawler"
    return "user_agent" if parser_says_bot else None


# ---- networks --------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_V6_OFFSET = 1 << 32  # IPv6 ranges are placed after the whole IPv4 space: one sorted list for both


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?[0-9]))?"
_H = "[0-9a-fA-F]{1,4}"
_V6_ADDRESS = "|".join(
    [
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        *(rf"(?:{_H}:){{1,{5 - n}}}(?::{_H}){{1,{n + 2}}}" for n in range(4)),
        rf"{_H}:(?::{_H}){{1,6}}",
        rf":(?:(?::{_H}){{1,7}}|:)",
    ]
)
_V6 = rf"(?:{_V6_ADDRESS})(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?"
# What a project's blocklist takes (the OpenAPI document says the same): an IPv4 or IPv6 network in
# CIDR notation, or one address, without an embedded IPv4 or a zone in an IPv6 one. Every match is
# one parse_network reads.
NETWORK_PATTERN = rf"^(?:{_V4}|{_V6})$"


def parse_network(text: str) -> Network:
    """A network in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`), or one address (a /32 or
    /128). Host bits are allowed and cleared (`10.1.2.3/8` is `10.0.0.0/8`). ValueError otherwise."""
    if not isinstance(text, str) or not text or len(text) > MAX_NETWORK_LENGTH:
        raise ValueError(f"not a network in CIDR notation: {str(text)[:MAX_NETWORK_LENGTH]!r}")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not a network in CIDR notation: {text!r}") from None


def _span(network: Network) -> tuple[int, int]:
    offset = 0 if network.version == 4 else _V6_OFFSET
    first = int(network.network_address)
    return offset + first, offset + first + network.num_addresses - 1


def address_key(address: IpAddress) -> int:
    """`address` on the line NetworkRanges sorts (IPv4 first, then IPv6)."""
    return int(address) + (0 if address.version == 4 else _V6_OFFSET)


class NetworkRanges:
    """A set of networks as sorted, merged integer ranges: a lookup is one bisect (~1 µs for a
    million ranges)."""

    def __init__(self, networks: Iterable[Network]) -> None:
        merged: list[list[int]] = []
        for first, last in sorted(_span(n) for n in networks):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._firsts = [first for first, _ in merged]
        self._lasts = [last for _, last in merged]

    def __len__(self) -> int:
        return len(self._firsts)

    def __contains__(self, address: IpAddress) -> bool:
        key = address_key(address)
        place = bisect.bisect_right(self._firsts, key) - 1
        return place >= 0 and key <= self._lasts[place]


class DatacentreFileError(ValueError):
    """A line of the operator's data-centre file that is not a network (line numbers from 1)."""


def datacentre_ranges(lines: Iterable[str]) -> NetworkRanges:
    """The networks of a data-centre file: one per line, either a CIDR (`192.0.2.0/24`) or a CSV
    row whose first field is a CIDR or whose first two are the first and last address of a range
    (`192.0.2.0,192.0.2.255[,anything]`). Blank lines, `#` comments and a header row whose first
    field is not an address are skipped. DatacentreFileError names the first bad line."""
    networks: list[Network] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip().strip('"') for f in line.split(",")]
        try:
            if len(fields) >= 2 and "/" not in fields[0] and _is_address(fields[1]):
                first, last = ipaddress.ip_address(fields[0]), ipaddress.ip_address(fields[1])
                if first.version != last.version or int(last) < int(first):
                    raise ValueError("a range's last address must follow its first, of one IP version")
                networks += ipaddress.summarize_address_range(first, last)
            else:
                networks.append(parse_network(fields[0]))
        except ValueError as exc:
            if number == 1 and _is_header(fields[0]):
                continue
            raise DatacentreFileError(f"line {number}: {exc}") from None
    return NetworkRanges(networks)


def _is_header(field: str) -> bool:
    """A CSV header's first field (`network`, `ip_start`): a name, not an attempt at an address."""
    return any(c.isalpha() for c in field) and not any(c in field for c in ".:/")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ---- referrer spam ---------------------------------------------------------------------------

REFERRER_SPAM_FILE = "referrer_spammers.txt"


class ReferrerSpamList:
    """Hosts of referrer spammers; a referrer is spam when its host or any parent domain of it is
    listed (`www.semalt.com` and `x.y.semalt.com` as `semalt.com`)."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = frozenset(h for h in (_host_of_line(line) for line in hosts) if h)

    def __len__(self) -> int:
        return len(self._hosts)

    def __or__(self, other: ReferrerSpamList) -> ReferrerSpamList:
        return ReferrerSpamList(self._hosts | other._hosts)

    def is_spam(self, host: str) -> bool:
        if not host or len(host) > MAX_HOST_LENGTH:
            return False
        host = host.lower().rstrip(".")
        if host.startswith("www."):
            host = host[4:]
        while True:
            if host in self._hosts:
                return True
            dot = host.find(".")
            if dot < 0:
                return False
            host = host[dot + 1 :]


def _host_of_line(line: str) -> str:
    host = line.split("#", 1)[0].strip().lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    # Internationalised names are kept as written and as their ASCII (punycode) form: a referrer
    # host may come in either.
    return host if len(host) <= MAX_HOST_LENGTH else ""


@functools.cache
def default_referrer_spam() -> ReferrerSpamList:
    """The list shipped with headwater (privacy/referrer_spammers.txt; its header says where it
    comes from)."""
    text = (importlib.resources.files(__package__ or "headwater.privacy") / REFERRER_SPAM_FILE).read_text(
        "utf-8"
    )
    hosts = text.splitlines()
    return ReferrerSpamList([*hosts, *(_ascii(h) for h in hosts)])


def _ascii(host: str) -> str:
    try:
        return host.strip().encode("idna").decode("ascii")
    except UnicodeError:
        return ""
