"""Cookieless visitor ids, as Plausible makes them: a keyed hash of a daily salt, the project, the
client's address, its user agent and the site's host (docs/privacy.md#cookieless-visitors).

Pure code: the salts themselves (random, one per UTC day, kept in JetStream KV for 48 hours) and
the visits carried across midnight live in the edge (edge/cookieless.py); this module says what
an id is, which day a moment belongs to, when the last stretch before midnight begins, and the
network an address is reduced to before anything is stored.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args
from urllib.parse import urlsplit

CookielessMode = Literal["off", "missing", "always"]
COOKIELESS_MODES: tuple[str, ...] = get_args(CookielessMode)

SALT_BYTES = 32
# A salt is used on its day and, for visits carried across midnight, on the next: after that no
# one may be able to recompute an id, so nothing keeps it longer than two days.
SALT_MAX_AGE = timedelta(hours=48)
ID_PREFIX = "cl_"  # tells a cookieless id from one a client made, in the data
_DIGEST_BYTES = 16  # 128 bits: no two visitors of a day share an id in practice
_PERSON = b"headwater-cl-v1"  # BLAKE2b's personalisation: these hashes are of no other kind
# Inputs are bounded before hashing: a user agent or host longer than this is cut (the edge's
# header limits already bound them; this keeps the function total on its own).
MAX_INPUT_CHARS = 2048
# Truncation for what is stored: a /24 of IPv4 (256 addresses), a /48 of IPv6 (a site's prefix).
IPV4_NETWORK_BITS = 24
IPV6_NETWORK_BITS = 48


def utc_day(moment: datetime) -> date:
    """The UTC day `moment` falls on (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


def next_midnight(moment: datetime) -> datetime:
    """The UTC midnight that ends the day of `moment`."""
    day = utc_day(moment) + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def before_midnight(moment: datetime, window_seconds: float) -> bool:
    """True in the last `window_seconds` of `moment`'s UTC day: a visitor seen then may still be
    visiting after midnight, within the project's inactivity timeout."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (next_midnight(moment) - moment).total_seconds() <= window_seconds


def canonical_address(address: str | None) -> str:
    """The address in one textual form (IPv4-mapped IPv6 unwrapped, brackets and spaces ignored),
    so one client hashes alike however its address was written; anything else as given."""
    if not address:
        return ""
    parsed = _parse(address)
    return str(parsed) if parsed is not None else address[:MAX_INPUT_CHARS]


def network_of(address: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of `address`, host bits zeroed (`203.0.113.0`,
    `2001:db8:85a3::`): what is stored instead of the address under cookieless mode. None for
    no address or one that does not parse (nothing is better than something unreadable)."""
    if not address:
        return None
    parsed = _parse(address)
    if parsed is None:
        return None
    if isinstance(parsed, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(parsed) >> (32 - IPV4_NETWORK_BITS) << (32 - IPV4_NETWORK_BITS)))
    return str(ipaddress.IPv6Address(int(parsed) >> (128 - IPV6_NETWORK_BITS) << (128 - IPV6_NETWORK_BITS)))


def site_host(origin: str | None, page_url: object = None) -> str:
    """The site an event comes from: the Origin's host, else the page URL's; lowercase, without
    port; "" when neither names one."""
    for candidate in (origin, page_url):
        if isinstance(candidate, str) and candidate:
            try:
                host = urlsplit(candidate[:MAX_INPUT_CHARS].strip()).hostname
            except ValueError:
                host = None
            if host:
                return host
    return ""


def visitor_id(salt: bytes, project: str, address: str | None, user_agent: str | None, host: str) -> str:
    """The visitor's id for the day of `salt`: BLAKE2b keyed by the salt over the project, the
    address (canonical_address), the user agent and the host, each length-prefixed so no two
    different inputs run together. Without the salt the id cannot be recomputed or reversed."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a salt is {SALT_BYTES} bytes, not {len(salt)}")
    digest = hashlib.blake2b(key=salt, digest_size=_DIGEST_BYTES, person=_PERSON)
    for part in (project, canonical_address(address), (user_agent or "")[:MAX_INPUT_CHARS], host):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return ID_PREFIX + digest.hexdigest()


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = address.strip()[:100]
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed
