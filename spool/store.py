"""The FIFO itself: envelopes in key order in one diskcache `Cache`, with checksums and quarantine.

Synchronous and thread-confined: only the spool's writer thread calls it (see `writer`).
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backend import Timeout, open_cache
from .dirs import QUARANTINE_DIR, make_private_dir
from .format import KeyClock, RecordError, SpooledEnvelope, decode, encode, parse_key
from .quarantine import Quarantine

log = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Counts:
    """What the database holds, read back after every transaction (cheap: diskcache keeps
    count and size in its Settings table through SQLite triggers)."""

    entries: int
    bytes: int
    oldest_key: str | None
    quarantined: int


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One entry for ``headwater spool export``; `error` is set for quarantined or unreadable
    entries, whose subject and msg_id may be unknown."""

    key: str
    subject: str | None
    msg_id: str | None
    body: bytes
    size: int
    quarantined: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: the body as text when it is UTF-8, base64 otherwise."""
        try:
            body, encoding = self.body.decode(), "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(self.body).decode(), "base64"
        return {
            "key": self.key,
            "subject": self.subject,
            "msg_id": self.msg_id,
            "body": body,
            "body_encoding": encoding,
            "size": self.size,
            "quarantined": self.quarantined,
            "error": self.error,
        }


class Store:
    def __init__(
        self, directory: Path, sqlite_timeout: float, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        make_private_dir(directory)
        self.directory = directory
        self._clock_ns = clock_ns
        self._cache: Any = open_cache(directory, sqlite_timeout)
        try:
            self.quarantine = Quarantine(directory / QUARANTINE_DIR, sqlite_timeout)
        except BaseException:
            self._cache.close()  # an open that fails half-way (full disk) holds nothing open
            raise
        self._keys = KeyClock(os.getpid(), next(self._cache.iterkeys(reverse=True), None))

    def counts(self) -> Counts:
        return Counts(
            entries=len(self._cache),
            bytes=int(self._cache.reset("size")),
            oldest_key=next(self._cache.iterkeys(), None),
            quarantined=len(self.quarantine),
        )

    def append_batch(self, envelopes: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """Write the envelopes in ONE transaction (one fsync); their keys, in order."""
        keys: list[str] = []
        with self._cache.transact():
            for subject, msg_id, body in envelopes:
                # `add` never overwrites: a key another appender took only costs a retry.
                key = self._keys.next(self._clock_ns())
                while not self._cache.add(key, encode(key, subject, msg_id, body)):
                    key = self._keys.next(self._clock_ns())
                keys.append(key)
        return keys

    def peek(self, n: int, exclude: Collection[str]) -> list[SpooledEnvelope]:
        """Up to `n` oldest readable envelopes whose keys are not in `exclude`; entries that fail
        to read or verify are moved to the quarantine on the way."""
        found: list[SpooledEnvelope] = []
        keys = self._cache.iterkeys()
        try:
            for key in keys:
                if key in exclude:
                    continue
                envelope = self._read(key)
                if envelope is not None:
                    found.append(envelope)
                    if len(found) >= n:
                        break
        finally:
            keys.close()
        return found

    def remove(self, keys: Iterable[str]) -> int:
        """Delete the keys in ONE transaction; how many existed."""
        removed = 0
        with self._cache.transact():
            for key in keys:
                removed += bool(self._cache.delete(key))
        return removed

    def export(self) -> Generator[ExportRecord, None, None]:
        """Every entry in key order, then every quarantined one; reads only, quarantines nothing."""
        for key in self._cache.iterkeys():
            try:
                value = self._cache.get(key, default=_MISSING)
            except (sqlite3.Error, Timeout):
                raise
            except Exception as exc:
                yield ExportRecord(str(key), None, None, b"", 0, error=f"unreadable: {exc!r}")
                continue
            if value is _MISSING:
                continue
            try:
                env = decode(str(key), value)
            except RecordError as exc:
                raw = value if isinstance(value, bytes) else repr(value).encode()
                yield ExportRecord(str(key), None, None, raw, len(raw), error=str(exc))
            else:
                yield ExportRecord(env.key, env.subject, env.msg_id, env.body, len(value))
        for entry in self.quarantine.entries():
            subject = msg_id = None
            body = entry.raw
            try:
                env = decode(entry.key, entry.raw)
            except RecordError:
                pass
            else:
                subject, msg_id, body = env.subject, env.msg_id, env.body
            yield ExportRecord(entry.key, subject, msg_id, body, len(entry.raw), True, entry.error)

    def close(self) -> None:
        self._cache.close()
        self.quarantine.close()

    def _read(self, key: object) -> SpooledEnvelope | None:
        """The envelope under `key`, or None after quarantining it (or if it vanished)."""
        try:
            value = self._cache.get(key, default=_MISSING)
        except (sqlite3.Error, Timeout):
            raise  # the database, not this entry, is in trouble
        except Exception as exc:
            self._quarantine(key, b"", f"unreadable: {exc!r}")
            return None
        if value is _MISSING:
            if key in self._cache:  # a row whose side file is gone
                self._quarantine(key, b"", "value missing")
            return None
        try:
            if not isinstance(key, str):
                raise RecordError(f"foreign key of type {type(key).__name__}")
            parse_key(key)
            return decode(key, value)
        except (RecordError, ValueError) as exc:
            raw = value if isinstance(value, bytes) else repr(value).encode()
            self._quarantine(key, raw, str(exc))
            return None

    def _quarantine(self, key: object, raw: bytes, error: str) -> None:
        name = key if isinstance(key, str) else repr(key)
        log.warning("spool %s: quarantining entry %s: %s", self.directory, name, error)
        self.quarantine.put(name, raw, error)
        self._cache.delete(key, retry=True)
