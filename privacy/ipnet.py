"""An IP address cut to its network, as the `ip: truncate` setting stores client addresses: the /24
of an IPv4 address, the /48 of an IPv6 one (consumers/enrich/ip.py documents why those widths)."""

from __future__ import annotations

import ipaddress

IPV4_KEEP_BITS = 24
IPV6_KEEP_BITS = 48
_MAX_ADDRESS_LENGTH = 100


def truncated_ip(text: str) -> str | None:
    """The network address of `text` when it is an IP address (host bits zeroed); None otherwise."""
    if not text or len(text) > _MAX_ADDRESS_LENGTH or not (":" in text or "." in text):
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = IPV4_KEEP_BITS if address.version == 4 else IPV6_KEEP_BITS
    network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    return str(network.network_address)
