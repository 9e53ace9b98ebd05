"""Messages → one Native block per project: decode, enrich, encode. The consume loop's CPU work,
done either in the consumer's own process or in worker processes.

Why worker processes: the consume loop is bound by one interpreter's lock. Building rows (~8-12 µs
an event) and encoding them (~6 µs) took most of it, while the process also pulls, acks and drives
the embedded ClickHouse engine. Workers do the first two on other cores and hand back bytes; the
consumer's process keeps only what must stay with the NATS connection and the ClickHouse client
(pull, insert, ack). docs/benchmarks.md#consumer has the measurements.

A worker holds no state that matters: nothing is acked until the consumer inserted what a worker
returned, so a worker that dies only costs a redelivery (its messages are negatively acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from clickhouse_connect.driver import options as clickhouse_options

from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.envelope import EnvelopeError
from headwater.core.wire.subjects import project_of_subject
from headwater.privacy.tombstones import Tombstones

from .blocks import encode_rows
from .enrich import BotFilter, Enricher, GeoLookup, read_datacentre_ranges, read_referrer_spam
from .rows import COLUMNS, DEFAULT_SETTINGS, Row, envelope_rows
from .settings import ConsumerSettings
from .tombstone_files import TombstoneFileReader, TombstoneFiles, TombstoneFileWriter
from .wire import BadEvent, event_dead_letters, read_envelope

log = logging.getLogger(__name__)

RECEIVED_AT = COLUMNS.index("received_at")
USER_ID, ANONYMOUS_ID = COLUMNS.index("user_id"), COLUMNS.index("anonymous_id")

# (subject, data) of one message: what a worker needs of it.
Item = tuple[str, bytes]
# Per project, the digests of its data subjects' tombstones (privacy/tombstones.py); a project
# with none is absent: its events are not even hashed.
TombstoneDigests = Mapping[str, frozenset[bytes]]
# A project's key for the `hash` action of its anonymisation rules (None: it has none); processors
# look the keys up for the projects of each group and hand them to the work with the settings.
HashKeyOf = Callable[[str], bytes | None]


def _no_hash_key(_project: str) -> bytes | None:
    return None


def _hash_keys(hash_key_of: HashKeyOf, settings: Mapping[str, ProjectSettings]) -> dict[str, bytes]:
    """The keys of the projects whose rules hash (the others need none)."""
    keys = {}
    for project, project_settings in settings.items():
        if any(rule.action == "hash" for rule in project_settings.anonymisation.rules):
            key = hash_key_of(project)
            if key is not None:
                keys[project] = key
    return keys


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message whose rows are in its project's block."""

    project: str
    rows: int
    received_at: float | None  # when the edge received it (epoch seconds); None: no rows
    # Its events that cannot become rows, each as a dead letter of its own (place in the
    # envelope's events, envelope of that event, error), so the valid events beside them are stored.
    dead_letters: tuple[tuple[int, bytes, str], ...] = ()
    suppressed: int = 0  # its events left out because a tombstone names their person
    # Bots' events not stored under the project's `bots.mode` drop: (reason, how many).
    dropped: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that cannot become rows (undecodable, wrong project, unreadable, unencodable)."""

    error: str


@dataclass(slots=True)
class Processed:
    outcomes: list[Decoded | Refused]  # one per message, in order
    blocks: dict[str, bytes] = field(default_factory=dict)  # per project: its messages' rows


@dataclass(slots=True)
class _Unencoded:
    """A project's messages whose rows are not encoded yet: (outcome index, rows) of each."""

    parts: list[tuple[int, list[Row]]] = field(default_factory=list)
    rows: int = 0


# A project's rows are encoded once this many are pending, so a group of large batches (500
# messages of 100 events: 50,000 rows) is never held as Python objects all at once.
ENCODE_ROWS = 4096


def process(
    enricher: Enricher,
    items: Sequence[Item],
    settings: Mapping[str, ProjectSettings],
    *,
    hash_keys: Mapping[str, bytes] | None = None,
    tombstones: TombstoneDigests | None = None,
) -> Processed:
    """Never raises for what a message holds: each bad one becomes a `Refused` outcome. Events of
    a data subject with a tombstone become no row (counted in their outcome's `suppressed`)."""
    outcomes: list[Decoded | Refused] = []
    matchers: dict[str, Tombstones] = {}
    for project, digests in (tombstones or {}).items():
        if digests:
            matchers[project] = Tombstones(project, digests)
    pending: dict[str, _Unencoded] = {}
    blocks: dict[str, list[bytes]] = {}
    for subject, data in items:
        project = project_of_subject(subject)
        try:
            envelope, unreadable = read_envelope(data)
            if envelope.project != project:
                raise EnvelopeError(f"envelope of project {envelope.project!r} on {subject}")
            unbuilt: list[BadEvent] = []
            dropped: dict[str, int] = {}
            project_settings = settings.get(project, DEFAULT_SETTINGS)
            key = hash_keys.get(project) if hash_keys else None
            rows = envelope_rows(envelope, enricher, project_settings, unbuilt, hash_key=key, dropped=dropped)
        except (EnvelopeError, ValueError) as exc:
            outcomes.append(Refused(str(exc)))
            continue
        dead = _dead_letters(data, len(envelope.events), unreadable, unbuilt) if unreadable or unbuilt else ()
        received = rows[0][RECEIVED_AT].timestamp() if rows else None
        suppressed = 0
        matcher = matchers.get(project)
        if matcher is not None:
            rows, suppressed = matcher.without_matches(rows, USER_ID, ANONYMOUS_ID)
        unencoded = pending.setdefault(project, _Unencoded())
        unencoded.parts.append((len(outcomes), rows))
        unencoded.rows += len(rows)
        outcomes.append(
            Decoded(project, len(rows), received, dead, suppressed=suppressed, dropped=tuple(dropped.items()))
        )
        if unencoded.rows >= ENCODE_ROWS:
            blocks.setdefault(project, []).append(_encode(unencoded.parts, outcomes))
            del pending[project]
    for project, unencoded in pending.items():
        blocks.setdefault(project, []).append(_encode(unencoded.parts, outcomes))
    return Processed(outcomes, {project: b"".join(chunks) for project, chunks in blocks.items()})


def _dead_letters(
    data: bytes, read: int, unreadable: list[BadEvent], unbuilt: list[BadEvent]
) -> tuple[tuple[int, bytes, str], ...]:
    """Dead letters of the events that could not be read and of the `read` others those that
    could not become rows (whose places count only the events that were read)."""
    skipped = {bad.index for bad in unreadable}
    places = [i for i in range(len(skipped) + read) if i not in skipped]
    bad = sorted(unreadable + [BadEvent(places[b.index], b.error) for b in unbuilt], key=lambda b: b.index)
    letters = event_dead_letters(data, bad)
    return tuple(
        (b.index, letter, f"events[{b.index}]: {b.error}") for letter, b in zip(letters, bad, strict=True)
    )


def _encode(parts: list[tuple[int, list[Row]]], outcomes: list[Decoded | Refused]) -> bytes:
    """One block for all the rows; when a value cannot be encoded, a block per message instead, and
    the messages that cannot be encoded alone are refused."""
    try:
        return encode_rows([row for _, rows in parts for row in rows])
    except Exception:  # whatever clickhouse-connect raises for a value; isolated below
        log.warning("a value cannot be encoded; encoding message by message", exc_info=True)
    blocks = []
    for index, rows in parts:
        try:
            blocks.append(encode_rows(rows))
        except Exception as exc:
            outcomes[index] = Refused(f"a value cannot be stored: {exc!r}")
    return b"".join(blocks)


class Processor(Protocol):
    capacity: int  # groups of messages it works on at once

    async def process(
        self,
        items: Sequence[Item],
        settings: Mapping[str, ProjectSettings],
        tombstones: TombstoneDigests | None = None,
    ) -> Processed:
        """Raises WorkerLost when the work was lost with a worker process."""
        ...

    async def warm_up(self) -> None:
        """Be ready to process without a start-up delay on the first messages."""
        ...

    async def close(self) -> None: ...


class WorkerLost(Exception):
    """A worker process died (killed, out of memory, crashed) before it returned its work."""


class InlineProcessor:
    """In the consumer's own process (`--consumer-workers 0`)."""

    capacity = 1

    def __init__(self, enricher: Enricher, hash_key_of: HashKeyOf = _no_hash_key) -> None:
        self._enricher = enricher
        self._hash_key_of = hash_key_of

    async def process(
        self,
        items: Sequence[Item],
        settings: Mapping[str, ProjectSettings],
        tombstones: TombstoneDigests | None = None,
    ) -> Processed:
        keys = _hash_keys(self._hash_key_of, settings)
        return process(self._enricher, items, settings, hash_keys=keys, tombstones=tombstones)

    async def warm_up(self) -> None:
        pass

    async def close(self) -> None:
        pass


# The enricher of a worker process (its caches live as long as the worker), and the tombstones it
# has read (each project's latest version: consumers/tombstone_files.py).
_worker_enricher: Enricher | None = None
_worker_tombstones = TombstoneFileReader()


def bot_filter(datacentre_ranges: Path | None, referrer_spam_file: Path | None) -> BotFilter:
    """The bot filter with the operator's files, read once (OSError, or ValueError naming the bad
    line, when one cannot be used)."""
    return BotFilter(
        datacentre=read_datacentre_ranges(datacentre_ranges) if datacentre_ranges else None,
        referrer_spam=read_referrer_spam(referrer_spam_file) if referrer_spam_file else None,
    )


# The operator's bot-filter files: (data-centre ranges, referrer spam), each None when not given.
BotFiles = tuple[Path | None, Path | None]


def _start_worker(geoip_database: Path | None, consumer_pid: int, bot_files: BotFiles = (None, None)) -> None:
    global _worker_enricher
    # The consumer stops its workers once it has finished or handed back what they process: a
    # Ctrl-C, which the terminal sends to the whole process group, must not end a worker in the
    # middle of a batch. SIGTERM keeps its default: it is how a broken pool ends its survivors
    # (ignored, they outlived the pool and hung the consumer's exit), and the shipped systemd
    # unit (KillMode=mixed) sends it to the consumer alone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(consumer_pid,), name="parent-watch", daemon=True).start()
    # clickhouse-connect imports pandas and numpy on its first insert to see whether it was handed
    # a DataFrame or an array (~80 MB and ~1 s per process); a worker hands it lists only. None is
    # what the library records when they are not installed.
    clickhouse_options.pd = clickhouse_options.np = None
    _worker_enricher = Enricher(GeoLookup(geoip_database), bots=bot_filter(*bot_files))
    _ = _worker_enricher.bots.crawlers  # compiled now, not on the first messages


def _exit_with(consumer_pid: int, interval: float = 0.5) -> None:
    """End this worker once the consumer's process is gone: a consumer killed outright (SIGKILL,
    out of memory) cannot stop its workers, and they would otherwise wait for work forever."""
    while os.getppid() == consumer_pid:
        time.sleep(interval)
    os._exit(1)


def _process_in_worker(
    items: Sequence[Item],
    settings: Mapping[str, ProjectSettings],
    hash_keys: Mapping[str, bytes],
    tombstone_files: TombstoneFiles | None,
) -> Processed:
    assert _worker_enricher is not None, "worker started without its initializer"
    tombstones = _worker_tombstones.digests(tombstone_files) if tombstone_files else None
    return process(_worker_enricher, items, settings, hash_keys=hash_keys, tombstones=tombstones)


class WorkerPool:
    """`workers` processes, started fresh (spawn: the consumer's process has threads, the embedded
    engine's among them, which a fork would copy half-way), each with its own Enricher."""

    def __init__(
        self,
        workers: int,
        geoip_database: Path | None,
        hash_key_of: HashKeyOf = _no_hash_key,
        bot_files: BotFiles = (None, None),
    ) -> None:
        self.workers = self.capacity = workers
        self._geoip_database = geoip_database
        self._hash_key_of = hash_key_of
        self._bot_files = bot_files
        self._tombstone_files = TombstoneFileWriter()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._geoip_database, os.getpid(), self._bot_files),
        )

    async def process(
        self,
        items: Sequence[Item],
        settings: Mapping[str, ProjectSettings],
        tombstones: TombstoneDigests | None = None,
    ) -> Processed:
        pool = self._pool
        # The tombstones travel as the name of a file per version (written once), not pickled with
        # every group; the file is kept until no group in flight names it.
        files = self._tombstone_files.files(tombstones or {})
        try:
            try:
                # The keys travel with each group, like the settings: a worker keeps none of them.
                keys = _hash_keys(self._hash_key_of, settings)
                future: Future[Processed] = pool.submit(
                    _process_in_worker, items, settings, keys, files or None
                )
            except BrokenProcessPool:
                self._replace(pool)
                raise WorkerLost("a worker process died") from None
            try:
                return await self._outcome(pool, future)
            except BrokenProcessPool as exc:
                self._replace(pool)
                raise WorkerLost("a worker process died") from exc
        finally:
            self._tombstone_files.release(files)

    async def _outcome(self, pool: ProcessPoolExecutor, future: Future[Processed]) -> Processed:
        """`future`'s result, unless a worker of `pool` died and the pool did not fail its work.

        CPython's pool (3.11 at least) waits forever for a result that a worker was killed half-way
        through writing: its manager thread blocks reading the rest of the message, so it never
        sees the death and never fails the futures, and the consumer would hold their messages
        forever. A dead worker the pool has not answered for within STUCK_POOL_GRACE_SECONDS is
        taken for that."""
        waiting = asyncio.wrap_future(future)
        death_seen: float | None = None
        while True:
            try:
                done, _ = await asyncio.wait((waiting,), timeout=POOL_WATCH_INTERVAL_SECONDS)
            except asyncio.CancelledError:
                waiting.cancel()  # the work is not wanted any more
                raise
            if done:
                return waiting.result()
            if death_seen is None:
                death_seen = time.monotonic() if _has_a_dead_worker(pool) else None
            elif time.monotonic() - death_seen >= STUCK_POOL_GRACE_SECONDS:
                # Not cancelled: the freed manager thread fails it, and cancelling a future it still
                # holds as pending would crash that thread. Its outcome is not wanted.
                waiting.add_done_callback(lambda done: done.cancelled() or done.exception())
                self._replace(pool)
                raise WorkerLost("a worker process died and its pool stalled on it")

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """A new pool for the one a dead worker broke (once, however many of its tasks failed)."""
        if self._pool is broken:
            log.error("a consumer worker process died; starting %d new ones", self.workers)
            _unblock(broken)
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    async def warm_up(self) -> None:
        """Start every worker now rather than on the first messages (each takes ~1 s to import and
        load the GeoIP data)."""
        await asyncio.gather(*(self.process([], {}) for _ in range(self.workers)))

    def pids(self) -> list[int]:
        return [process.pid for process in _processes(self._pool) if process.pid]

    async def close(self) -> None:
        pool = self._pool
        if _has_a_dead_worker(pool):
            _unblock(pool)
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        self._tombstone_files.close()


# How often a wait on a worker checks that the pool's workers live, and how long a dead worker may
# go unanswered by its pool (which normally fails its work within milliseconds) before the pool is
# taken for stalled.
POOL_WATCH_INTERVAL_SECONDS = 0.25
STUCK_POOL_GRACE_SECONDS = 2.0


def _processes(pool: ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    return list((pool._processes or {}).values())


def _has_a_dead_worker(pool: ProcessPoolExecutor) -> bool:
    """Whether a worker of `pool` has ended; its sentinel tells without reaping it (the pool's
    manager thread does that)."""
    sentinels = [process.sentinel for process in _processes(pool)]
    return bool(sentinels) and bool(multiprocessing.connection.wait(sentinels, timeout=0))


def _unblock(pool: ProcessPoolExecutor) -> None:
    """Free the manager thread of a pool given up on: end its workers, then close the consumer's
    copy of the results pipe's writing end. With every writer gone, a read of a half-written result
    ends (EOFError), the manager fails the pool's remaining futures and its thread exits, so it
    does not hold up the interpreter's exit either."""
    for process in _processes(pool):
        process.kill()
    results: multiprocessing.queues.SimpleQueue[object] | None = pool._result_queue
    if results is not None:  # None once the pool was shut down
        results._writer.close()  # type: ignore[attr-defined]


def start_processor(settings: ConsumerSettings, hash_key_of: HashKeyOf = _no_hash_key) -> Processor:
    """The processor `settings` ask for: worker processes, or the consumer's own (`workers=0`)."""
    bot_files = settings.bot_files()
    bots = bot_filter(*bot_files)  # here too with workers: a file that cannot be used stops the start
    if settings.worker_count() == 0:
        return InlineProcessor(Enricher(GeoLookup(settings.geoip_path()), bots=bots), hash_key_of)
    return WorkerPool(settings.worker_count(), settings.geoip_path(), hash_key_of, bot_files)
