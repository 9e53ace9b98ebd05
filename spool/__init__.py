"""Local disk spool: a crash-safe, bounded, on-disk FIFO of envelopes for when JetStream is
unreachable (see docs/spool.md).

Imports nothing of headwater: the edge builds on it, not the other way round.
"""

from .capacity import DiskUsage
from .dirs import list_spool_dirs, worker_spool_dir
from .errors import DrainLockNotHeld, SpoolClosed, SpoolError, SpoolFull, SpoolUnavailable, SpoolWriteError
from .format import SpooledEnvelope
from .quarantine import QuarantinedEntry
from .spool import Spool, SpoolConfig, SpoolStats
from .store import ExportRecord

__all__ = [
    "DiskUsage",
    "DrainLockNotHeld",
    "ExportRecord",
    "QuarantinedEntry",
    "Spool",
    "SpoolClosed",
    "SpoolConfig",
    "SpoolError",
    "SpoolFull",
    "SpoolStats",
    "SpoolUnavailable",
    "SpoolWriteError",
    "SpooledEnvelope",
    "list_spool_dirs",
    "worker_spool_dir",
]
