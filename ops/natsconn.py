"""NATS connections for long-running roles: reconnect forever, and make every state change visible."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

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


async def connect_nats(
    url: str, name: str, events: ConnectionEvents | None = None, auth: NatsAuth | None = None
) -> Client:
    """Connect, retrying the first connection until it succeeds; later outages of any length are
    survived (nats-py's default gives up after 60 attempts, about two minutes)."""
    events = events or ConnectionEvents()
    # nats-py calls disconnected_cb on a deliberate close() too; that is no outage, so it is neither
    # logged as one nor passed to the listeners (the edge's circuit breaker would open on it).
    connection: list[Client] = []
    auth = auth or NatsAuth()
    refused: list[Exception] = []
    refusal = asyncio.Event()

    async def on_error(error: Exception) -> None:
        if _is_refused_login(error) and not connection:
            refused.append(error)  # said once, below, as the configuration error it is
            refusal.set()
            return
        log.warning("nats (%s): %s", name, error)

    async def on_disconnected() -> None:
        if connection and connection[0].is_closed:
            return
        log.warning("nats (%s): disconnected", name)
        events.disconnected()

    async def on_reconnected() -> None:
        log.info("nats (%s): reconnected", name)
        events.reconnected()

    async def on_closed() -> None:
        log.debug("nats (%s): connection closed", name)

    def login_refused() -> NatsLoginRefused | None:
        if not refused:
            return None
        who = f"user {auth.user!r}" if auth.user else "a client without credentials"
        return NatsLoginRefused(
            f"NATS at {redact_nats_url(url)} refused the login of {who} ({refused[-1]}): check "
            "--nats-user and --nats-password-file (or --nats-creds), HEADWATER_NATS_* in the environment"
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((OSError, TimeoutError, nats.errors.NoServersError)),
        wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            connecting = asyncio.ensure_future(
                nats.connect(
                    servers=[u.strip() for u in url.split(",") if u.strip()],
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=5,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    closed_cb=on_closed,
                    **auth.connect_options(),
                )
            )
            # nats-py retries a refused login as long as an outage; a refused login is no outage:
            # waiting would not change the answer, so it ends the attempt at once.
            refused_wait = asyncio.ensure_future(refusal.wait())
            try:
                await asyncio.wait({connecting, refused_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                refused_wait.cancel()
                if not connecting.done():
                    connecting.cancel()
                    with contextlib.suppress(BaseException):
                        await connecting
            error = login_refused()
            if error is not None and not (
                connecting.done() and not connecting.cancelled() and connecting.exception() is None
            ):
                raise error
            client = connecting.result()
            connection.append(client)
            return client
    raise AssertionError("unreachable: the retry loop either returns or raises")


def _is_refused_login(error: Exception) -> bool:
    """nats-py reports the server's `-ERR 'Authorization Violation'` at connect as a plain Error."""
    return (
        isinstance(error, nats.errors.AuthorizationError) or "authorization violation" in str(error).lower()
    )


class NatsLoginRefused(StackFailure):
    """NATS answered, and refused the credentials."""


COMMAND_CONNECT_TIMEOUT_SECONDS = 15.0


async def connect_for_command(url: str, name: str, auth: NatsAuth | None = None) -> Client:
    """A connection for a one-shot command: retried like a role's, but given up after
    COMMAND_CONNECT_TIMEOUT_SECONDS with a clear error instead of waiting forever."""
    try:
        return await asyncio.wait_for(connect_nats(url, name, auth=auth), COMMAND_CONNECT_TIMEOUT_SECONDS)
    except NatsLoginRefused as exc:
        raise click.ClickException(str(exc)) from None
    except TimeoutError:
        raise click.ClickException(
            f"cannot connect to NATS at {redact_nats_url(url)} within {COMMAND_CONNECT_TIMEOUT_SECONDS:g} s"
        ) from None
