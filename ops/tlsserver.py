"""HTTPS listeners: hypercorn's HTTP/1.1 and HTTP/2 (offered by ALPN) over TLS, for an ASGI app.

uvicorn stays the server of plain HTTP, the fastest measured (docs/benchmarks.md), but it speaks no
HTTP/2; hypercorn does, and runs the edge's ASGI app and the Quart control app unchanged. Its
connection handler (`TCPServer`) and lifespan runner are used under an accept loop of ours (see
`TLSServer`), so setup.cfg keeps hypercorn to the minor versions this was checked with.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.utils import wrap_app

from headwater.core.service.tasks import cancel_and_wait

from .h2compat import H2Exchange
from .httplimits import DEFAULT_HTTP_LIMITS, HTTPLimits

log = logging.getLogger(__name__)

ALPN_PROTOCOLS = ["h2", "http/1.1"]
GRACEFUL_SECONDS = 10  # as the uvicorn listeners: requests in flight get this long to finish
HANDSHAKE_SECONDS = 10  # a client that opens a connection and never completes the handshake
SHUTDOWN_SECONDS = 2  # how long a closing connection waits for the client's TLS close_notify
BACKLOG = 2048  # asyncio listens again on the pre-bound socket: keep listeners.bind's backlog

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class TLSError(ValueError):
    """A certificate or key that cannot serve TLS; the message names the file and the problem."""


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """A server TLS context for the PEM certificate chain and unencrypted PEM key, offering HTTP/2
    and HTTP/1.1. Each file is checked on its own first, so an error says which one is wrong."""
    certificates = _certificates(cert_path)
    _private_key(key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # HTTP/2 over TLS needs TLS 1.2 or newer, no compression and ephemeral AEAD ciphers (RFC 9113 9.2).
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSError(f"the TLS key {key_path} does not belong to the certificate {cert_path}") from None
        raise TLSError(f"cannot use the TLS certificate {cert_path} with the key {key_path}: {exc}") from None
    except OSError as exc:
        raise TLSError(f"cannot read the TLS certificate or key: {exc}") from None
    expires = certificates[0].not_valid_after_utc
    if expires <= datetime.datetime.now(datetime.UTC):
        log.warning("the TLS certificate %s expired on %s: clients will refuse it", cert_path, expires)
    return context


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None


def _certificates(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path, "certificate"))
    except ValueError:
        raise TLSError(f"the TLS certificate {path} holds no PEM certificate") from None


def _private_key(path: str) -> None:
    try:
        serialization.load_pem_private_key(_read(path, "key"), password=None)
    except TypeError:
        raise TLSError(
            f"the TLS key {path} is encrypted: give an unencrypted key and protect it with file permissions"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSError(f"the TLS key {path} holds no PEM private key") from None


class TLSServer:
    """One app on pre-bound sockets over TLS. Shaped like the uvicorn server the runtime drives:
    `serve(sockets)` runs until `should_exit` is set; `started` turns true once it listens.

    The accept loop is ours, around hypercorn's connection handler, rather than `hypercorn.serve`:
    that one leaves asyncio's TLS shutdown at its 30 s default, so each idle keep-alive connection
    of a client that does not read while idle (httpx, requests pools) lingers 30 s after it is
    closed, logs a TimeoutError traceback, and holds up a stop just as long
    (pgjones/hypercorn#202). Here the wait for the client's close_notify is short and expected.
    """

    def __init__(
        self, app: ASGIApp, context: ssl.SSLContext, limits: HTTPLimits = DEFAULT_HTTP_LIMITS
    ) -> None:
        self._limits = limits
        self._app = wrap_app(self._wrapped, Config.wsgi_max_body_size, "asgi")
        self._inner = app
        self._context = context
        self._exit = asyncio.Event()
        self.started = False

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()

    async def serve(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        config = _config(self._limits)
        state: dict[str, Any] = {}
        lifespan = Lifespan(self._app, config, loop, state)
        lifespan_task = loop.create_task(lifespan.handle_lifespan())
        await lifespan.wait_for_startup()
        if lifespan_task.done() and lifespan_task.exception() is not None:
            lifespan_task.result()  # re-raise the app's start-up failure
        context = WorkerContext(None)
        connections: set[asyncio.Task[None]] = set()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            task.add_done_callback(connections.discard)
            try:
                await TCPServer(self._app, loop, config, context, state, reader, writer)
            except TimeoutError:
                log.debug("TLS close_notify not answered within %s s; connection dropped", SHUTDOWN_SECONDS)

        servers = [
            await asyncio.start_server(
                connected,
                # asyncio closes the sockets it serves: a duplicate each, so the runtime still owns
                # and closes the bound ones, as with uvicorn.
                sock=sock.dup(),
                ssl=self._context,
                backlog=BACKLOG,
                ssl_handshake_timeout=HANDSHAKE_SECONDS,
                ssl_shutdown_timeout=SHUTDOWN_SECONDS,
            )
            for sock in sockets
        ]
        self.started = True
        try:
            await self._exit.wait()
        finally:
            await self._stop(servers, context, connections)
            await lifespan.wait_for_shutdown()
            await cancel_and_wait(lifespan_task)

    async def _stop(
        self, servers: list[asyncio.Server], context: WorkerContext, connections: set[asyncio.Task[None]]
    ) -> None:
        """Stop accepting, let requests in flight finish (idle connections close at once), then
        cancel what is left."""
        for server in servers:
            server.close()
        await context.terminated.set()
        if connections:
            _, pending = await asyncio.wait(set(connections), timeout=GRACEFUL_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=SHUTDOWN_SECONDS + 1)

    async def _wrapped(self, scope: Any, receive: Any, send: Any) -> None:
        # Loose types, as edge.asgi.ASGIApp: hypercorn types scopes and events more narrowly.
        if scope["type"] == "http" and scope.get("http_version") == "2":
            exchange = H2Exchange(receive, send)
            await self._inner(scope, exchange.receive, exchange.send)
        else:
            await self._inner(scope, receive, send)


def _config(limits: HTTPLimits) -> Config:
    config = Config()
    # hypercorn's own limits for what ops/httplimits.py adds to uvicorn: h11 refuses a larger head
    # with 431 (its size also bounds the count of fields), and a connection without a request in
    # flight, a slowly sent head included, is closed after the keep-alive time. (Its read_timeout
    # is per read and would also cut off a client waiting for a long query: not used.)
    config.h11_max_incomplete_size = limits.max_header_bytes
    config.h2_max_header_list_size = limits.max_header_bytes
    config.keep_alive_timeout = limits.keep_alive_seconds
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our handlers and format
    # No proxy middleware: X-Forwarded-For is believed only from configured proxies
    # (edge/clientip.py), never by the server.
    return config
