"""The HTTP listeners of a stack: each role's app on a socket of its own, bound before serving
(a taken port fails start-up at once, with the flag that changes it), under uvicorn for plain
HTTP/1.1 or hypercorn for HTTPS with HTTP/2 (ops/tlsserver.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Generator
from typing import Protocol

import uvicorn

from headwater.edge.asgi import ASGIApp

from .httplimits import HTTPLimits, protocol_for
from .loop import StackFailure
from .tlsserver import TLSServer, server_context

log = logging.getLogger(__name__)


class _HTTPServer(Protocol):
    """What the stack needs of a server: uvicorn's, and the TLS one shaped like it."""

    started: bool
    should_exit: bool

    async def serve(self, sockets: list[socket.socket]) -> None: ...


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the stack handles signals for all roles."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class PortInUse(StackFailure):
    """A role's port is taken: said with the flag that changes it, not as a traceback."""

    def __init__(self, role: str, host: str, port: int) -> None:
        flags = (
            "--operator-port"
            if role == "operator"
            else f"--{role}-port under `headwater up` or --port under `headwater serve {role}`"
        )
        super().__init__(
            f"the {role} cannot listen on {host}:{port}: the port is already in use; choose another "
            f"with {flags} (0 picks a free one), or stop what holds it"
        )


def bind(host: str, port: int, reuse_port: bool = False, role: str = "server") -> socket.socket:
    """Bind before serving so a taken port fails start-up at once, and port 0 gives a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(role, host, port) from None
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


class Listeners:
    def __init__(self, limits: HTTPLimits) -> None:
        self._limits = limits
        self._servers: list[tuple[str, asyncio.Task[None]]] = []
        self._http_servers: list[_HTTPServer] = []
        self._sockets: list[socket.socket] = []

    @property
    def serving(self) -> bool:
        return bool(self._http_servers)

    async def serve(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        role: str,
        reuse_port: bool = False,
        tls: tuple[str, str] | None = None,
    ) -> str:
        """Serve `app` on a socket of its own: plain HTTP/1.1 under uvicorn, or, given a certificate
        and key, HTTPS with HTTP/2 and HTTP/1.1 under hypercorn (ops/tlsserver.py)."""
        context = None if tls is None else server_context(*tls)  # a bad file fails before binding
        sock = bind(host, port, reuse_port, role)
        self._sockets.append(sock)
        limits = self._limits
        server: _HTTPServer = _uvicorn(app, limits) if context is None else TLSServer(app, context, limits)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{role}-server")
        while not server.started:
            if task.done():
                task.result()  # re-raise the start-up failure
                raise RuntimeError(f"the {role} server stopped during start-up")
            await asyncio.sleep(0.01)
        self._servers.append((role, task))
        self._http_servers.append(server)
        url = url_of(sock, "http" if context is None else "https")
        log.info("%s listening on %s", role, url)
        return url

    def stopped(self) -> str | None:
        """The role of the first server that stopped, if one did."""
        return next((role for role, task in self._servers if task.done()), None)

    async def stop(self) -> None:
        """Stop accepting and finish the requests in flight; a server that fails is logged."""
        for server in self._http_servers:
            server.should_exit = True
        for _, task in self._servers:
            try:
                await task
            except Exception:
                log.warning("stopping HTTP server failed", exc_info=True)
        self._servers.clear()
        self._http_servers.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def _uvicorn(app: ASGIApp, limits: HTTPLimits) -> _Server:
    config = uvicorn.Config(
        app,
        http=protocol_for(limits),
        timeout_keep_alive=limits.keep_alive_seconds,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
        # X-Forwarded-For is believed only from configured proxies (edge/clientip.py), never by
        # uvicorn, which would otherwise trust it from 127.0.0.1.
        proxy_headers=False,
    )
    return _Server(config)
