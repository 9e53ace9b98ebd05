"""Limits on what an HTTP client may make the edge and control servers hold, before any app code runs.

uvicorn's httptools protocol, the plain-HTTP server of both roles, has none of its own: no cap on
header size or count (a 128 MB header was read, concatenated piece by piece, and answered 200 after
23 s while every other request on the loop stalled), no deadline for a request's head (a connection
that sends nothing, or one header line now and then, is held forever), and none for its body (a
`Content-Length` the client never fulfils holds the request as long as the client likes). Its own
errors are plain text. `LimitedHttpToolsProtocol` adds those limits and answers in the API's JSON.

HTTPS runs under hypercorn, which has its own knobs for the same limits (ops/tlsserver.py sets them).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)

LINGER_SECONDS = 2.0  # after a refusal, how long the client's remaining bytes are read and dropped


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Per-connection limits of the edge and control HTTP servers (docs/configuration.md)."""

    # Request line plus header fields: the bytes of a request's head. As h11's and hypercorn's default.
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    # From connection (or the first byte after a keep-alive pause) to the end of the head.
    header_timeout_seconds: float = 10.0
    # From the end of the head to the end of the body, whatever its length (max_body_bytes bounds it).
    body_timeout_seconds: float = 30.0
    # An idle connection between requests is closed after this long (uvicorn's default).
    keep_alive_seconds: int = 5

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1024 or self.max_headers < 8:
            raise ValueError("header limits below 1 KiB or 8 fields would refuse ordinary requests")
        if min(self.header_timeout_seconds, self.body_timeout_seconds, self.keep_alive_seconds) <= 0:
            raise ValueError("HTTP timeouts must be positive")


DEFAULT_HTTP_LIMITS = HTTPLimits()


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header, head-time and body-time limits. `limits` is set on
    a subclass per server (`protocol_for`), since uvicorn instantiates the class itself."""

    limits = DEFAULT_HTTP_LIMITS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0  # bytes received since the request began (coarse, while in the head)
        self._field_bytes = 0  # exact size of the parsed request line and fields
        self._fields = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a complete head is closed, not held.
        self._arm(self.limits.header_timeout_seconds, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: what the client still sends is read and dropped until the close
        self._unset_keepalive_if_required()
        if self._in_head:
            if self._deadline is None:  # the first byte after a keep-alive pause
                self._arm(self.limits.header_timeout_seconds, self._head_timed_out)
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn: the request goes on as a plain one
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, _Refused):
                refusal = _Refused(400, "malformed_request", f"the request is not valid HTTP/1.1: {exc}")
            self._refuse(refusal)
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            # The head is still incomplete past the limit: refuse it before buffering more.
            self._refuse(_too_large(self.limits.max_header_bytes))

    # -- parser callbacks ------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.limits.max_headers:
            limit = self.limits.max_headers
            raise _Refused(431, "too_many_headers", f"a request may have at most {limit} header fields")
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        self._arm(self.limits.body_timeout_seconds, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # Whatever arrives from now on belongs to the next request's head.
        self._disarm()
        self._in_head = True
        self._head_bytes = self._field_bytes = self._fields = 0
        super().on_message_complete()

    def _count(self, size: int) -> None:
        self._field_bytes += size
        if self._field_bytes > self.limits.max_header_bytes:
            raise _too_large(self.limits.max_header_bytes)

    # -- deadlines -------------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self._head_bytes == 0:
            self.transport.close()  # nothing asked: nothing to answer
            return
        seconds = self.limits.header_timeout_seconds
        self._refuse(_Refused(408, "header_timeout", f"the request head must arrive within {seconds:g} s"))

    def _body_timed_out(self) -> None:
        """The body did not arrive in time. The app, if it waits for it, sees the client gone."""
        self._deadline = None
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() returns http.disconnect; its send() is a no-op
            cycle.message_event.set()
        if answered:
            self.transport.close()
            return
        seconds = self.limits.body_timeout_seconds
        self._refuse(_Refused(408, "body_timeout", f"the request body must arrive within {seconds:g} s"))

    # -- answers ---------------------------------------------------------------------------------

    def _refuse(self, refusal: _Refused) -> None:
        """Answer in the API's JSON error shape and close: the connection's state is not trusted.

        A client may still be sending (the rest of a huge head): closing with unread data would
        reset the connection and could destroy the answer before the client reads it. So the answer
        is followed by our end of the stream, and what still arrives is dropped for a moment before
        the close (what nginx calls a lingering close)."""
        self._disarm()
        if self.transport.is_closing() or self._lingering:
            return
        log.info("refused a request from %s: %s (%s)", _peer(self.client), refusal.code, refusal.message)
        body = orjson.dumps({"status": refusal.status, "code": refusal.code, "message": refusal.message})
        head = [STATUS_LINE[refusal.status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        if self.cycle is not None:
            self.cycle.disconnected = True  # an app still running answers nobody
        self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        self._refuse(_Refused(400, "malformed_request", msg))


def _too_large(limit: int) -> _Refused:
    message = f"the request line and header fields may be at most {limit} bytes"
    return _Refused(431, "headers_too_large", message)


def _peer(client: tuple[str, int] | None) -> str:
    return "unknown" if client is None else client[0]


def protocol_for(limits: HTTPLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class a uvicorn server of these limits instantiates for each connection."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
