"""Collecting: a processed group of messages into the batch. Messages that cannot become rows are
dead-lettered (whole, or event by event), a purged project's leftovers are acked without being
stored (consumers/leftovers.py), and the rest join their project's batch with their block."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.envelope import EnvelopeError
from headwater.privacy.tombstones import NO_TOMBSTONES

from .batching import Batch
from .deadletter import DeadLetters
from .metrics import ConsumerMetrics
from .processing import Decoded, Item, Processed, Processor, Refused, TombstoneDigests, WorkerLost

log = logging.getLogger(__name__)

# A project's settings (batching span, anonymisation), from its live config.
SettingsOf = Callable[[str], ProjectSettings]
# Why a message of a project, received at a time (epoch seconds), is a purged project's leftover to
# discard (consumers/leftovers.py); None: store it.
LeftoverOf = Callable[[str, float | None], str | None]
# A project's tombstone digests (empty: none), from the live tombstone registry.
TombstonesOf = Callable[[str], frozenset[bytes]]


def no_tombstones(_project: str) -> frozenset[bytes]:
    """The TombstonesOf of a process given no registry to follow: nobody is deleted."""
    return NO_TOMBSTONES


async def process_with_tombstones(
    processor: Processor,
    items: Sequence[Item],
    settings: Mapping[str, ProjectSettings],
    tombstones: TombstoneDigests,
) -> Processed:
    """`processor.process`, given the tombstones only when there are some (the common case)."""
    if tombstones:
        return await processor.process(items, settings, tombstones)
    return await processor.process(items, settings)


def tombstones_for(projects: Iterable[str], tombstones_of: TombstonesOf) -> TombstoneDigests:
    """The tombstones of those of `projects` that have some (usually none: an empty mapping)."""
    found = {project: tombstones_of(project) for project in projects}
    return {project: digests for project, digests in found.items() if digests}


@dataclass(eq=False)
class Collector:
    processor: Processor  # to process again the messages kept when leftovers were discarded
    settings_of: SettingsOf
    leftover_of: LeftoverOf
    dead_letters: DeadLetters
    metrics: ConsumerMetrics
    tombstones_of: TombstonesOf = no_tombstones
    leftovers_discarded: int = 0

    async def add(self, batch: Batch, messages: list[Msg], processed: Processed) -> None:
        """Add processed messages to the batch; dead-letter those that cannot become rows."""
        of_project: dict[str, tuple[list[Msg], list[Decoded]]] = {}
        for message, outcome in zip(messages, processed.outcomes, strict=True):
            if isinstance(outcome, Refused):
                await self.dead_letters.message(message, EnvelopeError(outcome.error))
                continue
            await self.dead_letters.events(message, outcome)
            if outcome.suppressed:
                self.metrics.events_suppressed.labels(outcome.project).inc(outcome.suppressed)
            project_messages, outcomes = of_project.setdefault(outcome.project, ([], []))
            project_messages.append(message)
            outcomes.append(outcome)
        for project_id, (project_messages, outcomes) in of_project.items():
            block = processed.blocks.get(project_id, b"")
            kept = await self._discard_leftovers(project_id, project_messages, outcomes)
            if kept is None:
                continue
            if len(kept[0]) < len(project_messages):  # some discarded: the block without them
                try:
                    again = await process_with_tombstones(
                        self.processor,
                        [(m.subject, m.data) for m in kept[0]],
                        {project_id: self.settings_of(project_id)},
                        tombstones_for([project_id], self.tombstones_of),
                    )
                except WorkerLost:
                    for message in kept[0]:
                        with contextlib.suppress(NatsError):
                            await message.nak()
                    continue
                block = again.blocks.get(project_id, b"")
            span = self.settings_of(project_id).batching.span_seconds
            batch.add(project_id, span, kept[0], kept[1], block)

    async def _discard_leftovers(
        self, project_id: str, messages: list[Msg], outcomes: list[Decoded]
    ) -> tuple[list[Msg], list[Decoded]] | None:
        """Acknowledge (without storing) the messages a purged project left behind; the others,
        or None when none is left."""
        kept: tuple[list[Msg], list[Decoded]] = ([], [])
        for message, outcome in zip(messages, outcomes, strict=True):
            reason = self.leftover_of(project_id, outcome.received_at)
            if reason is None:
                kept[0].append(message)
                kept[1].append(outcome)
                continue
            log.warning("discarding message %s: %s", message.metadata.sequence.stream, reason)
            self.leftovers_discarded += 1
            self.metrics.leftovers_discarded.labels(project_id).inc()
            await message.ack()
        return kept if kept[0] else None
