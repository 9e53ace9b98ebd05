"""Idempotent creation of the JetStream streams, by whichever role starts first."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .subjects import DLQ_STREAM, DLQ_SUBJECTS, EVENTS_STREAM, EVENTS_SUBJECTS, dlq_subject, events_subject

DAY = 24 * 3600


@dataclass(frozen=True, slots=True)
class StreamSettings:
    replicas: int = 1
    max_age_seconds: float = 7 * DAY
    max_bytes: int = -1
    duplicate_window_seconds: float = 120.0
    dlq_max_age_seconds: float = 30 * DAY


def _stream(
    settings: StreamSettings, name: str, description: str, subject: str, max_age: float
) -> StreamConfig:
    return StreamConfig(
        name=name,
        description=description,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=max_age,
        max_bytes=settings.max_bytes,
        # When full, refuse new messages instead of silently dropping the oldest un-consumed ones.
        discard=DiscardPolicy.NEW,
        duplicate_window=settings.duplicate_window_seconds,
    )


def stream_configs(settings: StreamSettings) -> list[StreamConfig]:
    return [
        _stream(
            settings,
            EVENTS_STREAM,
            "headwater accepted events, one message per ingest request",
            EVENTS_SUBJECTS,
            settings.max_age_seconds,
        ),
        _stream(
            settings,
            DLQ_STREAM,
            "headwater messages a consumer could not process",
            DLQ_SUBJECTS,
            settings.dlq_max_age_seconds,
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


async def purge_project_messages(js: JetStreamContext, project_id: str) -> int:
    """Remove every message of one project from HW_EVENTS and HW_DLQ; returns how many."""
    removed = 0
    for stream, subject in (
        (EVENTS_STREAM, events_subject(project_id)),
        (DLQ_STREAM, dlq_subject(project_id)),
    ):
        info = await js.stream_info(stream, subjects_filter=subject)
        removed += (info.state.subjects or {}).get(subject, 0)
        await js.purge_stream(stream, subject=subject)
    return removed
