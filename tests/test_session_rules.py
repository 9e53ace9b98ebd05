"""The project settings group `sessions`: its defaults, its ranges refused naming the field, updates
that merge, the OpenAPI schema, and the same through the control API on real NATS."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hw_testing import StackFactory, admin_headers

from headwater.control.openapi import openapi_document
from headwater.control.service import apply_patch
from headwater.core.projects.project import Project
from headwater.core.projects.settings import ProjectSettings, Sessions
from headwater.core.service.errors import APIError
from headwater.ops.runtime import Stack

PROJECT = Project(id="shop", name="Shop", allowed_origins=(), keys=(), created_at="2026-01-01T00:00:00.000Z")
DEFAULTS = {
    "inactivity_timeout_seconds": 1800,
    "max_length_seconds": 86_400,
    "identity": "anonymous_id",
    "honour_client_session_id": True,
    "lateness_seconds": 21_600,
}
WEEK = 7 * 86_400

# (sessions patch, the field named in the refusal)
REFUSED: list[tuple[Any, str]] = [
    ({"inactivity_timeout_seconds": 59}, "inactivity_timeout_seconds"),
    ({"inactivity_timeout_seconds": 36_001}, "inactivity_timeout_seconds"),
    ({"inactivity_timeout_seconds": "1800"}, "inactivity_timeout_seconds"),
    ({"inactivity_timeout_seconds": 90.5}, "inactivity_timeout_seconds"),
    ({"inactivity_timeout_seconds": None}, "inactivity_timeout_seconds"),
    ({"max_length_seconds": 59}, "max_length_seconds"),
    ({"max_length_seconds": WEEK + 1}, "max_length_seconds"),
    ({"identity": "email"}, "identity"),
    ({"honour_client_session_id": "yes"}, "honour_client_session_id"),
    ({"lateness_seconds": -1}, "lateness_seconds"),
    ({"lateness_seconds": WEEK + 1}, "lateness_seconds"),
    ({"timeout": 60}, "timeout"),  # unknown field
]


def test_defaults() -> None:
    assert ProjectSettings().sessions == Sessions()
    assert ProjectSettings().to_dict()["sessions"] == DEFAULTS
    assert ProjectSettings.from_dict({}).sessions == Sessions()


@pytest.mark.parametrize(("sessions", "field"), REFUSED)
def test_out_of_range_values_are_refused_naming_the_field(sessions: dict[str, Any], field: str) -> None:
    for write in (
        lambda: ProjectSettings.from_dict({"sessions": sessions}),
        lambda: ProjectSettings().merged({"sessions": sessions}),
        lambda: apply_patch(PROJECT, {"settings": {"sessions": sessions}}),
    ):
        with pytest.raises(APIError) as refused:
            write()
        assert (refused.value.status, refused.value.code) == (400, "invalid_field")
        assert refused.value.field == f"settings.sessions.{field}"


def test_the_group_itself_must_be_an_object() -> None:
    with pytest.raises(APIError) as refused:
        ProjectSettings().merged({"sessions": 1800})
    assert refused.value.field == "settings.sessions"


@pytest.mark.parametrize(
    "sessions",
    [
        {"inactivity_timeout_seconds": 60},
        {"inactivity_timeout_seconds": 36_000},
        {"max_length_seconds": 60},
        {"max_length_seconds": WEEK},
        {"identity": "user_id"},
        {"honour_client_session_id": False},
        {"lateness_seconds": 0},
        {"lateness_seconds": WEEK},
    ],
)
def test_the_bounds_are_accepted(sessions: dict[str, Any]) -> None:
    assert ProjectSettings.from_dict({"sessions": sessions}).to_dict()["sessions"] == DEFAULTS | sessions


def test_an_update_keeps_the_fields_it_does_not_name() -> None:
    first = ProjectSettings().merged({"sessions": {"inactivity_timeout_seconds": 600}})
    second = first.merged({"sessions": {"identity": "user_id"}, "batching": {"span_seconds": 2}})
    assert second.to_dict()["sessions"] == DEFAULTS | {
        "inactivity_timeout_seconds": 600,
        "identity": "user_id",
    }
    assert ProjectSettings.from_dict(second.to_dict()) == second


def test_the_openapi_document_declares_the_group_with_its_ranges() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["ProjectSettings"]["properties"]["sessions"]["default"] == DEFAULTS
    fields = schemas["Sessions"]["properties"]
    assert set(fields) == set(DEFAULTS)
    assert (
        fields["inactivity_timeout_seconds"]["minimum"],
        fields["inactivity_timeout_seconds"]["maximum"],
    ) == (
        60,
        36_000,
    )
    assert (fields["max_length_seconds"]["minimum"], fields["max_length_seconds"]["maximum"]) == (60, WEEK)
    assert (fields["lateness_seconds"]["minimum"], fields["lateness_seconds"]["maximum"]) == (0, WEEK)
    assert fields["identity"]["enum"] == ["anonymous_id", "user_id"]
    assert schemas["Sessions"]["additionalProperties"] is False


@pytest.fixture
async def control(make_stack: StackFactory) -> Stack:
    return await make_stack(control=True)


async def call(
    http: httpx.AsyncClient, stack: Stack, method: str, path: str, body: Any = None
) -> httpx.Response:
    return await http.request(method, f"{stack.control_url}/v1{path}", json=body, headers=admin_headers())


@pytest.mark.services
async def test_the_rules_through_the_control_api(
    http: httpx.AsyncClient, control: Stack, project_id: str
) -> None:
    created = await call(http, control, "POST", "/projects", {"id": project_id})
    assert created.status_code == 201, created.text
    assert created.json()["project"]["settings"]["sessions"] == DEFAULTS

    changed = await call(
        http, control, "PATCH", f"/projects/{project_id}", {"settings": {"sessions": {"lateness_seconds": 0}}}
    )
    assert changed.status_code == 200, changed.text
    changed = await call(
        http,
        control,
        "PATCH",
        f"/projects/{project_id}",
        {"settings": {"sessions": {"inactivity_timeout_seconds": 900, "identity": "user_id"}}},
    )
    assert changed.status_code == 200, changed.text
    expected = DEFAULTS | {"lateness_seconds": 0, "inactivity_timeout_seconds": 900, "identity": "user_id"}
    assert changed.json()["project"]["settings"]["sessions"] == expected
    assert changed.json()["project"]["settings"]["batching"] == {"span_seconds": 1.0}  # other groups kept

    refused = await call(
        http,
        control,
        "PATCH",
        f"/projects/{project_id}",
        {"settings": {"sessions": {"max_length_seconds": 30}}},
    )
    assert refused.status_code == 400
    assert (refused.json()["code"], refused.json()["field"]) == (
        "invalid_field",
        "settings.sessions.max_length_seconds",
    )
    shown = await call(http, control, "GET", f"/projects/{project_id}")
    assert shown.json()["project"]["settings"]["sessions"] == expected
    assert shown.json()["revision"] == changed.json()["revision"]


@pytest.mark.services
async def test_a_project_can_be_created_with_its_rules(
    http: httpx.AsyncClient, control: Stack, project_id: str
) -> None:
    rules = {"inactivity_timeout_seconds": 60, "honour_client_session_id": False}
    created = await call(
        http, control, "POST", "/projects", {"id": project_id, "settings": {"sessions": rules}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["project"]["settings"]["sessions"] == DEFAULTS | rules
    refused = await call(
        http,
        control,
        "POST",
        "/projects",
        {"id": project_id + "_b", "settings": {"sessions": {"identity": "device"}}},
    )
    assert refused.status_code == 400
    assert refused.json()["field"] == "settings.sessions.identity"


def test_a_whole_number_written_with_a_fraction_is_an_integer() -> None:
    """JSON Schema counts 60.0 as an integer; the API's fuzzer sends it so."""
    settings = ProjectSettings.from_dict({"sessions": {"inactivity_timeout_seconds": 120.0}})
    assert settings.sessions.inactivity_timeout_seconds == 120
    with pytest.raises(APIError):
        ProjectSettings.from_dict({"sessions": {"inactivity_timeout_seconds": 120.5}})
