"""Where spools live: one directory per edge worker process under a base directory.

SQLite serialises writers; several processes writing one database only add tail latency, so each
edge worker appends to its own ``<base>/<worker-id>``. Any process may drain any directory whose
drain lock it can take, so the directory of a worker that crashed is drained by whoever starts next.
"""

from __future__ import annotations

import re
from pathlib import Path

DB_FILE = "cache.db"  # diskcache's database file name
QUARANTINE_DIR = "quarantine"
DRAIN_LOCK_FILE = "drain.lock"

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
