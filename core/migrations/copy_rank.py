"""Which copy of a message counts: the one of highest `copy_rank`, the `events` table's version
(so a merge keeps exactly it) and what sessions, funnels, paths and patterns choose by.

`copy_rank` (UInt128, MATERIALIZED from `received_at` and `request_id`) is the bitwise complement
of (milliseconds since 1900 << 64 | the first 8 bytes of MD5(request_id), big-endian): the
highest rank is the copy received first and, among copies received in the same millisecond, the
one whose request id has the smallest hash. Copies of one request (a redelivery, a replay) have
equal ranks and equal times. `copy_rank()` is the same in Python, for the references.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

# Milliseconds from 1900 (the earliest DateTime64 time): never negative.
_OFFSET_MS = 2_208_988_800_000
EXPRESSION = (
    "bitNot(bitOr("
    f"bitShiftLeft(toUInt128(toUnixTimestamp64Milli(received_at) + {_OFFSET_MS}), 64), "
    "toUInt128(reinterpretAsUInt64(reverse(substring(MD5(request_id), 1, 8))))))"
)
COLUMN = f"copy_rank UInt128 MATERIALIZED {EXPRESSION}"
_MASK = (1 << 128) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def copy_rank(received_at: datetime, request_id: str) -> int:
    """EXPRESSION in Python: of two copies of a message, the one to count has the higher rank.
    `received_at` naive: UTC."""
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    milliseconds = (received_at - _EPOCH) // timedelta(milliseconds=1) + _OFFSET_MS
    digest = hashlib.md5(request_id.encode(), usedforsecurity=False).digest()
    return ~((milliseconds << 64) | int.from_bytes(digest[:8], "big")) & _MASK
