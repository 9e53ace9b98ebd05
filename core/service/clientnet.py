"""The key of a client address for per-client limits (rate limits, authentication failures)."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=65536)
def client_network(address: str) -> str:
    """The key of a client address for per-client limits: an IPv4 address as is, an IPv6 address
    as its /64 (an IPv4-mapped one as its IPv4 address). Not an address: kept as given."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
