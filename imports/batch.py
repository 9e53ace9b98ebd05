"""An import message on HW_IMPORTS (subject `hw.imports.<project>.<table>`): an LZ4 frame holding
one JSON header line and, for records, their JSONEachRow lines (imports/records.py).

    {"kind": "records", "stream": "public-users", "table": "import_public_users",
     "columns": [...], "key": ["id"], "schema_version": 2, "table_version": 0}
    {"_hw_table_version":0,"id":1,"email":"a@example.com"}
    ...

or a header alone, `{"kind": "activate_version", "stream": ..., "table": ..., "table_version": 7}`.

Every records message carries its table's whole column list and key, so the writer can create or
grow the table from the message alone, whichever message of the stream it handles first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lz4.frame
import orjson

from .types import Column

RECORDS = "records"
ACTIVATE_VERSION = "activate_version"
MAX_MESSAGE_BYTES = 8 << 20  # what a message may inflate to


class BatchError(ValueError):
    """A message that is not an import batch (never written by a control plane)."""


@dataclass(frozen=True, slots=True)
class ImportBatch:
    kind: str
    stream: str
    table: str
    table_version: int
    columns: tuple[Column, ...] = ()
    key: tuple[str, ...] = ()
    schema_version: int = 0
    rows: bytes = b""  # JSONEachRow lines, without a final newline

    def encode(self) -> bytes:
        header: dict[str, Any] = {
            "kind": self.kind,
            "stream": self.stream,
            "table": self.table,
            "table_version": self.table_version,
        }
        if self.kind == RECORDS:
            header |= {
                "columns": [c.to_json() for c in self.columns],
                "key": list(self.key),
                "schema_version": self.schema_version,
            }
        body = orjson.dumps(header) + (b"\n" + self.rows if self.rows else b"")
        return bytes(lz4.frame.compress(body))

    @classmethod
    def decode(cls, data: bytes) -> ImportBatch:
        try:
            decompressor = lz4.frame.LZ4FrameDecompressor()
            body = decompressor.decompress(data, max_length=MAX_MESSAGE_BYTES)
            if not decompressor.eof:
                raise ValueError(f"truncated, or inflates past {MAX_MESSAGE_BYTES} bytes")
            head, _, rows = body.partition(b"\n")
            header = orjson.loads(head)
            return cls(
                kind=header["kind"],
                stream=header["stream"],
                table=header["table"],
                table_version=int(header["table_version"]),
                columns=tuple(Column.from_json(c) for c in header.get("columns", ())),
                key=tuple(header.get("key", ())),
                schema_version=int(header.get("schema_version", 0)),
                rows=rows,
            )
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise BatchError(f"not an import batch: {exc!r}") from None

    def rows_with_sequence(self, sequence: int) -> bytes:
        """The rows with the version column first: the message's stream sequence, so a row sent
        again later replaces the earlier one."""
        prefix = b'{"_hw_sequence":%d,' % sequence
        return b"\n".join(prefix + line[1:] for line in self.rows.split(b"\n") if line)

    @property
    def row_count(self) -> int:
        return self.rows.count(b"\n") + 1 if self.rows else 0
