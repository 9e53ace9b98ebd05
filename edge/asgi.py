"""The edge's HTTP front: the ingest endpoints served straight on ASGI, everything else by Quart.

The ingest path is the hot one. Served through Quart it costs a request context, URL binding and
two tasks per request (about a third of the CPU, measured); as a bare ASGI route with the same
logic it was ~2.5x faster (docs/benchmarks.md). Health, readiness and metrics stay in Quart.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from headwater.core.service.logcontext import request_id

from .cdnsettings import SETTINGS_PREFIX, PublicBase, SettingsService, settings_key
from .clientip import ClientIPResolver
from .errors import IngestError
from .headers import request_headers
from .ids import next_request_id
from .ingest import IngestRequest, IngestService
from .jitsu import JITSU_PATHS
from .metrics import EdgeMetrics
from .responses import send_error, send_json, send_preflight
from .sdkfile import SDK_PATH, load_sdk
from .settings import EdgeSettings
from .snowplow_collector import SNOWPLOW_PATHS, SnowplowCollector
from .validation import EVENT_TYPES

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: Quart types its scope and events more narrowly than this module does.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
OriginCheck = Callable[[str], bool]

SEGMENT_LONG_PATHS = {f"/v1/{kind}": kind for kind in (*EVENT_TYPES, "batch")} | {"/v1/import": "batch"}
# analytics.js 2.0 (@segment/analytics-next) posts to `{apiHost}/<first letter of the type>` and, when
# batching, to `{apiHost}/b`: the same endpoints under other names (docs/ingest-api.md).
SEGMENT_SHORT_PATHS = {f"/v1/{kind[0]}": kind for kind in (*EVENT_TYPES, "batch")}
# Path → the kind of request: one dict lookup per request, whichever protocol it speaks.
INGEST_PATHS = SEGMENT_LONG_PATHS | SEGMENT_SHORT_PATHS | JITSU_PATHS
# What an SDK may send besides CORS-safelisted headers: Segment's Basic auth, JSON, gzip, our
# X-Write-Key, analytics-next's X-Retry-Count on a retry, and what @jitsu/js may add
# (X-Enable-Debug, X-IP-Policy; the edge ignores both).
_PREFLIGHT_HEADERS = (
    "authorization, content-type, content-encoding, x-write-key, x-retry-count, x-enable-debug, x-ip-policy"
)


class EdgeASGI:
    def __init__(
        self,
        settings: EdgeSettings,
        service: IngestService,
        origin_known: OriginCheck,
        metrics: EdgeMetrics,
        quart_app: ASGIApp,
        settings_service: SettingsService,
        body_timeout_seconds: float | None = None,
        snowplow: SnowplowCollector | None = None,
    ) -> None:
        self._settings = settings
        # The whole body must arrive within this after the request reached the app (the HTTP server
        # may bound it too; hypercorn, serving HTTPS, does not).
        self._body_timeout = body_timeout_seconds
        self._service = service
        self._origin_known = origin_known
        self._metrics = metrics
        self._quart_app = quart_app  # everything but the ingest paths, the SDK and Segment's settings
        self._settings_service = settings_service
        self._client_ip = ClientIPResolver(settings.trusted_proxies)
        self._sdk = load_sdk()
        self._snowplow = snowplow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = INGEST_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if kind is None:
            # Off the Segment paths: they pay nothing for the Snowplow ones.
            route = SNOWPLOW_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
            if route is not None and self._snowplow is not None:
                await self._serve_snowplow(route, scope, receive, send)
                return
            # Off the ingest path, and cheaper here than through Quart.
            if scope["type"] == "http" and scope["path"] == SDK_PATH:
                status = await self._sdk.serve(scope, send)
                self._metrics.requests.labels("sdk", str(status)).inc()
                return
            if scope["type"] == "http" and scope["path"].startswith(SETTINGS_PREFIX):
                key = settings_key(scope["path"])
                if key is not None:
                    status = await self._serve_settings(key, scope, send)
                    self._metrics.requests.labels("settings", str(status)).inc()
                    return
            await self._quart_app(scope, receive, send)
            return
        method = scope["method"]
        headers = request_headers(scope)
        request_id.set(next_request_id())
        if method == "POST":
            status = await self._ingest(kind, scope, headers, receive, send)
        elif method == "OPTIONS":
            status = await self._preflight(headers, send)
        else:
            error = IngestError(405, "method_not_allowed", "use POST", headers={"Allow": "POST, OPTIONS"})
            status = await send_error(send, error)
        self._metrics.requests.labels(kind, str(status)).inc()

    async def _serve_snowplow(self, route: str, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._snowplow is not None
        headers = request_headers(scope)
        request_id.set(next_request_id())
        peer = scope.get("client")
        client_ip = self._client_ip.resolve(peer[0] if peer else None, headers.get("x-forwarded-for"))
        status = await self._snowplow.handle(route, scope, headers, client_ip, self._read_body, receive, send)
        self._metrics.requests.labels(route, str(status)).inc()

    async def _ingest(
        self, kind: str, scope: Scope, headers: dict[str, str], receive: Receive, send: Send
    ) -> int:
        try:
            body = await self._read_body(headers, receive)
            peer = scope.get("client")
            request = IngestRequest(
                kind=kind,
                body=body,
                request_id=request_id.get() or next_request_id(),
                authorization=headers.get("authorization"),
                write_key_header=headers.get("x-write-key"),
                origin=headers.get("origin"),
                user_agent=headers.get("user-agent"),
                client_ip=self._client_ip.resolve(peer[0] if peer else None, headers.get("x-forwarded-for")),
            )
            result = await self._service.ingest(request)
        except IngestError as error:
            self._service.refusals.refused(error)
            return await send_error(send, error)
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            return await send_error(
                send, IngestError(500, "internal_error", "internal error; see the server log")
            )
        await send_json(send, result.status, result.body, result.headers)
        return result.status

    async def _serve_settings(self, key: str, scope: Scope, send: Send) -> int:
        """analytics.js 2.0's CDN settings for a public key (cdnsettings.py)."""
        headers = request_headers(scope)
        request_id.set(next_request_id())
        method = scope["method"]
        try:
            if method not in ("GET", "HEAD"):
                raise IngestError(405, "method_not_allowed", "use GET", headers={"Allow": "GET, HEAD"})
            peer = scope.get("client")
            peer_ip = peer[0] if peer else None
            proxied = self._client_ip.trusts(peer_ip)
            base = PublicBase.of_request(
                scope.get("scheme", "http"),
                headers.get("host"),
                scope.get("server"),
                headers.get("x-forwarded-proto") if proxied else None,
                headers.get("x-forwarded-host") if proxied else None,
            )
            body, response_headers = self._settings_service.answer(
                key,
                headers.get("origin"),
                self._client_ip.resolve(peer_ip, headers.get("x-forwarded-for")),
                base,
            )
        except IngestError as error:
            return await send_error(send, error)
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            return await send_error(
                send, IngestError(500, "internal_error", "internal error; see the server log")
            )
        await send_json(send, 200, body, response_headers, head=method == "HEAD")
        return 200

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        limit = self._settings.max_body_bytes
        too_large = IngestError(
            413,
            "payload_too_large",
            f"the body may be at most {limit} bytes",
            headers={"Connection": "close"},
        )
        declared = headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise too_large  # refused before reading a byte of it
        try:
            async with asyncio.timeout(self._body_timeout):
                body = await _receive_body(receive, limit, too_large)
        except TimeoutError:
            raise IngestError(
                408,
                "body_timeout",
                f"the request body must arrive within {self._body_timeout:g} s",
                headers={"Connection": "close"},
            ) from None
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("identity", ""):
            return body
        if encoding != "gzip":
            raise IngestError(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: use gzip or none")
        return _gunzip(body, limit, too_large)

    async def _preflight(self, headers: dict[str, str], send: Send) -> int:
        return await send_preflight(
            send,
            headers.get("origin"),
            self._origin_known,
            methods=b"POST, OPTIONS",
            allow_headers=_PREFLIGHT_HEADERS.encode(),
            max_age=str(self._settings.cors_max_age_seconds).encode(),
        )


async def _receive_body(receive: Receive, limit: int, too_large: IngestError) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise IngestError(400, "client_disconnected", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _gunzip(body: bytes, limit: int, too_large: IngestError) -> bytes:
    """Decompress with a ceiling, so a small gzip bomb cannot expand into gigabytes."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise IngestError(400, "invalid_gzip", f"the body is not valid gzip: {exc}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise too_large
    if not decompressor.eof:
        raise IngestError(400, "invalid_gzip", "the gzip body is truncated")
    return data
