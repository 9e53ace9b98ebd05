"""The edge application: ingest endpoints on bare ASGI (asgi.py) in front of a small Quart app
that serves /healthz and a bare /readyz; /metrics and the detailed /readyz are served by the
operator app, on a listener of their own (`--operator-host`, `--operator-port`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from quart import Quart

from headwater.core.projects.registry import KeyMatch
from headwater.core.service.authfailures import AuthFailures
from headwater.core.service.httpapp import (
    ReadinessCheck,
    install_error_handlers,
    install_health_routes,
    new_app,
)
from headwater.core.service.httpapp import (
    create_operator_app as operator_app_for,
)

from .asgi import EdgeASGI
from .cdnsettings import SettingsService
from .cookieless import CookielessIds
from .ingest import IngestService
from .metrics import EdgeMetrics
from .ratelimit import RateLimiter
from .refusals import RefusalLog
from .settings import EdgeSettings
from .sink import Sink
from .snowplow_collector import SnowplowCollector
from .wire import Limits


class ProjectView(Protocol):
    """What the edge needs of the live project configs (the registry, or a fake in unit tests)."""

    def resolve_key(self, key: str, now: datetime | None = None) -> KeyMatch | None: ...

    def resolve_app_id(self, app_id: str) -> KeyMatch | None: ...

    def any_project_allows(self, origin: str) -> bool: ...


def create_app(
    settings: EdgeSettings,
    sink: Sink,
    projects: ProjectView,
    readiness: ReadinessCheck,
    metrics: EdgeMetrics | None = None,
    body_timeout_seconds: float | None = None,
    cookieless: CookielessIds | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    refusals: RefusalLog | None = None,
) -> EdgeASGI:
    """`cookieless` makes the ids of projects in cookieless mode (without it their browser events
    are answered 503); `clock` is the edge's time (tests move it across days); `refusals` records
    why requests were refused (its node report carries it)."""
    metrics = metrics or EdgeMetrics()
    quart = new_app(__name__)
    install_error_handlers(quart)
    install_health_routes(quart, readiness, detailed=False)
    limiter = RateLimiter(settings.rate_limit_edges, settings.max_ip_buckets)
    # One count of wrong keys for the ingest paths and the settings route alike.
    auth_failures = AuthFailures("write key")
    service = IngestService(
        settings,
        sink,
        projects,
        limiter,
        metrics,
        clock,
        auth_failures=auth_failures,
        cookieless=cookieless,
        refusals=refusals,
    )
    if body_timeout_seconds is not None:
        quart.config["BODY_TIMEOUT"] = body_timeout_seconds
    snowplow = SnowplowCollector(
        service,
        projects,
        projects.any_project_allows,
        settings.max_batch_events,
        Limits(settings.max_event_bytes, settings.max_nesting_depth),
        settings.cors_max_age_seconds,
    )
    return EdgeASGI(
        settings,
        service,
        projects.any_project_allows,
        metrics,
        quart_app=quart,
        settings_service=SettingsService(projects, auth_failures, settings.retry_after_seconds),
        body_timeout_seconds=body_timeout_seconds,
        snowplow=snowplow,
    )


def create_operator_app(readiness: ReadinessCheck, metrics: EdgeMetrics) -> Quart:
    """/healthz, the detailed /readyz and /metrics, for the operator's network only."""
    return operator_app_for(__name__ + ".operator", readiness, metrics)
