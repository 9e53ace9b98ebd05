"""The `--errors` file: one JSON line per refused input line, with its file, line number, reason
(code, field, message) and the line itself (its first MAX_SHOWN bytes).

Entries are written in line order as the import's progress advances, and the state file records the
errors file's size with each save: a resumed import cuts the file back to that size, so no line is
listed twice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import orjson

MAX_SHOWN = 64 << 10


class ErrorLog:
    def __init__(self, path: Path | None) -> None:
        self._file: BinaryIO | None = path.open("ab") if path is not None else None

    def start_at(self, size: int) -> None:
        """Cut the file back to `size` bytes (what it held at the progress being resumed)."""
        if self._file is not None:
            self._file.truncate(size)
            self._file.seek(size)

    def write(self, file: str, line: int, code: str, field: str | None, message: str, text: bytes) -> None:
        if self._file is None:
            return
        entry = {
            "file": file,
            "line": line,
            "code": code,
            "field": field,
            "message": message,
            "text": text[:MAX_SHOWN].decode("utf-8", errors="replace"),
        }
        self._file.write(orjson.dumps(entry) + b"\n")

    def size(self) -> int:
        """The file's size once everything written is on disk."""
        if self._file is None:
            return 0
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
