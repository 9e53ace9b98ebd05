"""The last known project configs on local disk, so that an edge can start and serve (into its
spool) while NATS is unreachable (see docs/spool.md, "Starting during an outage").

The file holds each KV entry's value exactly as the HW_PROJECTS bucket holds it (secret keys only
as their digests, never in clear), and `saved_at`: the wall-clock time at which it was last known
to be current. It is written atomically (a private temporary file, fsynced, renamed over the old
one) with mode 0600, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class CachedConfig:
    saved_at: float
    """Unix time at which these configs were last known to be the current ones."""
    entries: dict[str, bytes]
    """project id → the KV entry's value, as stored in the bucket."""

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.saved_at)


class ConfigCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def save(self, entries: dict[str, bytes], saved_at: float | None = None) -> None:
        """Replace the file atomically; failures are logged, not raised (the edge serves on)."""
        document = {
            "v": FORMAT_VERSION,
            "saved_at": time.time() if saved_at is None else saved_at,
            "projects": {pid: value.decode() for pid, value in sorted(entries.items())},
        }
        data = json.dumps(document, separators=(",", ":")).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # 0600
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a power loss
            finally:
                os.close(directory)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("could not save the project config cache %s: %r", self.path, exc)

    def load(self) -> CachedConfig | None:
        """The cached configs, or None when there is no (readable) cache."""
        try:
            document = json.loads(self.path.read_bytes())
            if document.get("v") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {document.get('v')!r}")
            entries = {str(pid): str(value).encode() for pid, value in document["projects"].items()}
            return CachedConfig(float(document["saved_at"]), entries)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the unreadable project config cache %s: %r", self.path, exc)
            return None
