"""API keys: generation, hashing and the record kept in a project's config.

Public keys identify a project from a browser and are stored as they are (they are public).
Secret keys are 256-bit random tokens; only their SHA-256 digest is stored. A fast hash is the
right tool for high-entropy tokens (a slow password hash protects guessable secrets, and these are
not guessable); it also lets an edge index keys by digest and resolve one in O(1).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from headwater.core.wire.envelope import KeyKind as KeyKind  # an envelope names the kind of key that sent it

_PREFIX: dict[KeyKind, str] = {"public": "hwpk_", "secret": "hwsk_"}


def generate_key(kind: KeyKind) -> str:
    return _PREFIX[kind] + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key of a project as stored in KV.

    `value` is the key itself for a public key and None for a secret key; `digest` is always the
    SHA-256 of the key; `hint` is a short prefix shown to operators to tell keys apart.
    """

    kind: KeyKind
    digest: str
    hint: str
    created_at: str
    value: str | None = None
    expires_at: str | None = None

    @classmethod
    def issue(cls, kind: KeyKind, created_at: str) -> tuple[ApiKey, str]:
        """A new key record and the key in clear (shown to the caller once)."""
        key = generate_key(kind)
        record = cls(
            kind=kind,
            digest=key_digest(key),
            hint=key[:9],
            created_at=created_at,
            value=key if kind == "public" else None,
        )
        return record, key

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "kind": self.kind,
            "digest": self.digest,
            "hint": self.hint,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }
        if self.value is not None:
            data["value"] = self.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ApiKey:
        kind = data["kind"]
        if kind not in _PREFIX:
            raise ValueError(f"unknown key kind {kind!r}")
        value = data.get("value")
        expires_at = data.get("expires_at")
        return cls(
            kind=kind,
            digest=str(data["digest"]),
            hint=str(data["hint"]),
            created_at=str(data["created_at"]),
            value=str(value) if value is not None else None,
            expires_at=str(expires_at) if expires_at is not None else None,
        )
