"""Where spools live: one directory per edge worker process under a base directory.

SQLite serialises writers; several processes writing one database only add tail latency, so each
edge worker appends to its own ``<base>/<worker-id>``. Any process may drain any directory whose
drain lock it can take, so the directory of a worker that crashed is drained by whoever starts next.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

DB_FILE = "cache.db"  # diskcache's database file name
QUARANTINE_DIR = "quarantine"
DRAIN_LOCK_FILE = "drain.lock"
# Spooled envelopes hold client addresses and user ids: only the edge's user may read them,
# whatever the umask of the process that created them.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def worker_spool_dir(base: str | Path, worker_id: str) -> Path:
    """The spool directory of one edge worker (`worker_id` such as ``"0"`` or ``"edge-3"``)."""
    if not _WORKER_ID.fullmatch(worker_id):
        raise ValueError(f"worker id {worker_id!r} must match {_WORKER_ID.pattern}")
    return Path(base) / worker_id


def list_spool_dirs(base: str | Path) -> list[Path]:
    """The spool directories under `base` (those holding a spool database), sorted by name."""
    root = Path(base)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / DB_FILE).is_file())


def make_private_dir(directory: Path) -> None:
    """Create `directory` and its missing parents with mode 0700, and make it 0700 if it exists
    (parents that existed before are left as they are: they may be shared)."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another worker
            path.mkdir(PRIVATE_DIR_MODE)
        _chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    _chmod(directory, PRIVATE_DIR_MODE)


def make_private_file(path: Path) -> None:
    """Create `path` empty if missing, and make it 0600 either way."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def _chmod(path: Path, mode: int) -> None:
    if path.stat().st_mode & 0o777 != mode:
        os.chmod(path, mode)
