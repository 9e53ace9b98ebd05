"""What the Singer target and the Airbyte destination hand records to: one interface, two fronts.

A front reads its protocol's messages and calls, in the order the messages came:

    loader.declare(stream, json_schema, key_properties)   # SCHEMA / the configured catalog
    loader.add(stream, record, table_version)             # RECORD (buffered, sent in batches)
    loader.activate_version(stream, table_version)        # ACTIVATE_VERSION / end of an overwrite
    loader.save_state(state)                              # STATE: flushes first, then records it

and emits a state message on its standard output only after `save_state` returned: by then every
record before it is durable (acknowledged by JetStream), so a run killed at any point and resumed
from its last emitted state loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class ImportLoader(Protocol):
    def declare(self, stream: str, schema: Mapping[str, Any], key_properties: Sequence[str]) -> None:
        """A stream's JSON schema and key. Declaring again with a grown schema adds columns (never
        drops one); records of a stream may only follow its declaration."""

    def add(self, stream: str, record: Mapping[str, Any], table_version: int | None = None) -> None:
        """One record of a declared stream, buffered (sent when a batch fills or on `flush`).
        `table_version`: the full-table sync it belongs to (Singer's `version`, an Airbyte
        overwrite's), None for incremental records."""

    def activate_version(self, stream: str, table_version: int) -> None:
        """Rows of `stream` from table versions older than `table_version` are removed once every
        record added before this call is stored (a full-table sync or an overwrite completed)."""

    def flush(self) -> None:
        """Blocks until every record added so far is durable; raises when it cannot be made so."""

    def save_state(self, state: Mapping[str, Any]) -> None:
        """`flush`, then record `state` as the import's last state (the control API shows it)."""

    def close(self) -> None:
        """Flush and release the connection."""
