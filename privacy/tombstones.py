"""Data-subject tombstones: which events must never be stored again (docs/privacy.md, "Data subjects").

A tombstone is the SHA-256 digest of (project, kind, value), kind `user_id` or `anonymous_id`:
one per deleted identity, so the tombstone does not hold the id itself. An event matches when its
userId, or its anonymousId, has a tombstone of that kind in its project. ClickHouse computes the
same digest (`digest_sql`), so deletions can be written with the digests alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Literal

IdKind = Literal["user_id", "anonymous_id"]
ID_KINDS: tuple[IdKind, ...] = ("user_id", "anonymous_id")
# The same id under another kind is another tombstone; the separator cannot occur in a project id.
_SEPARATOR = "\x00"
# An empty set: what a project without tombstones has (shared, never built per event).
NO_TOMBSTONES: frozenset[bytes] = frozenset()
Row = tuple[Any, ...]


def tombstone_digest(project_id: str, kind: IdKind, value: str) -> bytes:
    """The 32-byte digest of one identity of a project."""
    return hashlib.sha256(_SEPARATOR.join((project_id, kind, value)).encode()).digest()


def digest_sql(project_parameter: str, kind: IdKind, column: str) -> str:
    """A ClickHouse expression of `column`'s tombstone digest, as lowercase hex (the project bound as
    `project_parameter`, a String parameter). `column` is an identifier of ours, never user text."""
    return f"lower(hex(SHA256(concat({{{project_parameter}:String}}, '\\0', '{kind}', '\\0', {column}))))"


def subject_digest(project_id: str, user_id: str | None, anonymous_ids: Iterable[str]) -> str:
    """One digest naming a whole request (the user id and the anonymous ids, in any order), for
    audit records and job records: tells two requests apart without holding the ids."""
    parts = sorted(tombstone_digest(project_id, "anonymous_id", a).hex() for a in set(anonymous_ids))
    if user_id is not None:
        parts.insert(0, tombstone_digest(project_id, "user_id", user_id).hex())
    return hashlib.sha256(",".join(parts).encode()).hexdigest()


class Tombstones:
    """A project's tombstones, for matching events; immutable."""

    __slots__ = ("_digests", "_project")

    def __init__(self, project_id: str, digests: frozenset[bytes]) -> None:
        self._project = project_id
        self._digests = digests

    def __len__(self) -> int:
        return len(self._digests)

    def matches(self, user_id: str, anonymous_id: str) -> bool:
        """Whether an event with these ids (empty: none) belongs to a deleted data subject."""
        digests = self._digests
        if user_id and tombstone_digest(self._project, "user_id", user_id) in digests:
            return True
        return bool(anonymous_id) and tombstone_digest(self._project, "anonymous_id", anonymous_id) in digests

    def without_matches(
        self, rows: list[Row], user_column: int, anonymous_column: int
    ) -> tuple[list[Row], int]:
        """The rows (holding the ids at those columns) that match no tombstone, and how many did."""
        kept = [row for row in rows if not self.matches(row[user_column], row[anonymous_column])]
        return kept, len(rows) - len(kept)
