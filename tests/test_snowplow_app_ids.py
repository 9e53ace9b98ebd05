"""Snowplow app ids in project settings and the registry's index of them, without services."""

from __future__ import annotations

from dataclasses import replace

import pytest

from headwater.core.projects.keys import ApiKey
from headwater.core.projects.project import Project
from headwater.core.projects.registry import ProjectRegistry
from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.errors import APIError

CREATED = "2026-01-01T00:00:00.000Z"


def project(project_id: str, *app_ids: str) -> Project:
    public, _ = ApiKey.issue("public", CREATED)
    settings = ProjectSettings.from_dict({"snowplow": {"app_ids": list(app_ids)}})
    return Project(
        id=project_id,
        name=project_id,
        allowed_origins=(),
        keys=(public,),
        created_at=CREATED,
        settings=settings,
    )


def registry(*projects: Project) -> ProjectRegistry:
    registry = ProjectRegistry(None)
    for one in projects:
        registry._view.apply_value(one.id, one.to_json())  # as the KV watcher applies an entry
    return registry


def test_an_app_id_resolves_to_its_project_as_a_public_key() -> None:
    shop = project("shop", "shop-web", "shop-ios")
    found = registry(shop).resolve_app_id("shop-ios")
    assert found is not None
    assert (found.project.id, found.key.kind) == ("shop", "public")
    assert registry(shop).resolve_app_id("other") is None


def test_the_index_follows_changes_and_ignores_a_contested_app_id() -> None:
    shop = project("shop", "web")
    view = registry(shop, project("blog", "web", "blog"))
    assert view.resolve_app_id("web") is None  # two projects claim it: it names neither
    assert view.app_id_owners("web") == ["blog", "shop"]
    assert view.resolve_app_id("blog") is not None
    view._view.apply_value("blog", project("blog", "blog").to_json())  # blog lets "web" go
    match = view.resolve_app_id("web")
    assert match is not None and match.project.id == "shop"
    view._view.apply_value("shop", replace(shop, settings=ProjectSettings()).to_json())
    assert view.resolve_app_id("web") is None
    view._view.apply_value("blog", None)
    assert view.resolve_app_id("blog") is None
    assert view._view.by_app_id == {}


def test_app_id_settings_are_validated_and_deduplicated() -> None:
    settings = ProjectSettings.from_dict({"snowplow": {"app_ids": ["a", "b", "a"]}})
    assert settings.snowplow.app_ids == ("a", "b")
    assert settings.to_dict()["snowplow"] == {"app_ids": ["a", "b"], "allow_without_origin": False}
    merged = settings.merged({"snowplow": {"allow_without_origin": True}})
    assert (merged.snowplow.app_ids, merged.snowplow.allow_without_origin) == (("a", "b"), True)
    for bad in (["with space"], [""], ["x" * 101], [f"a{i}" for i in range(51)]):
        with pytest.raises(APIError) as caught:
            ProjectSettings.from_dict({"snowplow": {"app_ids": bad}})
        assert caught.value.field is not None and caught.value.field.startswith("settings.snowplow.app_ids")
