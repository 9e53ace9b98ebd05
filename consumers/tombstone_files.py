"""Data-subject tombstones handed to the worker processes by file, once per version.

Pickled with every group of messages, a project's tombstones cost the consumer per group what they
cost once: 100,000 deleted people (200,000 digests) are ~7 MB and ~0.1 s of CPU to pickle and
unpickle, for a group of at most `fetch_batch` messages (bench/tombstones.py). Instead the
consumer writes each version of a project's set once, to a file of its own (the 32-byte digests
one after another), and a group carries only a `TombstoneFile` naming it; each worker reads a
version the first time a group names it and keeps it until the next.

A file is deleted once a newer version has replaced it and no group that names it is still being
processed; the directory goes with the processor. A file that cannot be written (a full disk) is
no failure: the group carries the set itself, as before, until a write succeeds; one that went
missing (a temporary-files cleaner) is written again.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DIGEST_BYTES = 32  # SHA-256 (privacy/tombstones.py)


@dataclass(frozen=True, slots=True)
class TombstoneFile:
    """One version of a project's tombstones, as a group of messages names it."""

    version: int  # unique within the consumer's process: a worker reloads when it changes
    path: str


# Per project, the file of its current tombstones, or the set itself when it could not be written
# (a project without tombstones is absent).
TombstoneFiles = Mapping[str, TombstoneFile | frozenset[bytes]]


class TombstoneFileWriter:
    """The consumer's side: a file per version of each project's set, kept while groups use it."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="headwater-tombstones-"))
        self._versions = itertools.count(1)
        # Per project, the set last written (the registry hands out one object per version) and its file.
        self._current: dict[str, tuple[frozenset[bytes], TombstoneFile]] = {}
        self._in_use: dict[str, int] = {}  # groups being processed that name each file, by path
        self._replaced: set[str] = set()  # files of a version no longer current

    def files(
        self, tombstones: Mapping[str, frozenset[bytes]]
    ) -> dict[str, TombstoneFile | frozenset[bytes]]:
        """The files of these sets, written if new; each is in use until `release`d."""
        named: dict[str, TombstoneFile | frozenset[bytes]] = {}
        for project, digests in tombstones.items():
            if not digests:
                continue
            current = self._current.get(project)
            # (one stat a group and project with tombstones: ~2 µs)
            if current is None or current[0] is not digests or not os.path.exists(current[1].path):
                try:
                    written = self._write(digests)
                except OSError as exc:
                    log.warning("cannot write %s's tombstones (%s): they travel with the group", project, exc)
                    named[project] = digests
                    continue
                if current is not None:
                    self._retire(current[1].path)
                current = self._current[project] = (digests, written)
            named[project] = current[1]
            self._in_use[current[1].path] = self._in_use.get(current[1].path, 0) + 1
        return named

    def release(self, files: TombstoneFiles) -> None:
        """The group that named `files` is done with them."""
        for file in files.values():
            if not isinstance(file, TombstoneFile):
                continue
            left = self._in_use[file.path] - 1
            if left:
                self._in_use[file.path] = left
                continue
            del self._in_use[file.path]
            if file.path in self._replaced:
                self._delete(file.path)

    def close(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)

    def _write(self, digests: frozenset[bytes]) -> TombstoneFile:
        version = next(self._versions)
        path = self._directory / f"{version}.digests"
        partial = path.with_suffix(".partial")
        try:
            partial.write_bytes(b"".join(digests))
            os.replace(partial, path)
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        return TombstoneFile(version, str(path))

    def _retire(self, path: str) -> None:
        if path in self._in_use:
            self._replaced.add(path)
        else:
            self._delete(path)

    def _delete(self, path: str) -> None:
        self._replaced.discard(path)
        Path(path).unlink(missing_ok=True)


class TombstoneFileReader:
    """A worker's side: each project's set, read again only when a group names a newer version."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[int, frozenset[bytes]]] = {}

    def digests(self, files: TombstoneFiles) -> dict[str, frozenset[bytes]]:
        found: dict[str, frozenset[bytes]] = {}
        for project, file in files.items():
            if not isinstance(file, TombstoneFile):  # the set itself: its file could not be written
                found[project] = file
                continue
            held = self._held.get(project)
            if held is None or held[0] != file.version:
                held = self._held[project] = (file.version, read_digests(file.path))
            found[project] = held[1]
        return found


def read_digests(path: str) -> frozenset[bytes]:
    data = Path(path).read_bytes()
    if len(data) % DIGEST_BYTES:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole number of digests")
    return frozenset(data[i : i + DIGEST_BYTES] for i in range(0, len(data), DIGEST_BYTES))
