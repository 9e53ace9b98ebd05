"""An ASGI request's headers as a dict, for the edge's bare ASGI routes (ingest and the SDK file)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


def request_headers(scope: MutableMapping[str, Any]) -> dict[str, str]:
    """Names lowercased, both decoded as latin-1 (what HTTP allows on the wire); a repeated header
    keeps its last value."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
