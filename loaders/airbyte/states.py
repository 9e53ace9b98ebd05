"""Airbyte state messages: what each one covers, and the whole state a source resumes from.

A STREAM state covers one stream; GLOBAL and LEGACY states cover the whole sync. The destination
echoes each one with `destinationStats.recordCount` (the records it received in that scope since
the previous state of that scope), and records the latest state of every scope with the loader:
the list it keeps is what `source read --state` takes to resume.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .messages import ConfigError

WHOLE_SYNC = ("*", "*")  # the scope of GLOBAL and LEGACY states


def state_scope(state: dict[str, Any]) -> tuple[str, str]:
    """(namespace, stream name) for a STREAM state, WHOLE_SYNC for the others."""
    kind = state.get("type", "LEGACY")
    if kind == "STREAM":
        descriptor = (state.get("stream") or {}).get("stream_descriptor") or {}
        name = descriptor.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError("a STREAM state message has no stream.stream_descriptor.name")
        return (str(descriptor.get("namespace") or ""), name)
    if kind in ("GLOBAL", "LEGACY"):
        return WHOLE_SYNC
    raise ConfigError(f"state type {kind!r} is not one of STREAM, GLOBAL, LEGACY")


class StateBook:
    """Counts records per scope between states and keeps the latest state of each scope."""

    def __init__(self) -> None:
        self._since_state: Counter[tuple[str, str]] = Counter()
        self._latest: dict[tuple[str, str], dict[str, Any]] = {}

    def count_record(self, namespace: str | None, stream: str) -> None:
        self._since_state[(namespace or "", stream)] += 1
        self._since_state[WHOLE_SYNC] += 1

    def accept(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the state message to echo, the whole state to save) for an incoming state."""
        scope = state_scope(state)
        records = self._since_state.pop(scope, 0)
        if scope == WHOLE_SYNC:
            self._since_state.clear()
        stored = {key: value for key, value in state.items() if key != "destinationStats"}
        self._latest[scope] = stored
        echoed = {**stored, "destinationStats": {"recordCount": float(records)}}
        return {"type": "STATE", "state": echoed}, {"airbyte_state": list(self._latest.values())}
