"""A stream's JSON schema as the columns of its table (docs/import.md, "Types").

| JSON schema                                   | ClickHouse                  |
|-----------------------------------------------|-----------------------------|
| `string`                                      | `String`                    |
| `string` with `format: date-time`             | `DateTime64(6, 'UTC')`      |
| `string` with `format: date`                  | `Date32`                    |
| `integer`                                     | `Int64`                     |
| `number`                                      | `Float64`                   |
| `boolean`                                     | `Bool`                      |
| `object`, `array`                             | `String` (the value's JSON) |
| several types, or none (`{}`, `anyOf`, ...)   | `String` (JSON; a string as it is) |

A column is `Nullable(...)` when its type list (or an `anyOf` member) allows `null`; key columns
never are (a record without its key is refused).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .names import MAX_COLUMNS, MAX_KEY_PROPERTIES, InvalidName, column_name


class Kind(enum.Enum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATETIME = "date-time"
    DATE = "date"
    OBJECT = "object"
    ARRAY = "array"
    JSON = "json"  # several types or none: strings as they are, anything else as its JSON


_CLICKHOUSE = {
    Kind.STRING: "String",
    Kind.INTEGER: "Int64",
    Kind.NUMBER: "Float64",
    Kind.BOOLEAN: "Bool",
    Kind.DATETIME: "DateTime64(6, 'UTC')",
    Kind.DATE: "Date32",
    Kind.OBJECT: "String",
    Kind.ARRAY: "String",
    Kind.JSON: "String",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str  # the column's name (imports/names.py)
    prop: str  # the record's property it is read from
    kind: Kind
    nullable: bool

    @property
    def clickhouse_type(self) -> str:
        base = _CLICKHOUSE[self.kind]
        return f"Nullable({base})" if self.nullable else base

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "prop": self.prop, "kind": self.kind.value, "nullable": self.nullable}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Column:
        return cls(value["name"], value["prop"], Kind(value["kind"]), bool(value["nullable"]))


class SchemaError(ValueError):
    """A schema headwater cannot store; `field` is where in it (`schema.properties.x`)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _types(schema: Mapping[str, Any]) -> tuple[set[str], str | None]:
    """The JSON types a property schema allows, and its string format."""
    if "anyOf" in schema or "oneOf" in schema:
        members = schema.get("anyOf") or schema.get("oneOf") or []
        found: set[str] = set()
        formats: set[str | None] = set()
        for member in members if isinstance(members, list) else []:
            if isinstance(member, Mapping):
                types, fmt = _types(member)
                found |= types
                if fmt is not None:
                    formats.add(fmt)
        return found, formats.pop() if len(formats) == 1 else None
    declared = schema.get("type")
    if isinstance(declared, str):
        types = {declared}
    elif isinstance(declared, list):
        types = {t for t in declared if isinstance(t, str)}
    else:
        types = set()
    fmt = schema.get("format")
    return types, fmt if isinstance(fmt, str) else None


def column_kind(schema: Mapping[str, Any]) -> tuple[Kind, bool]:
    """The kind of a property's column and whether it is nullable."""
    types, fmt = _types(schema)
    nullable = "null" in types or not types
    types.discard("null")
    if types == {"integer", "number"}:
        types = {"number"}
    if len(types) != 1:
        return Kind.JSON, nullable
    only = types.pop()
    if only == "string":
        return {"date-time": Kind.DATETIME, "date": Kind.DATE}.get(fmt or "", Kind.STRING), nullable
    kinds = {
        "integer": Kind.INTEGER,
        "number": Kind.NUMBER,
        "boolean": Kind.BOOLEAN,
        "object": Kind.OBJECT,
        "array": Kind.ARRAY,
    }
    return kinds.get(only, Kind.JSON), nullable


def declared_columns(schema: Mapping[str, Any], key_properties: Sequence[str]) -> list[Column]:
    """The columns a stream's JSON schema declares, in its order; SchemaError when it cannot be
    stored (no properties, a name that is not one, two properties on one column, too many)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        raise SchemaError("the schema must be an object schema with `properties`", "schema.properties")
    if len(properties) > MAX_COLUMNS:
        raise SchemaError(f"a schema declares at most {MAX_COLUMNS} properties", "schema.properties")
    if len(key_properties) > MAX_KEY_PROPERTIES:
        raise SchemaError(f"at most {MAX_KEY_PROPERTIES} key properties", "key_properties")
    columns: list[Column] = []
    taken: dict[str, str] = {}
    for prop, definition in properties.items():
        field = f"schema.properties.{prop}"
        try:
            name = column_name(prop)
        except InvalidName as exc:
            raise SchemaError(str(exc), field) from None
        if name in taken:
            raise SchemaError(f"{prop!r} and {taken[name]!r} would both be column {name!r}", field)
        taken[name] = prop
        kind, nullable = column_kind(definition if isinstance(definition, Mapping) else {})
        columns.append(Column(name, prop, kind, nullable and prop not in key_properties))
    for index, key in enumerate(key_properties):
        if key not in properties:
            raise SchemaError(
                f"key property {key!r} is not among the schema's properties", f"key_properties[{index}]"
            )
    if len(set(key_properties)) != len(key_properties):
        raise SchemaError("a key property is named twice", "key_properties")
    return columns


def merged(stored: Sequence[Column], declared: Sequence[Column]) -> list[Column]:
    """The table's columns after a SCHEMA: every stored column as it is (a column is never dropped
    nor retyped), then the declared ones it did not have, in their order."""
    known = {c.name for c in stored}
    return [*stored, *(c for c in declared if c.name not in known)]
