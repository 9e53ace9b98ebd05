"""Cross-process exclusive locks on a spool directory (`fcntl.flock`, non-blocking).

A flock belongs to an open file description: the kernel drops it when the holder exits, even on
SIGKILL, so a crashed process never leaves a stale lock behind; and two opens in one process
exclude each other just as two processes do.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class DirLock:
    """An exclusive, non-blocking lock file; the holder's pid is written into it for diagnosis."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if no one holds it; True if this object holds it now."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o777 != 0o600:  # the umask's, or an older version's mode
                os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:  # a full disk: the flock is the lock, the pid only a diagnosis
            log.debug("could not write the pid into %s: %r", self.path, exc)
        log.debug("acquired %s", self.path)
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        log.debug("released %s", self.path)
