"""The spool's bounds: a maximum of stored bytes and a free-space watermark on the filesystem.

A full spool refuses (`SpoolFull`); it never evicts. A full disk is worse than a refused write:
SQLite then fails even deletes and re-opening, so writes stop while the filesystem still has
``max(min_free_ratio * size, min_free_bytes)`` free. Thread-safe: appenders reserve on the event
loop, the writer thread settles after each transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .errors import FullReason, SpoolFull

log = logging.getLogger(__name__)


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


DiskUsageFn = Callable[[str], "DiskUsage | tuple[int, int, int]"]


class Capacity:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        min_free_bytes: int,
        min_free_ratio: float,
        disk_usage: DiskUsageFn,
        check_interval: float,
    ) -> None:
        self._directory = str(directory)
        self._max_bytes = max_bytes
        self._min_free_bytes = min_free_bytes
        self._min_free_ratio = min_free_ratio
        self._disk_usage = disk_usage
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._stored = 0
        self._reserved = 0
        self._headroom = 0  # free bytes above the watermark at the last sample
        self._free = 0
        self._sampled_at = -float("inf")
        self._full: FullReason | None = None
        self._refused = 0  # size of the last append refused for a bound, until one is accepted
        self._floor = 0

    @property
    def stored_bytes(self) -> int:
        return self._stored

    @property
    def free_bytes(self) -> int:
        return self._free

    def reserve(self, size: int) -> None:
        """Count `size` pending bytes against both bounds, or raise SpoolFull."""
        headroom = self._sample(fresh=False)
        with self._lock:
            if self._stored + self._reserved + size > self._max_bytes:
                self._note_full("max_bytes", size)
                raise SpoolFull(
                    "max_bytes",
                    f"spool holds {self._stored + self._reserved} of {self._max_bytes} bytes",
                )
            if headroom - self._reserved - size < 0:
                self._note_full("disk", size)
                raise SpoolFull("disk", f"filesystem of {self._directory} is at its free-space watermark")
            self._reserved += size
            self._note_writable()

    def disk_admits(self, sizes: list[int]) -> list[bool]:
        """For a batch about to be written, with a fresh disk sample: which sizes still fit."""
        headroom = self._sample(fresh=True)
        admitted: list[bool] = []
        for size in sizes:
            fits = headroom - size >= 0
            headroom -= size if fits else 0
            admitted.append(fits)
        if not all(admitted):
            with self._lock:
                self._note_full("disk", min(s for s, ok in zip(sizes, admitted, strict=True) if not ok))
        return admitted

    def settle(self, released: int, stored_bytes: int | None) -> None:
        """End reservations of `released` bytes and take the stored total read from disk."""
        with self._lock:
            self._reserved = max(0, self._reserved - released)
            if stored_bytes is not None:
                self._stored = stored_bytes

    @property
    def full_reason(self) -> FullReason | None:
        """Why the last append was refused, until one is accepted again."""
        return self._full

    def writable(self) -> bool:
        """Would an append be accepted now (for /readyz): one byte, or after a refusal one as large
        as the refused envelope, so that a spool full to a few bytes is not reported ready."""
        headroom = self._sample(fresh=False)
        with self._lock:
            need = max(1, self._refused)
            return (
                self._stored + self._reserved + need <= self._max_bytes and headroom - self._reserved >= need
            )

    def check_watermark(self) -> None:
        """At open: say at once (one warning) when the filesystem is already below the watermark,
        rather than only at the first refused append."""
        headroom = self._sample(fresh=True)
        if headroom <= 0:
            with self._lock:
                self._full = "disk"
            log.warning(
                "spool %s refuses appends from the start: its filesystem has %d bytes free, at or below "
                "the free-space watermark of %d bytes (free space, or lower --spool-min-free-bytes); "
                "events are stored only while JetStream answers",
                self._directory,
                self._free,
                self._floor,
            )

    def _sample(self, *, fresh: bool) -> int:
        now = time.monotonic()
        if fresh or now - self._sampled_at >= self._check_interval:
            total, _used, free = self._disk_usage(self._directory)
            floor = max(int(total * self._min_free_ratio), self._min_free_bytes)
            with self._lock:
                self._free, self._headroom, self._sampled_at = free, free - floor, now
                self._floor = floor
        return self._headroom

    def _note_full(self, reason: FullReason, size: int) -> None:
        self._refused = size
        if self._full != reason:
            log.warning("spool %s is full (%s): refusing appends", self._directory, reason)
            self._full = reason

    def _note_writable(self) -> None:
        self._refused = 0
        if self._full is not None:
            log.info("spool %s accepts appends again", self._directory)
            self._full = None
