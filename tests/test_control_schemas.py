"""The control API's declared bodies: errors name the field at fault, deep in settings too, and the
generated OpenAPI document lists exactly the app's routes."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
from hw_testing import ADMIN_TOKEN

from headwater.control.app import create_app
from headwater.control.openapi import openapi_document
from headwater.control.schemas import CreateProject, ProjectPatch, RotateKey
from headwater.control.service import apply_patch
from headwater.control.settings import AdminToken, ControlSettings
from headwater.core.projects.project import Project
from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.errors import APIError
from headwater.core.service.validation import convert_body

MAX_GRACE = 30 * 24 * 3600
PROJECT = Project(id="shop", name="Shop", allowed_origins=(), keys=(), created_at="2026-01-01T00:00:00.000Z")
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # answered by Quart for every route


def refusal(call: Any) -> tuple[int, str, str | None, str]:
    with pytest.raises(APIError) as refused:
        call()
    error = refused.value
    return error.status, error.code, error.field, error.message


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"rate_limits": {"burst_seconds": "10"}}, "settings.rate_limits.burst_seconds"),  # wrong type
        ({"rate_limits": {"burst_seconds": True}}, "settings.rate_limits.burst_seconds"),  # bool is no number
        ({"rate_limits": {"ip_events_per_second": 0}}, "settings.rate_limits.ip_events_per_second"),  # range
        ({"batching": {"span_seconds": 61}}, "settings.batching.span_seconds"),
        ({"anonymisation": {"redact_properties": ["a", ""]}}, "settings.anonymisation.redact_properties[1]"),
        ({"anonymisation": {"redact_properties": ["a"] * 101}}, "settings.anonymisation.redact_properties"),
        ({"anonymisation": {"mask": True}}, "settings.anonymisation.mask"),  # unknown, deep
        ({"anonymisation": []}, "settings.anonymisation"),
        ({"colour": "blue"}, "settings.colour"),
        ([], "settings"),
    ],
)
def test_wrong_settings_are_refused_naming_the_field_path(settings: Any, field: str) -> None:
    """On create, on update, and as ProjectSettings: the same 400, code and field path."""
    create = refusal(
        lambda: ProjectSettings().merged(
            convert_body({"id": "a", "settings": settings}, CreateProject).settings
        )
    )
    update = refusal(lambda: apply_patch(PROJECT, {"settings": settings}))
    assert create[:3] == update[:3] == (400, "invalid_field", field)
    assert create[3] == update[3]


@pytest.mark.parametrize(
    ("struct", "body", "code", "field"),
    [
        (CreateProject, {"name": "x"}, "invalid_project_id", "id"),  # missing
        (CreateProject, {"id": "shop\n"}, "invalid_project_id", "id"),  # `$` before a newline
        (CreateProject, {"id": "a", "allowed_origins": [" "]}, "invalid_origin", "allowed_origins[0]"),
        (CreateProject, {"id": "a", "allowed_origins": [1]}, "invalid_origin", "allowed_origins[0]"),
        (CreateProject, {"id": "a", "name": "x" * 201}, "invalid_field", "name"),
        (CreateProject, {"id": "a", "keys": []}, "invalid_field", "keys"),
        (ProjectPatch, {"enabled": None}, "invalid_field", "enabled"),
        (
            ProjectPatch,
            {"allowed_origins": ["https://ok.example", "https://x/path"]},
            "invalid_origin",
            "allowed_origins[1]",
        ),
        (
            RotateKey,
            {"kind": "public", "grace_seconds": MAX_GRACE + 1},
            "invalid_field",
            "grace_seconds",
        ),
        (RotateKey, {}, "invalid_field", "kind"),
    ],
)
def test_wrong_bodies_are_refused_with_their_code_and_field(
    struct: type, body: dict[str, Any], code: str, field: str
) -> None:
    def convert() -> None:
        converted = convert_body(body, struct)
        if isinstance(converted, ProjectPatch):
            apply_patch(PROJECT, body)

    assert refusal(convert)[:3] == (400, code, field)


def test_settings_merge_and_keep_the_fields_not_named() -> None:
    current = ProjectSettings().merged({"rate_limits": {"project_events_per_second": 5, "burst_seconds": 3}})
    changed = current.merged(
        {"rate_limits": {"burst_seconds": 4}, "anonymisation": {"redact_properties": ["a", "a"]}}
    )
    assert changed.rate_limits.project_events_per_second == 5.0
    assert changed.rate_limits.burst_seconds == 4.0
    assert changed.anonymisation.redact_properties == ("a",)
    assert ProjectSettings.from_dict(changed.to_dict()) == changed


def test_every_route_of_the_app_is_in_the_document_and_no_other() -> None:
    settings = ControlSettings(
        clickhouse_url="chdb:///unused", admin_tokens=(AdminToken("tests", ADMIN_TOKEN),)
    )
    unused = cast(Any, None)  # the routes are registered without touching their services
    app = create_app(settings, unused, unused, unused, unused)
    served = {
        (method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in IGNORED_METHODS
    }
    documented = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert served == documented


def test_an_unknown_field_is_answered_with_the_fields_expected_there() -> None:
    message = refusal(lambda: apply_patch(PROJECT, {"settings": {"batching": {"span": 2}}}))[3]
    assert message == "settings.batching.span is not a known field; expected one of ['span_seconds']"
