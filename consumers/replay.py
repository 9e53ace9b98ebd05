"""Replay: re-run a window of the events stream through the consumer's pipeline (decode, enrichment
with today's rules and data, rows) into ClickHouse or a JSON-lines file.

The window is read with an ephemeral, unacknowledged consumer, so the live durable consumer is not
disturbed and nothing is removed from the stream. The end is fixed when the replay starts (the
stream's last sequence then, or `to_seq`/`until`), so a replay finishes under live traffic.

Idempotent within a run: a ClickHouse batch carries a de-duplication token derived from the run's
identity and its stream sequences (prefixed `replay:` so that it never collides with the live
consumer's tokens), and rows that land twice collapse on `message_id` in the ReplacingMergeTree.
Each run has its own identity, so replaying a window again (after a rule or GeoIP change) stores
the re-derived rows instead of being dropped by ClickHouse as a repeat. Resumable: after each batch
is written a checkpoint records the run's identity and the next sequence to read (and, for a file,
its length then); a resumed replay starts there under the same identity, cutting a file back to
that length, and the batches it forms again are the same (same tokens: no doubles).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
from clickhouse_connect.driver.client import Client as ClickHouseClient
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from headwater.core.migrations import apply_migrations
from headwater.core.projects.project import database_name
from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.envelope import EnvelopeError
from headwater.core.wire.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, events_subject, project_of_subject
from headwater.privacy.tombstones import Tombstones

from .collecting import TombstonesOf, no_tombstones
from .enrich import Enricher
from .processing import ANONYMOUS_ID, USER_ID, HashKeyOf
from .pull import PipelinedPull
from .rows import COLUMNS, Row, envelope_rows
from .wire import read_envelope
from .writer import ClickHouseWriter, deduplication_token

DEFAULT_BATCH_ROWS = 10_000


class ReplayError(Exception):
    """A replay that cannot start or go on (bad window, foreign checkpoint)."""


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """Which messages: one project's subject (or all), bounded by time and/or stream sequence."""

    project: str | None  # None: every project
    since: datetime | None = None
    until: datetime | None = None
    from_seq: int | None = None
    to_seq: int | None = None

    @property
    def subject(self) -> str:
        return events_subject(self.project) if self.project else EVENTS_SUBJECTS

    def check(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ReplayError("--since is after --until")
        if self.from_seq and self.to_seq and self.from_seq > self.to_seq:
            raise ReplayError("--from-seq is after --to-seq")

    def describe(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
        }


class ReplaySink(Protocol):
    """Where replayed rows go. `write` is called in a worker thread and returns once they are
    durable (ClickHouse accepted them / the file is fsynced)."""

    name: str

    def write(self, rows: dict[str, list[Row]], sequences: list[int], run_id: str) -> None: ...

    def position(self) -> int | None:
        """What a checkpoint must remember to resume this sink (a file's length); None: nothing."""
        ...

    def resume_at(self, position: int | None) -> None: ...

    def close(self) -> None: ...


class ClickHouseSink:
    """Rows into each project's `events` table (created by its migrations when missing)."""

    name = "clickhouse"

    def __init__(self, client: ClickHouseClient) -> None:
        self._client = client
        self._writer = ClickHouseWriter(client)
        self._migrated: set[str] = set()

    def write(self, rows: dict[str, list[Row]], sequences: list[int], run_id: str) -> None:
        for project_id, project_rows in rows.items():
            if project_id not in self._migrated:
                apply_migrations(self._client, database_name(project_id))
                self._migrated.add(project_id)
            token = f"replay:{run_id}:" + deduplication_token(project_id, sequences)
            self._writer.insert(project_id, project_rows, token)

    def position(self) -> int | None:
        return None

    def resume_at(self, position: int | None) -> None:
        pass

    def close(self) -> None:
        pass


def _json_default(value: object) -> object:
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class JsonLinesSink:
    """One JSON object per event: the table's columns (enriched) plus `project`."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] = path.open("ab")

    def write(self, rows: dict[str, list[Row]], sequences: list[int], run_id: str) -> None:
        lines = []
        for project_id, project_rows in rows.items():
            for row in project_rows:
                record = {"project": project_id, **dict(zip(COLUMNS, row, strict=True))}
                lines.append(orjson.dumps(record, default=_json_default))
        if lines:
            self._file.write(b"\n".join(lines) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def position(self) -> int | None:
        return self._file.tell()

    def resume_at(self, position: int | None) -> None:
        """Drop what was written after the checkpoint (a batch cut short by the interruption)."""
        if position is not None:
            self._file.truncate(position)
            self._file.seek(position)

    def close(self) -> None:
        self._file.close()


@dataclass
class Checkpoint:
    """Progress of one replay, saved after each batch is durable."""

    scope: dict[str, Any]
    next_seq: int
    stop_seq: int
    messages: int = 0
    events: int = 0
    skipped: int = 0
    position: int | None = None
    # The run's identity in its de-duplication tokens ("" in checkpoints written before it existed).
    run_id: str = ""

    def save(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)  # atomic: a crash leaves the old or the new checkpoint

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ReplayError(
                f"checkpoint {path} is unreadable ({exc}); remove it or use --restart"
            ) from None


@dataclass
class ReplayProgress:
    messages: int = 0
    events: int = 0
    skipped: int = 0  # messages that are not readable envelopes (left for `headwater dlq`)
    suppressed: int = 0  # events of deleted data subjects (tombstones), not written
    total_messages: int = 0  # in the window when it started
    started: float = field(default_factory=time.monotonic)
    resumed_from: int | None = None

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.events / elapsed if elapsed > 0 else 0.0


SettingsOf = Callable[[str], ProjectSettings]
ProgressCallback = Callable[[ReplayProgress], None]


class Replay:
    def __init__(
        self,
        nats: NatsClient,
        window: ReplayWindow,
        sink: ReplaySink | None,  # None: a dry run (count only)
        enricher: Enricher,
        settings_of: SettingsOf,
        checkpoint_path: Path | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        on_progress: ProgressCallback | None = None,
        tombstones_of: TombstonesOf | None = None,
        hash_key_of: HashKeyOf | None = None,
    ) -> None:
        window.check()
        # Data subjects deleted since the events were received: their events are not written again.
        # Asked per envelope (a live view: a deletion that lands during the replay counts from then).
        self._tombstones_of: TombstonesOf = tombstones_of or no_tombstones
        self._nats = nats
        self._js = nats.jetstream()
        self._window = window
        self._sink = sink
        self._enricher = enricher
        self._settings_of = settings_of
        # Each project's key for its rules' `hash` action: today's rules apply, with the same key,
        # so a replayed event hashes as it did when it was first stored.
        self._hash_key_of = hash_key_of or (lambda _project: None)
        self._checkpoint_path = checkpoint_path
        self._batch_rows = batch_rows
        self._on_progress = on_progress or (lambda _progress: None)
        self.progress = ReplayProgress()
        self.run_id = uuid.uuid4().hex  # a resumed run takes its checkpoint's

    def _scope(self) -> dict[str, Any]:
        target = self._sink.name if self._sink else "dry-run"
        return {**self._window.describe(), "to": target, "batch_rows": self._batch_rows}

    async def run(self) -> ReplayProgress:
        checkpoint = self._resume_point()
        if checkpoint is not None:
            self.run_id = checkpoint.run_id
            self.progress.resumed_from = checkpoint.next_seq
            self.progress.messages, self.progress.events = checkpoint.messages, checkpoint.events
            self.progress.skipped = checkpoint.skipped
            if self._sink is not None:
                self._sink.resume_at(checkpoint.position)
        stream = await self._js.stream_info(EVENTS_STREAM)
        stop_seq = checkpoint.stop_seq if checkpoint else int(stream.state.last_seq)
        if self._window.to_seq is not None:
            stop_seq = min(stop_seq, self._window.to_seq)
        consumer = await self._js.add_consumer(EVENTS_STREAM, self._consumer_config(checkpoint))
        name = consumer.name
        self.progress.total_messages = self.progress.messages + int(consumer.num_pending or 0)
        self._on_progress(self.progress)
        try:
            if consumer.num_pending:
                await self._read(name, stop_seq, checkpoint)
        finally:
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(EVENTS_STREAM, name)
        if self._checkpoint_path is not None and self._sink is not None:
            self._checkpoint_path.unlink(missing_ok=True)  # finished: nothing to resume
        return self.progress

    def _resume_point(self) -> Checkpoint | None:
        if self._checkpoint_path is None or self._sink is None:
            return None
        checkpoint = Checkpoint.load(self._checkpoint_path)
        if checkpoint is not None and checkpoint.scope != self._scope():
            raise ReplayError(
                f"checkpoint {self._checkpoint_path} belongs to another replay ({checkpoint.scope}); "
                "use --restart to start this one afresh, or another --checkpoint"
            )
        return checkpoint

    def _consumer_config(self, checkpoint: Checkpoint | None) -> ConsumerConfig:
        config = ConsumerConfig(
            filter_subject=self._window.subject,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,  # removed by the server if this process dies
            mem_storage=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        start_seq = checkpoint.next_seq if checkpoint else self._window.from_seq
        if start_seq is not None:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start_seq
        elif self._window.since is not None:
            config.deliver_policy, config.opt_start_time = DeliverPolicy.BY_START_TIME, self._window.since
        return config

    async def _read(self, consumer: str, stop_seq: int, checkpoint: Checkpoint | None) -> None:
        pull = PipelinedPull(self._nats, EVENTS_STREAM, consumer, batch=500)
        await pull.start()
        pending: dict[str, list[Row]] = {}
        sequences: list[int] = []
        buffered = 0
        state = checkpoint or Checkpoint(
            scope=self._scope(), next_seq=1, stop_seq=stop_seq, run_id=self.run_id
        )
        try:
            done = False
            while not done:
                messages = await pull.take(500, timeout=10.0)
                if not messages:
                    raise ReplayError("no message from the stream for 10 s; is NATS reachable?")
                for message in messages:
                    seq, at = message.metadata.sequence.stream, message.metadata.timestamp
                    if seq > stop_seq or (self._window.until and at > self._window.until):
                        done = True
                        break
                    buffered += self._add(message, pending)
                    sequences.append(seq)
                    state.next_seq = seq + 1
                    done = seq >= stop_seq or message.metadata.num_pending == 0
                    # Cut batches by row count alone, message by message, so that a resumed
                    # replay forms the same batches (and tokens) as the interrupted one.
                    if buffered >= self._batch_rows or done:
                        await self._flush(pending, sequences, state)
                        pending, sequences, buffered = {}, [], 0
                    if done:
                        break
                self._on_progress(self.progress)
            if sequences:
                await self._flush(pending, sequences, state)
            self._on_progress(self.progress)
        finally:
            await pull.stop()

    def _add(self, message: Msg, pending: dict[str, list[Row]]) -> int:
        self.progress.messages += 1
        try:
            # As the consumer: an event that cannot become a row is left out, the others are rows.
            envelope, _unreadable = read_envelope(message.data)
            if envelope.project != project_of_subject(message.subject):
                raise EnvelopeError(f"envelope of project {envelope.project!r} on {message.subject}")
            project = envelope.project
            rows = envelope_rows(
                envelope, self._enricher, self._settings_of(project), [], self._hash_key_of(project)
            )
        except (EnvelopeError, ValueError):
            self.progress.skipped += 1
            return 0
        digests = self._tombstones_of(project)
        if digests:
            rows, suppressed = Tombstones(project, digests).without_matches(rows, USER_ID, ANONYMOUS_ID)
            self.progress.suppressed += suppressed
        self.progress.events += len(rows)
        if self._sink is not None:
            pending.setdefault(envelope.project, []).extend(rows)
        return len(rows)

    async def _flush(self, pending: dict[str, list[Row]], sequences: list[int], state: Checkpoint) -> None:
        if self._sink is None:
            return
        if pending:
            await asyncio.to_thread(self._sink.write, pending, sequences, self.run_id)
        state.messages, state.events = self.progress.messages, self.progress.events
        state.skipped, state.position = self.progress.skipped, self._sink.position()
        if self._checkpoint_path is not None:
            state.save(self._checkpoint_path)


def default_checkpoint_path(window: ReplayWindow, target: str) -> Path:
    """One file per distinct replay, in the current directory."""
    digest = hashlib.sha256(json.dumps([window.describe(), target], sort_keys=True).encode()).hexdigest()[:10]
    return Path(f".headwater-replay-{window.project or 'all'}-{digest}.json")


def parse_when(value: str) -> datetime:
    """An ISO-8601 time (UTC when it names no zone) or a relative one: `30m`, `12h`, `7d` ago."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.fromtimestamp(time.time() - int(value[:-1]) * units[value[-1]], UTC)
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
