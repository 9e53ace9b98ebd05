"""GET /v1/projects/{writeKey}/settings: the source settings analytics.js 2.0 (@segment/analytics-next)
loads from its CDN before it sends anything. Served by the edge, so that a site needs only
`AnalyticsBrowser.load({writeKey: <public key>, cdnURL: <edge URL>})`: the settings point the
library's Segment.io destination back at this edge, load no remote plugins or destinations, and
switch off its usage metrics (which would otherwise go to api.segment.io). docs/ingest-api.md.

Only a public key from one of its project's allowed origins gets an answer, under the same rules
as an event; a key that belongs to no project counts as a wrong guess, as on the ingest paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from headwater.core.projects.registry import StaleConfig
from headwater.core.service.authfailures import AuthFailures

from .errors import IngestError
from .ingest import KeyResolver, authorize, cors_headers, slow_down_guessers

SETTINGS_PREFIX = "/v1/projects/"
_SETTINGS_SUFFIX = "/settings"
# Keys are URL-safe tokens; anything else in that place is no key of ours.
_KEY = re.compile(r"[A-Za-z0-9_\-]{1,200}")
# A Host header worth echoing: a name or address, and a port.
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
# Browsers may reuse the answer for a minute; shared caches must not (it names the key's project
# and is built from the request's Host).
_CACHE_CONTROL = "private, max-age=60"


def settings_key(path: str) -> str | None:
    """The write key of a settings path (`/v1/projects/<key>/settings`), else None."""
    if not (path.startswith(SETTINGS_PREFIX) and path.endswith(_SETTINGS_SUFFIX)):
        return None
    key = path[len(SETTINGS_PREFIX) : -len(_SETTINGS_SUFFIX)]
    return key if _KEY.fullmatch(key) else ""


@dataclass(frozen=True, slots=True)
class PublicBase:
    """Where browsers reach this edge: `protocol` (http or https) and `host` (host[:port])."""

    protocol: str
    host: str

    @classmethod
    def of_request(
        cls,
        scheme: str,
        host_header: str | None,
        server: tuple[str, int] | None,
        forwarded_proto: str | None = None,
        forwarded_host: str | None = None,
    ) -> PublicBase:
        """From the request the browser made for the settings (so the answer names the URL it
        already reached): its scheme and Host, or the X-Forwarded-Proto and X-Forwarded-Host of a
        trusted proxy (the caller passes them only for one), e.g. a balancer terminating TLS."""
        protocol = forwarded_proto.split(",")[0].strip().lower() if forwarded_proto else scheme
        if protocol not in ("http", "https"):
            protocol = "https" if scheme == "https" else "http"
        for candidate in (forwarded_host, host_header):
            host = candidate.split(",")[0].strip() if candidate else ""
            if host and _HOST.fullmatch(host):
                return cls(protocol, host)
        if server is None:
            raise IngestError(400, "missing_host", "the request names no Host", "Host")
        address, port = server
        return cls(protocol, f"[{address}]:{port}" if ":" in address else f"{address}:{port}")


def segment_settings(write_key: str, base: PublicBase) -> dict[str, Any]:
    """The settings document analytics-next reads (its `CDNSettings`)."""
    api_host = f"{base.host}/v1"
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": base.protocol,
                "addBundledMetadata": True,
                "unbundledIntegrations": [],
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {},
        "middlewareSettings": {},
        "enabledMiddleware": {},
        # No usage metrics: sampleRate 0 starts no timer and queues nothing. The host is ours all
        # the same, so a page that turns them on does not report to Segment.
        "metrics": {"sampleRate": 0, "host": api_host},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


class SettingsService:
    """Answers settings requests; shares the ingest paths' key rules and wrong-key counting."""

    def __init__(self, keys: KeyResolver, auth_failures: AuthFailures, retry_after_seconds: int) -> None:
        self._keys = keys
        self._auth_failures = auth_failures
        self._retry_after = retry_after_seconds

    def answer(
        self, write_key: str, origin: str | None, client_ip: str | None, base: PublicBase
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The settings and the response headers, or IngestError."""
        slow_down_guessers(self._auth_failures, client_ip)
        try:
            match = authorize(self._keys, write_key, origin) if write_key else None
        except StaleConfig as exc:
            raise IngestError(
                503,
                "config_stale",
                f"settings cannot be served right now ({exc}); retry later",
                headers={"Retry-After": str(self._retry_after)},
            ) from None
        except IngestError as error:
            if error.code == "unknown_key":
                self._auth_failures.failed(client_ip, error.code)
                raise _not_found() from None
            raise
        if match is None:
            self._auth_failures.failed(client_ip, "unknown_key")
            raise _not_found()
        if match.key.kind != "public" or origin is None:
            # A secret key without an Origin (authorize refused one with an Origin, and a public key
            # without one): settings only ever go to browsers.
            raise IngestError(
                403,
                "secret_key_from_browser",
                "settings are served for public keys only; a secret key must never reach a browser",
            )
        return segment_settings(write_key, base), {**cors_headers(origin), "Cache-Control": _CACHE_CONTROL}


def _not_found() -> IngestError:
    return IngestError(404, "unknown_key", "no project has this write key (or it has expired)")
