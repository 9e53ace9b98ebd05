"""Request and response bodies of the import endpoints (docs/control-api.md, "Imports")."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from msgspec import Meta, Struct

from headwater.imports.names import (
    BATCH_ID_PATTERN,
    MAX_KEY_PROPERTIES,
    MAX_RECORDS_PER_BATCH,
    MAX_STREAM_NAME,
)

StreamName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_STREAM_NAME,
        description="The Singer/Airbyte stream; its table is `import_<stream>`, non-alphanumerics as `_`.",
        examples=["public-users"],
    ),
]
BatchId = Annotated[
    str,
    Meta(
        pattern=BATCH_ID_PATTERN,
        description="Chosen by the loader, the same on every retry: a batch sent twice is stored once.",
        examples=["run-7f3a:public-users:000042"],
    ),
]
TableVersion = Annotated[int, Meta(ge=1, le=2**63 - 1)]


class StreamSchema(Struct):
    """A stream's JSON schema: an object schema whose `properties` become the table's columns
    (docs/import.md, "Types"); its other keywords are allowed and not used."""

    properties: dict[str, Any]
    type: Any = "object"


class ImportBatchRequest(Struct, forbid_unknown_fields=True):
    """Records of one stream with the JSON schema they follow."""

    stream: StreamName
    schema: StreamSchema
    batch_id: BatchId
    records: Annotated[list[dict[str, Any]], Meta(max_length=MAX_RECORDS_PER_BATCH)]
    key_properties: Annotated[list[str], Meta(max_length=MAX_KEY_PROPERTIES)] = []
    table_version: TableVersion | None = None

    json_schema_extra: ClassVar[dict[str, Any]] = {
        "examples": [
            {
                "stream": "public-users",
                "batch_id": "7f3a0c-0000000042",
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "email": {"type": ["string", "null"]},
                        "signed_up_at": {"type": "string", "format": "date-time"},
                    },
                },
                "key_properties": ["id"],
                "records": [{"id": 1, "email": "jane@example.com", "signed_up_at": "2026-03-01T10:00:00Z"}],
            }
        ]
    }


class ActivateVersionRequest(Struct, forbid_unknown_fields=True):
    """Rows of table versions older than `table_version` are removed once the batches sent
    before this request are stored."""

    stream: StreamName
    table_version: TableVersion
    batch_id: BatchId


class ImportStateRequest(Struct, forbid_unknown_fields=True):
    state: Annotated[dict[str, Any], Meta(description="The last Singer STATE / Airbyte state message.")]


class ImportBatchAnswer(Struct):
    stream: str
    table: str
    records: int
    schema_version: int
    duplicate: bool  # JetStream had this batch_id already: stored once


class ImportedColumn(Struct):
    name: str
    type: str


class ImportedTable(Struct):
    stream: str
    table: str
    rows: int
    schema_version: int
    key_properties: list[str]
    columns: list[ImportedColumn]


class ImportsListing(Struct):
    tables: list[ImportedTable]
    state: dict[str, Any] | None
    state_updated_at: str | None


class ActivateVersionAnswer(Struct):
    stream: str
    table: str
    table_version: int
    duplicate: bool


class ImportStateAnswer(Struct):
    state: dict[str, Any]
