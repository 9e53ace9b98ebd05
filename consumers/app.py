"""The consumer's small HTTP app: /healthz, /readyz and /metrics (it serves no data)."""

from __future__ import annotations

from quart import Quart, Response

from headwater.core.service.httpapp import (
    ReadinessCheck,
    install_error_handlers,
    install_health_routes,
    new_app,
)

from .metrics import ConsumerMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(metrics: ConsumerMetrics, readiness: ReadinessCheck) -> Quart:
    app = new_app(__name__)
    install_error_handlers(app)
    install_health_routes(app, readiness)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    return app
