"""The sessionizer's small HTTP app: /healthz, /readyz and /metrics (it serves no data)."""

from __future__ import annotations

from quart import Quart

from headwater.core.service.httpapp import ReadinessCheck, create_operator_app

from .metrics import SessionizerMetrics


def create_app(metrics: SessionizerMetrics, readiness: ReadinessCheck) -> Quart:
    return create_operator_app(__name__, readiness, metrics)
