"""Where accepted envelopes go. The edge answers 2xx only after `publish` returned."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Protocol

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError

from headwater.core.wire.subjects import EVENTS_STREAM, MSG_ID_HEADER

from .errors import MessageTooLarge, SinkUnavailable

EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"
STATUS_HEADER = "Status"
# Room left for the headers of a message (Nats-Msg-Id, Nats-Expected-Stream): the server counts
# them in its max payload, and closes the connection of a client that sends more.
HEADER_ROOM = 1024
# JetStream's error code for a message over the stream's max_msg_size.
MESSAGE_TOO_LARGE_CODE = 10054


class Sink(Protocol):
    async def publish(self, subject: str, msg_id: str, body: bytes) -> None:
        """Return only once the message is durable; raise SinkUnavailable on a retryable failure,
        MessageTooLarge for a body larger than max_body_bytes() (never retryable)."""

    def max_body_bytes(self) -> int:
        """The largest body publish() can make durable now (the edge splits envelopes to fit)."""


class JetStreamSink:
    """Publishes pipelined: many requests share the connection, each awaits its own JetStream
    acknowledgement. `Nats-Msg-Id` lets JetStream drop a re-published duplicate.

    Acknowledgements arrive on one wildcard inbox and are matched to their publish by the reply
    subject's last token. This is what nats-py's `publish_async` does, minus what it costs per
    message (a `PubAck` dataclass built field by field, and the task `asyncio.wait_for` creates):
    2.1-2.3x the publishes/s on this machine, measured side by side with 64 concurrent publishers.
    """

    def __init__(self, nats: Client, timeout_seconds: float) -> None:
        self._nats = nats
        self._timeout = timeout_seconds
        self._prefix: str | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._starting = asyncio.Lock()
        self._stream_max = -1  # the events stream's max_msg_size; -1: none

    def max_body_bytes(self) -> int:
        """The server's max payload (from its INFO, which nats-py reads again on every reconnect)
        and the events stream's max message size, less room for the headers."""
        limit = self._nats.max_payload
        if self._stream_max > 0:
            limit = min(limit, self._stream_max)
        return limit - HEADER_ROOM

    async def refresh_limit(self) -> None:
        """Read the events stream's max message size (at start, and when JetStream refused a
        message as too large: the stream's config may have changed since)."""
        info = await self._nats.jetstream().stream_info(EVENTS_STREAM)
        self._stream_max = info.config.max_msg_size or -1

    async def _subscribe(self) -> str:
        async with self._starting:
            if self._prefix is None:
                prefix = self._nats.new_inbox()
                await self._nats.subscribe(prefix + ".*", cb=self._on_ack)
                self._prefix = prefix
        return self._prefix

    async def publish(self, subject: str, msg_id: str, body: bytes) -> None:
        prefix = self._prefix or await self._subscribe()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()
        self._waiting[token] = acked
        timer = loop.call_later(self._timeout, _expire, acked)
        try:
            headers = {MSG_ID_HEADER: msg_id, EXPECTED_STREAM_HEADER: EVENTS_STREAM}
            await self._nats.publish(subject, body, reply=f"{prefix}.{token}", headers=headers)
            await acked
        except MaxPayloadError:
            raise MessageTooLarge(
                f"a message of {len(body)} bytes is over the server's max payload ({self._nats.max_payload})"
            ) from None
        except MessageTooLarge:
            with contextlib.suppress(NatsError, TimeoutError):
                await self.refresh_limit()
            raise
        except (NatsError, OSError) as exc:
            raise SinkUnavailable(f"JetStream did not acknowledge the publish: {exc!r}") from exc
        finally:
            timer.cancel()
            self._waiting.pop(token, None)

    async def _on_ack(self, message: Msg) -> None:
        acked = self._waiting.get(message.subject.rpartition(".")[2])
        if acked is None or acked.done():
            return  # it timed out already
        if not message.data:  # a status instead: 503 when no stream serves the subject
            status = (message.headers or {}).get(STATUS_HEADER, "no answer")
            acked.set_exception(SinkUnavailable(f"JetStream refused the publish: status {status}"))
            return
        try:
            answer = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            answer = {"error": {"description": "unreadable acknowledgement"}}
        error = answer.get("error") if isinstance(answer, dict) else {"description": "unexpected answer"}
        if isinstance(error, dict) and error.get("err_code") == MESSAGE_TOO_LARGE_CODE:
            acked.set_exception(MessageTooLarge(f"JetStream refused the publish: {error}"))
        elif error:
            acked.set_exception(SinkUnavailable(f"JetStream refused the publish: {error}"))
        else:
            acked.set_result(None)


def _expire(acked: asyncio.Future[None]) -> None:
    if not acked.done():
        acked.set_exception(SinkUnavailable("JetStream did not acknowledge the publish in time"))
