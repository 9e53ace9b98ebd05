"""Batches of events to the edge's batch endpoint (`POST /v1/batch`, the project's secret key as
HTTP Basic username), as a server-side Segment library sends them.

- 2xx: the events are durable in JetStream; the edge names each event it refused (`rejected`:
  index, code, field), and a batch with no valid event is a 400 `no_valid_events` listing them all.
- 429 and 503 (and other 5xx, 408, a connection that fails): sent again after the answer's
  Retry-After, else after a backoff doubling from 0.5 s to 30 s, until `give_up_after` seconds
  pass without an answer; then EdgeUnavailable (the import stops; run it again to resume).
- Any other refusal of the whole batch (413 `payload_too_large`, `too_many_events`,
  `envelope_too_large`, 400 `too_deep`...): the batch is halved and each half sent, until the event
  at fault is alone and refused with the edge's code; the others are accepted.
- 401 and 403 (unknown key, disabled project, a public key): EdgeRefusedImport, nothing can pass.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import random
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

BATCH_PATH = "/v1/batch"
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 300.0
_FIRST_BACKOFF, _MAX_BACKOFF = 0.5, 30.0


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int  # the event's place in the batch handed to `send`
    code: str
    field: str | None
    message: str


@dataclass(slots=True)
class Outcome:
    accepted: int = 0
    refused: list[Refusal] = field(default_factory=list)
    retries: int = 0


class EdgeRefusedImport(Exception):
    """The edge refuses every request of this import (401/403): the key or the project is wrong."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"the edge refused the import: {message} ({code}, HTTP {status})")
        self.code = code


class EdgeUnavailable(Exception):
    """The edge did not take a batch for `give_up_after` seconds."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: dict[str, object]
    retry_after: float | None


def batch_body(events: Sequence[bytes]) -> bytes:
    return b'{"batch":[' + b",".join(events) + b"]}"


class EdgeSender:
    """Thread-safe: each thread keeps its own keep-alive connection to the edge."""

    def __init__(
        self,
        edge_url: str,
        write_key: str,
        give_up_after: float = 900.0,
        timeout: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(edge_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the edge URL must be http(s)://host[:port], not {edge_url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path.rstrip("/") + BATCH_PATH
        credentials = base64.b64encode(f"{write_key}:".encode()).decode()
        # No User-Agent: the events' own context.userAgent is what enrichment reads; the stored
        # user_agent column stays empty rather than naming this program.
        self._headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}
        self._give_up_after = give_up_after
        self._timeout = timeout
        self._local = threading.local()
        self._cancelled = threading.Event()

    def send(self, events: Sequence[bytes]) -> Outcome:
        """Sends `events` (JSON objects) until every one is accepted or refused by the edge."""
        outcome = Outcome()
        self._send(list(events), 0, outcome)
        return outcome

    def _send(self, events: list[bytes], first: int, outcome: Outcome) -> None:
        answer = self._post_until_answered(batch_body(events), outcome)
        body = answer.body
        if 200 <= answer.status < 300:
            outcome.accepted += _int(body.get("accepted"), len(events))
            outcome.refused += _refusals(body.get("rejected"), first)
            return
        code, message = str(body.get("code", f"http_{answer.status}")), str(body.get("message", ""))
        if answer.status in (401, 403):
            raise EdgeRefusedImport(answer.status, code, message)
        if isinstance(body.get("errors"), list):  # no event of the batch is valid: each named
            outcome.refused += _refusals(body["errors"], first)
            return
        if len(events) > 1:  # the batch as a whole: halve it until the event at fault is alone
            half = len(events) // 2
            self._send(events[:half], first, outcome)
            self._send(events[half:], first + half, outcome)
            return
        field_name = body.get("field")
        outcome.refused.append(
            Refusal(first, code, field_name if isinstance(field_name, str) else None, message)
        )

    def _post_until_answered(self, body: bytes, outcome: Outcome) -> _Answer:
        started = time.monotonic()
        backoff = _FIRST_BACKOFF
        while True:
            try:
                answer = self._post(body)
                if answer.status not in RETRYABLE:
                    return answer
                problem = f"HTTP {answer.status} {answer.body.get('code', '')}".strip()
                wait = answer.retry_after
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                problem, wait = f"{type(exc).__name__}: {exc}", None
            if time.monotonic() - started > self._give_up_after:
                raise EdgeUnavailable(
                    f"the edge has not taken a batch for {self._give_up_after:.0f} s (last: {problem})"
                )
            if wait is None:
                wait = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
                backoff = min(backoff * 2, _MAX_BACKOFF)
            outcome.retries += 1
            if self._cancelled.wait(wait):
                raise EdgeUnavailable("the import was stopped")

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self._timeout)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _post(self, body: bytes) -> _Answer:
        connection = self._connection()
        # The edge answers a body over its limit (413) and closes before reading all of it: its
        # answer is still there to read (if not, reading fails and the batch is sent again).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request("POST", self._path, body=body, headers=self._headers)
        response = connection.getresponse()
        data = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self._drop_connection()
        try:
            parsed = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            parsed = {}
        return _Answer(
            response.status,
            parsed if isinstance(parsed, dict) else {},
            _retry_after(response.getheader("Retry-After")),
        )

    def cancel(self) -> None:
        """Makes every thread waiting to send again give up (EdgeUnavailable) at once."""
        self._cancelled.set()

    def close(self) -> None:
        self._drop_connection()


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), MAX_RETRY_AFTER_SECONDS)


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _refusals(items: object, first: int) -> list[Refusal]:
    if not isinstance(items, list):
        return []
    refusals = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            field_name = item.get("field")
            refusals.append(
                Refusal(
                    first + item["index"],
                    str(item.get("code", "refused")),
                    field_name if isinstance(field_name, str) else None,
                    str(item.get("message", "")),
                )
            )
    return refusals
