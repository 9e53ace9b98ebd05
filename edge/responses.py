"""Answers of the edge's bare-ASGI routes (asgi.py, snowplow_collector.py): a body with the request
id, an IngestError as JSON, and the CORS preflight, written once for every protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from headwater.core.service.logcontext import request_id

from .errors import IngestError

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
OriginCheck = Callable[[str], bool]
JSON = b"application/json"


async def send_body(
    send: Send, status: int, body: bytes, content_type: bytes, headers: dict[str, str], head: bool = False
) -> None:
    """`body` with its type and length, the request id, and `headers`; only the headers for HEAD."""
    response_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    current = request_id.get()
    if current:
        response_headers.append((b"x-request-id", current.encode()))
    response_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str], head: bool = False
) -> None:
    await send_body(send, status, orjson.dumps(body), JSON, headers, head)


async def send_error(send: Send, error: IngestError, headers: dict[str, str] | None = None) -> int:
    """The error as JSON with its own headers, or `headers` instead; the status answered."""
    await send_json(send, error.status, error.to_dict(), error.headers if headers is None else headers)
    return error.status


async def send_preflight(
    send: Send,
    origin: str | None,
    origin_known: OriginCheck,
    *,
    methods: bytes,
    allow_headers: bytes,
    max_age: bytes,
    credentials: bool = False,
) -> int:
    """CORS preflights carry no key: allow an origin that some enabled project allows (204), else
    403 `origin_not_allowed` without CORS headers. The status answered."""
    if not origin or not origin_known(origin):
        error = IngestError(403, "origin_not_allowed", f"origin {origin!r} may not send events here")
        return await send_error(send, error)
    headers = [(b"access-control-allow-origin", origin.encode("latin-1"))]
    if credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    headers += [
        (b"access-control-allow-methods", methods),
        (b"access-control-allow-headers", allow_headers),
        (b"access-control-max-age", max_age),
        (b"vary", b"Origin"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
    return 204
