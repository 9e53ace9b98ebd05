"""The public spool: a crash-safe, bounded, on-disk FIFO of envelopes for one edge worker.

    async with Spool(worker_spool_dir(base, "0"), SpoolConfig(max_bytes=10 * 2**30)) as spool:
        key = await spool.append(subject, msg_id, body)   # durable when it returns
        if spool.try_acquire_drain_lock():
            batch = await spool.peek_batch(64)             # leased to this caller
            ...publish, await the JetStream acks...
            await spool.remove([e.key for e in batch])     # or spool.release(keys) on failure

One `Spool` is used from one event loop. All SQLite work runs on the spool's writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from .backend import Timeout
from .capacity import Capacity, DiskUsageFn
from .dirs import DRAIN_LOCK_FILE, make_private_dir
from .errors import (
    DrainLockNotHeld,
    FullReason,
    SpoolClosed,
    SpoolError,
    SpoolFull,
    SpoolUnavailable,
    SpoolWriteError,
)
from .format import SpooledEnvelope, key_time_ns, record_size
from .locks import DirLock
from .store import Counts, ExportRecord, Store
from .writer import AppendJob, GroupWriter

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """Bounds and tuning of one spool directory."""

    max_bytes: int = 1 << 30
    """Most record bytes the spool holds (subject + msg_id + body + 9; SQLite adds overhead)."""
    min_free_bytes: int = 256 << 20
    min_free_ratio: float = 0.05
    """Refuse appends that would leave less than max(ratio * filesystem size, min_free_bytes)."""
    max_batch: int = 32
    """Most envelopes in one group-commit transaction."""
    max_pending: int = 1024
    """Most appends queued for the writer; further appends wait up to `queue_timeout`."""
    queue_timeout: float = 1.0
    disk_check_interval: float = 1.0
    """How stale the free-space sample on the append path may be (each group samples afresh)."""
    sqlite_timeout: float = 10.0
    disk_usage: DiskUsageFn = field(default=shutil.disk_usage, repr=False)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_batch <= 0 or self.max_pending <= 0:
            raise ValueError("max_bytes, max_batch and max_pending must be positive")
        if not 0 <= self.min_free_ratio < 1 or self.min_free_bytes < 0:
            raise ValueError("min_free_ratio must be in [0, 1) and min_free_bytes >= 0")


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot for metrics, /readyz and ``headwater spool status``. Counters are since open."""

    directory: str
    entries: int
    bytes: int
    max_bytes: int
    oldest_age_seconds: float | None
    quarantined: int
    free_disk_bytes: int
    writable: bool
    pending: int
    leased: int
    drain_locked: bool
    appended: int
    drained: int
    rejected: int
    """Appends refused with SpoolFull."""
    failed: int
    """Appends that failed to write (SpoolWriteError)."""
    transactions: int
    """Group-commit transactions (appended / transactions = mean group size)."""
    largest_group: int
    full: FullReason | None = None
    """Why the last append was refused (``max_bytes``, ``disk``), until one is accepted again."""
    opened: bool = True
    """False while the spool could not be opened (its directory or disk failing)."""


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.appended = self.drained = self.rejected = self.failed = 0
        self.transactions = self.largest_group = 0


class Spool:
    def __init__(self, directory: str | Path, config: SpoolConfig | None = None) -> None:
        self.directory = Path(directory)
        self.config = config or SpoolConfig()
        self._capacity = Capacity(
            self.directory,
            max_bytes=self.config.max_bytes,
            min_free_bytes=self.config.min_free_bytes,
            min_free_ratio=self.config.min_free_ratio,
            disk_usage=self.config.disk_usage,
            check_interval=self.config.disk_check_interval,
        )
        self._drain_lock = DirLock(self.directory / DRAIN_LOCK_FILE)
        self._writer: GroupWriter | None = None
        self._store: Store | None = None
        self._slots: asyncio.Semaphore | None = None
        self._counts = Counts(0, 0, None, 0)
        self._counters = _Counters()
        self._leases: set[str] = set()
        self._lease_lock = threading.Lock()
        self._lock_generation = 0
        self._writes_failing = False  # the writer thread's: log a failing disk once

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> Spool:
        """Open (creating if needed) the directory; entries left by an earlier run are kept.

        Raises SpoolUnavailable when the directory or database cannot be opened (a full or failing
        disk); nothing is changed then, and `open` may be called again later."""
        if self._writer is not None:
            return self
        writer = GroupWriter(
            f"spool-writer:{self.directory.name}", self._write_group, self._drop_jobs, self.config.max_batch
        )
        try:
            await writer.call(lambda: make_private_dir(self.directory))
            self._store = await writer.call(lambda: Store(self.directory, self.config.sqlite_timeout))
            await writer.call(self._refresh_counts)
        except BaseException as exc:
            await writer.stop(self._close_store)
            if isinstance(exc, Exception) and not isinstance(exc, SpoolError):
                raise SpoolUnavailable(f"spool {self.directory} cannot be opened: {exc!r}") from exc
            raise
        self._slots = asyncio.Semaphore(self.config.max_pending)
        self._writer = writer
        self._capacity.check_watermark()
        log.info(
            "spool %s open: %d entries, %d bytes, %d quarantined",
            self.directory,
            self._counts.entries,
            self._counts.bytes,
            self._counts.quarantined,
        )
        return self

    async def close(self) -> None:
        """Finish queued appends, close the database, release the drain lock."""
        writer, self._writer = self._writer, None
        self.release_drain_lock()
        if writer is not None:
            await writer.stop(self._close_store)

    async def __aenter__(self) -> Spool:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- appending -----------------------------------------------------------------------------

    async def append(self, subject: str, msg_id: str, body: bytes) -> str:
        """Store one envelope durably; returns its key once the transaction committed (fsynced).

        Raises SpoolFull (nothing stored, retry later) or SpoolWriteError; ValueError for a
        subject or msg_id that does not fit the record format."""
        writer = self._require_open()
        size = record_size(subject, msg_id, body)
        slots = self._slots
        assert slots is not None
        try:
            await self._acquire_slot(slots)
        except SpoolFull:
            self._count(rejected=1)
            raise
        try:
            self._capacity.reserve(size)  # raises SpoolFull before anything is queued
            try:
                return await writer.append(subject, msg_id, body, size)
            except SpoolClosed:
                self._capacity.settle(size, None)  # never queued
                raise
        except SpoolClosed:
            raise
        except SpoolFull:
            self._count(rejected=1)
            raise
        except SpoolError:
            self._count(failed=1)
            raise
        finally:
            slots.release()

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def writable(self) -> bool:
        """True when an append would currently be accepted (not at either bound)."""
        return self._writer is not None and self._capacity.writable()

    # -- draining ------------------------------------------------------------------------------

    def try_acquire_drain_lock(self) -> bool:
        """Take ``<dir>/drain.lock`` (exclusive across processes, non-blocking). Every drainer of
        this directory must hold it; drainers sharing this `Spool` share the lock and the leases."""
        try:
            return self._drain_lock.try_acquire()
        except OSError as exc:
            raise SpoolUnavailable(f"spool {self.directory}: cannot take the drain lock: {exc!r}") from exc

    def release_drain_lock(self) -> None:
        """Give the directory to other drainers; forgets this instance's leases."""
        with self._lease_lock:
            self._lock_generation += 1
            self._leases.clear()
        self._drain_lock.release()

    @property
    def holds_drain_lock(self) -> bool:
        return self._drain_lock.held

    async def peek_batch(self, n: int) -> list[SpooledEnvelope]:
        """Up to `n` oldest envelopes not leased to another drainer of this spool, leased to the
        caller until `remove` or `release`. Corrupt entries are quarantined and skipped."""
        if n <= 0:
            raise ValueError("n must be positive")
        writer = self._require_drainer()
        return await _unavailable_on_io_error(writer.call(lambda: self._peek(n)), self.directory)

    async def remove(self, keys: Iterable[str]) -> int:
        """Delete envelopes (after JetStream acknowledged them) in one transaction; how many.
        Raises SpoolUnavailable when the database cannot change (a full disk); the envelopes stay
        leased to the caller, who `release`s them."""
        writer = self._require_drainer()
        wanted = list(keys)
        return await _unavailable_on_io_error(writer.call(lambda: self._remove(wanted)), self.directory)

    def release(self, keys: Iterable[str]) -> None:
        """Return leased envelopes unremoved (their publish failed): the next peek hands them out
        again, still in order."""
        with self._lease_lock:
            self._leases.difference_update(keys)

    # -- inspecting ----------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        counts, c = self._counts, self._counters
        oldest = None
        if counts.oldest_key is not None:
            try:
                oldest = max(0.0, time.time() - key_time_ns(counts.oldest_key) / 1e9)
            except ValueError:
                oldest = None
        writer = self._writer
        return SpoolStats(
            directory=str(self.directory),
            entries=counts.entries,
            bytes=counts.bytes,
            max_bytes=self.config.max_bytes,
            oldest_age_seconds=oldest,
            quarantined=counts.quarantined,
            free_disk_bytes=self._capacity.free_bytes,
            writable=self.writable(),
            pending=writer.pending if writer is not None else 0,
            leased=len(self._leases),
            drain_locked=self.holds_drain_lock,
            appended=c.appended,
            drained=c.drained,
            rejected=c.rejected,
            failed=c.failed,
            transactions=c.transactions,
            largest_group=c.largest_group,
            full=self._capacity.full_reason,
            opened=writer is not None,
        )

    async def export(self, chunk: int = 256) -> AsyncIterator[ExportRecord]:
        """Every entry oldest first, then the quarantined ones (for ``headwater spool export``).
        Reads only: needs no drain lock and changes nothing."""
        writer = self._require_open()
        store = self._store
        assert store is not None
        records = await writer.call(store.export)
        try:
            while batch := await writer.call(lambda: list(islice(records, chunk))):
                for record in batch:
                    yield record
        finally:
            if self._writer is not None:
                await writer.call(records.close)

    # -- on the writer thread ------------------------------------------------------------------

    def _write_group(self, jobs: list[AppendJob]) -> list[str | BaseException]:
        store = self._store
        assert store is not None
        outcomes: list[str | BaseException] = []
        try:
            admitted = self._capacity.disk_admits([job.size for job in jobs])
            accepted = [job for job, ok in zip(jobs, admitted, strict=True) if ok]
            keys = iter(store.append_batch([(j.subject, j.msg_id, j.body) for j in accepted]))
            for ok in admitted:
                outcomes.append(
                    next(keys) if ok else SpoolFull("disk", "filesystem is at its free-space watermark")
                )
            if accepted and self._writes_failing:
                self._writes_failing = False
                log.info("spool %s: writes succeed again", self.directory)
            with self._counters.lock:
                self._counters.appended += len(accepted)
                self._counters.transactions += bool(accepted)
                self._counters.largest_group = max(self._counters.largest_group, len(accepted))
        except Exception as exc:
            self._log_write_error(exc, len(jobs))
            outcomes = [_write_error(exc) for _ in jobs]
        finally:
            self._refresh_counts(released=sum(job.size for job in jobs))
        return outcomes

    def _log_write_error(self, exc: Exception, n: int) -> None:
        """One error line when writes start failing (a failing disk fails every group), not one per
        group; the rest at debug level until a write succeeds again."""
        if self._writes_failing:
            log.debug("spool %s: write of %d envelopes failed: %r", self.directory, n, exc)
            return
        self._writes_failing = True
        log.error(
            "spool %s: write of %d envelopes failed: %r; appends fail (503) until a write succeeds",
            self.directory,
            n,
            exc,
            exc_info=not isinstance(exc, (Timeout, sqlite3.OperationalError)),
        )

    def _drop_jobs(self, jobs: list[AppendJob]) -> None:
        self._capacity.settle(sum(job.size for job in jobs), None)

    def _peek(self, n: int) -> list[SpooledEnvelope]:
        store = self._store
        assert store is not None
        with self._lease_lock:
            exclude, generation = set(self._leases), self._lock_generation
        quarantined_before = self._counts.quarantined
        envelopes = store.peek(n, exclude)
        with self._lease_lock:
            if generation == self._lock_generation:
                self._leases.update(e.key for e in envelopes)
        if len(store.quarantine) != quarantined_before:
            self._refresh_counts()
        return envelopes

    def _remove(self, keys: list[str]) -> int:
        store = self._store
        assert store is not None
        try:
            removed = store.remove(keys)
        finally:
            self._refresh_counts()
        with self._lease_lock:
            self._leases.difference_update(keys)
        with self._counters.lock:
            self._counters.drained += removed
        return removed

    def _refresh_counts(self, released: int = 0) -> None:
        stored: int | None = None
        try:
            if self._store is not None:
                self._counts = self._store.counts()
                stored = self._counts.bytes
        except Exception:
            log.exception("spool %s: could not read the counts", self.directory)
        finally:
            self._capacity.settle(released, stored)

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()

    # -- helpers -------------------------------------------------------------------------------

    def _require_open(self) -> GroupWriter:
        if self._writer is None:
            raise SpoolClosed(f"spool {self.directory} is not open")
        return self._writer

    def _require_drainer(self) -> GroupWriter:
        writer = self._require_open()
        if not self._drain_lock.held:
            raise DrainLockNotHeld(f"hold the drain lock of {self.directory} to drain it")
        return writer

    async def _acquire_slot(self, slots: asyncio.Semaphore) -> None:
        if not slots.locked():
            await slots.acquire()  # returns without suspending: appends enqueue in call order
            return
        try:
            async with asyncio.timeout(self.config.queue_timeout):
                await slots.acquire()
        except TimeoutError:
            raise SpoolFull("queue", f"spool {self.directory}: write queue full") from None

    def _count(self, *, rejected: int = 0, failed: int = 0) -> None:
        with self._counters.lock:
            self._counters.rejected += rejected
            self._counters.failed += failed


async def _unavailable_on_io_error(call: Awaitable[T], directory: Path) -> T:
    try:
        return await call
    except (OSError, sqlite3.Error, Timeout) as exc:
        raise SpoolUnavailable(f"spool {directory}: {exc}") from exc


def _write_error(exc: Exception) -> SpoolError:
    """What each caller of a failed group sees (one exception object per caller)."""
    if isinstance(exc, Timeout):
        return SpoolWriteError("spool database locked")
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
        return SpoolFull("disk", f"disk full: {exc}")  # "database or disk is full"
    return SpoolWriteError(f"spool write failed: {exc!r}")
