"""Validation of the control API's bodies and of project settings: headwater's own code against
the same rules declared as pydantic models (what a Quart schema extension such as quart-schema
validates with), side by side in one process.

Each row validates an already-parsed JSON body (the server parses it with orjson first, and a
Quart extension parses before validating too) `--rounds` times and reports microseconds per call:

- `stored settings`: a project's settings as stored in the KV bucket, read by every edge and
  consumer when a project's config changes (`ProjectSettings.from_dict`);
- `settings patch`: a PATCH's `settings` merged onto a project's (`ProjectSettings.merged`);
- `project patch`: a whole PATCH body applied to a project (`apply_patch`), the Project rebuilt.

pydantic is optional (`pip install pydantic`); without it its column says so. Not run by tests.

    python bench/schemas.py [--rounds 100000]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from headwater.control.service import apply_patch
from headwater.core.projects.project import Project
from headwater.core.projects.settings import ProjectSettings

STORED = {
    "rate_limits": {"project_events_per_second": 500.0, "ip_events_per_second": None, "burst_seconds": 10.0},
    "batching": {"span_seconds": 1.0},
    "anonymisation": {"ip": "truncate", "redact_properties": ["email", "phone"]},
}
SETTINGS_PATCH = {"rate_limits": {"ip_events_per_second": 50}, "anonymisation": {"ip": "drop"}}
PROJECT_PATCH = {"name": "Shop", "enabled": True, "settings": SETTINGS_PATCH}
PROJECT = Project(id="shop", name="shop", allowed_origins=(), keys=(), created_at="2026-01-01T00:00:00.000Z")


def headwater_cases() -> dict[str, Callable[[], object]]:
    current = ProjectSettings.from_dict(STORED)
    return {
        "stored settings": lambda: ProjectSettings.from_dict(STORED),
        "settings patch": lambda: current.merged(SETTINGS_PATCH),
        "project patch": lambda: apply_patch(PROJECT, PROJECT_PATCH),
    }


def pydantic_cases() -> dict[str, Callable[[], object]] | None:
    """The same rules as pydantic models; a patch is merged onto the current settings' dump."""
    try:
        from pydantic import BaseModel, ConfigDict, Field
    except ImportError:
        return None

    closed = ConfigDict(extra="forbid", frozen=True, strict=True)
    rate = Field(default=None, ge=0.01, le=1e7)

    class RateLimits(BaseModel):
        model_config = closed
        project_events_per_second: float | None = rate
        ip_events_per_second: float | None = rate
        burst_seconds: float = Field(default=10.0, ge=0.1, le=3600)

    class Batching(BaseModel):
        model_config = closed
        span_seconds: float = Field(default=1.0, ge=0.05, le=60)

    class Anonymisation(BaseModel):
        model_config = closed
        ip: Literal["keep", "truncate", "drop"] = "truncate"
        redact_properties: tuple[str, ...] = Field(default=(), max_length=100)

    class Settings(BaseModel):
        model_config = closed
        rate_limits: RateLimits = RateLimits()
        batching: Batching = Batching()
        anonymisation: Anonymisation = Anonymisation()

    class Patch(BaseModel):
        model_config = closed
        name: str = Field(default="", min_length=1, max_length=200)
        enabled: bool = True
        allowed_origins: list[str] = []
        allow_any_origin: bool = False
        settings: dict[str, Any] = {}

    def merged(base: Settings, patch: dict[str, Any]) -> Settings:
        data = base.model_dump()
        for group, fields in patch.items():
            data[group] = {**data.get(group, {}), **fields}
        return Settings.model_validate(data, strict=False)

    current = Settings.model_validate(STORED, strict=False)

    def project_patch() -> Project:
        patch = Patch.model_validate(PROJECT_PATCH)
        settings = merged(current, patch.settings)
        return replace(PROJECT, name=patch.name, enabled=patch.enabled, settings=settings)  # type: ignore[arg-type]

    return {
        "stored settings": lambda: Settings.model_validate(STORED, strict=False),
        "settings patch": lambda: merged(current, SETTINGS_PATCH),
        "project patch": project_patch,
    }


def microseconds(call: Callable[[], object], rounds: int) -> float:
    return min(timeit.repeat(call, number=rounds, repeat=3)) / rounds * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100_000)
    rounds = parser.parse_args().rounds
    ours, theirs = headwater_cases(), pydantic_cases()
    print(f"{'µs per call':<18}{'headwater':>12}{'pydantic':>12}{'ratio':>8}")
    for name, call in ours.items():
        mine = microseconds(call, rounds)
        if theirs is None:
            print(f"{name:<18}{mine:>12.2f}{'not installed':>14}")
            continue
        other = microseconds(theirs[name], rounds)
        print(f"{name:<18}{mine:>12.2f}{other:>12.2f}{other / mine:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
