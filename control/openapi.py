"""The OpenAPI 3.1 document of the control API (served at /v1/openapi.json).

Written by hand to match control/app.py and the validation it calls (service.py, project.py,
project_settings.py, origins.py, idempotency.py); tests/test_openapi_fuzz.py fuzzes the live API
from this document and checks every answer against it. The limits the server keeps as constants
are imported from it.
"""

from __future__ import annotations

from typing import Any

from headwater.core.projects.project import PROJECT_ID_PATTERN
from headwater.core.projects.settings import IP_HANDLING, MAX_REDACTED_PROPERTIES

from .idempotency import MAX_KEY_LENGTH
from .service import MAX_GRACE_SECONDS

Schema = dict[str, Any]

JSON = "application/json"
# Error codes by status. `not_found` is the router's: a path that matches no route (e.g. a project id
# with a `/` in it) never reaches the operation.
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "invalid_json",
        "invalid_field",
        "invalid_project_id",
        "invalid_origin",
        "invalid_idempotency_key",
        "invalid_if_match",
        "confirmation_required",
        "query_failed",
        "too_deep",
        "query_syntax_error",
    ),
    401: ("missing_admin_token",),
    403: ("invalid_admin_token", "query_not_allowed"),
    404: ("project_not_found", "not_found"),
    409: ("project_exists", "update_conflict"),
    412: ("revision_mismatch",),
    413: ("payload_too_large",),
    422: ("idempotency_key_reused", "query_too_expensive"),
    429: ("too_many_auth_failures", "too_many_queries"),
    503: ("clickhouse_unavailable",),
}
ERROR_DESCRIPTIONS = {
    400: "The request is invalid; `field` names the part at fault when there is one.",
    401: "No admin token: send `Authorization: Bearer <token>`.",
    403: "The admin token is not valid (`invalid_admin_token`), or the query reaches outside the "
    "project or is not a SELECT (`query_not_allowed`; the message names what was refused).",
    404: "No such project (`project_not_found`), or no such route (`not_found`).",
    409: "Conflict with the project's current state.",
    412: "The project changed since the revision given in `If-Match`.",
    413: "The request body is larger than the configured limit.",
    422: "The Idempotency-Key was used with a different request body (`idempotency_key_reused`), or "
    "the query exceeded its memory, time or result-row limit (`query_too_expensive`).",
    429: "Too many wrong admin tokens from this address (`too_many_auth_failures`), or as many queries "
    "as the control plane allows are running (`too_many_queries`); retry after `Retry-After` seconds.",
    503: "ClickHouse cannot be reached.",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(
    properties: dict[str, Schema], required: tuple[str, ...] = (), extra: Schema | None = None
) -> Schema:
    """A closed object: the server refuses (or never sends) other properties."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return {**schema, **(extra or {})}


def _number(low: float, high: float, nullable: bool = False, **extra: Any) -> Schema:
    return {"type": ["number", "null"] if nullable else "number", "minimum": low, "maximum": high, **extra}


def _json(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _error_response(status: int) -> dict[str, Any]:
    schema = {
        "allOf": [
            _ref("Error"),
            {"properties": {"status": {"const": status}, "code": {"enum": list(ERROR_CODES[status])}}},
        ]
    }
    return {"description": ERROR_DESCRIPTIONS[status], "content": _json(schema)}


ETAG_HEADER = {
    "description": "The project's KV revision, for `If-Match` on a later PATCH.",
    "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
}
# The answer to an operation on one project that returns it: body and ETag.
PROJECT_RESPONSE = {
    "description": "The project and its revision.",
    "headers": {"ETag": {**ETAG_HEADER, "required": True}},
    "content": _json(_ref("ProjectAnswer")),
}

PROJECT_ID_PARAMETER = {
    "name": "project_id",
    "in": "path",
    "required": True,
    "schema": _ref("ProjectId"),
}

# `*` may be written with surrounding whitespace; it is then stored as `*`.
_ANY_ORIGIN_ENTRY = {"type": "string", "pattern": r"^\s*\*\s*$"}


def _schemas() -> dict[str, Schema]:
    iso_time = {"type": "string", "format": "date-time"}
    iso_time_or_null = {"type": ["string", "null"], "format": "date-time"}
    redact: Schema = {
        "type": "array",
        "maxItems": MAX_REDACTED_PROPERTIES,
        "items": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": "Event property names removed before storage.",
    }
    rate_limits: dict[str, Schema] = {
        "project_events_per_second": _number(
            0.01, 1e7, nullable=True, description="Events per second for the whole project; null: unlimited."
        ),
        "ip_events_per_second": _number(
            0.01, 1e7, nullable=True, description="Events per second per client IP; null: unlimited."
        ),
        "burst_seconds": _number(0.1, 3600, description="Seconds of headroom above the rate."),
    }
    batching: dict[str, Schema] = {
        "span_seconds": _number(0.05, 60, description="How long the consumer batches events.")
    }
    anonymisation: dict[str, Schema] = {
        "ip": {"type": "string", "enum": list(IP_HANDLING), "description": "What happens to client IPs."},
        "redact_properties": redact,
    }
    return {
        "Error": _object(
            {
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "code": {"type": "string", "minLength": 1, "description": "Machine-readable error code."},
                "message": {"type": "string", "description": "Explanation for people."},
                "field": {
                    "type": "string",
                    "description": "The field, parameter or header at fault, e.g. `allowed_origins[1]`.",
                },
            },
            ("status", "code", "message"),
        ),
        "ProjectId": {
            "type": "string",
            "pattern": PROJECT_ID_PATTERN.pattern,
            "description": "Lowercase letters, digits and `_`: a subject token and part of a database name.",
            "examples": ["shop"],
        },
        "Health": _object({"status": {"const": "ok"}}, ("status",)),
        # Open: a role may report details of its checks beside them (the edge reports `config`).
        "Readiness": {
            "type": "object",
            "properties": {
                "ready": {"type": "boolean", "description": "Whether every check passes."},
                "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
            },
            "required": ["ready", "checks"],
        },
        # -- settings ------------------------------------------------------------------------
        "RateLimits": _object(rate_limits, tuple(rate_limits)),
        "Batching": _object(batching, tuple(batching)),
        "Anonymisation": _object(
            {**anonymisation, "redact_properties": {**redact, "uniqueItems": True}}, tuple(anonymisation)
        ),
        "ProjectSettings": _object(
            {
                "rate_limits": _ref("RateLimits"),
                "batching": _ref("Batching"),
                "anonymisation": _ref("Anonymisation"),
            },
            ("rate_limits", "batching", "anonymisation"),
        ),
        "ProjectSettingsPatch": _object(
            {
                "rate_limits": _object(rate_limits),
                "batching": _object(batching),
                "anonymisation": _object(anonymisation),
            },
            extra={"description": "Settings to change; a group's fields not named keep their values."},
        ),
        # -- projects ------------------------------------------------------------------------
        "AllowedOrigin": {
            "type": "string",
            "pattern": r"^(\*|https?://[^/?#]+)$",
            "description": "A normalised origin `scheme://host[:port]`, a wildcard "
            "`scheme://*.domain[:port]`, or `*` (any origin).",
        },
        "AllowedOriginInput": {
            "type": "string",
            "pattern": r"\S",
            "description": "An origin `scheme://host[:port]` (http or https; normalised: lowercase host, "
            "default port and trailing `/` dropped), a wildcard over the subdomains of a domain of at "
            "least two labels (`https://*.example.com`), or `*` (needs `allow_any_origin: true`). "
            "A bad entry is refused with `400 invalid_origin` naming it, e.g. `allowed_origins[1]`.",
            "examples": ["https://shop.example.com"],
        },
        "PublicKey": _object(
            {
                "key": {"type": "string", "pattern": "^hwpk_[A-Za-z0-9_-]+$"},
                "created_at": iso_time,
                "expires_at": {**iso_time_or_null, "description": "Set once the key was rotated."},
            },
            ("key", "created_at", "expires_at"),
        ),
        "SecretKeyHint": _object(
            {
                "hint": {
                    "type": "string",
                    "pattern": "^hwsk_[A-Za-z0-9_-]{4}$",
                    "description": "The key's first characters; the key itself is never stored.",
                },
                "created_at": iso_time,
                "expires_at": iso_time_or_null,
            },
            ("hint", "created_at", "expires_at"),
        ),
        "Project": _object(
            {
                "id": _ref("ProjectId"),
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "enabled": {"type": "boolean"},
                "allowed_origins": {"type": "array", "items": _ref("AllowedOrigin"), "uniqueItems": True},
                "allow_any_origin": {"type": "boolean"},
                "settings": _ref("ProjectSettings"),
                "created_at": iso_time,
                "updated_at": iso_time_or_null,
                "database": {"type": "string", "pattern": "^hw_[a-z0-9_]{1,48}$"},
                "public_keys": {"type": "array", "items": _ref("PublicKey")},
                "secret_keys": {"type": "array", "items": _ref("SecretKeyHint")},
            },
            (
                "id",
                "name",
                "enabled",
                "allowed_origins",
                "allow_any_origin",
                "settings",
                "created_at",
                "updated_at",
                "database",
                "public_keys",
                "secret_keys",
            ),
            # `*` is only ever stored together with allow_any_origin.
            {
                "if": {"properties": {"allowed_origins": {"contains": {"const": "*"}}}},
                "then": {"properties": {"allow_any_origin": {"const": True}}},
            },
        ),
        "ProjectAnswer": _object(
            {"project": _ref("Project"), "revision": {"type": "integer", "minimum": 1}},
            ("project", "revision"),
        ),
        "CreatedProject": _object(
            {
                "project": _ref("Project"),
                "revision": {"type": "integer", "minimum": 1},
                "public_key": {"type": "string", "pattern": "^hwpk_[A-Za-z0-9_-]+$"},
                "secret_key": {
                    "type": "string",
                    "pattern": "^hwsk_[A-Za-z0-9_-]+$",
                    "description": "Shown in this answer only: headwater stores its SHA-256 digest.",
                },
            },
            ("project", "revision", "public_key", "secret_key"),
        ),
        "CreateProject": _object(
            {
                "id": _ref("ProjectId"),
                "name": {
                    "type": "string",
                    "maxLength": 200,
                    "pattern": r"\S",
                    "description": "Defaults to the id; surrounding whitespace is removed.",
                },
                "allowed_origins": {"type": "array", "items": _ref("AllowedOriginInput"), "default": []},
                "allow_any_origin": {
                    "type": "boolean",
                    "default": False,
                    "description": "Confirms `*` in allowed_origins.",
                },
                "settings": _ref("ProjectSettingsPatch"),
            },
            ("id",),
            {
                "if": {
                    "properties": {"allowed_origins": {"contains": _ANY_ORIGIN_ENTRY}},
                    "required": ["allowed_origins"],
                },
                "then": {
                    "properties": {"allow_any_origin": {"const": True}},
                    "required": ["allow_any_origin"],
                },
                "examples": [
                    {
                        "id": "shop",
                        "name": "Shop",
                        "allowed_origins": ["https://shop.example.com", "https://*.example.org"],
                    }
                ],
            },
        ),
        "ProjectPatch": _object(
            {
                "name": {"type": "string", "maxLength": 200, "pattern": r"\S"},
                "enabled": {"type": "boolean"},
                "allowed_origins": {
                    "type": "array",
                    "items": _ref("AllowedOriginInput"),
                    "description": "Replaces the list.",
                },
                "allow_any_origin": {
                    "type": "boolean",
                    "description": "false is refused while `*` stays in allowed_origins.",
                },
                "settings": _ref("ProjectSettingsPatch"),
            },
            extra={
                "if": {
                    "properties": {"allowed_origins": {"contains": _ANY_ORIGIN_ENTRY}},
                    "required": ["allowed_origins"],
                },
                "then": {"properties": {"allow_any_origin": {"const": True}}},
                "examples": [{"name": "Shop", "settings": {"rate_limits": {"ip_events_per_second": 50}}}],
            },
        ),
        "ProjectPage": _object(
            {
                "projects": {"type": "array", "items": _ref("Project")},
                "next_after": {
                    "type": ["string", "null"],
                    "pattern": PROJECT_ID_PATTERN.pattern,
                    "description": "Pass as `after` for the next page; null on the last page.",
                },
            },
            ("projects", "next_after"),
        ),
        "RotateKey": _object(
            {
                "kind": {"type": "string", "enum": ["public", "secret"]},
                "grace_seconds": _number(
                    0,
                    MAX_GRACE_SECONDS,
                    nullable=True,
                    description="How long the current keys of this kind stay valid; null: 24 hours.",
                ),
            },
            ("kind",),
        ),
        "RotatedKey": _object(
            {
                "project": _ref("Project"),
                "revision": {"type": "integer", "minimum": 1},
                "kind": {"type": "string", "enum": ["public", "secret"]},
                "key": {
                    "type": "string",
                    "pattern": "^hw[ps]k_[A-Za-z0-9_-]+$",
                    "description": "The new key; a secret key is shown in this answer only.",
                },
                "previous_keys_expire_at": {
                    **iso_time,
                    "description": "When the last of the earlier keys of this kind stops working.",
                },
            },
            ("project", "revision", "kind", "key", "previous_keys_expire_at"),
        ),
        "PurgedProject": _object(
            {
                "id": _ref("ProjectId"),
                "purged": {"const": True},
                "messages_purged": {"type": "integer", "minimum": 0},
                "database_dropped": {"type": "string", "pattern": "^hw_[a-z0-9_]{1,48}$"},
            },
            ("id", "purged", "messages_purged", "database_dropped"),
        ),
        "Query": {
            "type": "object",
            "properties": {"sql": {"type": "string", "minLength": 1, "description": "One read-only query."}},
            "required": ["sql"],
            "examples": [{"sql": "SELECT event, count() FROM events FINAL GROUP BY event"}],
        },
        "QueryResult": _object(
            {
                "columns": {"type": "array", "items": {"type": "string"}},
                "rows": {
                    "type": "array",
                    "items": {"type": "array"},
                    "description": "One array per row, in column order; values as JSON, dates as strings.",
                },
            },
            ("columns", "rows"),
        ),
    }


def openapi_document() -> dict[str, Any]:
    from .app import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE  # app imports this module

    admin_errors = _errors(401, 403, 429)
    no_auth: list[dict[str, list[str]]] = []
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "headwater control API",
            "version": "1",
            "description": "Projects, keys and read-only queries. Every error is an `Error` object with "
            "the HTTP status, a machine-readable `code`, a `message` and, when one part of the request is "
            "at fault, its `field`.",
        },
        "security": [{"adminToken": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness",
                    "security": no_auth,
                    "responses": {"200": {"description": "Alive.", "content": _json(_ref("Health"))}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readiness",
                    "summary": "Readiness: connected to NATS",
                    "security": no_auth,
                    "responses": {
                        "200": {"description": "Ready.", "content": _json(_ref("Readiness"))},
                        "503": {"description": "Not ready.", "content": _json(_ref("Readiness"))},
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapiDocument",
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "The OpenAPI document.", "content": _json({"type": "object"})},
                        **admin_errors,
                    },
                }
            },
            "/v1/projects": {
                "post": {
                    "operationId": "createProject",
                    "summary": "Create a project: its database, its config and a public and a secret key",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": "A retry with the same key and body gets the first answer "
                            "again (with `Idempotent-Replayed: true`) for 24 hours. Use a random UUID.",
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_KEY_LENGTH,
                                # Printable characters (a header is read as Latin-1).
                                "pattern": r"^[\x20-\x7e\xa1-\xac\xae-\xff]+$",
                            },
                        }
                    ],
                    "requestBody": {"required": True, "content": _json(_ref("CreateProject"))},
                    "responses": {
                        "201": {
                            "description": "Created (or the replayed answer of an earlier create).",
                            "headers": {
                                "ETag": {**ETAG_HEADER, "required": True},
                                "Idempotent-Replayed": {
                                    "description": "Present when this is the stored answer of an earlier "
                                    "request with the same Idempotency-Key.",
                                    "schema": {"type": "string", "enum": ["true"]},
                                },
                            },
                            "content": _json(_ref("CreatedProject")),
                            "links": _project_links("$response.body#/project/id"),
                        },
                        **_errors(400, 401, 403, 409, 413, 422, 429),
                    },
                },
                "get": {
                    "operationId": "listProjects",
                    "summary": "Projects in id order, a page at a time",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE_SIZE,
                                "default": DEFAULT_PAGE_SIZE,
                            },
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "description": "Start after this project id (`next_after` of the previous page).",
                            "schema": _ref("ProjectId"),
                        },
                    ],
                    "responses": {
                        "200": {"description": "A page of projects.", "content": _json(_ref("ProjectPage"))},
                        **_errors(400, 401, 403, 429),
                    },
                },
            },
            "/v1/projects/{project_id}": {
                "parameters": [PROJECT_ID_PARAMETER],
                "get": {
                    "operationId": "getProject",
                    "summary": "One project, with its revision",
                    "responses": {"200": PROJECT_RESPONSE, **_errors(400, 401, 403, 404, 429)},
                },
                "patch": {
                    "operationId": "updateProject",
                    "summary": "Change a project; fields not named keep their values",
                    "parameters": [
                        {
                            "name": "If-Match",
                            "in": "header",
                            "required": False,
                            "description": "Apply only if the project is still at this revision (its "
                            "ETag); otherwise 412. Without it, or with `*`, the change is applied to the "
                            "newest revision.",
                            "schema": {"type": "string", "pattern": r'^(\*|(W/)?"[0-9]+")$'},
                        }
                    ],
                    "requestBody": {"required": True, "content": _json(_ref("ProjectPatch"))},
                    "responses": {"200": PROJECT_RESPONSE, **_errors(400, 401, 403, 404, 409, 412, 413, 429)},
                },
                "delete": {
                    "operationId": "deleteProject",
                    "summary": "Disable a project, or purge it with all its events",
                    "description": "Without `purge=true` the project is disabled (its keys stop working) "
                    "and kept. With `purge=true&confirm=<project id>` its messages are removed from "
                    "JetStream, its database is dropped and its config deleted.",
                    "parameters": [
                        {
                            "name": "purge",
                            "in": "query",
                            "schema": {"type": "boolean", "default": False},
                        },
                        {
                            "name": "confirm",
                            "in": "query",
                            "description": "The project id, required with `purge=true` (it may also be sent "
                            'as a JSON body `{"confirm": "<project id>"}`).',
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Disabled (the project, with an ETag) or purged.",
                            "headers": {"ETag": ETAG_HEADER},
                            "content": _json({"oneOf": [_ref("ProjectAnswer"), _ref("PurgedProject")]}),
                        },
                        **_errors(400, 401, 403, 404, 409, 413, 429),
                    },
                },
            },
            "/v1/projects/{project_id}/keys/rotate": {
                "parameters": [PROJECT_ID_PARAMETER],
                "post": {
                    "operationId": "rotateProjectKey",
                    "summary": "Issue a new key; the current ones of that kind expire after a grace period",
                    "requestBody": {"required": True, "content": _json(_ref("RotateKey"))},
                    "responses": {
                        "200": {
                            "description": "The new key and the project.",
                            "headers": {"ETag": {**ETAG_HEADER, "required": True}},
                            "content": _json(_ref("RotatedKey")),
                        },
                        **_errors(400, 401, 403, 404, 409, 413, 429),
                    },
                },
            },
            "/v1/projects/{project_id}/query": {
                "parameters": [PROJECT_ID_PARAMETER],
                "post": {
                    "operationId": "queryProject",
                    "summary": "Read-only SQL in the project's database",
                    "description": "One SELECT confined to the project's database: ClickHouse parses it "
                    "and anything else (another database, `system` tables, table functions that reach "
                    "files or servers, dictionaries, KILL, SETTINGS, writes) is `403 query_not_allowed`; "
                    "it runs with `readonly=1` and limits on memory, time and rows "
                    "(`422 query_too_expensive`) and a cap on concurrent queries (`429`).",
                    "requestBody": {"required": True, "content": _json(_ref("Query"))},
                    "responses": {
                        "200": {"description": "The result.", "content": _json(_ref("QueryResult"))},
                        **_errors(400, 401, 403, 404, 413, 422, 429, 503),
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the control plane's admin tokens.",
                }
            },
            "schemas": _schemas(),
            "responses": {f"Error{status}": _error_response(status) for status in ERROR_CODES},
        },
    }


def _project_links(project_id: str) -> dict[str, Any]:
    """Links from an answer that names a project to the operations on it (for clients and for
    stateful testing)."""
    target = {"project_id": project_id}
    return {
        "GetProject": {"operationId": "getProject", "parameters": target},
        "UpdateProject": {"operationId": "updateProject", "parameters": target},
        "RotateKey": {"operationId": "rotateProjectKey", "parameters": target},
        "QueryProject": {"operationId": "queryProject", "parameters": target},
        "DisableProject": {"operationId": "deleteProject", "parameters": target},
        "PurgeProject": {
            "operationId": "deleteProject",
            "parameters": {**target, "query.purge": "true", "query.confirm": project_id},
        },
    }
