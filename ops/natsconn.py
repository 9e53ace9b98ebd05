"""NATS connections for long-running roles: reconnect forever, and make every state change visible."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import click
import nats
from nats.aio.client import Client
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential, wait_random

from .loop import StackFailure
from .natsauth import NatsAuth, redact_nats_url

log = logging.getLogger(__name__)


class ConnectionListener(Protocol):
    """Told of connection changes; must return at once (schedule work, do not await it)."""

    def on_disconnected(self) -> None: ...

    def on_reconnected(self) -> None: ...


class ConnectionEvents:
    """Listeners that components register after the connection exists (e.g. the project registry)."""

    def __init__(self) -> None:
        self._listeners: list[ConnectionListener] = []
        self.disconnects = 0
        self.reconnects = 0

    def subscribe(self, listener: ConnectionListener) -> None:
        self._listeners.append(listener)

    def disconnected(self) -> None:
        self.disconnects += 1
        for listener in self._listeners:
            listener.on_disconnected()

    def reconnected(self) -> None:
        self.reconnects += 1
        for listener in self._listeners:
            listener.on_reconnected()


class _Callbacks:
    """nats-py's callbacks for a role's connection: log, tell `events`, and notice a refused login."""

    def __init__(self, url: str, name: str, events: ConnectionEvents, auth: NatsAuth) -> None:
        self.url, self.name, self.events, self.auth = url, name, events, auth
        self.client: Client | None = None
        self.refused: list[Exception] = []
        self.refusal = asyncio.Event()

    async def on_error(self, error: Exception) -> None:
        if _is_refused_login(error) and not self.client:
            self.refused.append(error)  # said once, as the configuration error it is
            self.refusal.set()
            return
        log.warning("nats (%s): %s", self.name, error)

    async def on_disconnected(self) -> None:
        # nats-py calls disconnected_cb on a deliberate close() too; that is no outage, so it is
        # neither logged as one nor passed to the listeners (the edge's circuit breaker would open).
        if self.client is not None and self.client.is_closed:
            return
        log.warning("nats (%s): disconnected", self.name)
        self.events.disconnected()

    async def on_reconnected(self) -> None:
        log.info("nats (%s): reconnected", self.name)
        self.events.reconnected()

    async def on_closed(self) -> None:
        log.debug("nats (%s): connection closed", self.name)

    def options(self) -> dict[str, Any]:
        return {
            "servers": [u.strip() for u in self.url.split(",") if u.strip()],
            "name": self.name,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "connect_timeout": 5,
            "error_cb": self.on_error,
            "disconnected_cb": self.on_disconnected,
            "reconnected_cb": self.on_reconnected,
            "closed_cb": self.on_closed,
            **self.auth.connect_options(),
        }

    def login_refused(self) -> NatsLoginRefused | None:
        if not self.refused:
            return None
        who = f"user {self.auth.user!r}" if self.auth.user else "a client without credentials"
        return NatsLoginRefused(
            f"NATS at {redact_nats_url(self.url)} refused the login of {who} ({self.refused[-1]}): "
            "check --nats-user and --nats-password-file (or --nats-creds), HEADWATER_NATS_* in the "
            "environment"
        )


async def connect_nats(
    url: str, name: str, events: ConnectionEvents | None = None, auth: NatsAuth | None = None
) -> Client:
    """Connect, retrying the first connection until it succeeds; later outages of any length are
    survived (nats-py's default gives up after 60 attempts, about two minutes)."""
    callbacks = _Callbacks(url, name, events or ConnectionEvents(), auth or NatsAuth())
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((OSError, TimeoutError, nats.errors.NoServersError)),
        wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            connecting = asyncio.ensure_future(nats.connect(**callbacks.options()))
            # nats-py retries a refused login as long as an outage; a refused login is no outage:
            # waiting would not change the answer, so it ends the attempt at once.
            refused_wait = asyncio.ensure_future(callbacks.refusal.wait())
            try:
                await asyncio.wait({connecting, refused_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                refused_wait.cancel()
                if not connecting.done():
                    connecting.cancel()
                    with contextlib.suppress(BaseException):
                        await connecting
            error = callbacks.login_refused()
            if error is not None and not (
                connecting.done() and not connecting.cancelled() and connecting.exception() is None
            ):
                raise error
            callbacks.client = connecting.result()
            return callbacks.client
    raise AssertionError("unreachable: the retry loop either returns or raises")


def connect_nats_in_background(
    url: str, name: str, events: ConnectionEvents, auth: NatsAuth | None = None
) -> tuple[Client, asyncio.Task[None]]:
    """A client at once, and the task that connects it (retrying until NATS answers): for an edge
    that starts serving from its config cache and spool while NATS is unreachable. The client may
    be handed to components before the task is done; they see it as disconnected."""
    client = Client()
    callbacks = _Callbacks(url, name, events, auth or NatsAuth())
    callbacks.client = client
    task = asyncio.create_task(client.connect(**callbacks.options()), name=f"nats-connect-{name}")
    return client, task


def _is_refused_login(error: Exception) -> bool:
    """nats-py reports the server's `-ERR 'Authorization Violation'` at connect as a plain Error."""
    return (
        isinstance(error, nats.errors.AuthorizationError) or "authorization violation" in str(error).lower()
    )


class NatsLoginRefused(StackFailure):
    """NATS answered, and refused the credentials."""


COMMAND_CONNECT_TIMEOUT_SECONDS = 15.0


async def connect_for_command(
    url: str, name: str, auth: NatsAuth | None = None, events: ConnectionEvents | None = None
) -> Client:
    """A connection for a one-shot command: retried like a role's, but given up after
    COMMAND_CONNECT_TIMEOUT_SECONDS with a clear error instead of waiting forever. `events`: told
    of later disconnections and reconnections (a long command's live views)."""
    try:
        return await asyncio.wait_for(
            connect_nats(url, name, events=events, auth=auth), COMMAND_CONNECT_TIMEOUT_SECONDS
        )
    except NatsLoginRefused as exc:
        raise click.ClickException(str(exc)) from None
    except TimeoutError:
        raise click.ClickException(
            f"cannot connect to NATS at {redact_nats_url(url)} within {COMMAND_CONNECT_TIMEOUT_SECONDS:g} s"
        ) from None
