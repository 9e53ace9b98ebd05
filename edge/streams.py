"""Idempotent creation of the JetStream streams, by whichever role starts first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from headwater.core.wire.subjects import (
    DLQ_STREAM,
    DLQ_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    IMPORTS_STREAM,
    IMPORTS_SUBJECTS,
    dlq_subject,
    events_subject,
    imports_project_subjects,
)

DAY = 24 * 3600
NANOSECONDS = 1_000_000_000

# The fields `stream_configs` sets: what `headwater streams ensure` compares with a live stream and
# changes. Every other field of a live stream (set by nats-py for KV buckets, or by the server) is kept.
MANAGED_FIELDS: tuple[str, ...] = (
    "description",
    "subjects",
    "retention",
    "storage",
    "num_replicas",
    "max_age",
    "max_bytes",
    "discard",
    "duplicate_window",
)
_DURATION_FIELDS = frozenset({"max_age", "duplicate_window"})


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
        _stream(
            settings,
            IMPORTS_STREAM,
            "headwater import batches (Singer, Airbyte), one message per accepted batch",
            IMPORTS_SUBJECTS,
            settings.max_age_seconds,
        ),
    ]


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    current: object
    desired: object


def _as_stored(field: str, value: object) -> object:
    """A config value as the server keeps it: durations in whole nanoseconds (nats-py sends an unset
    one as 0), enums as their string (a config read back from the server holds plain strings)."""
    if field in _DURATION_FIELDS:
        return round(value * NANOSECONDS) if isinstance(value, int | float) else 0
    if isinstance(value, Enum):
        return value.value
    return value


def config_changes(
    current: StreamConfig, desired: StreamConfig, fields: Iterable[str] = MANAGED_FIELDS
) -> list[FieldChange]:
    """The `fields` whose value differs between a live stream's config and the desired one, in order."""
    changes = []
    for field in fields:
        now, wanted = getattr(current, field), getattr(desired, field)
        if _as_stored(field, now) != _as_stored(field, wanted):
            changes.append(FieldChange(field, now, wanted))
    return changes


def with_changes(current: StreamConfig, changes: Iterable[FieldChange]) -> StreamConfig:
    """The config to send to `update_stream`: JetStream replaces the whole config on update, so it
    is the live one with only the changed fields replaced."""
    return current.evolve(**{change.field: change.desired for change in changes})


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
    """Remove every message of one project from HW_EVENTS, HW_DLQ and HW_IMPORTS; returns how many."""
    removed = 0
    for stream, subject in (
        (EVENTS_STREAM, events_subject(project_id)),
        (DLQ_STREAM, dlq_subject(project_id)),
        (IMPORTS_STREAM, imports_project_subjects(project_id)),
    ):
        info = await js.stream_info(stream, subjects_filter=subject)
        removed += sum((info.state.subjects or {}).values())
        await js.purge_stream(stream, subject=subject)
    return removed
