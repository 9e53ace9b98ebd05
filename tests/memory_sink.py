"""An in-memory twin of the edge's JetStream sink (edge/sink.py), for tests that need a sink and
no NATS. tests/test_sink_contract.py runs the same cases against both, so the twin answers as the
real sink does: a publish returns once the message is stored, a repeated Nats-Msg-Id is stored
once, a retryable failure raises SinkUnavailable and a body over the limit MessageTooLarge."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from headwater.edge.errors import MessageTooLarge, SinkUnavailable
from headwater.edge.sink import HEADER_ROOM

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default max_payload


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as the events stream holds it."""

    subject: str
    msg_id: str
    body: bytes


class MemorySink:
    """The events stream as a list. `stream_exists`, `max_messages`, `max_message_size` and
    `connected` set up the failures the real stream and connection can have."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.messages: list[Stored] = []
        self._max_payload = max_payload
        self._msg_ids: set[str] = set()  # JetStream's duplicate window, never expiring here
        self.stream_exists = True
        self.max_messages: int | None = None  # a full stream (discard new) refuses the next one
        self.max_message_size: int | None = None  # the stream's max_msg_size
        self.connected = True

    def max_body_bytes(self) -> int:
        limit = self._max_payload
        if self.max_message_size is not None:
            limit = min(limit, self.max_message_size)
        return limit - HEADER_ROOM

    async def publish(self, subject: str, msg_id: str, body: bytes) -> None:
        await asyncio.sleep(0)  # a publish always yields, as a round trip to the server does
        if len(body) > self._max_payload:  # nats-py refuses it before sending
            raise MessageTooLarge(f"a message of {len(body)} bytes is over the server's max payload")
        if not self.connected:
            raise SinkUnavailable("JetStream did not acknowledge the publish in time")
        if not self.stream_exists:
            raise SinkUnavailable("JetStream refused the publish: status 503")
        if msg_id in self._msg_ids:
            return  # a duplicate: acknowledged, not stored again
        if self.max_message_size is not None and len(body) > self.max_message_size:
            raise MessageTooLarge("JetStream refused the publish: message size exceeds maximum allowed")
        if self.max_messages is not None and len(self.messages) >= self.max_messages:
            raise SinkUnavailable("JetStream refused the publish: maximum messages exceeded")
        self._msg_ids.add(msg_id)
        self.messages.append(Stored(subject, msg_id, body))
