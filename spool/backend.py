"""The diskcache `Cache` every spool opener uses, always with the same settings.

diskcache stores the settings an opener passes in the database and later openers that pass other
values overwrite them, so nothing opens a spool directory except through `open_cache`.

- ``eviction_policy="none"``: diskcache's default silently drops the oldest entries past
  ``size_limit``; a spool must never evict (it refuses instead, see `capacity`).
- ``sqlite_journal_mode="wal"`` + ``sqlite_synchronous=2`` (FULL): every commit fsyncs the WAL,
  so an acknowledged append survives kill -9 *and* power loss, provided the storage honours
  flushes. NORMAL would survive kill -9 but could lose the last commits on power loss; group
  commit (`writer`) is what makes FULL affordable.
- ``cull_limit=0``: no expiry scan on every write (the spool sets no expiry).
- Values are always stored inline in SQLite (`SpoolDisk`): diskcache writes large values to
  side files without fsync, which would break the power-loss guarantee; and their ``size``
  column counts the record bytes, so SQLite's triggers keep the spool's byte total.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

import diskcache  # type: ignore[import-untyped]

from .dirs import DB_FILE, make_private_dir, make_private_file

SETTINGS: Final[dict[str, Any]] = {
    "eviction_policy": "none",
    "size_limit": 2**62,
    "cull_limit": 0,
    "statistics": 0,
    "tag_index": 0,
    "sqlite_journal_mode": "wal",
    "sqlite_synchronous": 2,
    "sqlite_auto_vacuum": 1,
}

Timeout = diskcache.Timeout


class SpoolDisk(diskcache.Disk):  # type: ignore[misc]
    """Stores `bytes` values inline in the SQLite row (never in an unsynced side file) and
    records their length in the ``size`` column."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple[Any, ...]:
        if type(value) is bytes:
            return len(value), diskcache.core.MODE_RAW, None, sqlite3.Binary(value)
        return super().store(value, read, key=key)  # type: ignore[no-any-return]


def open_cache(directory: Path, timeout: float) -> Any:
    """Open (creating if needed) the diskcache `Cache` in `directory` with the spool settings.

    The connection is per thread: use the cache from the thread that opened it. The directory is
    made 0700 and the database 0600 first: SQLite gives its -wal and -shm files the database's mode.
    """
    make_private_dir(directory)
    make_private_file(directory / DB_FILE)  # an empty file is an empty SQLite database
    for suffix in ("-wal", "-shm"):  # left by an earlier version or a crash, maybe with umask modes
        side = directory / (DB_FILE + suffix)
        if side.exists() and side.stat().st_mode & 0o777 != 0o600:
            side.chmod(0o600)
    return diskcache.Cache(str(directory), timeout=timeout, disk=SpoolDisk, **SETTINGS)
