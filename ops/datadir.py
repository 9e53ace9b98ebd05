"""The data directory of `headwater up`: what lives where, the admin token, the running stack's record."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

DEFAULT_DATA_DIR = ".headwater"


class DataDirLocked(RuntimeError):
    """Another `headwater up` holds the data directory."""


@dataclass(frozen=True, slots=True)
class StackRecord:
    """Written to `stack.json` while `up` runs, so `headwater query` and the tests can find it."""

    pid: int
    edge_url: str
    control_url: str
    nats_url: str
    clickhouse_url: str
    nats_pid: int | None


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def nats_store(self) -> Path:
        return self.root / "nats"

    @property
    def clickhouse(self) -> Path:
        return self.root / "clickhouse"

    @property
    def clickhouse_url(self) -> str:
        return f"chdb://{self.clickhouse}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def admin_token_file(self) -> Path:
        return self.root / "admin-token"

    @property
    def stack_file(self) -> Path:
        return self.root / "stack.json"

    def create(self) -> None:
        for directory in (self.root, self.nats_store, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def lock(self) -> IO[str]:
        """An exclusive lock held while `up` runs: two stacks on one data dir would corrupt it."""
        handle = (self.root / "up.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirLocked(f"another `headwater up` is already running on {self.root}") from None
        return handle

    def admin_token(self) -> str | None:
        """The admin token stored by an earlier `up`, if any."""
        try:
            return self.admin_token_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def generate_admin_token(self) -> str:
        """A new admin token, stored readable by its owner only."""
        token = secrets.token_urlsafe(32)
        fd = os.open(self.admin_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return token

    def write_stack(self, record: StackRecord) -> None:
        # Owner only: the URLs may carry credentials (a ClickHouse or NATS URL with a password).
        temporary = self.stack_file.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(record), indent=2))
        temporary.replace(self.stack_file)

    def read_stack(self) -> StackRecord | None:
        try:
            return StackRecord(**json.loads(self.stack_file.read_text()))
        except FileNotFoundError:
            return None

    def clear_stack(self) -> None:
        self.stack_file.unlink(missing_ok=True)
