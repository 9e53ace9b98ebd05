"""`GET /v1/health`: the whole installation at a glance. The roles' own reports from the KV bucket
HW_NODES (core/service/nodereports.py), the consumers' lag and the streams' usage from the
JetStream API, and the refusals the edges could tie to no project."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StreamInfo
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from headwater.core.projects.project import iso
from headwater.core.service.errors import APIError
from headwater.core.service.nodereports import NodeReport, ensure_nodes_bucket, read_reports
from headwater.core.wire.subjects import DLQ_STREAM, EVENTS_STREAM, IMPORTS_STREAM

from .console_schemas import (
    ConsumerStatus,
    DeadLetters,
    HealthAnswer,
    NodeStatus,
    ReasonCount,
    StreamStatus,
)

STREAMS = (EVENTS_STREAM, IMPORTS_STREAM, DLQ_STREAM)


class Installation:
    """What the control plane reads of the other roles: their reports, and JetStream's state."""

    def __init__(
        self, js: JetStreamContext, replicas: int = 1, clock: Callable[[], float] = time.time
    ) -> None:
        self._js = js
        self._replicas = replicas
        self._clock = clock
        self._kv: KeyValue | None = None

    async def reports(self) -> list[NodeReport]:
        try:
            if self._kv is None:  # opened on first use: the bucket may be created by any role
                self._kv = await ensure_nodes_bucket(self._js, self._replicas)
            return await read_reports(self._js, self._kv)
        except (NatsError, TimeoutError) as exc:
            raise _unavailable(exc) from None

    async def health(self) -> dict[str, Any]:
        try:
            return await self._health()
        except (NatsError, TimeoutError) as exc:
            raise _unavailable(exc) from None

    async def _health(self) -> dict[str, Any]:
        now = self._clock()
        reports = await self.reports()
        nodes = [_node(report, now) for report in reports]
        streams: list[StreamStatus] = []
        consumers: list[ConsumerStatus] = []
        dead = DeadLetters(0, 0)
        for name in STREAMS:
            try:
                info = await self._js.stream_info(name)
            except NotFoundError:
                continue
            streams.append(_stream(info))
            if name == DLQ_STREAM:
                dead = DeadLetters(info.state.messages, info.state.bytes)
            for consumer in await self._js.consumers_info(name):
                consumers.append(
                    ConsumerStatus(
                        name,
                        consumer.name,
                        consumer.num_pending or 0,
                        consumer.num_ack_pending or 0,
                        consumer.num_redelivered or 0,
                    )
                )
        answer = HealthAnswer(
            iso(datetime.fromtimestamp(now, UTC)),
            sorted(nodes, key=lambda n: (n.role, n.node)),
            consumers,
            streams,
            dead,
            _unowned_refusals(reports),
        )
        body: dict[str, Any] = msgspec.to_builtins(answer)
        return body


def _unavailable(exc: BaseException) -> APIError:
    return APIError(503, "nats_unavailable", f"NATS does not answer: {exc!r}")


def _node(report: NodeReport, now: float) -> NodeStatus:
    try:
        age = max(0.0, now - datetime.fromisoformat(report.reported_at).timestamp())
    except ValueError:
        age = 0.0
    return NodeStatus(
        report.role,
        report.node,
        report.ready,
        report.checks,
        report.details,
        report.reported_at,
        round(age, 1),
    )


def _stream(info: StreamInfo) -> StreamStatus:
    config, state = info.config, info.state
    max_bytes = config.max_bytes if config.max_bytes is not None else -1
    return StreamStatus(
        config.name or "",
        state.messages,
        state.bytes,
        max_bytes,
        float(config.max_age or 0),
        state.bytes / max_bytes if max_bytes > 0 else None,
    )


def _unowned_refusals(reports: list[NodeReport]) -> list[ReasonCount]:
    """The edges' refusals without a project, summed over the edges."""
    total: dict[str, int] = {}
    for report in reports:
        unowned = (report.refusals or {}).get("without_project") or {}
        for reason, count in unowned.items():
            total[str(reason)] = total.get(str(reason), 0) + int(count)
    return by_count(total)


def by_count(counts: dict[str, int]) -> list[ReasonCount]:
    """Most first; equal counts by reason."""
    return [ReasonCount(reason, n) for reason, n in sorted(counts.items(), key=lambda c: (-c[1], c[0]))]
