"""What the consumers would store for one event under a project's anonymisation rules, without
storing it: the control plane's `POST /v1/projects/{id}/anonymisation/preview` (wired in by ops,
since the roles do not import each other).

The event goes the consumers' own way: into an envelope as the edge writes it, read back as a
consumer reads a message, and through `envelope_rows`, the function that builds every stored row.
So what the preview shows is what a consumer stores for that event under those rules.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from headwater.core.projects.project import utc_now_iso
from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.envelope import Envelope

from .enrich import Enricher
from .rows import COLUMNS, envelope_rows
from .wire import read_envelope

# The stored columns the preview shows: what anonymisation rules can change (ids, the JSON
# columns, the page and campaign columns derived from them) and the stored address.
PREVIEW_COLUMNS: tuple[str, ...] = (
    "type",
    "event",
    "anonymous_id",
    "user_id",
    "group_id",
    "previous_id",
    "properties",
    "traits",
    "context",
    "ip",
    "page_url",
    "page_host",
    "page_path",
    "page_query",
    "page_title",
    "referrer",
    "referrer_host",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)
JSON_COLUMNS = frozenset({"properties", "traits", "context"})
_PLACES = tuple(COLUMNS.index(name) for name in PREVIEW_COLUMNS)


class EventPreviewer:
    """Builds preview rows; one per control process (its enricher's caches live with it). No GeoIP
    data: geolocation is no anonymisation and is left out of the preview."""

    def __init__(self) -> None:
        self._enricher = Enricher(None)

    def __call__(
        self,
        project_id: str,
        event: dict[str, Any],
        settings: ProjectSettings,
        hash_key: bytes | None,
        client: tuple[str | None, str | None] = (None, None),
    ) -> dict[str, Any]:
        """`{"stored": {column: value}, "changes": [{"rule", "path", "action"}]}` for `event` (a
        Segment event as a client sends it; `type` defaults to track), sent with a secret key from
        `client` (address, user agent)."""
        envelope = Envelope(
            project=project_id,
            request_id="preview",
            received_at=utc_now_iso(),
            events=[{"type": "track", **event}],
            key_kind="secret",
            ip=client[0],
            user_agent=client[1],
        )
        read, unreadable = read_envelope(envelope.encode())
        if unreadable:
            raise ValueError(unreadable[0].error)
        changes: list[Any] = []
        (row,) = envelope_rows(read, self._enricher, settings, None, hash_key, changes)
        stored = {}
        for name, place in zip(PREVIEW_COLUMNS, _PLACES, strict=True):
            value = row[place]
            stored[name] = orjson.loads(value) if name in JSON_COLUMNS else value
        return {"stored": stored, "changes": [msgspec.to_builtins(c._asdict()) for c in changes]}
