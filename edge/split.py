"""An envelope split into parts that each fit JetStream's message size limit.

One request is one envelope (one JetStream message) as long as it fits; one that would not, is
several, each holding a run of its events with the request's metadata and batch context. A part's
`Nats-Msg-Id` is the request's with the place of its first event, so a part spooled and
republished is still recognised as a duplicate. Used by the edge before it acknowledges a request,
and by the drainer for an envelope spooled under a larger limit than JetStream's now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from headwater.core.wire.envelope import Envelope, pack

from .errors import MessageTooLarge


@dataclass(frozen=True, slots=True)
class Part:
    offset: int  # the place of its first event in the whole envelope
    envelope: Envelope
    encoded: bytes  # its JSON
    body: bytes  # the message body (LZ4-framed above compress_above)

    def msg_id(self, request_msg_id: str, whole: bool) -> str:
        return request_msg_id if whole else f"{request_msg_id}:{self.offset}"


def split(envelope: Envelope, limit: int, compress_above: int, offset: int = 0) -> list[Part]:
    """Parts of `envelope` whose bodies are at most `limit` bytes, in order (one when it fits);
    MessageTooLarge when a single event does not fit. Splits into as many parts as the size
    suggests, and a part still too large again."""
    encoded = envelope.encode()
    body = pack(encoded, compress_above)
    if len(body) <= limit:
        return [Part(offset, envelope, encoded, body)]
    events = envelope.events
    if len(events) <= 1:
        raise MessageTooLarge(f"an envelope of one event is {len(body)} bytes, over the limit of {limit}")
    pieces = min(len(events), max(2, math.ceil(len(body) / limit)))
    size = math.ceil(len(events) / pieces)
    parts: list[Part] = []
    for start in range(0, len(events), size):
        chunk = replace(envelope, events=events[start : start + size])
        parts += split(chunk, limit, compress_above, offset + start)
    return parts
