"""Why the edge refused events lately, per project: counts by reason code over a sliding hour and
the last few refusals (time, code, field, message; never a body or a key). The edge publishes it in
its node report (core/service/nodereports.py), and the control plane's live page shows it
(`GET /v1/projects/{id}/live`). Refusals tied to no project (an unknown key, a body that could not
be read) are counted apart, by reason only.

Memory is bounded: at most `max_projects` projects (the one refused least recently is forgotten
first), per project at most `max_samples` refusals and one count per reason and five-minute step.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from headwater.core.projects.project import iso

from .errors import IngestError

WINDOW_SECONDS = 3600
STEP_SECONDS = 300  # the window slides by steps of this long
MAX_PROJECTS = 10_000
MAX_SAMPLES = 20
MAX_TEXT = 200  # characters kept of a message (it may quote a client's Origin)
_STEPS = WINDOW_SECONDS // STEP_SECONDS


@dataclass(slots=True)
class _Tally:
    """Counts per step (the oldest first) and the last refusals."""

    steps: deque[tuple[int, dict[str, int]]] = field(default_factory=deque)
    recent: deque[tuple[float, str, str | None, str]] = field(default_factory=deque)

    def count(self, step: int, reason: str, n: int) -> None:
        if not self.steps or self.steps[-1][0] != step:
            self.steps.append((step, {}))
            while self.steps[0][0] <= step - _STEPS:
                self.steps.popleft()
        counts = self.steps[-1][1]
        counts[reason] = counts.get(reason, 0) + n

    def counts(self, step: int) -> dict[str, int]:
        total: dict[str, int] = {}
        for at, counts in self.steps:
            if at > step - _STEPS:
                for reason, n in counts.items():
                    total[reason] = total.get(reason, 0) + n
        return total


def _text(value: str | None) -> str | None:
    return None if value is None else value[:MAX_TEXT]


class RefusalLog:
    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        max_projects: int = MAX_PROJECTS,
        max_samples: int = MAX_SAMPLES,
    ) -> None:
        self._clock = clock
        self._max_projects = max_projects
        self._max_samples = max_samples
        self._projects: OrderedDict[str, _Tally] = OrderedDict()
        self._unowned = _Tally()

    def refused(self, error: IngestError) -> None:
        """A refused request: its project (when the edge knew it) and its error; a batch refused
        because no event was valid counts each event's own error."""
        items = error.errors or [{"code": error.code, "field": error.field, "message": error.message}]
        for item in items:
            self.record(error.project, str(item["code"]), _optional(item.get("field")), str(item["message"]))

    def record(self, project: str | None, reason: str, field: str | None, message: str, n: int = 1) -> None:
        now = self._clock()
        step = int(now // STEP_SECONDS)
        if project is None:
            self._unowned.count(step, reason, n)
            return
        tally = self._projects.get(project)
        if tally is None:
            tally = self._projects[project] = _Tally(recent=deque(maxlen=self._max_samples))
            if len(self._projects) > self._max_projects:
                self._projects.popitem(last=False)
        else:
            self._projects.move_to_end(project)
        tally.count(step, reason, n)
        tally.recent.append((now, reason, _text(field), _text(message) or ""))

    def snapshot(self, budget_bytes: int) -> dict[str, Any]:
        """The log as a node report carries it: projects refused most recently first, as many as
        fit in `budget_bytes` of JSON (`projects_left_out` says how many did not). Projects without
        a refusal in the window are forgotten here."""
        now = self._clock()
        step = int(now // STEP_SECONDS)
        for project in [p for p, tally in self._projects.items() if not tally.counts(step)]:
            del self._projects[project]
        projects: dict[str, Any] = {}
        used = 0
        left_out = 0
        for project, tally in reversed(self._projects.items()):
            entry = {
                "counts": tally.counts(step),
                "recent": [
                    {
                        "at": iso(datetime.fromtimestamp(at, UTC)),
                        "reason": reason,
                        "field": field,
                        "message": message,
                    }
                    for at, reason, field, message in reversed(tally.recent)
                ],
            }
            size = len(project) + len(orjson.dumps(entry)) + 4
            if used + size > budget_bytes:
                left_out += 1
                continue
            used += size
            projects[project] = entry
        return {
            "window_seconds": WINDOW_SECONDS,
            "projects": projects,
            "projects_left_out": left_out,
            "without_project": self._unowned.counts(step),
        }


def _optional(value: object) -> str | None:
    return None if value is None else str(value)
