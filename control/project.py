"""A project's configuration: the JSON document stored per project in the HW_PROJECTS KV bucket."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from .errors import APIError
from .keys import ApiKey

SCHEMA_VERSION = 1
PROJECT_ID_PATTERN = re.compile(r"^[a-z0-9_]{1,48}$")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_project_id(value: object) -> str:
    """Project ids are subject tokens and part of a database name: lowercase [a-z0-9_]{1,48}."""
    if not isinstance(value, str) or not PROJECT_ID_PATTERN.fullmatch(value):
        raise APIError(400, "invalid_project_id", "id must match [a-z0-9_]{1,48}", "id")
    return value


def database_name(project_id: str) -> str:
    return f"hw_{validate_project_id(project_id)}"


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    allowed_origins: tuple[str, ...]
    keys: tuple[ApiKey, ...]
    created_at: str
    enabled: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def database(self) -> str:
        return database_name(self.id)

    def public_keys(self) -> list[str]:
        return [k.value for k in self.keys if k.kind == "public" and k.value is not None]

    def with_keys(self, keys: tuple[ApiKey, ...]) -> Project:
        return replace(self, keys=keys)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema_version": self.schema_version,
                "id": self.id,
                "name": self.name,
                "enabled": self.enabled,
                "allowed_origins": list(self.allowed_origins),
                "keys": [k.to_dict() for k in self.keys],
                "settings": self.settings,
                "created_at": self.created_at,
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
            keys=tuple(ApiKey.from_dict(k) for k in data["keys"]),
            settings=dict(data.get("settings") or {}),
            created_at=data["created_at"],
            schema_version=version,
        )

    def public_view(self) -> dict[str, Any]:
        """What the API shows: public keys in full, secret keys only by hint, never a digest."""
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "allowed_origins": list(self.allowed_origins),
            "settings": self.settings,
            "created_at": self.created_at,
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
