"""Idempotent creation of the JetStream streams, by whichever role starts first."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .subjects import DLQ_STREAM, DLQ_SUBJECTS, EVENTS_STREAM, EVENTS_SUBJECTS

DAY = 24 * 3600


@dataclass(frozen=True, slots=True)
class StreamSettings:
    replicas: int = 1
    max_age_seconds: float = 7 * DAY
    max_bytes: int = -1
    duplicate_window_seconds: float = 120.0
    dlq_max_age_seconds: float = 30 * DAY


def stream_configs(settings: StreamSettings) -> list[StreamConfig]:
    common = {
        "retention": RetentionPolicy.LIMITS,
        "storage": StorageType.FILE,
        "num_replicas": settings.replicas,
        # When full, refuse new messages instead of silently dropping the oldest un-consumed ones.
        "discard": DiscardPolicy.NEW,
        "duplicate_window": settings.duplicate_window_seconds,
    }
    return [
        StreamConfig(
            name=EVENTS_STREAM,
            description="headwater accepted events, one message per ingest request",
            subjects=[EVENTS_SUBJECTS],
            max_age=settings.max_age_seconds,
            max_bytes=settings.max_bytes,
            **common,
        ),
        StreamConfig(
            name=DLQ_STREAM,
            description="headwater messages a consumer could not process",
            subjects=[DLQ_SUBJECTS],
            max_age=settings.dlq_max_age_seconds,
            **common,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the streams that do not exist yet; existing ones are left as they are
    (`headwater streams ensure` is the tool that changes a live stream's config)."""
    for config in stream_configs(settings):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
