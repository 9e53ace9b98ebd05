"""Imports at the control plane: batches of records checked against their table's columns and
published to HW_IMPORTS (answered only once JetStream acked), table schemas and the last state in
the KV bucket HW_IMPORTS, and the listing of a project's imported tables (docs/import.md).

A table's columns are kept in KV (`<project>.tables.<table>`): a SCHEMA that declares new
properties adds columns (schema_version + 1, compare-and-set against other control planes); a
column keeps the type it was first declared with, and records are checked against that, so the
writer can always store what was acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from headwater.core.catalog import table_exists
from headwater.core.projects.project import database_name, utc_now_iso, validate_project_id
from headwater.core.service.errors import APIError
from headwater.core.service.kvbuckets import ensure_bucket
from headwater.core.service.validation import convert_body
from headwater.core.wire.subjects import MSG_ID_HEADER, imports_subject
from headwater.imports.batch import ACTIVATE_VERSION, RECORDS, ImportBatch
from headwater.imports.ddl import qualified
from headwater.imports.names import MAX_COLUMNS, MAX_STATE_BYTES, InvalidName, table_name
from headwater.imports.records import RecordError, encode_rows
from headwater.imports.types import Column, SchemaError, declared_columns, merged

from .imports_schemas import (
    ActivateVersionAnswer,
    ActivateVersionRequest,
    ImportBatchAnswer,
    ImportBatchRequest,
    ImportedColumn,
    ImportedTable,
    ImportsListing,
    ImportStateAnswer,
    ImportStateRequest,
)
from .store import ProjectStore

log = logging.getLogger(__name__)

IMPORTS_BUCKET = "HW_IMPORTS"
PUBLISH_TIMEOUT_SECONDS = 10.0
SCHEMA_UPDATE_ATTEMPTS = 8


async def ensure_imports_bucket(js: JetStreamContext, replicas: int) -> KeyValue:
    return await ensure_bucket(
        js,
        KeyValueConfig(
            bucket=IMPORTS_BUCKET,
            description="headwater imported tables' columns and each project's last import state",
            history=1,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


@dataclass(frozen=True, slots=True)
class TableSchema:
    stream: str
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    version: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "stream": self.stream,
                "table": self.table,
                "columns": [c.to_json() for c in self.columns],
                "key": list(self.key),
                "version": self.version,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> TableSchema:
        value = orjson.loads(data)
        columns = tuple(Column.from_json(c) for c in value["columns"])
        return cls(value["stream"], value["table"], columns, tuple(value["key"]), int(value["version"]))


def _schema_key(project_id: str, table: str) -> str:
    return f"{project_id}.tables.{table}"


def _state_key(project_id: str) -> str:
    return f"{project_id}.state"


class ImportService:
    def __init__(self, js: JetStreamContext, kv: KeyValue, store: ProjectStore, clickhouse: Client) -> None:
        self._js = js
        self._kv = kv
        self._store = store
        self._clickhouse = clickhouse
        self._schemas: dict[tuple[str, str], tuple[TableSchema, int]] = {}  # with their KV revision

    # -- batches ----------------------------------------------------------------------------------

    async def add_batch(self, project_id: str, body: dict[str, Any]) -> ImportBatchAnswer:
        await self._store.get(validate_project_id(project_id))  # 404 for an unknown project
        asked = convert_body(body, ImportBatchRequest)
        table = _table(asked.stream)
        try:
            declared = declared_columns({"properties": asked.schema.properties}, asked.key_properties)
        except SchemaError as exc:
            raise APIError(400, "invalid_schema", str(exc), exc.field) from None
        schema = await self._grown(project_id, asked.stream, table, declared, tuple(asked.key_properties))
        try:
            rows = encode_rows(asked.records, schema.columns, schema.key, asked.table_version or 0)
        except RecordError as exc:
            raise APIError(400, "invalid_record", f"{exc.field} {exc}", exc.field) from None
        batch = ImportBatch(
            RECORDS, asked.stream, table, asked.table_version or 0, schema.columns, schema.key,
            schema.version, rows,
        )  # fmt: skip
        duplicate = await self._publish(project_id, batch, asked.batch_id)
        return ImportBatchAnswer(asked.stream, table, len(asked.records), schema.version, duplicate)

    async def activate_version(self, project_id: str, body: dict[str, Any]) -> ActivateVersionAnswer:
        await self._store.get(validate_project_id(project_id))
        asked = convert_body(body, ActivateVersionRequest)
        table = _table(asked.stream)
        batch = ImportBatch(ACTIVATE_VERSION, asked.stream, table, asked.table_version)
        duplicate = await self._publish(project_id, batch, asked.batch_id)
        return ActivateVersionAnswer(asked.stream, table, asked.table_version, duplicate)

    async def _publish(self, project_id: str, batch: ImportBatch, batch_id: str) -> bool:
        """Publish and wait for JetStream's ack; whether it was a duplicate of an earlier batch."""
        headers = {MSG_ID_HEADER: f"{project_id}.{batch.table}.{batch_id}"}
        try:
            ack = await self._js.publish(
                imports_subject(project_id, batch.table), batch.encode(), headers=headers,
                timeout=PUBLISH_TIMEOUT_SECONDS,
            )  # fmt: skip
        except (NatsError, TimeoutError) as exc:
            log.warning("publishing an import batch failed: %r", exc)
            raise _unavailable("JetStream did not acknowledge the batch; send it again") from None
        return bool(ack.duplicate)

    async def _grown(
        self, project_id: str, stream: str, table: str, declared: list[Column], key: tuple[str, ...]
    ) -> TableSchema:
        """The table's schema with the declared columns it lacked, recorded in KV first."""
        for _ in range(SCHEMA_UPDATE_ATTEMPTS):
            current = await self._schema(project_id, table)
            if current is None:
                schema = TableSchema(stream, table, tuple(declared), key, 1)
            else:
                stored, _ = current
                if stored.key != key:
                    raise APIError(
                        409, "key_properties_changed",
                        f"stream {stream!r} was imported with key_properties {list(stored.key)}; a table's "
                        "key cannot change (import it under another stream name)",
                        "key_properties",
                    )  # fmt: skip
                columns = merged(stored.columns, declared)
                if len(columns) == len(stored.columns):
                    return stored
                if len(columns) > MAX_COLUMNS:
                    raise APIError(
                        400, "too_many_columns", f"a table has at most {MAX_COLUMNS} columns", "schema"
                    )
                schema = TableSchema(stream, table, tuple(columns), key, stored.version + 1)
            try:
                if current is None:
                    revision = await self._kv.create(_schema_key(project_id, table), schema.encode())
                else:
                    revision = await self._kv.update(
                        _schema_key(project_id, table), schema.encode(), current[1]
                    )
            except KeyWrongLastSequenceError:  # another control plane changed it: read it again
                self._schemas.pop((project_id, table), None)
                continue
            except NatsError as exc:
                raise _unavailable(f"the table's schema could not be recorded: {exc!r}") from None
            self._schemas[(project_id, table)] = (schema, int(revision))
            return schema
        raise _unavailable("the table's schema changes too often; send the batch again")

    async def _schema(self, project_id: str, table: str) -> tuple[TableSchema, int] | None:
        cached = self._schemas.get((project_id, table))
        if cached is not None:
            return cached
        try:
            entry = await self._kv.get(_schema_key(project_id, table))
        except KeyNotFoundError:
            return None
        except NatsError as exc:
            raise _unavailable(f"the table's schema could not be read: {exc!r}") from None
        assert entry.value is not None
        found = (TableSchema.decode(entry.value), int(entry.revision or 0))
        self._schemas[(project_id, table)] = found
        return found

    # -- state ------------------------------------------------------------------------------------

    async def save_state(self, project_id: str, body: dict[str, Any]) -> ImportStateAnswer:
        await self._store.get(validate_project_id(project_id))
        asked = convert_body(body, ImportStateRequest)
        value = orjson.dumps({"state": asked.state, "updated_at": utc_now_iso()})
        if len(value) > MAX_STATE_BYTES:
            raise APIError(413, "state_too_large", f"a state has at most {MAX_STATE_BYTES} bytes", "state")
        try:
            await self._kv.put(_state_key(project_id), value)
        except NatsError as exc:
            raise _unavailable(f"the state could not be recorded: {exc!r}") from None
        return ImportStateAnswer(asked.state)

    # -- listing ----------------------------------------------------------------------------------

    async def listing(self, project_id: str) -> ImportsListing:
        await self._store.get(validate_project_id(project_id))
        tables = []
        for schema in await self._table_schemas(project_id):
            rows = await asyncio.to_thread(self._row_count, project_id, schema)
            tables.append(
                ImportedTable(
                    schema.stream, schema.table, rows, schema.version, list(schema.key),
                    [ImportedColumn(c.name, c.clickhouse_type) for c in schema.columns],
                )
            )  # fmt: skip
        state, updated_at = None, None
        try:
            entry = await self._kv.get(_state_key(project_id))
        except KeyNotFoundError:
            pass
        else:
            assert entry.value is not None
            saved = orjson.loads(entry.value)
            state, updated_at = saved["state"], saved["updated_at"]
        return ImportsListing(tables, state, updated_at)

    async def _table_schemas(self, project_id: str) -> list[TableSchema]:
        # A watch filtered by subject: nats-py's `keys(filters=...)` matches substrings.
        watcher = await self._kv.watch(_schema_key(project_id, ">"), ignore_deletes=True)
        schemas = []
        try:
            async for entry in watcher:
                if entry is None:  # the end of what the bucket holds now
                    break
                if entry.value:
                    schemas.append(TableSchema.decode(entry.value))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return sorted(schemas, key=lambda schema: schema.table)

    def _row_count(self, project_id: str, schema: TableSchema) -> int:
        """Rows as queries see them (FINAL: a replaced row counts once); 0 before the writer made
        the table."""
        database = database_name(project_id)
        if not table_exists(self._clickhouse, database, schema.table):
            return 0
        final = " FINAL" if schema.key else ""
        return int(
            self._clickhouse.query(
                f"SELECT count() FROM {qualified(database, schema.table)}{final}"
            ).result_rows[0][0]
        )

    async def purge(self, project_id: str) -> None:
        """Forget a purged project's tables and state (its messages go with HW_IMPORTS' purge)."""
        await self._js.purge_stream(f"KV_{IMPORTS_BUCKET}", subject=f"$KV.{IMPORTS_BUCKET}.{project_id}.>")
        self._schemas = {k: v for k, v in self._schemas.items() if k[0] != project_id}


def _table(stream: str) -> str:
    try:
        return table_name(stream)
    except InvalidName as exc:
        raise APIError(400, "invalid_field", f"stream: {exc}", "stream") from None


class ImportsUnavailable(APIError):
    """JetStream or its KV did not answer: nothing was stored, the loader sends the batch again."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "imports_unavailable", message)
        self.headers = {"Retry-After": "1"}


def _unavailable(message: str) -> APIError:
    return ImportsUnavailable(message)
