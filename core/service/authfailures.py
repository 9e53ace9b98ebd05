"""Repeated authentication failures from one client: slowed down and logged, on the edge (write keys)
and on the control API (admin tokens).

Each client network (an IPv4 address, an IPv6 /64: one subscriber's allocation, where rotating
addresses is free) has a bucket of failures that refills at a steady rate. While it is empty, the
client's requests are refused with 429 and Retry-After *before* any key is looked at, so a guesser
learns nothing at more than the refill rate. Clients sharing an address (a NAT) share the bucket.
One log line per client network and interval says how many failures there were; never the key.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .clientnet import client_network
from .errors import APIError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthFailureLimits:
    burst: int = 20  # failures a client may have in a row before it is slowed down
    per_second: float = 1.0  # then, how many failures a second it may go on with
    log_interval_seconds: float = 60.0
    max_clients: int = 100_000  # tracked at once; the least recently failing one is forgotten first


@dataclass(slots=True)
class _Client:
    tokens: float
    updated: float
    unlogged: int = 0
    logged_at: float | None = None


class TooManyAuthFailures(APIError):
    """429 for a client whose failures used up its bucket; says when to try again."""

    def __init__(self, wait: float) -> None:
        seconds = max(math.ceil(wait), 1)
        super().__init__(
            429,
            "too_many_auth_failures",
            f"too many failed authentications from this address; retry in {seconds} s",
        )
        self.headers = {"Retry-After": str(seconds)}


class AuthFailures:
    def __init__(
        self,
        what: str,
        limits: AuthFailureLimits = AuthFailureLimits(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what  # "write key", "admin token": what the log line says failed
        self._limits = limits
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def retry_after(self, address: str | None) -> float:
        """0 when the client may try to authenticate; else the seconds until it may."""
        if address is None:
            return 0.0
        client = self._clients.get(client_network(address))
        if client is None:
            return 0.0
        self._refill(client, self._clock())
        return 0.0 if client.tokens >= 1 else (1 - client.tokens) / self._limits.per_second

    def check(self, address: str | None) -> None:
        """Raise TooManyAuthFailures when the client may not try to authenticate now."""
        wait = self.retry_after(address)
        if wait > 0:
            raise TooManyAuthFailures(wait)

    def failed(self, address: str | None, reason: str) -> None:
        """Count a failed authentication of `address` (`reason`: the error code, never the key)."""
        if address is None:
            return
        now = self._clock()
        key = client_network(address)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client(float(self._limits.burst), now)
            while len(self._clients) > self._limits.max_clients:
                self._clients.popitem(last=False)
        else:
            self._refill(client, now)
            self._clients.move_to_end(key)
        client.tokens = max(client.tokens - 1, 0.0)
        client.unlogged += 1
        if client.logged_at is None or now - client.logged_at >= self._limits.log_interval_seconds:
            slowed = " (now slowed down)" if client.tokens < 1 else ""
            log.warning(
                "%d failed %s authentication(s) from %s, latest: %s%s",
                client.unlogged,
                self._what,
                key,
                reason,
                slowed,
            )
            client.unlogged = 0
            client.logged_at = now

    def _refill(self, client: _Client, now: float) -> None:
        limits = self._limits
        client.tokens = min(float(limits.burst), client.tokens + (now - client.updated) * limits.per_second)
        client.updated = now
