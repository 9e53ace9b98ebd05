"""A project's configuration: the JSON document stored per project in the HW_PROJECTS KV bucket."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from headwater.core.service.errors import APIError
from headwater.privacy.hashing import new_hash_key

from .keys import ApiKey, KeyKind
from .origins import OriginPolicy
from .settings import ProjectSettings

SCHEMA_VERSION = 1
PROJECT_ID_PATTERN = re.compile(r"^[a-z0-9_]{1,48}$")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now_iso() -> str:
    return iso(utc_now())


def validate_project_id(value: object, field: str = "id") -> str:
    """Project ids are subject tokens and part of a database name: lowercase [a-z0-9_]{1,48}."""
    if not isinstance(value, str) or not PROJECT_ID_PATTERN.fullmatch(value):
        raise APIError(400, "invalid_project_id", f"{field} must match [a-z0-9_]{{1,48}}", field)
    return value


DATABASE_PREFIX = "hw_"
"""Every project's ClickHouse database is named this prefix and the project id."""


def database_name(project_id: str) -> str:
    return DATABASE_PREFIX + validate_project_id(project_id)


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    allowed_origins: tuple[str, ...]
    keys: tuple[ApiKey, ...]
    created_at: str
    enabled: bool = True
    allow_any_origin: bool = False
    settings: ProjectSettings = field(default_factory=ProjectSettings)
    updated_at: str | None = None
    schema_version: int = SCHEMA_VERSION
    # The key of the anonymisation rules' `hash` action (privacy/hashing.py): in the KV entry only,
    # never in `public_view`, an audit record or a log line. None for a project created before it
    # existed, until its next change (`with_anonymisation_key`).
    anonymisation_key: bytes | None = field(default=None, repr=False)
    origin_policy: OriginPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_policy", OriginPolicy.compile(self.allowed_origins))

    @property
    def database(self) -> str:
        return database_name(self.id)

    def public_keys(self) -> list[str]:
        return [k.value for k in self.keys if k.kind == "public" and k.value is not None]

    def with_anonymisation_key(self) -> Project:
        """This project with a hash key for its anonymisation rules (a new one if it has none)."""
        if self.anonymisation_key is not None:
            return self
        return replace(self, anonymisation_key=new_hash_key())

    def rotated(self, kind: KeyKind, grace_seconds: float, now: datetime) -> tuple[Project, str]:
        """A new key of `kind`; the current ones of that kind expire after the grace period
        (keys already past their expiry are dropped)."""
        expiry = iso(now + timedelta(seconds=grace_seconds))
        kept: list[ApiKey] = []
        for key in self.keys:
            if key.expires_at is not None and datetime.fromisoformat(key.expires_at) <= now:
                continue
            if key.kind == kind and (key.expires_at is None or key.expires_at > expiry):
                key = replace(key, expires_at=expiry)
            kept.append(key)
        record, clear = ApiKey.issue(kind, iso(now))
        return replace(self, keys=(*kept, record), updated_at=iso(now)), clear

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema_version": self.schema_version,
                "id": self.id,
                "name": self.name,
                "enabled": self.enabled,
                "allowed_origins": list(self.allowed_origins),
                "allow_any_origin": self.allow_any_origin,
                "keys": [k.to_dict() for k in self.keys],
                "settings": self.settings.to_dict(),
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                **(
                    {"anonymisation_key": base64.b64encode(self.anonymisation_key).decode()}
                    if self.anonymisation_key is not None
                    else {}
                ),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Project:
        data = orjson.loads(raw)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"project config schema version {version!r} is not supported")
        return cls(
            id=data["id"],
            name=data["name"],
            enabled=bool(data["enabled"]),
            allowed_origins=tuple(data["allowed_origins"]),
            allow_any_origin=bool(data.get("allow_any_origin", False)),
            keys=tuple(ApiKey.from_dict(k) for k in data["keys"]),
            settings=ProjectSettings.from_dict(data.get("settings")),
            created_at=data["created_at"],
            updated_at=data.get("updated_at"),
            schema_version=version,
            anonymisation_key=(
                base64.b64decode(data["anonymisation_key"]) if data.get("anonymisation_key") else None
            ),
        )

    def public_view(self) -> dict[str, Any]:
        """What the API shows: public keys in full, secret keys only by hint, never a digest."""
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "allowed_origins": list(self.allowed_origins),
            "allow_any_origin": self.allow_any_origin,
            "settings": self.settings.to_dict(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "database": self.database,
            "public_keys": [
                {"key": k.value, "created_at": k.created_at, "expires_at": k.expires_at}
                for k in self.keys
                if k.kind == "public"
            ],
            "secret_keys": [
                {"hint": k.hint, "created_at": k.created_at, "expires_at": k.expires_at}
                for k in self.keys
                if k.kind == "secret"
            ],
        }
