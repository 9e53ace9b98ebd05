"""JSON bodies, errors and the operator app (health and metrics) for the Quart apps of headwater."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from .errors import APIError
from .jsondepth import nesting_exceeds

log = logging.getLogger(__name__)

# The deepest request body the control API reads (project settings nest a few levels). Checked
# before decoding: orjson decodes up to 1,024 levels, deeper than Python code can then walk.
MAX_BODY_DEPTH = 32


def new_app(import_name: str) -> Quart:
    """A Quart app without static files. The instance path is given explicitly because Quart cannot
    find it for a module of the `headwater` namespace package."""
    return Quart(import_name, static_folder=None, instance_path=str(Path(__file__).resolve().parent))


@dataclass(frozen=True, slots=True)
class Readiness:
    """`checks` must all be true for the process to be ready; `details` are reported beside them."""

    checks: Mapping[str, bool]
    details: Mapping[str, Any] = field(default_factory=dict)


ReadinessCheck = Callable[[], Readiness]

# The Prometheus text format that `prometheus_client.generate_latest` writes. Named here rather than
# taken from the library, whose CONTENT_TYPE_LATEST says version=1.0.0 since 0.22: Prometheus
# before 3.0 knows only 0.0.4.
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class MetricsSource(Protocol):
    def render(self) -> bytes: ...


def install_health_routes(app: Quart, readiness: ReadinessCheck, detailed: bool = True) -> None:
    """`/healthz` (the process runs) and `/readyz` (it can do its work), without authentication.
    Not `detailed`: /readyz says only whether it is ready (a public port's load-balancer check),
    not which check failed nor the details (they name projects and paths)."""

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        state = readiness()
        ready = all(state.checks.values())
        body = (
            {"ready": ready, "checks": dict(state.checks), **state.details} if detailed else {"ready": ready}
        )
        return json_response(body, 200 if ready else 503)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, default=str),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def read_json_object(field_hint: str | None = None) -> dict[str, Any]:
    """The request body as a JSON object; 400 `invalid_json` otherwise, `too_deep` when it nests
    deeper than MAX_BODY_DEPTH."""
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    if nesting_exceeds(raw, MAX_BODY_DEPTH):
        raise APIError(400, "too_deep", f"the body nests deeper than {MAX_BODY_DEPTH} levels", field_hint)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, "invalid_json", f"the body is not valid JSON: {exc}", field_hint) from None
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "the body must be a JSON object", field_hint)
    return body


def install_error_handlers(app: Quart) -> None:
    """Every error leaves as `{"status", "code", "message"[, "field"]}` with the matching status."""

    @app.errorhandler(APIError)
    async def _api_error(error: APIError) -> Response:
        return json_response(error.to_dict(), error.status, getattr(error, "headers", None))

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(status, (error.name or "error").lower().replace(" ", "_"))
        # Keep werkzeug's own headers (a 405 must say `Allow`), but the body is ours: JSON.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return json_response({"status": status, "code": code, "message": error.description}, status, headers)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"status": 500, "code": "internal_error", "message": "internal error; see the server log"}
        return json_response(body, 500)


def create_operator_app(import_name: str, readiness: ReadinessCheck, metrics: MetricsSource) -> Quart:
    """/healthz, the detailed /readyz and /metrics, for the operator's network only."""
    app = new_app(import_name)
    install_error_handlers(app)
    install_health_routes(app, readiness)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), content_type=PROMETHEUS_TEXT)

    return app
