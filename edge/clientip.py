"""The client's IP address: the TCP peer, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIPResolver:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in trusted_proxies
        )
        # Peers are a few load balancers: their verdict is cached (bounded, for a hostile range).
        self._trusted_peer = functools.lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return self._ip_trusted(ip)

    def _ip_trusted(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip in network for network in self._trusted)

    def trusts(self, peer: str | None) -> bool:
        """Whether `peer` is a trusted proxy (whose X-Forwarded-* headers are believed)."""
        return peer is not None and self._trusted_peer(peer)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """Walk X-Forwarded-For from the right while the hop is trusted; the first untrusted hop is
        the client (a client can prepend anything, so entries left of it are never believed)."""
        if peer is None or not forwarded_for or not self._trusted_peer(peer):
            return peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if not hop:
                continue
            try:
                ip = ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain: believe only what we saw
            if not self._ip_trusted(ip):
                return hop
        return peer
