"""The destination's config (`--config c.json`) and the connection specification `spec` prints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from .messages import ConfigError, decode_config_json

MAX_CONFIG_BYTES = 64 * 1024
MAX_TOKEN_LENGTH = 4096
MAX_URL_LENGTH = 2048
PROJECT_ID = re.compile(r"[a-z0-9_]{1,48}")  # as the control plane's project ids


class DestinationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    control_url: str
    token: str
    project: str
    timeout_seconds: float = 60.0


CONNECTION_SPECIFICATION: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "headwater destination",
    "type": "object",
    "required": ["control_url", "token", "project"],
    "additionalProperties": True,
    "properties": {
        "control_url": {
            "title": "Control API URL",
            "description": "Where the headwater control plane answers, e.g. http://headwater:8701.",
            "type": "string",
            "pattern": "^https?://",
            "maxLength": MAX_URL_LENGTH,
            "order": 0,
        },
        "token": {
            "title": "Admin token",
            "description": "A bearer token of the control API (HEADWATER_ADMIN_TOKEN).",
            "type": "string",
            "airbyte_secret": True,
            "maxLength": MAX_TOKEN_LENGTH,
            "order": 1,
        },
        "project": {
            "title": "Project",
            "description": "The headwater project whose database receives the imported tables.",
            "type": "string",
            "pattern": "^[a-z0-9_]{1,48}$",
            "order": 2,
        },
        "timeout_seconds": {
            "title": "Request timeout (seconds)",
            "type": "number",
            "minimum": 1,
            "maximum": 600,
            "default": 60,
            "order": 3,
        },
    },
}


def parse_config(raw: bytes) -> DestinationConfig:
    """A config from its JSON; every fault is a ConfigError naming the field."""
    config = decode_config_json(raw, DestinationConfig, "config", MAX_CONFIG_BYTES)
    if not config.control_url.startswith(("http://", "https://")) or len(config.control_url) > MAX_URL_LENGTH:
        raise ConfigError(f"control_url must be an http:// or https:// URL, not {config.control_url!r}")
    if not config.token or len(config.token) > MAX_TOKEN_LENGTH:
        raise ConfigError(f"token must be 1 to {MAX_TOKEN_LENGTH} characters")
    if not PROJECT_ID.fullmatch(config.project):
        raise ConfigError(f"project must match [a-z0-9_]{{1,48}}, not {config.project!r}")
    if not 1 <= config.timeout_seconds <= 600:
        raise ConfigError("timeout_seconds must be between 1 and 600")
    return config


def read_config(path: Path) -> DestinationConfig:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the config {path}: {exc.strerror or exc}") from None
    return parse_config(raw)
