"""The pure part of imports: JSON schema → columns, records → the rows ClickHouse reads, table
names, the wire format of a batch (no I/O; the stack tests cover the way through)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.imports.batch import RECORDS, ImportBatch
from headwater.imports.ddl import create_table
from headwater.imports.names import InvalidName, column_name, table_name
from headwater.imports.records import DATETIME_RANGE, RecordError, encode_rows
from headwater.imports.types import Column, Kind, SchemaError, declared_columns, merged

SCHEMA = {
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["string", "null"]},
        "at": {"type": "string", "format": "date-time"},
        "day": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
        "score": {"type": ["integer", "number"]},
        "ok": {"type": "boolean"},
        "tags": {"type": "array"},
        "meta": {"type": ["object", "null"]},
        "mixed": {"type": ["string", "integer"]},
        "any": {},
    }
}


def test_json_schema_types_map_to_clickhouse_types() -> None:
    columns = declared_columns(SCHEMA, ["id"])
    assert [(c.name, c.clickhouse_type) for c in columns] == [
        ("id", "Int64"),
        ("name", "Nullable(String)"),
        ("at", "DateTime64(6, 'UTC')"),
        ("day", "Nullable(Date32)"),
        ("score", "Float64"),
        ("ok", "Bool"),
        ("tags", "String"),
        ("meta", "Nullable(String)"),
        ("mixed", "String"),
        ("any", "Nullable(String)"),
    ]


def test_names_are_normalised_and_bounded() -> None:
    assert table_name("public-users") == "import_public_users"
    assert table_name("test:SpecialChars!in?attributes") == "import_test_SpecialChars_in_attributes"
    assert column_name("agent:os.version") == "agent_os_version"
    for bad in ("", "x" * 65):
        with pytest.raises(InvalidName):
            table_name(bad)
    with pytest.raises(InvalidName):
        column_name("_hw_sequence")


def test_schemas_headwater_cannot_store_are_refused_with_the_field() -> None:
    cases = [
        ({"type": "object"}, [], "schema.properties"),
        ({"properties": {"a-b": {}, "a_b": {}}}, [], "schema.properties.a_b"),
        ({"properties": {"id": {}}}, ["nope"], "key_properties[0]"),
    ]
    for schema, key, field in cases:
        with pytest.raises(SchemaError) as refused:
            declared_columns(schema, key)
        assert refused.value.field == field


def test_a_grown_schema_keeps_every_column_and_its_first_type() -> None:
    stored = [Column("id", "id", Kind.INTEGER, False), Column("v", "v", Kind.INTEGER, True)]
    declared = [Column("v", "v", Kind.STRING, True), Column("w", "w", Kind.BOOLEAN, True)]
    assert merged(stored, declared) == [*stored, declared[1]]


def test_records_become_rows_clickhouse_reads_without_guessing() -> None:
    columns = declared_columns(SCHEMA, ["id"])
    record = {
        "id": 7.0,
        "name": None,
        "at": "2026-03-01T10:00:00.25+01:00",
        "day": "2026-03-01T23:00:00Z",
        "score": 2,
        "ok": False,
        "tags": ["a", 1],
        "meta": {"k": [1]},
        "mixed": 5,
        "any": "text",
        "undeclared": "dropped",
    }
    [row] = encode_rows([record], columns, ["id"], 3).split(b"\n")
    assert orjson.loads(row) == {
        "_hw_table_version": 3,
        "id": 7,
        "at": "2026-03-01 09:00:00.250000",
        "day": "2026-03-01",
        "score": 2,
        "ok": False,
        "tags": '["a",1]',
        "meta": '{"k":[1]}',
        "mixed": "5",
        "any": "text",
    }


def _by_parsing(text: str) -> str | None:
    """What a date-time column stores, by parsing and formatting (None: refused)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if not DATETIME_RANGE[0] <= moment <= DATETIME_RANGE[1]:
        return None
    return moment.isoformat(sep=" ", timespec="microseconds")


@given(
    moment=st.datetimes(min_value=datetime(1899, 12, 31), max_value=datetime(2262, 4, 12)),
    separator=st.sampled_from(["T", " "]),
    digits=st.integers(0, 6),
    zone=st.sampled_from(["", "Z", "+00:00", "-00:00", "+0000", "+02:00", "-05:30"]),
)
def test_a_utc_date_time_rearranged_equals_the_same_parsed(
    moment: datetime, separator: str, digits: int, zone: str
) -> None:
    """The fast path for UTC date-times (imports/records.py) stores what parsing would, and
    refuses what it would refuse."""
    text = moment.isoformat(sep=separator, timespec="seconds")
    if digits:
        text += "." + f"{moment.microsecond:06d}"[:digits]
    text += zone
    expected = _by_parsing(text)
    columns = [Column("at", "at", Kind.DATETIME, nullable=False)]
    if expected is None:
        with pytest.raises(RecordError):
            encode_rows([{"at": text}], columns, [], 0)
    else:
        assert orjson.loads(encode_rows([{"at": text}], columns, [], 0))["at"] == expected


@pytest.mark.parametrize(
    "text", ["2026-02-30T10:00:00Z", "2026-01-02T24:00:00Z", "\uff12\uff10\uff12\uff16-01-02T10:00:00Z"]
)
def test_an_impossible_date_time_is_refused(text: str) -> None:
    with pytest.raises(RecordError):
        encode_rows([{"at": text}], [Column("at", "at", Kind.DATETIME, nullable=False)], [], 0)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"at": "2026-01-01T00:00:00Z"}, "records[1].id"),  # the key is missing
        ({"id": True, "at": "2026-01-01T00:00:00Z"}, "records[1].id"),
        ({"id": 2**63, "at": "2026-01-01T00:00:00Z"}, "records[1].id"),
        ({"id": 2, "at": "yesterday"}, "records[1].at"),
        ({"id": 2, "at": "1800-01-01T00:00:00Z"}, "records[1].at"),
        ({"id": 2, "at": None}, "records[1].at"),  # not nullable
        ({"id": 2, "at": "2026-01-01T00:00:00Z", "ok": "yes"}, "records[1].ok"),
        ({"id": 2, "at": "2026-01-01T00:00:00Z", "tags": {}}, "records[1].tags"),
        ({"id": 2, "at": "2026-01-01T00:00:00Z", "name": 5}, "records[1].name"),
    ],
)
def test_a_record_that_does_not_fit_is_named_by_index_and_property(
    record: dict[str, object], field: str
) -> None:
    good = {"id": 1, "at": "2026-01-01T00:00:00Z"}
    with pytest.raises(RecordError) as refused:
        encode_rows([good, record], declared_columns(SCHEMA, ["id"]), ["id"], 0)
    assert refused.value.field == field


def test_a_batch_survives_the_wire_and_takes_its_sequence() -> None:
    columns = tuple(declared_columns(SCHEMA, ["id"]))
    rows = encode_rows(
        [{"id": 1, "at": "2026-01-01T00:00:00Z"}, {"id": 2, "at": "2026-01-01T00:00:00Z"}], columns, ["id"], 0
    )
    batch = ImportBatch(RECORDS, "s", "import_s", 0, columns, ("id",), 2, rows)
    decoded = ImportBatch.decode(batch.encode())
    assert decoded == batch and decoded.row_count == 2
    lines = [orjson.loads(line) for line in decoded.rows_with_sequence(41).split(b"\n")]
    assert [(line["_hw_sequence"], line["id"]) for line in lines] == [(41, 1), (41, 2)]


def test_keyed_streams_replace_and_keyless_ones_append() -> None:
    columns = declared_columns(SCHEMA, ["id"])
    keyed = create_table("hw_p", "import_s", columns, ["id"], None)
    keyless = create_table("hw_p", "import_s", columns, [], "main")
    assert "ENGINE = ReplacingMergeTree(`_hw_sequence`)" in keyed and "ORDER BY (`id`)" in keyed
    assert "ReplicatedMergeTree(" in keyless and "ON CLUSTER `main`" in keyless
    assert "ORDER BY (`_hw_sequence`)" in keyless
