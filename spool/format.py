"""The on-disk record of one envelope and the ordering keys.

Record (version 1), big-endian::

    version u8 | crc32 u32 | subject_len u16 | msg_id_len u16 | subject | msg_id | body

The CRC covers the key, the two lengths, subject, msg_id and body: SQLite keeps no per-row
checksum, so a flipped bit would otherwise read back silently wrong, and including the key
also catches a value that ended up under another row's key.

Keys are ``f"{time_ns:020d}-{seq:08d}-{pid}"``: zero-padded so that SQLite's key order is
FIFO order; the time part never goes backwards (it is kept at least the newest stored key's),
the sequence continues from the newest stored key, and the pid only keeps keys unique should
two processes ever append to one directory.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

FORMAT_VERSION = 1
_HEADER = struct.Struct(">BIHH")
HEADER_SIZE = _HEADER.size
MAX_FIELD_BYTES = 0xFFFF
_SEQ_MODULO = 10**8


class RecordError(ValueError):
    """A stored value is not a valid record (wrong version, truncated, checksum mismatch)."""


@dataclass(frozen=True, slots=True)
class SpooledEnvelope:
    """One envelope read back from the spool; `key` is what `Spool.remove` takes."""

    key: str
    subject: str
    msg_id: str
    body: bytes

    @property
    def stored_at(self) -> float:
        """Unix time (seconds) at which the envelope was spooled, from its key."""
        return key_time_ns(self.key) / 1e9


def record_size(subject: str, msg_id: str, body: bytes) -> int:
    """Bytes the record takes (what the spool's byte bound counts); validates the fields."""
    subject_len = len(subject.encode())
    msg_id_len = len(msg_id.encode())
    if not subject or subject_len > MAX_FIELD_BYTES:
        raise ValueError(f"subject must be 1..{MAX_FIELD_BYTES} bytes of UTF-8")
    if msg_id_len > MAX_FIELD_BYTES:
        raise ValueError(f"msg_id must be at most {MAX_FIELD_BYTES} bytes of UTF-8")
    return HEADER_SIZE + subject_len + msg_id_len + len(body)


def _crc(key: str, lengths: bytes, fields: bytes | memoryview) -> int:
    return zlib.crc32(fields, zlib.crc32(lengths, zlib.crc32(key.encode()))) & 0xFFFFFFFF


def encode(key: str, subject: str, msg_id: str, body: bytes) -> bytes:
    """The stored value of one envelope under `key`."""
    subject_b = subject.encode()
    msg_id_b = msg_id.encode()
    fields = b"".join((subject_b, msg_id_b, body))
    lengths = struct.pack(">HH", len(subject_b), len(msg_id_b))
    return _HEADER.pack(FORMAT_VERSION, _crc(key, lengths, fields), len(subject_b), len(msg_id_b)) + fields


def decode(key: str, value: object) -> SpooledEnvelope:
    """Check and unpack a stored value; raises RecordError when it is not a valid record."""
    if not isinstance(value, bytes):
        raise RecordError(f"value is {type(value).__name__}, not bytes")
    if len(value) < HEADER_SIZE:
        raise RecordError(f"value of {len(value)} bytes is shorter than the {HEADER_SIZE}-byte header")
    version, crc, subject_len, msg_id_len = _HEADER.unpack_from(value)
    if version != FORMAT_VERSION:
        raise RecordError(f"unknown record version {version}")
    if HEADER_SIZE + subject_len + msg_id_len > len(value):
        raise RecordError("field lengths exceed the value")
    fields = memoryview(value)[HEADER_SIZE:]
    if _crc(key, value[5:HEADER_SIZE], fields) != crc:
        raise RecordError("checksum mismatch")
    try:
        subject = bytes(fields[:subject_len]).decode()
        msg_id = bytes(fields[subject_len : subject_len + msg_id_len]).decode()
    except UnicodeDecodeError as exc:
        raise RecordError(f"subject or msg_id is not UTF-8: {exc}") from exc
    return SpooledEnvelope(key, subject, msg_id, bytes(fields[subject_len + msg_id_len :]))


def make_key(time_ns: int, seq: int, pid: int) -> str:
    return f"{time_ns:020d}-{seq % _SEQ_MODULO:08d}-{pid}"


def parse_key(key: str) -> tuple[int, int]:
    """(time_ns, seq) of a key; raises ValueError for a key the spool did not make."""
    time_part, seq_part, _pid = key.split("-", 2)
    if len(time_part) != 20 or len(seq_part) != 8:
        raise ValueError(f"not a spool key: {key!r}")
    return int(time_part), int(seq_part)


def key_time_ns(key: str) -> int:
    return parse_key(key)[0]


class KeyClock:
    """Strictly increasing keys for one appender; continues after the newest stored key so that
    FIFO order holds across restarts and wall-clock steps backwards. Not thread-safe: the
    writer thread owns it."""

    def __init__(self, pid: int, newest_key: str | None) -> None:
        self._pid = pid
        self._last_ns = 0
        self._seq = 0
        if newest_key is not None:
            try:
                self._last_ns, seq = parse_key(newest_key)
            except ValueError:
                pass
            else:
                self._seq = seq + 1

    def next(self, now_ns: int) -> str:
        self._last_ns = max(self._last_ns, now_ns)
        key = make_key(self._last_ns, self._seq, self._pid)
        self._seq += 1
        return key
