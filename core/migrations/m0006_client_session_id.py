"""The client's session id as a column of `events`: `client_session_id`, what the sessions
computation reads of `context` (docs/sessions.md, "How a session is computed").

`context.sessionId` when it is a JSON string, else '' — computed by ClickHouse from `context`
when a row is inserted (MATERIALIZED: the consumers' inserts name no such column, and `SELECT *`
leaves it out), and for parts written before this migration when they are read. Reading it from
the JSON instead cost a rebuild of sessions ~0.6 s per million events of the SDK's ~450-byte
contexts (two parses per event): more than half of the rest of the rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ddl import on_cluster

NUMBER = 6
NAME = "client_session_id"

# An event's client session id: context.sessionId when a JSON string (JSONExtractString alone would
# also turn a number or an object into text), else ''.
EXPRESSION = "if(JSONType(context, 'sessionId') = 'String', JSONExtractString(context, 'sessionId'), '')"


def statements(database: str, cluster: str | None) -> Sequence[str]:
    return [
        f"ALTER TABLE `{database}`.events{on_cluster(cluster)} "
        f"ADD COLUMN IF NOT EXISTS client_session_id String MATERIALIZED {EXPRESSION}"
    ]
