"""Allowed HTTP origins: normalised to scheme://host[:port], the form browsers send in `Origin`."""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import APIError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(raw: str) -> str:
    """`https://App.Example.com:443/` → `https://app.example.com`; ValueError when not an origin."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("an origin must be a non-empty string")
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{raw!r} is not a valid origin: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{raw!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"{raw!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{raw!r}: an origin is scheme://host[:port], without path, query or credentials")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def normalise_origins(values: object, field: str = "allowed_origins") -> tuple[str, ...]:
    """Normalise a list of origins; an invalid entry is reported with its index."""
    if not isinstance(values, list):
        raise APIError(400, "invalid_field", "must be a list of origins", field)
    normalised: list[str] = []
    for index, value in enumerate(values):
        try:
            origin = normalise_origin(value)
        except ValueError as exc:
            raise APIError(400, "invalid_origin", str(exc), f"{field}[{index}]") from None
        if origin not in normalised:
            normalised.append(origin)
    return tuple(normalised)
