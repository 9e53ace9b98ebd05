"""`write`: a source's messages in, records to the loader, each state echoed once it is durable.

The loop, in the order the messages come:

- RECORD: handed to the loader (with the sync's table version when its stream replaces rows);
- STATE: `loader.save_state` (which flushes first), then the state goes back out on stdout;
- TRACE of a stream's status: COMPLETE ends an overwrite of that stream (`activate_version`);
- anything else (LOG, other traces) is ignored.

At the end of the input the loader is flushed, and a replacing stream that no status message
spoke of is activated too: a bare pipe (`source read | destination write`) sends no statuses, and
its end is the end of the sync. A stream reported INCOMPLETE keeps its older rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from headwater.loaders.loader import ImportLoader

from .catalog import StreamPlan
from .messages import ConfigError, IncomingMessage, RecordMessage, decode_message, encode, log_message
from .states import StateBook

MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def sync_table_version() -> int:
    """The table version of this sync's overwritten streams: milliseconds since the epoch, as
    Singer taps version full-table syncs, so a later sync always supersedes an earlier one."""
    return time.time_ns() // 1_000_000


def read_lines(source: BinaryIO, limit: int = MAX_MESSAGE_BYTES) -> Iterator[bytes]:
    """The non-blank lines of `source`, each at most `limit` bytes."""
    while line := source.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            raise ConfigError(f"an input message is over {limit} bytes")
        if line.strip():
            yield line


class Writer:
    def __init__(
        self,
        loader: ImportLoader,
        plans: Mapping[str, StreamPlan],
        emit: Callable[[dict[str, Any]], None],
        table_version: int,
    ) -> None:
        self._loader = loader
        self._plans = plans
        self._emit = emit
        self._version = table_version
        self._book = StateBook()
        self._statuses: dict[str, str] = {}
        self.records: dict[str, int] = dict.fromkeys(plans, 0)
        self.states = 0
        self.activated: list[str] = []

    def start(self) -> None:
        for plan in self._plans.values():
            self._loader.declare(plan.name, plan.schema, list(plan.key_properties))

    def handle(self, message: IncomingMessage) -> None:
        if message.type == "RECORD":
            if message.record is None:
                raise ConfigError("a RECORD message without its `record`")
            self._record(message.record)
        elif message.type == "STATE":
            if message.state is None:
                raise ConfigError("a STATE message without its `state`")
            self._state(message.state)
        elif message.type == "TRACE" and message.trace is not None and message.trace.stream_status:
            status = message.trace.stream_status
            self._stream_status(status.stream_descriptor.name, status.status)

    def finish(self) -> None:
        self._loader.flush()
        for plan in self._plans.values():
            if plan.replaces_rows and plan.name not in self._statuses:
                self._activate(plan.name)
        self._loader.close()

    def _record(self, record: RecordMessage) -> None:
        plan = self._plans.get(record.stream)
        if plan is None:
            raise ConfigError(f"a record of stream {record.stream!r}, not in the configured catalog")
        self._loader.add(plan.name, record.data, self._version if plan.replaces_rows else None)
        self._book.count_record(record.namespace, record.stream)
        self.records[plan.name] += 1

    def _state(self, state: dict[str, Any]) -> None:
        echoed, whole = self._book.accept(state)
        self._loader.save_state(whole)  # flushes: every record before this state is durable
        self._emit(echoed)
        self.states += 1

    def _stream_status(self, stream: str, status: str) -> None:
        plan = self._plans.get(stream)
        if plan is None or status not in ("COMPLETE", "INCOMPLETE"):
            return
        self._statuses[stream] = status
        if status == "COMPLETE" and plan.replaces_rows:
            self._activate(stream)
        elif status == "INCOMPLETE" and plan.replaces_rows:
            self._emit(log_message("WARN", f"stream {stream!r} is incomplete: its older rows are kept"))

    def _activate(self, stream: str) -> None:
        self._loader.activate_version(stream, self._version)
        self.activated.append(stream)


def write(
    loader: ImportLoader,
    plans: Mapping[str, StreamPlan],
    source: BinaryIO,
    out: BinaryIO,
    table_version: int | None = None,
) -> Writer:
    """Run `write` over `source` to the end; the writer, for its counts."""

    def emit(message: dict[str, Any]) -> None:
        out.write(encode(message))
        out.flush()

    writer = Writer(loader, plans, emit, sync_table_version() if table_version is None else table_version)
    writer.start()
    for line in read_lines(source):
        writer.handle(decode_message(line))
    writer.finish()
    counts = ", ".join(f"{name}: {count}" for name, count in writer.records.items())
    emit(log_message("INFO", f"headwater stored {sum(writer.records.values())} records ({counts})"))
    return writer
