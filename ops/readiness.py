"""Readiness policy: what makes each role ready or not, as its /readyz answers it (checks that
must all pass, and details for the operator). The stack (ops/runtime.py) hands in what it holds."""

from __future__ import annotations

import time
from dataclasses import asdict

from headwater.consumers.runner import EventConsumer
from headwater.core.projects.registry import ProjectRegistry
from headwater.core.service.httpapp import Readiness
from headwater.edge.drainer import Drainer
from headwater.edge.fallback import CircuitBreaker
from headwater.sessionizer.runner import Sessionizer
from headwater.spool import Spool


def nats_readiness(nats_connected: bool) -> Readiness:
    """The control plane: ready while connected to NATS (its store and audit trail live there)."""
    return Readiness({"nats": nats_connected})


def consumer_readiness(consumer: EventConsumer, nats_connected: bool) -> Readiness:
    """Ready while connected and consuming; a ClickHouse outage is reported with its length
    (the consumer holds its batch and retries; nothing is lost)."""
    retrying = consumer.retrying_since
    details: dict[str, object] = {
        "clickhouse_retrying_seconds": None if retrying is None else round(time.monotonic() - retrying, 1),
        "rows_written": consumer.rows_written,
        "dead_lettered": consumer.dead_lettered,
    }
    healthy, reason = consumer.health()
    if reason is not None:
        details["not_ready_because"] = reason
    checks = {"nats": nats_connected, "consuming": consumer.running, "healthy": healthy}
    return Readiness(checks, details)


def edge_readiness(
    registry: ProjectRegistry,
    spool: Spool | None,
    breaker: CircuitBreaker | None,
    drainer: Drainer | None,
    nats_connected: bool,
    draining: bool,
) -> Readiness:
    """Ready while events can be made durable (JetStream, or a writable spool) and the project
    configs are loaded. With a spool, configs that went stale during an outage are reported but
    keep the edge ready: a balancer draining every edge would turn an outage into data loss."""
    spool_writable = spool is not None and spool.writable()
    details: dict[str, object] = {"config": registry.status()}
    if spool is not None and breaker is not None:
        details["spool"] = asdict(spool.stats())
        details["breaker"] = breaker.state
        details["spool_problem"] = drainer.problem if drainer is not None else None
    fresh = not registry.stale or spool_writable
    configs = (registry.synced or registry.from_cache) and registry.usable
    # With the breaker open every publish goes to the spool: a full one (bytes or disk) means
    # 503s, so not ready, even while the NATS connection is up.
    jetstream = nats_connected and (breaker is None or not breaker.is_open)
    return Readiness(
        {
            "nats": jetstream or spool_writable,
            "projects": configs and fresh,
            "accepting": not draining,
        },
        details,
    )


def sessionizer_readiness(sessionizer: Sessionizer, nats_connected: bool) -> Readiness:
    """Ready while connected and cycling; failing cycles are reported, and make it unready once
    they have failed for longer than its settings allow (the watermark waits meanwhile)."""
    healthy, reason = sessionizer.health()
    details: dict[str, object] = {"rounds": sessionizer.rounds, "last_error": sessionizer.last_error}
    if reason is not None:
        details["not_ready_because"] = reason
    checks = {"nats": nats_connected, "sessionizing": sessionizer.running, "healthy": healthy}
    return Readiness(checks, details)
