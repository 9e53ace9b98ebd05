"""Where accepted envelopes go. The edge answers 2xx only after `publish` returned."""

from __future__ import annotations

import asyncio
from typing import Protocol

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from .errors import SinkUnavailable
from .subjects import EVENTS_STREAM, MSG_ID_HEADER


class Sink(Protocol):
    async def publish(self, subject: str, msg_id: str, body: bytes) -> None:
        """Return only once the message is durable; raise SinkUnavailable on a retryable failure."""


class JetStreamSink:
    """Publishes pipelined (`publish_async`): many requests share the connection, each awaits
    its own acknowledgement. `Nats-Msg-Id` lets JetStream drop a re-published duplicate."""

    def __init__(self, js: JetStreamContext, timeout_seconds: float) -> None:
        self._js = js
        self._timeout = timeout_seconds

    async def publish(self, subject: str, msg_id: str, body: bytes) -> None:
        try:
            future = await self._js.publish_async(
                subject,
                body,
                wait_stall=self._timeout,
                stream=EVENTS_STREAM,
                headers={MSG_ID_HEADER: msg_id},
            )
            await asyncio.wait_for(future, self._timeout)
        except (TimeoutError, NatsError, OSError) as exc:
            raise SinkUnavailable(f"JetStream did not acknowledge the publish: {exc!r}") from exc
