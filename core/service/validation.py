"""Typed request bodies: a parsed JSON value converted to a msgspec Struct, or an APIError naming
the field at fault.

The structs declare the rules (types, ranges, patterns, required and unknown fields); this module
is the one place where msgspec's `ValidationError` becomes the API's 400 `{"code", "message",
"field"}`. A struct may map a field to a code other than `invalid_field` in its `error_codes`
ClassVar, keyed by the field's path with list indices written `[]` (`{"allowed_origins[]":
"invalid_origin"}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from msgspec import inspect

from .errors import APIError

T = TypeVar("T")

_MISSING = re.compile(r"Object missing required field `(.*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")
_INDEX = re.compile(r"\[\d+\]")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[\d+\]")
_EXPECTED = re.compile(r"Expected `([^`]*)`(.*)")
_ENUM = re.compile(r"Invalid enum value (.*)")
_TYPE_NAMES = {
    "float": "a number",
    "int": "an integer",
    "str": "a string",
    "bool": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def convert_body(value: Any, struct: type[T], field_prefix: str = "") -> T:
    """`value` (parsed JSON) as a `struct`; 400 naming the field at fault otherwise."""
    try:
        return msgspec.convert(value, struct)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, struct, field_prefix) from None


def validation_error(error: msgspec.ValidationError, struct: type, field_prefix: str = "") -> APIError:
    """The APIError for msgspec's `error` converting to `struct`: its message ends with
    `` - at `$.a.b[0]` `` unless the fault is the value as a whole; a missing or unknown field is
    named by the message itself."""
    problem, _, at = str(error).partition(" - at `")
    path = at.removesuffix("`").removeprefix("$")
    if missing := _MISSING.fullmatch(problem):
        path, problem = f"{path}.{missing.group(1)}", "is required"
    elif unknown := _UNKNOWN.fullmatch(problem):
        expected = _field_names_at(struct, path)
        path, problem = f"{path}.{unknown.group(1)}", "is not a known field"
        if expected:
            problem += f"; expected one of {sorted(expected)}"
    path = path.removeprefix(".")
    field = ".".join(part for part in (field_prefix, path) if part).replace(".[", "[")
    codes: Mapping[str, str] = getattr(struct, "error_codes", {})
    code = codes.get(_INDEX.sub("[]", path), "invalid_field")
    return APIError(400, code, f"{field or 'the body'} {_readable(problem)}", field or None)


def _readable(problem: str) -> str:
    """msgspec's "Expected `float` <= 60.0" as "must be a number <= 60.0"."""
    if enum := _ENUM.fullmatch(problem):
        return f"cannot be {enum.group(1)}: it is not one of the allowed values"
    expected = _EXPECTED.fullmatch(problem)
    if not expected:
        return problem
    kinds = " or ".join(_TYPE_NAMES.get(kind, kind) for kind in expected.group(1).split(" | "))
    return f"must be {kinds}{expected.group(2)}"


def _field_names_at(struct: type, path: str) -> list[str]:
    """The fields of the struct found at `path` (`.a.b[0]`) inside `struct`; none if it is not one."""
    node = _unwrapped(inspect.type_info(struct))
    for part in _PATH_PART.finditer(path):
        name = part.group(1)
        if name is not None and isinstance(node, inspect.StructType):
            node = _unwrapped(next((f.type for f in node.fields if f.encode_name == name), inspect.AnyType()))
        elif name is None and isinstance(node, inspect.ListType | inspect.VarTupleType):
            node = _unwrapped(node.item_type)
        else:
            return []
    return [field.encode_name for field in node.fields] if isinstance(node, inspect.StructType) else []


def _unwrapped(node: inspect.Type) -> inspect.Type:
    """The type under its constraints; a union's struct member (`Struct | None`)."""
    while isinstance(node, inspect.Metadata):
        node = node.type
    if isinstance(node, inspect.UnionType):
        return next((member for member in node.types if isinstance(member, inspect.StructType)), node)
    return node
