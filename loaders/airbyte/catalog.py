"""The configured catalog (`--catalog`): what `write` declares to the loader, stream by stream.

Sync modes: `append` (no key, records appended), `append_dedup` (the primary key becomes the
loader's key: a re-sent record replaces the stored one), `overwrite` and `overwrite_dedup` (every
record of the sync carries the sync's table version; older rows are removed once the stream is
complete). A stream Airbyte asks to clear (`minimum_generation_id == generation_id`, a refresh that
removes records) is written like an overwrite whatever its mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from headwater.imports.names import InvalidName, table_name
from headwater.imports.types import SchemaError, declared_columns

from .messages import ConfigError, decode_config_json

MAX_CATALOG_BYTES = 16 * 1024 * 1024
MAX_STREAMS = 500
MAX_KEY_FIELDS = 16


class SyncMode(StrEnum):
    APPEND = "append"
    APPEND_DEDUP = "append_dedup"
    OVERWRITE = "overwrite"
    OVERWRITE_DEDUP = "overwrite_dedup"


SUPPORTED_SYNC_MODES = [mode.value for mode in SyncMode]


class AirbyteStream(msgspec.Struct, frozen=True):
    name: str
    json_schema: dict[str, Any]
    namespace: str | None = None
    source_defined_primary_key: list[list[str]] | None = None


class ConfiguredStream(msgspec.Struct, frozen=True):
    stream: AirbyteStream
    destination_sync_mode: str
    primary_key: list[list[str]] | None = None
    generation_id: int | None = None
    minimum_generation_id: int | None = None


class ConfiguredCatalog(msgspec.Struct, frozen=True):
    streams: list[ConfiguredStream]


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """How one configured stream is written."""

    name: str
    schema: dict[str, Any]
    key_properties: tuple[str, ...]
    replaces_rows: bool  # records carry the sync's table version; older ones go at the stream's end


def _key_properties(configured: ConfiguredStream) -> tuple[str, ...]:
    paths = configured.primary_key or configured.stream.source_defined_primary_key or []
    where = f"stream {configured.stream.name!r}"
    if not paths:
        raise ConfigError(f"{where}: {configured.destination_sync_mode} needs a primary key")
    if len(paths) > MAX_KEY_FIELDS:
        raise ConfigError(f"{where}: a primary key of at most {MAX_KEY_FIELDS} fields, not {len(paths)}")
    properties = configured.stream.json_schema.get("properties")
    keys = []
    for path in paths:
        if len(path) != 1:
            raise ConfigError(f"{where}: primary key field {path} is nested; keys are top-level fields")
        if isinstance(properties, dict) and path[0] not in properties:
            raise ConfigError(f"{where}: primary key field {path[0]!r} is not in the stream's json_schema")
        keys.append(path[0])
    return tuple(keys)


def plan_stream(configured: ConfiguredStream) -> StreamPlan:
    try:
        mode = SyncMode(configured.destination_sync_mode)
    except ValueError:
        raise ConfigError(
            f"stream {configured.stream.name!r}: destination_sync_mode {configured.destination_sync_mode!r} "
            f"is not supported (one of {', '.join(SUPPORTED_SYNC_MODES)})"
        ) from None
    deduplicated = mode in (SyncMode.APPEND_DEDUP, SyncMode.OVERWRITE_DEDUP)
    key_properties = _key_properties(configured) if deduplicated else ()
    try:  # what the control plane would refuse at the first batch, said before any record is read
        table_name(configured.stream.name)
        declared_columns(configured.stream.json_schema, key_properties)
    except SchemaError as exc:
        raise ConfigError(f"stream {configured.stream.name!r}: {exc} ({exc.field})") from None
    except InvalidName as exc:
        raise ConfigError(f"stream {configured.stream.name!r}: {exc}") from None
    clears = (
        configured.generation_id is not None
        and configured.minimum_generation_id is not None
        and configured.minimum_generation_id >= 1
        and configured.minimum_generation_id == configured.generation_id
    )
    return StreamPlan(
        name=configured.stream.name,
        schema=configured.stream.json_schema,
        key_properties=key_properties,
        replaces_rows=mode in (SyncMode.OVERWRITE, SyncMode.OVERWRITE_DEDUP) or clears,
    )


def parse_catalog(raw: bytes) -> dict[str, StreamPlan]:
    """The plans of a configured catalog by stream name (names must be unique across namespaces:
    each stream becomes one table of the project)."""
    catalog = decode_config_json(raw, ConfiguredCatalog, "configured catalog", MAX_CATALOG_BYTES)
    if len(catalog.streams) > MAX_STREAMS:
        raise ConfigError(f"the configured catalog has {len(catalog.streams)} streams; at most {MAX_STREAMS}")
    plans: dict[str, StreamPlan] = {}
    tables: dict[str, str] = {}
    for configured in catalog.streams:
        plan = plan_stream(configured)
        table = table_name(plan.name)
        if table in tables:
            raise ConfigError(
                f"streams {tables[table]!r} and {plan.name!r} would both be table {table} (the same "
                "name in two namespaces, or names that differ only in punctuation)"
            )
        tables[table] = plan.name
        plans[plan.name] = plan
    return plans


def read_catalog(path: Path) -> dict[str, StreamPlan]:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CATALOG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the configured catalog {path}: {exc.strerror or exc}") from None
    return parse_catalog(raw)
