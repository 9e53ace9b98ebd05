"""The keyed hash of the `hash` action: HMAC-SHA256 under a per-project secret key.

The same value hashes the same under one project's key, so hashed ids and e-mail addresses still
join and count; without the key, which never leaves the project's config (docs/privacy.md), no one
can test a guess. A plain hash would not do: e-mail addresses and user ids are few enough to be
hashed all and looked up.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

HASH_KEY_BYTES = 32
# Hex digits kept of the digest: 128 bits, far past any collision among a project's values, and
# half the width of the full digest in every id column.
HASH_HEX_DIGITS = 32


def new_hash_key() -> bytes:
    """A fresh random key (from the operating system's CSPRNG)."""
    return secrets.token_bytes(HASH_KEY_BYTES)


def keyed_hash(key: bytes, text: str) -> str:
    """The hash of `text` under `key`, as lowercase hex."""
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:HASH_HEX_DIGITS]
