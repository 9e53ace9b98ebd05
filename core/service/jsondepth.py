"""How deep a JSON document nests, found before it is decoded.

The decoders recurse once per level: msgspec raises RecursionError at about 1,000 levels (where
Python's recursion limit is), and what decodes below that can still exhaust a recursive walk later.
A body nesting deeper than any API accepts is refused before a decoder sees it.
"""

from __future__ import annotations

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'{}[]"')
_OPENERS = frozenset(b"{[")


def nesting_exceeds(data: bytes, limit: int) -> bool:
    """True when `data`, read as JSON, opens more than `limit` objects or arrays inside one another.

    Brackets inside strings do not count. A document with at most `limit` brackets cannot nest
    deeper and is not scanned (the common case: counting is done in C). Invalid JSON is answered
    as its nesting reads, to be refused by the decoder if it is not too deep."""
    openers = len(data) - len(data.replace(b"{", b""))
    if openers <= limit:
        openers += len(data) - len(data.replace(b"[", b""))
        if openers <= limit:
            return False
    depth = 0
    for byte in _brackets_outside_strings(data):
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _brackets_outside_strings(data: bytes) -> bytes:
    """The brackets of `data` that are not inside a string. Escaped backslashes go first, then
    escaped quotes, so what is left of `"` delimits strings; everything but quotes and brackets is
    then dropped (in C), and the pieces between quotes that are outside strings are kept."""
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = unescaped.translate(None, _NOT_STRUCTURE)
    return b"".join(skeleton.split(b'"')[::2])
