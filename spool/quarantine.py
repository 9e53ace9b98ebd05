"""Entries that could not be read back: kept aside with the error, never dropped silently.

The quarantine is a second spool-format cache in ``<spool dir>/quarantine``; each value is one
JSON header line (error, time) followed by the raw stored bytes, so an operator can inspect or
repair it (`Spool.export`, or ``headwater spool export``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backend import open_cache


@dataclass(frozen=True, slots=True)
class QuarantinedEntry:
    key: str
    error: str
    quarantined_at: float
    raw: bytes


class Quarantine:
    """Thread-confined like the cache it wraps."""

    def __init__(self, directory: Path, timeout: float) -> None:
        self.directory = directory
        self._cache: Any = open_cache(directory, timeout)

    def put(self, key: str, raw: bytes, error: str) -> None:
        """Store (and commit) one entry; idempotent, so a crash before the original is deleted
        only quarantines it again."""
        header = json.dumps({"error": error, "quarantined_at": time.time()}).encode()
        self._cache.set(key, header + b"\n" + raw, retry=True)

    def __len__(self) -> int:
        return len(self._cache)

    def entries(self) -> Iterator[QuarantinedEntry]:
        for key in self._cache.iterkeys():
            value = self._cache.get(key)
            if not isinstance(value, bytes):
                continue
            header, _, raw = value.partition(b"\n")
            try:
                meta = json.loads(header)
                error, at = str(meta["error"]), float(meta["quarantined_at"])
            except (ValueError, KeyError, TypeError):
                error, at, raw = "unreadable quarantine header", 0.0, value
            yield QuarantinedEntry(str(key), error, at, raw)

    def close(self) -> None:
        self._cache.close()
