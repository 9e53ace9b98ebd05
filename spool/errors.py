"""The spool's errors: one small hierarchy, so the edge can map them to HTTP in one place."""

from __future__ import annotations

from typing import Literal

FullReason = Literal["max_bytes", "disk", "queue"]


class SpoolError(Exception):
    """Base of every error the spool raises."""


class SpoolFull(SpoolError):
    """The envelope was NOT stored: the spool is at its byte bound, the filesystem is at its
    free-space watermark, or the write queue stayed full. Retryable (the edge answers 503 +
    Retry-After); the spool never evicts to make room."""

    def __init__(self, reason: FullReason, message: str) -> None:
        super().__init__(message)
        self.reason: FullReason = reason


class SpoolWriteError(SpoolError):
    """The envelope was NOT stored: the write transaction failed (I/O error, database locked)."""


class SpoolUnavailable(SpoolError):
    """The spool's directory or database could not be opened, read or changed (a full or failing
    disk: ENOSPC, SQLite's "disk I/O error"). Nothing was lost; retry later."""


class SpoolClosed(SpoolError):
    """The spool is not open (not opened yet, or already closed)."""


class DrainLockNotHeld(SpoolError):
    """`peek_batch`/`remove` were called without holding the directory's drain lock."""
