"""Dead-lettering: a message (or one event of it) that will never become rows is published to
`hw.dlq.<project>` with headers saying why and where it came from, so it never blocks the stream
and can be replayed once fixed (`headwater dlq`)."""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from headwater.core.wire.subjects import (
    DLQ_DELIVERIES_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_ORIGINAL_MSG_ID_HEADER,
    DLQ_ORIGINAL_SUBJECT_HEADER,
    MSG_ID_HEADER,
    dlq_subject,
    project_of_subject,
)

from .metrics import ConsumerMetrics
from .processing import Decoded

log = logging.getLogger(__name__)


class PoisonMessage(Exception):
    """A message that keeps failing however often it is delivered."""


class DeadLetters:
    def __init__(self, js: JetStreamContext, metrics: ConsumerMetrics) -> None:
        self._js = js
        self._metrics = metrics
        self.count = 0  # messages and events dead-lettered

    async def message(self, message: Msg, error: Exception) -> None:
        """Publish the whole message as a dead letter, then terminate it (no redelivery)."""
        project_id = project_of_subject(message.subject)
        log.error(
            "dead-lettering message %s of %s: %s", message.metadata.sequence.stream, message.subject, error
        )
        headers = {
            # A header cannot hold a line break.
            DLQ_ERROR_HEADER: " ".join(str(error).split())[:1000],
            DLQ_ORIGINAL_SUBJECT_HEADER: message.subject,
            DLQ_DELIVERIES_HEADER: str(message.metadata.num_delivered),
        }
        original_id = (message.headers or {}).get(MSG_ID_HEADER)
        if original_id:
            headers[DLQ_ORIGINAL_MSG_ID_HEADER] = original_id
        await self._js.publish(dlq_subject(project_id), message.data, headers=headers)
        self._counted(project_id)
        await message.term()

    async def events(self, message: Msg, outcome: Decoded) -> None:
        """Dead-letter the events of a message that cannot become rows, each alone; the message
        itself is acked once its other events are stored. Each dead letter has an id of its own
        within the message's, so a redelivery does not dead-letter the same event twice."""
        if not outcome.dead_letters:
            return
        project_id = project_of_subject(message.subject)
        original_id = (message.headers or {}).get(MSG_ID_HEADER) or str(message.metadata.sequence.stream)
        for index, letter, error in outcome.dead_letters:
            log.error("dead-lettering an event of message %s of %s: %s", original_id, message.subject, error)
            headers = {
                MSG_ID_HEADER: f"{original_id}:dead:{index}",
                DLQ_ERROR_HEADER: " ".join(error.split())[:1000],
                DLQ_ORIGINAL_SUBJECT_HEADER: message.subject,
                DLQ_DELIVERIES_HEADER: str(message.metadata.num_delivered),
                DLQ_ORIGINAL_MSG_ID_HEADER: original_id,
            }
            await self._js.publish(dlq_subject(project_id), letter, headers=headers)
            self._counted(project_id)

    def _counted(self, project_id: str) -> None:
        self.count += 1
        self._metrics.dead_lettered.labels(project_id).inc()
