"""NATS connections for long-running roles: reconnect forever, and make every state change visible."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import click
import nats
from nats.aio.client import Client
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential, wait_random

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

    async def on_error(error: Exception) -> None:
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

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((OSError, TimeoutError, nats.errors.NoServersError)),
        wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            client = await nats.connect(
                servers=[u.strip() for u in url.split(",") if u.strip()],
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
                **(auth or NatsAuth()).connect_options(),
            )
            connection.append(client)
            return client
    raise AssertionError("unreachable: the retry loop either returns or raises")


COMMAND_CONNECT_TIMEOUT_SECONDS = 15.0


async def connect_for_command(url: str, name: str, auth: NatsAuth | None = None) -> Client:
    """A connection for a one-shot command: retried like a role's, but given up after
    COMMAND_CONNECT_TIMEOUT_SECONDS with a clear error instead of waiting forever."""
    try:
        return await asyncio.wait_for(connect_nats(url, name, auth=auth), COMMAND_CONNECT_TIMEOUT_SECONDS)
    except TimeoutError:
        raise click.ClickException(
            f"cannot connect to NATS at {redact_nats_url(url)} within {COMMAND_CONNECT_TIMEOUT_SECONDS:g} s"
        ) from None
