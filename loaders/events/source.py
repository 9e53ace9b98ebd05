"""The lines of an import file, from a byte offset on: plain JSON lines, or gzip (told by its magic
bytes, whatever the file is called). Offsets count the uncompressed bytes, so a gzip file resumes
by reading up to its offset again (gzip cannot seek), a plain one by seeking."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from isal import igzip, isal_zlib

from .lines import MAX_LINE_BYTES

GZIP_MAGIC = b"\x1f\x8b"
# What reading a file raises when it cannot be read to its end: the file itself (OSError, which
# covers a gzip header or checksum gone wrong), a truncated gzip (EOFError), deflate data that is
# not (the inflater's own error).
UNREADABLE_FILE: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    cast(type[BaseException], isal_zlib.error),  # (its stub calls the class an instance)
)
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1 for the file's first line (blank lines count)
    text: bytes  # without its line ending; cut to MAX_LINE_BYTES + 1 when longer
    end: int  # the uncompressed offset just past it: where a resumed import starts
    position: int  # bytes of the file itself read so far (compressed ones for gzip): progress


def is_gzip(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(2) == GZIP_MAGIC


def read_lines(path: Path, offset: int = 0, lines_before: int = 0) -> Iterator[Line]:
    """The non-blank lines of `path` after `offset` (a place a Line's `end` gave), numbered on
    from `lines_before` (the lines up to `offset`). A line longer than MAX_LINE_BYTES is read in
    pieces and given cut (its length says it is too long)."""
    with path.open("rb") as raw:
        compressed = is_gzip(path)
        # The file's own bytes read so far: for gzip, counted as the decompressor reads them (asking
        # the file for its position per line, a system call, was ~1 s of a 200,000-line import's
        # ~10 s in a profile); for a plain file, the uncompressed offset itself.
        counted = _CountingReader(raw)
        # ISA-L's inflate, the standard library's GzipFile interface: 0.68 µs a line of a Segment
        # archive where `gzip` took 1.55.
        stream: BinaryIO = (
            cast(BinaryIO, igzip.GzipFile(fileobj=counted, mode="rb"))  # type: ignore[no-untyped-call]
            if compressed
            else raw
        )
        with stream:
            _skip_to(stream, offset, compressed)
            here, number = offset, lines_before
            while True:
                text = stream.readline(MAX_LINE_BYTES + 1)
                if not text:
                    return
                here += len(text)
                number += 1
                if len(text) > MAX_LINE_BYTES and not text.endswith(b"\n"):
                    here += _discard_rest_of_line(stream)
                text = text.rstrip(b"\r\n")
                if text.strip():
                    yield Line(number, text, here, counted.count if compressed else here)


class _CountingReader(io.RawIOBase):
    """A file's reads, counted."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        read = int(self._raw.readinto(buffer))  # type: ignore[attr-defined]
        self.count += read
        return read


def _skip_to(stream: BinaryIO, offset: int, compressed: bool) -> None:
    if not compressed:
        stream.seek(offset)
        return
    left = offset
    while left > 0:
        chunk = stream.read(min(left, _SKIP_CHUNK))
        if not chunk:
            raise ValueError(f"the file is shorter than the offset {offset} an earlier import reached")
        left -= len(chunk)


def _discard_rest_of_line(stream: io.BufferedIOBase | BinaryIO) -> int:
    skipped = 0
    while True:
        piece = stream.readline(_SKIP_CHUNK)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped
