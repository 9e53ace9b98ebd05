"""An ASGI shim for HTTP/2 requests under hypercorn (ops/tlsserver.py): answering before the whole
request body was read must not break the connection.

The edge answers 413 to an announced oversized body without reading it (and Quart may answer before
its reader task got the body). hypercorn (0.18) closes a stream once its response is complete, and
request DATA arriving after that raises a KeyError that kills the whole connection, every stream on
it (pgjones/hypercorn#329, unfixed in a release); a body nobody reads also stalls the connection's
reader. So before the last response message goes out, the rest of the request body is read and
discarded, within a bound of bytes and time; past it the response goes out anyway and the client may
see the connection reset, as an HTTP/1.1 client sees the edge close it after such a 413.

(Connection-specific headers such as the 413's `Connection: close`, forbidden in HTTP/2, are
already dropped by h2's outbound header normalisation.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DRAIN_MAX_BYTES = 8 << 20
DRAIN_SECONDS = 5.0


class H2Exchange:
    """Wraps one HTTP/2 request's `receive` and `send`."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._request_done = asyncio.Event()

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._request_done.set()
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await self._drain()
        await self._send(message)

    async def _drain(self) -> None:
        """Read the request body to its end. The app may read concurrently (Quart does, from a task
        of its own), so this also stops when the app's read reaches the end."""
        drained = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                while not self._request_done.is_set() and drained <= DRAIN_MAX_BYTES:
                    read = asyncio.ensure_future(self.receive())
                    done = asyncio.ensure_future(self._request_done.wait())
                    try:
                        await asyncio.wait({read, done}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        done.cancel()
                        if not read.done():
                            read.cancel()  # the app's read got the end first: nothing more comes
                    if read.done() and not read.cancelled():
                        drained += len(read.result().get("body", b""))
