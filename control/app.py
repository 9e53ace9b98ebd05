"""The control-plane HTTP API the host application calls (JSON under /v1, admin bearer token)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from quart import Blueprint, Quart, Response, request

from .auth import authenticate_admin
from .errors import APIError
from .http import install_error_handlers, json_response, new_app, read_json_object
from .project import validate_project_id
from .query import ReadOnlyQueries
from .service import ProjectService
from .settings import ControlSettings
from .store import ProjectStore

ReadinessCheck = Callable[[], Mapping[str, bool]]


def create_app(
    settings: ControlSettings,
    store: ProjectStore,
    service: ProjectService,
    queries: ReadOnlyQueries,
    readiness: ReadinessCheck,
) -> Quart:
    app = new_app(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        checks = dict(readiness())
        ready = all(checks.values())
        return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)

    api = Blueprint("v1", __name__, url_prefix="/v1")

    @api.before_request
    async def require_admin() -> None:
        authenticate_admin(request.headers.get("Authorization"), settings.admin_tokens)

    @api.post("/projects")
    async def create_project() -> Response:
        created = await service.create(await read_json_object())
        return json_response(created.to_dict(), 201)

    @api.get("/projects")
    async def list_projects() -> Response:
        projects = await store.list()
        return json_response({"projects": [p.public_view() for p in projects]})

    @api.get("/projects/<project_id>")
    async def get_project(project_id: str) -> Response:
        project, revision = await store.get(validate_project_id(project_id))
        return json_response({"project": project.public_view(), "revision": revision})

    @api.post("/projects/<project_id>/query")
    async def query_project(project_id: str) -> Response:
        await store.get(validate_project_id(project_id))  # 404 for an unknown project
        body = await read_json_object()
        sql = body.get("sql")
        if not isinstance(sql, str):
            raise APIError(400, "invalid_field", "sql must be a string", "sql")
        result = await asyncio.to_thread(queries.run, project_id, sql)
        return json_response({"columns": result.columns, "rows": result.rows})

    app.register_blueprint(api)
    return app
