"""GET /sdk/v1/headwater.js: the browser SDK, built from sdk/js/ into edge/static/ and shipped in
the package. Served from memory with a year of immutable caching (the path carries the major
version), an ETag for revalidation, and gzip for clients that accept it."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .headers import request_headers

SDK_PATH = "/sdk/v1/headwater.js"
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str

    @classmethod
    def load(cls, name: str, content_type: str) -> StaticFile:
        body = resources.files("headwater.edge").joinpath("static", name).read_bytes()
        return cls(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
            content_type=content_type,
        )

    async def serve(self, scope: MutableMapping[str, Any], send: _Send) -> int:
        """Answer a request for this file; returns the status."""
        headers = request_headers(scope)
        common = [
            (b"cache-control", b"public, max-age=31536000, immutable"),
            (b"etag", self.etag.encode()),
            (b"vary", b"Accept-Encoding"),
        ]
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            return await _respond(send, 405, [(b"allow", b"GET, HEAD")], b"")
        if _matches(headers.get("if-none-match"), self.etag):
            return await _respond(send, 304, common, b"")
        body = self.body
        response = [*common, (b"content-type", self.content_type.encode())]
        if _accepts_gzip(headers.get("accept-encoding", "")):
            body = self.gzipped
            response.append((b"content-encoding", b"gzip"))
        response.append((b"content-length", str(len(body)).encode()))
        return await _respond(send, 200, response, b"" if method == "HEAD" else body)


def load_sdk() -> StaticFile:
    return StaticFile.load("headwater.js", "application/javascript; charset=utf-8")


async def _respond(send: _Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match: `*` or a list of (possibly weak, `W/"…"`) tags."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _accepts_gzip(accept_encoding: str) -> bool:
    """gzip (or `*`) listed without q=0."""
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            name, _, value = params.partition("=")
            return not (name.strip() == "q" and _is_zero(value))
    return False


def _is_zero(q: str) -> bool:
    try:
        return float(q) == 0
    except ValueError:
        return False
