"""Publishes each role's node report (core/service/nodereports.py) every `interval` seconds. A
failure to publish (NATS away, the bucket not creatable yet) is logged and retried at the next
tick: reporting never stops a role. On a clean stop the node's reports are deleted, so it leaves
/v1/health at once rather than when the bucket's TTL removes them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from headwater.core.projects.project import utc_now_iso
from headwater.core.service.httpapp import Readiness
from headwater.core.service.nodereports import (
    MAX_REPORT_BYTES,
    MESSAGE_OVERHEAD_BYTES,
    NodeReport,
    encode_report,
    ensure_nodes_bucket,
    node_name,
    report_key,
)
from headwater.core.service.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# A role's readiness, and for an edge its refusal log within a byte budget.
RoleReport = tuple[Callable[[], Readiness], Callable[[int], dict[str, object]] | None]
# What a report holds besides the refusal log (checks, details, names): at most this much.
OTHER_PARTS_BYTES = 32 * 1024
DELETE_TIMEOUT_SECONDS = 2.0


def this_node() -> str:
    return node_name(socket.gethostname(), os.getpid())


class NodeReporter:
    def __init__(
        self,
        js: JetStreamContext,
        roles: Mapping[str, RoleReport],
        interval_seconds: float,
        replicas: int = 1,
        node: str | None = None,
        max_payload: Callable[[], int] = lambda: 1024 * 1024,
    ) -> None:
        """`max_payload`: the largest message the NATS server takes (it tells the client when it
        connects); reports are kept under it."""
        self._js = js
        self._roles = dict(roles)
        self._interval = interval_seconds
        self._replicas = replicas
        self.node = node or this_node()
        self._max_payload = max_payload
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.published = 0  # reports published, for tests and the curious

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="node-reports")

    def limit(self) -> int:
        """The most bytes one report may take."""
        return max(1024, min(MAX_REPORT_BYTES, self._max_payload() - MESSAGE_OVERHEAD_BYTES))

    def report(self, role: str) -> NodeReport:
        readiness, refusals = self._roles[role]
        state = readiness()
        budget = max(self.limit() - OTHER_PARTS_BYTES, self.limit() // 4)
        return NodeReport(
            role,
            self.node,
            all(state.checks.values()),
            dict(state.checks),
            dict(state.details),
            utc_now_iso(),
            refusals(budget) if refusals is not None else None,
        )

    async def publish_all(self) -> None:
        if self._kv is None:
            self._kv = await ensure_nodes_bucket(self._js, self._replicas)
        for role in self._roles:
            await self._kv.put(report_key(role, self.node), encode_report(self.report(role), self.limit()))
            self.published += 1

    async def _run(self) -> None:
        while True:
            try:
                await self.publish_all()
            except Exception as exc:
                # Once per outage at warning level: NATS being away is reported by /readyz already.
                level = logging.DEBUG if self._failing else logging.WARNING
                expected = isinstance(exc, NatsError | OSError | TimeoutError)
                log.log(level, "node report not published: %r", exc, exc_info=not expected)
                self._failing = True
            else:
                if self._failing:
                    log.info("node reports are published again")
                self._failing = False
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._kv is None:
            return
        for role in self._roles:
            try:
                await asyncio.wait_for(self._kv.delete(report_key(role, self.node)), DELETE_TIMEOUT_SECONDS)
            except (NatsError, OSError, TimeoutError) as exc:
                log.info("node report %s.%s not deleted (its TTL removes it): %r", role, self.node, exc)
