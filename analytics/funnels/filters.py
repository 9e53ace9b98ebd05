"""Property filters: a condition on one events column or one value inside `properties`, used on a
funnel's steps and on the funnel as a whole (docs/funnels.md, "Filters"). One definition in three
forms: validation, the plain-Python test the reference applies, and the SQL condition the query
binds (held equal by tests/test_funnels_query.py).

The value a property filter reads is the JSON value at a path of `properties` (`properties.plan`,
`properties.cart.total`), typed: a string matches string operands, a number (integer or not)
number operands, a boolean boolean ones. A value of another type (null, an object, an array, or a
missing key) matches nothing but `neq` and `is_not_set`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

FilterOp = Literal["eq", "neq", "contains", "regex", "lt", "gt", "in", "is_set", "is_not_set"]
FILTER_OPS: tuple[str, ...] = get_args(FilterOp)
Scalar = str | bool | int | float
# Columns of `events` a filter (or a breakdown) can read: all strings, all enriched once per event.
FILTER_COLUMNS: tuple[str, ...] = (
    "browser", "os", "device_type", "country", "referrer_host",
    "utm_source", "utm_medium", "utm_campaign", "page_path",
)  # fmt: skip
PROPERTIES_PREFIX: Final = "properties."
MAX_KEY_LENGTH, MAX_PATH_DEPTH = 200, 10
# A key in one expression, for the API's schema (check_key says the same, with a clearer error).
KEY_PATTERN = rf"^({'|'.join(FILTER_COLUMNS)}|properties\.[^.]+(\.[^.]+){{0,{MAX_PATH_DEPTH - 1}}})$"
MAX_VALUE_LENGTH, MAX_IN_VALUES = 1000, 100
MAX_STEP_FILTERS, MAX_FUNNEL_FILTERS = 10, 20
# JSON integers outside 64 bits: ClickHouse reads them as strings, so they are not numbers here.
_INT_RANGE = range(-(2**63), 2**64)
_NUMBER_TYPES = "('Int64', 'UInt64', 'Double')"


class FilterError(ValueError):
    """`field` is relative to the filter (`key`, `op`, `value`); the caller prefixes where it is."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True, slots=True)
class Filter:
    """`key` is a column of FILTER_COLUMNS or `properties.` and a path of keys joined by dots."""

    key: str
    op: FilterOp
    value: Scalar | tuple[Scalar, ...] | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def path(self) -> tuple[str, ...] | None:
        """The keys inside `properties`, or None for a column."""
        if self.key.startswith(PROPERTIES_PREFIX):
            return tuple(self.key[len(PROPERTIES_PREFIX) :].split("."))
        return None


def check_key(key: str) -> None:
    if key in FILTER_COLUMNS:
        return
    if not key.startswith(PROPERTIES_PREFIX) or len(key) > MAX_KEY_LENGTH:
        raise FilterError(
            "filter_key",
            "key",
            f"one of {', '.join(FILTER_COLUMNS)}, or properties.NAME (≤ {MAX_KEY_LENGTH})",
        )
    path = key[len(PROPERTIES_PREFIX) :].split(".")
    if not all(path) or len(path) > MAX_PATH_DEPTH:
        raise FilterError(
            "filter_key", "key", f"a path of 1 to {MAX_PATH_DEPTH} non-empty names joined by '.'"
        )


def _check(f: Filter) -> None:
    check_key(f.key)
    if f.op not in FILTER_OPS:
        raise FilterError("filter_op", "op", f"one of {', '.join(FILTER_OPS)}")
    column = f.path is None
    value = f.value
    if f.op in ("is_set", "is_not_set"):
        if value is not None:
            raise FilterError("filter_value", "value", f"{f.op} takes no value")
    elif f.op == "in":
        if not isinstance(value, tuple) or not 1 <= len(value) <= MAX_IN_VALUES:
            raise FilterError("filter_value", "value", f"in takes a list of 1 to {MAX_IN_VALUES} values")
        for item in value:
            _check_scalar(item, column)
    elif f.op in ("lt", "gt"):
        if column or not _finite_number(value):
            raise FilterError("filter_value", "value", f"{f.op} compares a property with a finite number")
    elif f.op in ("contains", "regex"):
        if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
            raise FilterError("filter_value", "value", f"{f.op} takes a string of at most {MAX_VALUE_LENGTH}")
    else:
        _check_scalar(value, column)


def _check_scalar(value: object, column: bool) -> None:
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LENGTH:
            raise FilterError("filter_value", "value", f"a string of at most {MAX_VALUE_LENGTH} characters")
        return
    if column:
        raise FilterError("filter_value", "value", "a column holds strings: compare it with a string")
    if isinstance(value, bool) or _finite_number(value):
        return
    raise FilterError("filter_value", "value", "a string, a finite number or a boolean")


def _finite_number(value: object) -> bool:
    """A number that is one as a Float64 too (an integer of 400 digits is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_filters(filters: tuple[Filter, ...], most: int) -> None:
    if len(filters) > most:
        raise FilterError("filters_count", "", f"at most {most} filters")


# ---- the reference's form -------------------------------------------------------------------

_MISSING: Final = object()


def property_at(properties: str, path: tuple[str, ...]) -> Any:
    """The JSON value at `path` in a `properties` document, or _MISSING."""
    try:
        node: Any = json.loads(properties) if properties else {}
    except ValueError:
        return _MISSING
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    if isinstance(node, int) and not isinstance(node, bool) and node not in _INT_RANGE:
        return _MISSING
    return node


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equals(value: object, operand: Scalar) -> bool:
    if isinstance(operand, bool | str):
        return type(value) is type(operand) and value == operand
    return _is_number(value) and float(value) == float(operand)  # type: ignore[arg-type]


def matches(f: Filter, columns: dict[str, str], properties: str) -> bool:
    """Whether an event with these column values and this `properties` JSON passes `f`."""
    path = f.path
    value: Any = columns[f.key] if path is None else property_at(properties, path)
    if f.op == "is_set":
        return value != "" if path is None else value is not _MISSING and value is not None
    if f.op == "is_not_set":
        return not matches(Filter(f.key, "is_set"), columns, properties)
    if f.op == "neq":
        return not matches(Filter(f.key, "eq", f.value), columns, properties)
    if f.op == "eq":
        return _equals(value, f.value)  # type: ignore[arg-type]
    if f.op == "in":
        return any(_equals(value, item) for item in f.value)  # type: ignore[union-attr]
    if f.op in ("lt", "gt"):
        if not _is_number(value):
            return False
        return float(value) < f.value if f.op == "lt" else float(value) > f.value  # type: ignore[operator]
    if not isinstance(value, str):
        return False
    if f.op == "contains":
        return f.value in value  # type: ignore[operator]
    return re.search(f.value, value) is not None  # type: ignore[arg-type]


def breakdown_value(key: str, columns: dict[str, str], properties: str) -> str:
    """The text a breakdown groups by: a column's value; a property's string, `true`/`false`, or
    integer digits ('' for anything else: a fraction's digits depend on who prints them)."""
    if not key.startswith(PROPERTIES_PREFIX):
        return columns[key]
    value = property_at(properties, tuple(key[len(PROPERTIES_PREFIX) :].split(".")))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    return ""


# ---- the query's form -----------------------------------------------------------------------


class Binder:
    """Names query parameters `<prefix>_<n>` in order, so every operand is bound, never spliced."""

    def __init__(self, parameters: dict[str, Any], prefix: str) -> None:
        self.parameters = parameters
        self.prefix = prefix
        self.bound = 0

    def bind(self, value: object, type_name: str) -> str:
        name = f"{self.prefix}_{self.bound}"
        self.bound += 1
        self.parameters[name] = value
        return f"{{{name}:{type_name}}}"


def _json_arguments(path: tuple[str, ...], binder: Binder) -> str:
    return ", ".join(["properties", *(binder.bind(key, "String") for key in path)])


def _typed_equals(path_arguments: str, operands: tuple[Scalar, ...], binder: Binder) -> str:
    """A property equal to one of `operands`, compared within its JSON type."""
    strings = [o for o in operands if isinstance(o, str)]
    booleans = [o for o in operands if isinstance(o, bool)]
    numbers = [float(o) for o in operands if _is_number(o)]
    kind = f"JSONType({path_arguments})"
    parts = []
    if strings:
        bound = binder.bind(strings, "Array(String)")
        parts.append(f"({kind} = 'String' AND has({bound}, JSONExtractString({path_arguments})))")
    if booleans:
        bound = binder.bind([int(b) for b in booleans], "Array(UInt8)")
        parts.append(f"({kind} = 'Bool' AND has({bound}, toUInt8(JSONExtractBool({path_arguments}))))")
    if numbers:
        bound = binder.bind(numbers, "Array(Float64)")
        parts.append(f"({kind} IN {_NUMBER_TYPES} AND has({bound}, JSONExtractFloat({path_arguments})))")
    return "(" + " OR ".join(parts) + ")"


def filter_sql(f: Filter, binder: Binder) -> str:
    """`f` as a condition on a row of `events` (columns are identifiers of FILTER_COLUMNS)."""
    path = f.path
    if path is None:
        return _column_sql(f, f.key, binder)
    arguments = _json_arguments(path, binder)
    kind = f"JSONType({arguments})"
    if f.op in ("is_set", "is_not_set"):
        return f"({kind} {'!=' if f.op == 'is_set' else '='} 'Null')"
    if f.op in ("eq", "neq", "in"):
        operands = f.value if isinstance(f.value, tuple) else (f.value,)
        equals = _typed_equals(arguments, operands, binder)  # type: ignore[arg-type]
        return f"(NOT {equals})" if f.op == "neq" else equals
    if f.op in ("lt", "gt"):
        bound = binder.bind(float(f.value), "Float64")  # type: ignore[arg-type]
        sign = "<" if f.op == "lt" else ">"
        return f"({kind} IN {_NUMBER_TYPES} AND JSONExtractFloat({arguments}) {sign} {bound})"
    text = f"JSONExtractString({arguments})"
    return f"({kind} = 'String' AND {_text_sql(f, text, binder)})"


def _column_sql(f: Filter, column: str, binder: Binder) -> str:
    if f.op in ("is_set", "is_not_set"):
        return f"({column} {'!=' if f.op == 'is_set' else '='} '')"
    if f.op == "in":
        return f"has({binder.bind(list(f.value), 'Array(String)')}, {column})"  # type: ignore[arg-type]
    if f.op in ("eq", "neq"):
        return f"({column} {'=' if f.op == 'eq' else '!='} {binder.bind(f.value, 'String')})"
    return _text_sql(f, column, binder)


def _text_sql(f: Filter, text: str, binder: Binder) -> str:
    bound = binder.bind(f.value, "String")
    if f.op == "contains":
        return f"(position({text}, {bound}) > 0)"
    return f"match({text}, {bound})"


def breakdown_sql(key: str, binder: Binder) -> str:
    """breakdown_value's text of each row."""
    if not key.startswith(PROPERTIES_PREFIX):
        return key  # an identifier of FILTER_COLUMNS, checked by the definition
    arguments = _json_arguments(tuple(key[len(PROPERTIES_PREFIX) :].split(".")), binder)
    kind = f"JSONType({arguments})"
    return (
        f"multiIf({kind} = 'String', JSONExtractString({arguments}),"
        f" {kind} = 'Bool', if(JSONExtractBool({arguments}), 'true', 'false'),"
        f" {kind} IN ('Int64', 'UInt64'), JSONExtractRaw({arguments}), '')"
    )


def regexes(filters: tuple[Filter, ...]) -> list[str]:
    """The patterns of `regex` filters, for the caller to have ClickHouse compile before it runs."""
    return [f.value for f in filters if f.op == "regex"]  # type: ignore[misc]


# ---- the command line's form ----------------------------------------------------------------

_TEXT_FORM = re.compile(
    r"^(?P<key>[^=!~<>?\s]+)\s*(?P<op>!=|=~|=|~|<|>|!\?|\?|\s+in\s+)\s*(?P<value>.*)$", re.DOTALL
)
_TEXT_OPS: dict[str, FilterOp] = {
    "=": "eq", "!=": "neq", "~": "contains", "=~": "regex", "<": "lt", ">": "gt",
    "in": "in", "?": "is_set", "!?": "is_not_set",
}  # fmt: skip


def _operand(text: str, typed: bool) -> Scalar:
    """A property's operand is JSON when it reads as a JSON number, boolean or string (`42`,
    `true`, `"42"`), else the text itself; a column's is always the text."""
    if not typed:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | bool | int | float) else text


def parse_filter(text: str) -> Filter:
    """`KEY=VALUE`, `KEY!=VALUE`, `KEY~VALUE` (contains), `KEY=~REGEX`, `KEY<NUMBER`, `KEY>NUMBER`,
    `KEY in [JSON list]`, `KEY?` (is set), `KEY!?` (is not set): the CLI's form of a filter."""
    found = _TEXT_FORM.match(text.strip())
    if found is None:
        forms = "KEY=VALUE, KEY!=VALUE, KEY~TEXT, KEY=~REGEX, KEY<N, KEY>N, KEY in [..], KEY? or KEY!?"
        raise FilterError("filter", "", f"{text!r}: one of {forms}")
    key, op, rest = found["key"], _TEXT_OPS[found["op"].strip()], found["value"]
    typed = key.startswith(PROPERTIES_PREFIX)
    if op in ("is_set", "is_not_set"):
        if rest:
            raise FilterError("filter", "", f"{text!r}: {op} takes no value")
        return Filter(key, op)
    if op == "in":
        try:
            values = json.loads(rest)
        except ValueError:
            values = None
        if not isinstance(values, list):
            raise FilterError("filter", "", f'{text!r}: in takes a JSON list, e.g. ["a", "b"]')
        return Filter(key, op, tuple(values if typed else map(str, values)))
    if op in ("contains", "regex"):
        return Filter(key, op, rest)
    return Filter(key, op, _operand(rest, typed))
