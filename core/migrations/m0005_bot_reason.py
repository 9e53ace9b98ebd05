"""Why an event is not a person's: `events.bot_reason` (docs/privacy.md, "Bot and spam filtering").

'' for a person's event, else one of `crawler`, `automation`, `user_agent`, `ip_blocklist`,
`datacentre`, `referrer_spam` (headwater.privacy.bots); `is_bot` is true exactly when it is not ''.
The consumers fill it. Rows stored before this migration read it from their `is_bot`: the default
expression is computed for parts written without the column, so they say `user_agent` (the only
check there was) rather than nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from .ddl import on_cluster

NUMBER = 5
NAME = "bot_reason"

COLUMNS: tuple[tuple[str, str], ...] = (("bot_reason", "LowCardinality(String)"),)
_DEFAULT = "DEFAULT if(is_bot, 'user_agent', '')"


def statements(database: str, cluster: str | None) -> Sequence[str]:
    additions = ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {kind} {_DEFAULT}" for name, kind in COLUMNS)
    return [f"ALTER TABLE `{database}`.events{on_cluster(cluster)} {additions}"]
