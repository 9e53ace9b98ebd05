"""Messages a purged project left behind: in edge spools, in flight, or drained after its purge.

Purging a project drops its database, its messages in JetStream and its config; but an edge's
spool may still hold its envelopes and deliver them later. Inserting them fails (the database is
gone: UNKNOWN_DATABASE, which is retried as it may be a migration in progress), and a project
created again with the same id would receive them. They are discarded instead (counted in
`headwater_consumer_leftovers_discarded`, logged), on positive knowledge only:

- the project's config entry was purged (its marker is in the KV bucket), not created again, and
  the envelope was received before the purge — or the purge is over PURGE_SETTLED_SECONDS old (a
  re-creation would have reached this consumer by then; an edge with stale config accepted it);
- or the project exists, and the envelope was received more than RECREATED_MARGIN_SECONDS before
  it was created: it belongs to an earlier project of that id. (The margin absorbs clock skew
  between the edge that stamped `received_at` and the control plane that stamped `created_at`; an
  edge accepts a project's events only once it knows its keys, which is after its creation.)

A project merely unknown to this consumer (its registry not synced yet, or a config update still
on its way) is not discarded: its batch is retried until the registry knows. Nothing is discarded
while the registry is stale (not synced, or NATS disconnected since its last snapshot). A project
purged and created again within the moment its config takes to reach this consumer could lose the
first events of the new project only if an edge stamped them before the purge (clock skew).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

from headwater.core.projects.project import Project

RECREATED_MARGIN_SECONDS = 300.0
PURGE_SETTLED_SECONDS = 60.0


class Projects(Protocol):
    @property
    def stale(self) -> bool: ...

    def get(self, project_id: str) -> Project | None: ...

    def purged_at(self, project_id: str) -> float | None: ...


def leftover(projects: Projects, project_id: str, received_at: float | None) -> str | None:
    """Why a message of `project_id` received at `received_at` (epoch seconds) is to be
    discarded; None: store it."""
    if projects.stale:  # not synced, or disconnected since: a re-creation may not be known yet
        return None
    project = projects.get(project_id)
    if project is None:
        purged_at = projects.purged_at(project_id)
        if purged_at is None:
            return None
        before = received_at is not None and received_at < purged_at
        if before or time.time() - purged_at > PURGE_SETTLED_SECONDS:
            return f"project {project_id} was purged"
        return None
    if received_at is None:
        return None
    created = datetime.fromisoformat(project.created_at).timestamp()
    if received_at < created - RECREATED_MARGIN_SECONDS:
        return f"received before project {project_id} was created again (a purged project's message)"
    return None
