"""A project's tunable settings: rate limits, the consumer's batching span, anonymisation rules.

Validated when the control plane receives them; applied by the edge (rate limits) and the
consumers (batching, anonymisation). Updates merge: a PATCH that names one field of a group leaves
the group's other fields as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from headwater.core.service.errors import APIError

IpHandling = Literal["keep", "truncate", "drop"]
IP_HANDLING: tuple[IpHandling, ...] = ("keep", "truncate", "drop")
MAX_REDACTED_PROPERTIES = 100


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Events per second, refilled continuously; `burst_seconds` of headroom. None: unlimited."""

    project_events_per_second: float | None = None
    ip_events_per_second: float | None = None
    burst_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Batching:
    span_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Anonymisation:
    ip: IpHandling = "truncate"
    redact_properties: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProjectSettings:
    rate_limits: RateLimits = field(default_factory=RateLimits)
    batching: Batching = field(default_factory=Batching)
    anonymisation: Anonymisation = field(default_factory=Anonymisation)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["anonymisation"]["redact_properties"] = list(self.anonymisation.redact_properties)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ProjectSettings:
        """Stored settings (already validated when written)."""
        return cls().merged(data or {}, field_prefix="settings")

    def merged(self, patch: object, field_prefix: str = "settings") -> ProjectSettings:
        """These settings with `patch` applied; APIError naming the field at fault otherwise."""
        groups = _object(patch, field_prefix, {"rate_limits", "batching", "anonymisation"})
        result = self
        if "rate_limits" in groups:
            result = replace(
                result, rate_limits=_rate_limits(self.rate_limits, groups["rate_limits"], field_prefix)
            )
        if "batching" in groups:
            result = replace(result, batching=_batching(self.batching, groups["batching"], field_prefix))
        if "anonymisation" in groups:
            result = replace(
                result,
                anonymisation=_anonymisation(self.anonymisation, groups["anonymisation"], field_prefix),
            )
        return result


def _invalid(field_name: str, message: str) -> APIError:
    return APIError(400, "invalid_field", message, field_name)


def _object(value: object, field_name: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(field_name, "must be an object")
    for key in value:
        if key not in allowed:
            raise _invalid(f"{field_name}.{key}", f"unknown setting; expected one of {sorted(allowed)}")
    return value


def _number(value: object, field_name: str, low: float, high: float, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(
            field_name, f"must be a number from {low:g} to {high:g}" + (" or null" if nullable else "")
        )
    return float(value)


def _rate_limits(current: RateLimits, value: object, prefix: str) -> RateLimits:
    name = f"{prefix}.rate_limits"
    data = _object(value, name, {"project_events_per_second", "ip_events_per_second", "burst_seconds"})
    result = current
    if "project_events_per_second" in data:
        value = _number(
            data["project_events_per_second"], f"{name}.project_events_per_second", 0.01, 1e7, True
        )
        result = replace(result, project_events_per_second=value)
    if "ip_events_per_second" in data:
        value = _number(data["ip_events_per_second"], f"{name}.ip_events_per_second", 0.01, 1e7, True)
        result = replace(result, ip_events_per_second=value)
    if "burst_seconds" in data:
        burst = _number(data["burst_seconds"], f"{name}.burst_seconds", 0.1, 3600)
        assert burst is not None
        result = replace(result, burst_seconds=burst)
    return result


def _batching(current: Batching, value: object, prefix: str) -> Batching:
    name = f"{prefix}.batching"
    data = _object(value, name, {"span_seconds"})
    if "span_seconds" not in data:
        return current
    span = _number(data["span_seconds"], f"{name}.span_seconds", 0.05, 60)
    assert span is not None
    return replace(current, span_seconds=span)


def _anonymisation(current: Anonymisation, value: object, prefix: str) -> Anonymisation:
    name = f"{prefix}.anonymisation"
    data = _object(value, name, {"ip", "redact_properties"})
    result = current
    if "ip" in data:
        if data["ip"] not in IP_HANDLING:
            raise _invalid(f"{name}.ip", f"must be one of {list(IP_HANDLING)}")
        result = replace(result, ip=data["ip"])
    if "redact_properties" in data:
        props = data["redact_properties"]
        if (
            not isinstance(props, list)
            or len(props) > MAX_REDACTED_PROPERTIES
            or not all(isinstance(p, str) and 0 < len(p) <= 200 for p in props)
        ):
            raise _invalid(
                f"{name}.redact_properties",
                f"must be a list of at most {MAX_REDACTED_PROPERTIES} property names (1-200 characters)",
            )
        result = replace(result, redact_properties=tuple(dict.fromkeys(props)))
    return result
