"""Batching: what the consumer holds per project until the project's batching span ends or the
rows over all projects reach `max_batch_rows`. Nothing here talks to NATS or ClickHouse."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from .processing import Decoded


@dataclass
class ProjectBatch:
    due: float  # monotonic time by which the project's batching span says to write
    messages: list[Msg] = field(default_factory=list)
    blocks: list[bytes] = field(default_factory=list)  # Native blocks of the messages' rows
    rows: int = 0
    received_at: list[float] = field(default_factory=list)  # per message with rows (freshness)
    dropped: dict[str, int] = field(default_factory=dict)  # bots' events not stored, per reason

    def add(self, messages: list[Msg], outcomes: list[Decoded], block: bytes) -> int:
        """Add processed messages and their block; returns how many rows that was."""
        self.messages += messages
        if block:
            self.blocks.append(block)
        rows = sum(outcome.rows for outcome in outcomes)
        self.rows += rows
        self.received_at += [o.received_at for o in outcomes if o.received_at is not None]
        for outcome in outcomes:
            for reason, count in outcome.dropped:
                self.dropped[reason] = self.dropped.get(reason, 0) + count
        return rows


@dataclass
class Batch:
    """What the consumer holds, per project, until a project's span ends or the batch is full."""

    projects: dict[str, ProjectBatch] = field(default_factory=dict)
    rows: int = 0

    def add(
        self, project_id: str, span_seconds: float, messages: list[Msg], outcomes: list[Decoded], block: bytes
    ) -> None:
        batch = self.projects.get(project_id)
        if batch is None:
            batch = self.projects[project_id] = ProjectBatch(due=time.monotonic() + span_seconds)
        self.rows += batch.add(messages, outcomes, block)

    def next_due(self) -> float | None:
        return min((b.due for b in self.projects.values()), default=None)

    def take(self, full: bool) -> dict[str, ProjectBatch]:
        """The project batches to write now: all of them when the batch is full, else those due."""
        now = time.monotonic()
        taken = {p: b for p, b in self.projects.items() if full or b.due <= now}
        for project_id, batch in taken.items():
            del self.projects[project_id]
            self.rows -= batch.rows
        return taken

    def messages(self) -> list[Msg]:
        """Every message held, of every project."""
        return [m for batch in self.projects.values() for m in batch.messages]
