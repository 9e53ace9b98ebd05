"""`target-headwater`: a Singer target on the Meltano Singer SDK that imports a tap's streams into
`hw_<project>.import_<stream>` through a running headwater's control API (docs/import.md,
"Singer and Meltano").

The SDK reads the messages and validates records against their SCHEMA; each record goes straight
to an `HttpImportLoader` (loaders/http.py), which sends full batches itself. A STATE is written to
standard output only after `save_state` returned, i.e. after every record before it is durable
(acknowledged by JetStream): the SDK emits the latest STATE when it drains its sinks, which this
target also asks for every `state_interval_seconds` while STATE messages come.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from singer_sdk import typing as th
from singer_sdk.exceptions import MissingKeyPropertiesError
from singer_sdk.io_base import SingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.sinks import Sink
from singer_sdk.target_base import Target

from headwater.loaders.http import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, HttpImportLoader

DEFAULT_STATE_INTERVAL_SECONDS = 10.0


class OrjsonSingerReader(SingerReader):
    """Lines parsed by orjson (~1.5 µs) instead of `json` with Decimal numbers (~15 µs)."""

    def deserialize_json(self, line: str) -> dict[str, Any]:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputLine(f"Unable to parse line as JSON: {line[:200]}") from exc
        if not isinstance(value, dict):
            raise InvalidInputLine(f"A Singer message is a JSON object: {line[:200]}")
        return value


class HeadwaterSink(Sink):
    """One stream: its records handed to the target's loader as they come."""

    def __init__(
        self,
        target: HeadwaterTarget,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        self._target = target
        target.loader.declare(stream_name, schema, list(key_properties or ()))
        target.declared(stream_name, self)

    def get_validator(self) -> None:
        """None: the control plane checks every value against its column and names the record and
        property at fault; the SDK's jsonschema validation of the same records took ~0.3 ms a
        record, most of the target's time (bench/import_singer.py)."""
        return None

    def _parse_timestamps_in_record(
        self, record: dict[str, Any], schema: dict[str, Any], treatment: Any
    ) -> None:
        """Date-times stay the strings the tap sent: the control plane parses them (and refuses
        one that is not ISO 8601, naming it)."""

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        self._target.loader.add(self.stream_name, record, self._target.record_version)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Nothing to do: the loader sends a batch when it is full, and a STATE flushes them all."""

    def activate_version(self, new_version: int) -> None:
        self._target.loader.activate_version(self.stream_name, new_version)


class HeadwaterTarget(Target):
    name = "target-headwater"
    default_sink_class = HeadwaterSink
    message_reader_class = OrjsonSingerReader
    config_jsonschema = th.PropertiesList(
        th.Property(
            "control_url", th.StringType, required=True,
            description="headwater's control API, e.g. http://127.0.0.1:8701",
        ),
        th.Property(
            "token", th.StringType, required=True, secret=True,
            description="An admin token of that control plane.",
        ),
        th.Property(
            "project", th.StringType, required=True,
            description="The project whose database receives the tables.",
        ),
        th.Property(
            "batch_rows", th.IntegerType, default=DEFAULT_MAX_ROWS,
            description="Records per request to the control plane (at most 10000).",
        ),
        th.Property(
            "batch_bytes", th.IntegerType, default=DEFAULT_MAX_BYTES,
            description="Bytes of records per request (under the control plane's body limit).",
        ),
        th.Property(
            "state_interval_seconds", th.NumberType, default=DEFAULT_STATE_INTERVAL_SECONDS,
            description="How often, at most, a STATE is made durable and emitted while the tap sends them.",
        ),
    ).to_dict()  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loader = HttpImportLoader(
            self.config["control_url"], self.config["token"], self.config["project"],
            max_rows=int(self.config.get("batch_rows", DEFAULT_MAX_ROWS)),
            max_bytes=int(self.config.get("batch_bytes", DEFAULT_MAX_BYTES)),
        )  # fmt: skip
        self.record_version: int | None = None  # the `version` of the RECORD being processed
        self._state_interval = float(
            self.config.get("state_interval_seconds", DEFAULT_STATE_INTERVAL_SECONDS)
        )
        self._state_drained_at = time.monotonic()
        # Streams whose records go straight to the loader: no stream maps, no flattening, so the
        # SDK's per-record steps (copy, map, metadata, metrics: ~40 µs) would change nothing.
        self._plain = not self.config.get("stream_maps") and not self.config.get("flattening_enabled")
        self._direct: dict[str, tuple[str, ...]] = {}  # stream → its key properties

    def declared(self, stream: str, sink: HeadwaterSink) -> None:
        if self._plain and sink.stream_name == stream:
            self._direct[stream] = tuple(sink.key_properties or ())

    def _process_record_message(self, message_dict: dict[str, Any]) -> None:
        version = message_dict.get("version")
        self.record_version = int(version) if version is not None else None
        key = self._direct.get(message_dict.get("stream", ""))
        record = message_dict.get("record")
        if key is None or not isinstance(record, dict):
            super()._process_record_message(message_dict)
            return
        if any(k not in record for k in key):
            raise MissingKeyPropertiesError(
                f"Record is missing one or more key_properties {list(key)}: {record}"
            )
        self.loader.add(message_dict["stream"], record, self.record_version)

    def _process_state_message(self, message_dict: dict[str, Any]) -> None:
        super()._process_state_message(message_dict)
        if time.monotonic() - self._state_drained_at >= self._state_interval:
            self.drain_all()  # makes every record so far durable, then emits this STATE

    def _write_state_message(self, state: dict[str, Any]) -> None:
        self.loader.save_state(state)  # flushes: every record before this STATE is durable
        self._state_drained_at = time.monotonic()
        super()._write_state_message(state)

    def process_endofpipe(self) -> None:
        super().process_endofpipe()
        self.loader.close()


cli = HeadwaterTarget.cli
