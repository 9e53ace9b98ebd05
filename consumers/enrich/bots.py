"""The bot filter of a consumer process: headwater.privacy.bots's checks with the lists read once
and the answers cached (per user agent, per client address), and the project's `bots` settings
applied. Which user agent and address are checked is the caller's (rows.py): the end user's, never
a server-side sender's own.

    bots = BotFilter(datacentre=read_datacentre_ranges(path))
    reason = bots.client_reason(user_agent, parser_says_bot, ip, project.bots)   # once per client
    reason = reason or bots.referrer_reason(page.referrer_host, project.bots)   # per event
"""

from __future__ import annotations

import functools
from pathlib import Path

from headwater.core.projects.settings import Bots
from headwater.privacy.bots import (
    BotReason,
    CrawlerPatterns,
    IpAddress,
    NetworkRanges,
    ReferrerSpamList,
    datacentre_ranges,
    default_crawler_patterns,
    default_referrer_spam,
    parse_network,
    user_agent_reason,
)

from .ip import parsed_ip
from .useragent import DEFAULT_UA_CACHE_SIZE

_ADDRESS_CACHE_SIZE = 16_384
# Projects' blocklists in use at once (each compiled once into sorted ranges).
_BLOCKLIST_CACHE_SIZE = 256


def read_datacentre_ranges(path: Path) -> NetworkRanges:
    """The operator's data-centre file (format: privacy.bots.datacentre_ranges); OSError or
    DatacentreFileError (a ValueError naming the line) when it cannot be used."""
    with path.open(encoding="utf-8") as lines:
        return datacentre_ranges(lines)


def read_referrer_spam(path: Path) -> ReferrerSpamList:
    """Hosts of the operator's own referrer-spam file (one a line, `#` comments), added to the list
    headwater ships."""
    return default_referrer_spam() | ReferrerSpamList(path.read_text("utf-8").splitlines())


class BotFilter:
    def __init__(
        self,
        datacentre: NetworkRanges | None = None,
        referrer_spam: ReferrerSpamList | None = None,
        crawlers: CrawlerPatterns | None = None,
        ua_cache_size: int = DEFAULT_UA_CACHE_SIZE,
    ) -> None:
        self.datacentre = datacentre
        self.referrer_spam = referrer_spam if referrer_spam is not None else default_referrer_spam()
        self._crawlers = crawlers
        self._user_agent = functools.lru_cache(maxsize=ua_cache_size)(self._user_agent_reason)
        self._address = parsed_ip  # (shared: the enricher parsed the client's address already)
        self._blocklist = functools.lru_cache(maxsize=_BLOCKLIST_CACHE_SIZE)(_ranges)
        # The blocklist last asked for, by the identity of its tuple: one settings object serves a
        # whole group of messages, and the cache above hashes and compares a 100-network tuple
        # (~1.9 µs a client). One attribute, set at once: threads may share the filter.
        self._last_blocklist: tuple[tuple[str, ...], NetworkRanges] | None = None
        # Per event, unlike the client's checks: a site's referrers repeat, a look-up is ~1 µs.
        self._spam = functools.lru_cache(maxsize=_ADDRESS_CACHE_SIZE)(self.referrer_spam.is_spam)

    @property
    def crawlers(self) -> CrawlerPatterns:
        """The crawler list, compiled on first use (~35 ms, once per process)."""
        if self._crawlers is None:
            self._crawlers = default_crawler_patterns()
        return self._crawlers

    def _user_agent_reason(self, user_agent: str, parser_says_bot: bool) -> BotReason | None:
        return user_agent_reason(user_agent, parser_says_bot, self.crawlers)

    def client_reason(
        self, user_agent: str | None, parser_says_bot: bool, ip: str | None, rules: Bots
    ) -> BotReason | None:
        """Why a client (its user agent, then its full address) is not a person, or None."""
        if user_agent or parser_says_bot:
            reason = self._user_agent(user_agent or "", parser_says_bot)
            if reason is not None:
                return reason
        if ip and (rules.ip_blocklist or (rules.datacentre and self.datacentre)):
            address: IpAddress | None = self._address(ip)
            if address is not None:
                if rules.ip_blocklist and address in self._blocklist_of(rules.ip_blocklist):
                    return "ip_blocklist"
                if rules.datacentre and self.datacentre is not None and address in self.datacentre:
                    return "datacentre"
        return None

    def _blocklist_of(self, networks: tuple[str, ...]) -> NetworkRanges:
        last = self._last_blocklist
        if last is not None and last[0] is networks:
            return last[1]
        ranges = self._blocklist(networks)
        self._last_blocklist = (networks, ranges)
        return ranges

    def referrer_reason(self, referrer_host: str, rules: Bots) -> BotReason | None:
        if rules.referrer_spam and referrer_host and self._spam(referrer_host):
            return "referrer_spam"
        return None


def _ranges(networks: tuple[str, ...]) -> NetworkRanges:
    # The settings hold checked networks in canonical form (core/projects/settings.py).
    return NetworkRanges(parse_network(n) for n in networks)
