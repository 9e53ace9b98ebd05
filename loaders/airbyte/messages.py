"""The Airbyte protocol messages the destination reads and writes, one JSON object a line.

Only the fields the destination uses are typed; unknown fields are ignored on input. Output
messages are built as plain dicts so that a state message goes back exactly as it came, with the
destination's record count added.
"""

from __future__ import annotations

import time
import traceback
from enum import StrEnum
from typing import Any, TypeVar

import msgspec


class FailureType(StrEnum):
    """`trace.error.failure_type`: whose fault, so the platform knows whether a retry can help."""

    CONFIG = "config_error"
    SYSTEM = "system_error"
    TRANSIENT = "transient_error"


class DestinationError(Exception):
    """A failure the destination reports as an Airbyte error trace (never a bare traceback)."""

    failure_type = FailureType.SYSTEM

    def __init__(self, message: str, internal_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.internal_message = internal_message


T = TypeVar("T")


class ConfigError(DestinationError):
    """The config, the catalog or the input does not fit: retrying the same sync cannot help."""

    failure_type = FailureType.CONFIG


def decode_config_json(raw: bytes, kind: type[T], what: str, max_bytes: int) -> T:
    """`raw` (a config or a catalog, named `what`) decoded as `kind`, at most `max_bytes`; every
    fault a ConfigError saying which."""
    if len(raw) > max_bytes:
        raise ConfigError(f"the {what} is over {max_bytes} bytes")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"the {what} is not JSON: {exc}") from None


class TransientError(DestinationError):
    """headwater could not be reached or was unavailable: the same sync may succeed later."""

    failure_type = FailureType.TRANSIENT


class RecordMessage(msgspec.Struct, frozen=True):
    stream: str
    data: dict[str, Any]
    namespace: str | None = None
    emitted_at: int | float | None = None


class StreamDescriptor(msgspec.Struct, frozen=True):
    name: str
    namespace: str | None = None


class StreamStatus(msgspec.Struct, frozen=True):
    stream_descriptor: StreamDescriptor
    status: str


class TraceMessage(msgspec.Struct, frozen=True):
    type: str
    stream_status: StreamStatus | None = None


class IncomingMessage(msgspec.Struct, frozen=True):
    """One line of `write`'s input. The state stays a dict: it goes back out as it came."""

    type: str
    record: RecordMessage | None = None
    state: dict[str, Any] | None = None
    trace: TraceMessage | None = None


_decoder = msgspec.json.Decoder(IncomingMessage)
_encoder = msgspec.json.Encoder()


def decode_message(line: bytes) -> IncomingMessage:
    """One input line; a line that is not a protocol message is a ConfigError naming the fault."""
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"an input line is not an Airbyte message: {exc}") from None


def encode(message: dict[str, Any]) -> bytes:
    return _encoder.encode(message) + b"\n"


def now_ms() -> float:
    return time.time() * 1000


def spec_message(connection_specification: dict[str, Any], sync_modes: list[str]) -> dict[str, Any]:
    return {
        "type": "SPEC",
        "spec": {
            "connectionSpecification": connection_specification,
            "supportsIncremental": True,
            "supported_destination_sync_modes": sync_modes,
        },
    }


def connection_status(succeeded: bool, message: str) -> dict[str, Any]:
    status = "SUCCEEDED" if succeeded else "FAILED"
    return {"type": "CONNECTION_STATUS", "connectionStatus": {"status": status, "message": message}}


def log_message(level: str, message: str) -> dict[str, Any]:
    return {"type": "LOG", "log": {"level": level, "message": message}}


def error_trace(error: BaseException) -> dict[str, Any]:
    """The TRACE message of type ERROR that ends a failed run, with the stack for the operator."""
    if isinstance(error, DestinationError):
        message, internal, failure = error.message, error.internal_message, error.failure_type
    else:
        message, internal, failure = f"{type(error).__name__}: {error}", repr(error), FailureType.SYSTEM
    return {
        "type": "TRACE",
        "trace": {
            "type": "ERROR",
            "emitted_at": now_ms(),
            "error": {
                "message": message,
                "internal_message": internal or message,
                "stack_trace": "".join(traceback.format_exception(error)),
                "failure_type": failure.value,
            },
        },
    }
