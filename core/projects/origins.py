"""Allowed HTTP origins: normalised to scheme://host[:port], the form browsers send in `Origin`.

An entry is an exact origin (`https://app.example.com`), a wildcard over the subdomains of a domain
(`https://*.example.com`: any depth of subdomain, not the domain itself, same scheme and port), or
`*` (any origin), which a project must opt into explicitly (`allow_any_origin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from headwater.core.service.errors import APIError

_DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_ORIGIN = "*"
_WILDCARD = "*."


def _origin_parts(raw: str) -> tuple[str, str, str]:
    """(scheme, host, ":port" or "") of an origin; ValueError when it is not one."""
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
    suffix = "" if port is None or port == _DEFAULT_PORTS[parts.scheme] else f":{port}"
    return parts.scheme, host, suffix


def normalise_origin(raw: str) -> str:
    """`https://App.Example.com:443/` → `https://app.example.com`; ValueError when not an origin."""
    scheme, host, port = _origin_parts(raw)
    if "*" in host:
        raise ValueError(f"{raw!r}: a wildcard is not an origin")
    return f"{scheme}://{host}{port}"


def normalise_allowed_origin(raw: str) -> str:
    """An entry of a project's allowed origins: an origin, `scheme://*.domain[:port]`, or `*`."""
    if isinstance(raw, str) and raw.strip() == ANY_ORIGIN:
        return ANY_ORIGIN
    scheme, host, port = _origin_parts(raw)
    if "*" not in host:
        return f"{scheme}://{host}{port}"
    domain = host.removeprefix(_WILDCARD)
    if not host.startswith(_WILDCARD) or "*" in domain:
        raise ValueError(f"{raw!r}: a wildcard must be the whole first label, as in https://*.example.com")
    if domain.count(".") < 1:
        raise ValueError(f"{raw!r}: a wildcard needs a domain of at least two labels (*.example.com)")
    return f"{scheme}://{host}{port}"


def normalise_origins(values: object, allow_any: bool, field: str = "allowed_origins") -> tuple[str, ...]:
    """Normalise a list of allowed origins; an invalid entry is reported with its index."""
    if not isinstance(values, list):
        raise APIError(400, "invalid_field", f"{field} must be a list of origins", field)
    normalised: list[str] = []
    for index, value in enumerate(values):
        entry = f"{field}[{index}]"
        try:
            origin = normalise_allowed_origin(value)
        except ValueError as exc:
            raise APIError(400, "invalid_origin", f"{entry}: {exc}", entry) from None
        if origin == ANY_ORIGIN and not allow_any:
            raise APIError(
                400,
                "invalid_origin",
                f"{entry}: '*' lets every website send events with the public key; "
                "set allow_any_origin: true to confirm",
                entry,
            )
        if origin not in normalised:
            normalised.append(origin)
    return tuple(normalised)


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The allowed origins of one project, compiled for the edge's per-request check."""

    exact: frozenset[str]
    wildcards: tuple[tuple[str, str, str], ...]  # (scheme, ".example.com", ":port" or "")
    any: bool

    @classmethod
    def compile(cls, allowed: tuple[str, ...]) -> OriginPolicy:
        exact = frozenset(o for o in allowed if "*" not in o)
        wildcards = []
        for entry in allowed:
            if entry.startswith(("http://*.", "https://*.")):
                scheme, host, port = _origin_parts(entry.replace("*.", "wildcard.", 1))
                wildcards.append((scheme, host.removeprefix("wildcard"), port))
        return cls(exact, tuple(wildcards), ANY_ORIGIN in allowed)

    def allows(self, origin: str | None) -> bool:
        if not origin:
            return False
        if origin in self.exact:  # browsers send the normalised form: the common case is one lookup
            return True
        try:
            scheme, host, port = _origin_parts(origin)
        except ValueError:
            return False
        if self.any:
            return True
        if f"{scheme}://{host}{port}" in self.exact:
            return True
        return any(
            scheme == w_scheme and port == w_port and host.endswith(w_domain)
            for w_scheme, w_domain, w_port in self.wildcards
        )
