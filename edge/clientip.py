"""The client's IP address: the TCP peer, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIPResolver:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in trusted_proxies
        )

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """Walk X-Forwarded-For from the right while the hop is trusted; the first untrusted hop is
        the client (a client can prepend anything, so entries left of it are never believed)."""
        if peer is None or not forwarded_for or not self._is_trusted(peer):
            return peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain: believe only what we saw
            if not self._is_trusted(hop):
                return hop
        return peer
