"""Jitsu's ingest paths (the "next" ingest service, jitsucom/bulker `ingest/router.go`), so that
`@jitsu/js` and Jitsu's server-to-server senders work unchanged.

Jitsu's bodies are Segment events, so each path maps onto one of the edge's kinds and everything
after routing (keys, origins, limits, the envelope) is the Segment path's. Jitsu tells its browser
and server paths apart only to find the stream; here the key's kind decides, as on /v1/*: a public
key from the project's allowed origins, a secret key from servers only, on either path."""

from __future__ import annotations

from .validation import EVENT_TYPES, OWN_TYPE
from .wire import BATCH

# Jitsu's one-letter types; `e` (and `event`) take the event's type from its body.
_SHORT_TYPES = {"p": "page", "i": "identify", "t": "track", "g": "group", "a": "alias", "s": "screen"}
_TYPES = {kind: kind for kind in EVENT_TYPES} | _SHORT_TYPES | {"e": OWN_TYPE, OWN_TYPE: OWN_TYPE}

JITSU_PATHS: dict[str, str] = (
    {f"/api/s/{name}": kind for name, kind in _TYPES.items()}
    | {f"/api/s/s2s/{name}": kind for name, kind in _TYPES.items()}
    # Jitsu's batches: {"batch": [events], "context"?, "writeKey"?}, as /v1/batch (it serves
    # /v1/batch and /v1/b too).
    | dict.fromkeys(("/api/s/s2s/batch", "/batch", "/b"), BATCH)
)
